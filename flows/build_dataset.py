"""Flow `build-dataset`: a recordings manifest to a versioned Parquet dataset.

Example, from a notebook::

    from flows.build_dataset import build_dataset
    summary = build_dataset("data/sample/cwru/recordings.csv")
    summary["version"], summary["quarantined"]

The dataset version is a content hash of the accepted recordings, the build
configuration and the code version. When a complete dataset with that version
already exists, the flow returns it without recomputing anything.
"""

from __future__ import annotations

import time
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.context import get_run_context
from prefect.futures import as_completed
from prefect.logging import get_run_logger

from blocks.compute import DaskCompute, resolve_compute
from blocks.storage import StorageBlock, resolve_storage
from tasks.dataset import (
    BuildConfig,
    batched,
    build_manifest,
    commit_dataset,
    dataset_version,
    drop_duplicates,
    manifest_key,
    plan_partitions,
    point_latest,
    read_dataset_manifest,
    summarize,
)
from tasks.dataset_tasks import extract_features_batch, prepare_recordings, read_recordings_manifest


@flow(name="build-dataset", validate_parameters=False)
def build_dataset(
    manifest: str,
    storage: StorageBlock | str | None = None,
    compute: DaskCompute | str | None = None,
    config: BuildConfig | dict[str, Any] | None = None,
    n_batches: int = 4,
    update_latest: bool = True,
) -> dict[str, Any]:
    """Build (or reuse) the dataset for the recordings listed in `manifest`.

    Args:
        manifest: path or fsspec URL of the recordings manifest CSV.
        storage: storage block, or the name of a saved one; default a
            `LocalStorage` at `./.daqflow`.
        compute: Dask compute block, or the name of a saved one; default a local
            cluster on 127.0.0.1.
        config: `BuildConfig` or its dict form; default `BuildConfig()`.
        n_batches: Prefect tasks the partitions are split into. Each batch runs
            its partitions in parallel on Dask; more batches give finer
            progress in the UI at about 25 ms of Prefect overhead each.
        update_latest: flip the `datasets/latest` pointer to this dataset.
            Scoring champions on new recordings builds a dataset that must
            not become the training default, so it passes False.

    Returns:
        The dataset summary: version, counts per device and label, the
        quarantined recordings with reasons, and seconds per step.
    """
    logger = get_run_logger()
    started = time.perf_counter()
    build_config = _build_config(config)
    store = resolve_storage(storage).get_store()
    seconds: dict[str, float] = {}

    specs, quarantined = read_recordings_manifest(manifest)
    with resolve_compute(compute).scheduler() as address:
        seconds["cluster_start"] = time.perf_counter() - started
        step = time.perf_counter()
        prepared = prepare_recordings(specs, config=build_config, store=store, scheduler_address=address)
        seconds["prepare_recordings"] = time.perf_counter() - step

        accepted = [r for r in prepared if "quarantined" not in r]
        quarantined += [r["quarantined"] for r in prepared if "quarantined" in r]
        accepted, duplicates = drop_duplicates(accepted)
        quarantined += duplicates
        version = dataset_version(accepted, build_config)

        if store.exists(manifest_key(version)):
            logger.info("Dataset %s already exists in %s; nothing to build", version, store.url("datasets"))
            summary = summarize(read_dataset_manifest(store, version), cached=True)
            if update_latest:
                point_latest(store, version)
        else:
            step = time.perf_counter()
            partitions = plan_partitions(accepted, config=build_config, version=version)
            written, feature_seconds = _extract(partitions, store=store, address=address, n_batches=n_batches)
            seconds["extract_features"] = time.perf_counter() - step
            seconds["feature_code"] = feature_seconds

            dataset_manifest = build_manifest(
                version=version,
                config=build_config,
                recordings=accepted,
                partitions=written,
                quarantined=quarantined,
                source_manifest=manifest,
            )
            commit_dataset(store, dataset_manifest, update_latest=update_latest)
            summary = summarize(dataset_manifest, cached=False)

    seconds["total"] = time.perf_counter() - started
    summary["seconds"] = seconds
    summary["location"] = store.url(f"datasets/{version}")
    summary["flow_run_id"] = str(get_run_context().flow_run.id)
    _publish_artifacts(summary)
    logger.info(
        "Dataset %s: %d recordings, %d partitions, %d windows, %d quarantined",
        version,
        summary["recordings"],
        summary["partitions"],
        summary["windows"],
        len(summary["quarantined"]),
    )
    return summary


def _build_config(config: BuildConfig | dict[str, Any] | None) -> BuildConfig:
    if config is None:
        return BuildConfig()
    if isinstance(config, BuildConfig):
        return config
    return BuildConfig.from_dict(config)


def _extract(partitions: list[dict[str, Any]], *, store, address: str, n_batches: int) -> tuple[list[dict[str, Any]], float]:
    """Run the partitions as `n_batches` Prefect tasks and report progress as batches finish."""
    progress = create_progress_artifact(progress=0.0, key="dataset-build-progress", description="Partitions written")
    futures = [
        extract_features_batch.submit(batch, store=store, scheduler_address=address, batch=index)
        for index, batch in enumerate(batched(partitions, n_batches))
    ]
    written: list[dict[str, Any]] = []
    for future in as_completed(futures):
        written += future.result()
        update_progress_artifact(progress, progress=100.0 * len(written) / max(1, len(partitions)))
    feature_seconds = sum(r["seconds"]["features"] for r in written)
    return written, feature_seconds


def _publish_artifacts(summary: dict[str, Any]) -> None:
    rows = [
        {"device_id": device, "recordings": info["recordings"], "partitions": info["partitions"], "windows": info["windows"]}
        for device, info in sorted(summary["devices"].items())
    ]
    create_table_artifact(rows, key="dataset-devices", description=f"Dataset {summary['version']}: windows and partitions per device")
    quarantine_rows = [{"path": q["path"], "device_id": q["device_id"], "reason": q["reason"], "message": q["message"]} for q in summary["quarantined"]]
    if quarantine_rows:
        create_table_artifact(quarantine_rows, key="dataset-quarantine", description=f"Recordings quarantined from dataset {summary['version']}")
    lines = [
        f"# Dataset `{summary['version']}`",
        "",
        f"{summary['recordings']} recordings, {summary['partitions']} partitions, {summary['windows']} windows"
        f"{' (reused, already built)' if summary['cached'] else ''}.",
        f"Location: `{summary['location']}`",
        "",
        f"Quarantined: {len(summary['quarantined'])}",
    ]
    lines += [f"- `{q['path']}` ({q['reason']}): {q['message']}" for q in summary["quarantined"]]
    create_markdown_artifact("\n".join(lines), key="dataset-summary", description="Dataset build summary")
