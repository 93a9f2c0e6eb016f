"""Flow `nightly-retrain`: the main job, raw recordings to verified models at the edge.

    build_dataset -> train_fleet (train, evaluate, gate) -> publish_edge

Each stage is a flow of its own and runs here as a subflow, so the Prefect UI
shows the tree. Unchanged inputs cost little: the dataset is reused when its
content hash exists, and a device whose champion was trained from the same
dataset, features, parameters and code is skipped.

Example, from a notebook::

    from flows.nightly_retrain import nightly_retrain
    summary = nightly_retrain("data/sample/cwru/recordings.csv")
"""

from __future__ import annotations

import time
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.context import get_run_context
from prefect.logging import get_run_logger

from blocks.compute import DaskCompute
from blocks.edge import EdgeTarget, resolve_edge_target
from blocks.storage import StorageBlock, resolve_storage
from edge.layout import bundle_dir, current_version
from flows.build_dataset import build_dataset
from flows.publish_edge import publish_edge
from flows.train_fleet import FleetTrainingFailed, check_failures, train_fleet
from tasks.fleet import FleetConfig, load_fleet


@flow(name="nightly-retrain", validate_parameters=False)
def nightly_retrain(
    manifest: str,
    fleet: FleetConfig | str | dict[str, Any] | None = None,
    storage: StorageBlock | str | None = None,
    edge_target: EdgeTarget | str | None = None,
    compute: DaskCompute | str | None = None,
) -> dict[str, Any]:
    """Build the dataset, train and gate every device, publish new champions.

    Args:
        manifest: recordings manifest CSV (path or fsspec URL).
        fleet: fleet configuration (object, TOML path or dict); None for defaults.
        storage: storage block or a saved block's name; default `./.daqflow`.
        edge_target: edge target block or a saved block's name; default `./.daqflow/edge`.
        compute: Dask compute block or a saved block's name; default a local cluster.

    Returns:
        The run summary, also written to `runs/<flow-run-id>/run-summary.json`
        in the storage block.

    Raises:
        FleetTrainingFailed: more devices failed than `fleet.max_failed_share`
            allows; raised after the summary is written and the devices that
            succeeded are published.
    """
    started = time.perf_counter()
    fleet_config = load_fleet(fleet)
    storage_block = resolve_storage(storage)
    edge_block = resolve_edge_target(edge_target)
    seconds: dict[str, float] = {}

    step = time.perf_counter()
    dataset = build_dataset(
        manifest, storage=storage_block, compute=compute, config=fleet_config.build_config(list(fleet_config.devices))
    )
    seconds["build_dataset"] = time.perf_counter() - step

    step = time.perf_counter()
    records = train_fleet(dataset["version"], fleet=fleet_config, storage=storage_block, fail_on_threshold=False)
    seconds["train_fleet"] = time.perf_counter() - step

    step = time.perf_counter()
    promoted = [r["device_id"] for r in records if r["status"] == "promoted"]
    edge = publish_edge(devices=promoted, storage=storage_block, edge_target=edge_block)
    seconds["publish_edge"] = time.perf_counter() - step
    seconds["total"] = time.perf_counter() - started

    summary = run_summary(dataset, records, edge, seconds, in_service=in_service_bundles(edge_block, records))
    key = f"runs/{summary['flow_run_id']}/run-summary.json"
    store = storage_block.get_store()
    store.write_json(key, summary)
    summary["summary_location"] = store.url(key)
    create_markdown_artifact(summary_markdown(summary), key="run-summary", description="Nightly retraining summary")
    get_run_logger().info("Run summary written to %s", summary["summary_location"])

    check_failures(records, fleet_config)
    return summary


def in_service_bundles(edge_target: EdgeTarget, records: list[dict[str, Any]]) -> dict[str, str]:
    """Return the bundle folder each device's edge box runs now, for devices that have one."""
    root = edge_target.root()
    bundles = {}
    for record in records:
        version = current_version(root, record["device_id"])
        if version is not None:
            bundles[record["device_id"]] = str(bundle_dir(root, record["device_id"], version))
    return bundles


def run_summary(
    dataset: dict[str, Any],
    records: list[dict[str, Any]],
    edge: dict[str, Any],
    seconds: dict[str, float],
    *,
    in_service: dict[str, str],
) -> dict[str, Any]:
    """Assemble the run summary JSON (its fields are documented in the README).

    A model's `bundle` is the bundle in service on the edge for that device
    after this run, whether or not this run published it.
    """
    bundles = {b["device_id"]: b for b in edge["bundles"]}
    models = []
    for record in records:
        status = record["status"]
        bundle = bundles.get(record["device_id"], {})
        reason = record.get("reason") or (record.get("gate") or {}).get("message")
        if status == "promoted":
            status = "published" if bundle.get("bundle") and bundle.get("version") == record["version"] else "failed"
            reason = reason or bundle.get("error")
        metrics = record.get("metrics") or {}
        models.append(
            {
                "device_id": record["device_id"],
                "status": status,
                "model_type": record["model_type"],
                "version": record.get("version"),
                "metrics": {k: metrics[k] for k in ("accuracy", "macro_f1") if k in metrics},
                "bundle": in_service.get(record["device_id"]),
                "gate": record.get("gate"),
                "reason": reason,
            }
        )
    return {
        "flow_run_id": str(get_run_context().flow_run.id),
        "dataset": {
            "version": dataset["version"],
            "partitions": dataset["partitions"],
            "windows": dataset["windows"],
            "recordings": dataset["recordings"],
            "quarantined": [{"path": q["path"], "reason": q["reason"], "device_id": q["device_id"], "message": q["message"]} for q in dataset["quarantined"]],
        },
        "models": models,
        "edge": {"location": edge["location"], "published": edge["published"]},
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
    }


def summary_markdown(summary: dict[str, Any]) -> str:
    lines = [
        f"# Nightly retraining, dataset `{summary['dataset']['version']}`",
        "",
        f"{summary['dataset']['recordings']} recordings, {summary['dataset']['windows']} windows, "
        f"{len(summary['dataset']['quarantined'])} quarantined. Edge: `{summary['edge']['location']}`.",
        "",
        "| device | model | status | version | macro-F1 | gate | bundle |",
        "|---|---|---|---|---|---|---|",
    ]
    for model in summary["models"]:
        f1 = model["metrics"].get("macro_f1")
        gate = (model.get("gate") or {}).get("reason") or model.get("reason") or ""
        bundle = f"[bundle](file://{model['bundle']})" if model["bundle"] else ""
        lines.append(
            f"| {model['device_id']} | {model['model_type']} | {model['status']} | {model['version'] or ''} | "
            f"{'' if f1 is None else f'{f1:.3f}'} | {gate} | {bundle} |"
        )
    lines += ["", "Seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in summary["seconds"].items())]
    return "\n".join(lines)


__all__ = ["nightly_retrain", "FleetTrainingFailed"]
