"""Prefect tasks of the dataset build.

Each task runs many Dask tasks: a Prefect task run costs about 25 ms until the
server has recorded it and the server strains near 2,000 task runs per flow
run, so per-recording and per-partition work stays inside Dask and Prefect
sees a handful of batches. Tasks pass small records and storage keys, never
arrays.
"""

from __future__ import annotations

from typing import Any

from distributed import Client
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from tasks.dataset import BuildConfig, extract_partition, prepare_recording
from tasks.recordings import RecordingSpec, read_manifest
from tasks.store import Store


@task(name="read-recordings-manifest", cache_policy=NO_CACHE)
def read_recordings_manifest(manifest: str) -> tuple[list[RecordingSpec], list[dict[str, Any]]]:
    """Parse the recordings manifest; rows with bad paths or values come back quarantined."""
    specs, quarantined = read_manifest(manifest)
    get_run_logger().info(
        "Manifest %s lists %d recordings; %d rows quarantined", manifest, len(specs) + len(quarantined), len(quarantined)
    )
    return specs, [q.to_dict() for q in quarantined]


@task(name="prepare-recordings", cache_policy=NO_CACHE)
def prepare_recordings(
    specs: list[RecordingSpec], *, config: BuildConfig, store: Store, scheduler_address: str
) -> list[dict[str, Any]]:
    """Read, validate and condition every recording on the Dask cluster."""
    with Client(scheduler_address, set_as_default=False) as client:
        futures = client.map(prepare_recording, specs, config=config, store=store, pure=False)
        results = client.gather(futures)

    logger = get_run_logger()
    for result in results:
        if "quarantined" in result:
            logger.warning("Quarantined %s: %s", result["quarantined"]["path"], result["quarantined"]["message"])
    return results


@task(name="extract-features", cache_policy=NO_CACHE)
def extract_features_batch(
    partitions: list[dict[str, Any]], *, store: Store, scheduler_address: str, batch: int
) -> list[dict[str, Any]]:
    """Compute and write the Parquet files of one batch of partitions on the Dask cluster."""
    with Client(scheduler_address, set_as_default=False) as client:
        futures = client.map(extract_partition, partitions, store=store, pure=False)
        results = client.gather(futures)

    rows = sum(result["rows"] for result in results)
    get_run_logger().info("Batch %d wrote %d partitions, %d windows", batch, len(results), rows)
    return results
