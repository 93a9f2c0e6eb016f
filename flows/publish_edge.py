"""Flows `publish-edge` and `rollback-edge`: champions to signed bundles on the edge target.

Example, from a notebook::

    from flows.publish_edge import publish_edge
    publish_edge()            # every device's champion, into ./.daqflow/edge
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.logging import get_run_logger

from blocks.edge import EdgeTarget, resolve_edge_target
from blocks.storage import StorageBlock, resolve_storage
from edge.bundle import add_trusted_key
from edge.layout import rollback, trusted_keys_dir
from tasks.fleet_tasks import publish_bundle
from tasks.registry import ModelRegistry


@flow(name="publish-edge", validate_parameters=False)
def publish_edge(
    devices: list[str] | None = None,
    storage: StorageBlock | str | None = None,
    edge_target: EdgeTarget | str | None = None,
) -> dict[str, Any]:
    """Publish each device's champion whose bundle is not yet in service.

    Args:
        devices: devices to publish; default every device with a champion.
        storage: storage block holding the model registry, or a saved block's name.
        edge_target: edge target block or a saved block's name; default `./.daqflow/edge`.

    Returns:
        ``{"location", "published": [device ids], "bundles": [per-device records]}``.
    """
    store = resolve_storage(storage).get_store()
    target = resolve_edge_target(edge_target)
    edge_root = target.root()
    signing_key = target.get_signing_key(store)
    device_ids = devices if devices is not None else ModelRegistry(store).devices()
    # Trust the signing key once, before the devices publish in parallel.
    add_trusted_key(trusted_keys_dir(edge_root), signing_key.public_key())

    futures = [
        publish_bundle.submit(device_id, store=store, edge_root=edge_root, signing_key=signing_key)
        for device_id in device_ids
    ]
    bundles = [future.result() for future in futures]
    published = [b["device_id"] for b in bundles if b["published"]]

    for bundle in bundles:
        if bundle["published"]:
            create_link_artifact(
                link=f"file://{bundle['bundle']}",
                link_text=f"{bundle['device_id']} {bundle['version']}",
                key=f"bundle-{_artifact_key(bundle['device_id'])}",
                description=f"Edge bundle of device {bundle['device_id']}",
            )
    get_run_logger().info("Published %d bundles to %s", len(published), edge_root)
    return {"location": str(edge_root), "published": published, "bundles": bundles}


@flow(name="rollback-edge", validate_parameters=False)
def rollback_edge(device_id: str, edge_target: EdgeTarget | str | None = None) -> str:
    """Point a device back to the bundle that was in service before the current one."""
    root = resolve_edge_target(edge_target).root()
    version = rollback(root, device_id)
    get_run_logger().info("Device %s rolled back to bundle %s in %s", device_id, version, root)
    create_markdown_artifact(f"Device `{device_id}` rolled back to bundle `{version}`.", key="edge-rollback")
    return version


def _artifact_key(device_id: str) -> str:
    """Artifact keys allow lowercase letters, digits and dashes only."""
    return "".join(c if c.isalnum() else "-" for c in device_id.lower())
