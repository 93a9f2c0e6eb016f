"""Work pools of daqflow: which pool trains which model type, and how many flow runs each takes at once.

Two pools keep the two kinds of work apart: `daqflow-cpu` runs data
preparation and LightGBM training, `daqflow-gpu` runs PyTorch training. On a
single machine both are Prefect "process" pools served by local workers. In
AWS the same pool names are created as ECS pools from the templates in
`deployments/aws/`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
from prefect.workers.process import ProcessWorker

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient

logger = logging.getLogger(__name__)

CPU_POOL = "daqflow-cpu"
GPU_POOL = "daqflow-gpu"

MODEL_TYPE_POOLS = {"lightgbm": CPU_POOL, "cnn1d": GPU_POOL}

# Flow runs at once per pool. Measured with 27 LightGBM trainings (5,000 x 40,
# 100 rounds) as deployment runs on a 2-core, 24 GiB machine against the
# SQLite-backed server. With no limit, 16 flow-run processes ran at once
# (+2.5 GB) and the server returned HTTP 503 (database is locked). With a
# limit of 2, all 27 finished in 83 s.
# NOTE: a host with more cores and a PostgreSQL-backed server can take more;
# raise the limit in the UI or with `prefect work-pool set-concurrency-limit`.
POOL_CONCURRENCY = {CPU_POOL: 2, GPU_POOL: 1}

LOCAL_POOL_TYPE = "process"


def pool_for_model_type(model_type: str) -> str:
    """Return the work pool that trains models of `model_type`.

    Raises:
        ValueError: `model_type` is not one of `MODEL_TYPE_POOLS`.
    """
    try:
        return MODEL_TYPE_POOLS[model_type]
    except KeyError:
        raise ValueError(
            f"model type {model_type!r} has no work pool; known model types: {sorted(MODEL_TYPE_POOLS)}. "
            "Set `model_type` in the fleet file to one of them."
        ) from None


def ensure_work_pools() -> None:
    """Create the daqflow work pools where missing and set their concurrency limits.

    A missing pool is created as a "process" pool with Prefect's default
    process job template. An existing pool keeps its type and job template,
    so pools created from the ECS templates are left as they are apart from
    the limit. Safe to call again: a second call changes nothing.

    Uses the Prefect API that `PREFECT_API_URL` points to.
    """
    with get_client(sync_client=True) as client:
        for pool_name, limit in POOL_CONCURRENCY.items():
            _ensure_work_pool(client, pool_name, limit)


def _ensure_work_pool(client: "SyncPrefectClient", pool_name: str, limit: int) -> None:
    try:
        pool = client.read_work_pool(pool_name)
    except ObjectNotFound:
        if _create_process_pool(client, pool_name, limit):
            return
        pool = client.read_work_pool(pool_name)

    if pool.concurrency_limit != limit:
        client.update_work_pool(pool_name, WorkPoolUpdate(concurrency_limit=limit))
        logger.info("Work pool %s (type %s): concurrency limit %s -> %d", pool_name, pool.type, pool.concurrency_limit, limit)


def _create_process_pool(client: "SyncPrefectClient", pool_name: str, limit: int) -> bool:
    """Create a process pool; return False when another caller created it first."""
    try:
        client.create_work_pool(
            WorkPoolCreate(
                name=pool_name,
                type=LOCAL_POOL_TYPE,
                base_job_template=ProcessWorker.get_default_base_job_template(),
                concurrency_limit=limit,
            )
        )
    except ObjectAlreadyExists:
        return False
    logger.info("Created work pool %s (type %s, concurrency limit %d)", pool_name, LOCAL_POOL_TYPE, limit)
    return True
