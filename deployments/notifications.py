"""Failure notifications: a webhook message when a daqflow flow run fails or a device fails to train.

Two Prefect automations send them through one webhook notification block:

* `daqflow-flow-run-failed` fires when a flow run tagged `daqflow` enters
  Failed or Crashed. The message names the flow run, its flow, its deployment,
  the DAQ (from a `daq:<id>` tag) and the state message.
* `daqflow-device-training-failed` fires on every `FAILURE_EVENT`, which the
  training code emits per failed device with `emit_training_failure`, so one
  bad device is reported even when the flow run as a whole completes.

The Prefect server renders the messages and calls the webhook, so the server
must be able to reach the webhook URL.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit
from uuid import UUID

from prefect.automations import Automation, EventTrigger, SendNotification
from prefect.blocks.notifications import CustomWebhookNotificationBlock
from prefect.client.orchestration import get_client
from prefect.events import emit_event

from deployments.deploy import DAQFLOW_TAG

logger = logging.getLogger(__name__)

FAILURE_EVENT = "daqflow.device.training.failed"

FLOW_RUN_AUTOMATION = "daqflow-flow-run-failed"
DEVICE_AUTOMATION = "daqflow-device-training-failed"

FLOW_RUN_SUBJECT = "daqflow: flow run {{ flow_run.name }} {{ flow_run.state.name }}"
FLOW_RUN_BODY = """\
daqflow flow run {{ flow_run.name }} ({{ flow_run.id }}) ended {{ flow_run.state.name }}.
Flow: {{ flow.name }}
Deployment: {{ deployment.name if deployment else "none" }}
DAQ: {% for tag in flow_run.tags if tag.startswith("daq:") %}{{ tag[4:] }}{{ ", " if not loop.last }}\
{% else %}unknown (the flow run has no daq:<id> tag){% endfor %}
State message: {{ flow_run.state.message }}
Details: {{ flow_run | ui_url }}
"""

DEVICE_SUBJECT = "daqflow: training failed for device {{ event.resource['daqflow.device_id'] }}"
DEVICE_BODY = """\
Training failed for device {{ event.resource['daqflow.device_id'] }} of DAQ {{ event.resource['daqflow.daq_id'] }}.
Flow run: {{ flow_run.name if flow_run else "unknown" }} ({{ event.payload.flow_run_id }})
Reason: {{ event.payload.reason }}
Details: {{ flow_run | ui_url if flow_run else "" }}
"""


def ensure_failure_notifications(*, webhook_url: str, block_name: str = "daqflow-failures") -> None:
    """Save the webhook block and create or update the two failure automations.

    The block posts JSON `{"subject", "body", "text"}`; `text` is the field
    that Slack-style incoming webhooks display. The URL is stored as a block
    secret because such URLs carry their access token in the path. Safe to
    call again: the block is overwritten and each automation updated in place.

    Args:
        webhook_url: http(s) URL that receives the messages.
        block_name: name under which the `CustomWebhookNotificationBlock` is saved.

    Raises:
        ValueError: `webhook_url` is not an http(s) URL.
    """
    _check_webhook_url(webhook_url)
    block_id = _save_webhook_block(webhook_url, block_name)

    _apply_automation(
        Automation(
            name=FLOW_RUN_AUTOMATION,
            description="Webhook message when a daqflow flow run fails or crashes.",
            trigger=EventTrigger(
                expect={"prefect.flow-run.Failed", "prefect.flow-run.Crashed"},
                match={"prefect.resource.id": "prefect.flow-run.*"},
                match_related={"prefect.resource.role": "tag", "prefect.resource.id": f"prefect.tag.{DAQFLOW_TAG}"},
                threshold=1,
            ),
            actions=[SendNotification(block_document_id=block_id, subject=FLOW_RUN_SUBJECT, body=FLOW_RUN_BODY)],
        )
    )
    _apply_automation(
        Automation(
            name=DEVICE_AUTOMATION,
            description=f"Webhook message for every {FAILURE_EVENT} event (one device failed to train).",
            trigger=EventTrigger(
                expect={FAILURE_EVENT},
                match={"prefect.resource.id": "daqflow.device.*"},
                threshold=1,
            ),
            actions=[SendNotification(block_document_id=block_id, subject=DEVICE_SUBJECT, body=DEVICE_BODY)],
        )
    )


def emit_training_failure(*, device_id: str, daq_id: str, reason: str, flow_run_id: str) -> None:
    """Emit `FAILURE_EVENT` for one device that failed to train.

    The event is sent in the background by Prefect's events worker; a flow run
    process flushes it before it exits. The flow run is attached as a related
    resource, so the event shows on the flow run's page in the UI.

    Args:
        device_id: the device whose training failed.
        daq_id: the DAQ that records the device.
        reason: what went wrong, e.g. the exception message.
        flow_run_id: id of the flow run that trained the device.

    Raises:
        ValueError: `device_id` or `daq_id` is empty, or `flow_run_id` is not a UUID.
    """
    for label, value in (("device_id", device_id), ("daq_id", daq_id)):
        if not value:
            raise ValueError(f"emit_training_failure: {label} is empty; pass the id of the failed device and its DAQ.")
    try:
        UUID(str(flow_run_id))
    except ValueError:
        raise ValueError(
            f"emit_training_failure: flow_run_id {flow_run_id!r} is not a UUID; pass prefect.runtime.flow_run.id."
        ) from None

    event = emit_event(
        event=FAILURE_EVENT,
        resource={
            "prefect.resource.id": f"daqflow.device.{device_id}",
            "daqflow.device_id": device_id,
            "daqflow.daq_id": daq_id,
        },
        related=[{"prefect.resource.id": f"prefect.flow-run.{flow_run_id}", "prefect.resource.role": "flow-run"}],
        payload={"reason": reason, "flow_run_id": str(flow_run_id)},
    )
    if event is None:
        logger.warning("Event %s for device %s was not sent: Prefect events are disabled in this process", FAILURE_EVENT, device_id)


def _check_webhook_url(webhook_url: str) -> None:
    parts = urlsplit(webhook_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"webhook URL {webhook_url!r} is invalid; pass an http:// or https:// URL with a host.")


def _save_webhook_block(webhook_url: str, block_name: str) -> UUID:
    block = CustomWebhookNotificationBlock(
        name=block_name,
        url="{{webhook_url}}",
        json_data={"subject": "{{subject}}", "body": "{{body}}", "text": "{{subject}}\n{{body}}"},
        secrets={"webhook_url": webhook_url},
    )
    block_id = block.save(block_name, overwrite=True)
    logger.info("Saved webhook notification block %s", block_name)
    return block_id


def _apply_automation(automation: Automation) -> None:
    """Create `automation`, or update the one of the same name and delete any duplicates."""
    with get_client(sync_client=True) as client:
        existing = client.read_automations_by_name(automation.name)
        for duplicate in existing[1:]:
            client.delete_automation(duplicate.id)

    if existing:
        automation.id = existing[0].id
        automation.update()
        logger.info("Updated automation %s (%s)", automation.name, automation.id)
    else:
        automation.create()
        logger.info("Created automation %s (%s)", automation.name, automation.id)
