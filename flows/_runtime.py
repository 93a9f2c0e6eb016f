"""Process set-up shared by the CLI and the flows: privacy settings and run bookkeeping."""

from __future__ import annotations

import logging
import os
import time
from uuid import UUID

logger = logging.getLogger(__name__)

# Nothing leaves the machine: no Prefect telemetry. setdefault lets an operator
# who wants telemetry opt in explicitly.
PRIVACY_ENVIRONMENT = {"DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}


def configure_environment() -> None:
    """Set the privacy variables before Prefect reads its settings."""
    for name, value in PRIVACY_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    # Prefect's default of 20 s to start the temporary server is too short on
    # a busy 2-core machine, where a start has taken longer.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")


def wait_until_recorded(flow_run_id: UUID | str, *, timeout_s: float = 60.0, settle_s: float = 2.0) -> int:
    """Block until the server has recorded every task run of `flow_run_id`.

    In ephemeral mode the server runs inside this process's lifetime: exiting
    right after a flow loses the task runs it has not yet written. This drains
    the client's event and log queues, then polls the API until the flow run
    is final, every task run is final and their count has not changed for
    `settle_s` seconds. Returns the number of task runs recorded.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    EventsWorker.drain_all(timeout=timeout_s)
    APILogWorker.drain_all(timeout=timeout_s)

    deadline = time.monotonic() + timeout_s
    last_count, stable_since = -1, time.monotonic()
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            flow_run = client.read_flow_run(UUID(str(flow_run_id)))
            task_runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(str(flow_run_id))]))
            )
            all_final = flow_run.state is not None and flow_run.state.is_final()
            all_final = all_final and all(t.state is not None and t.state.is_final() for t in task_runs)
            if len(task_runs) != last_count or not all_final:
                last_count, stable_since = len(task_runs), time.monotonic()
            elif time.monotonic() - stable_since >= settle_s:
                return last_count
            time.sleep(0.25)
    logger.warning("Flow run %s: the server had recorded %d task runs when the wait timed out", flow_run_id, last_count)
    return last_count
