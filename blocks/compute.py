"""Compute block: the Dask cluster that runs per-partition work.

With no scheduler address the block starts a `distributed.LocalCluster` on
this machine, bound to 127.0.0.1 (scheduler and dashboard), and closes it when
the flow is done. With an address it connects to an existing cluster, for
example one started by `dask scheduler` / `dask worker` on a compute node or
by dask-kubernetes.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from contextlib import contextmanager
from typing import Iterator

from prefect.blocks.core import Block
from pydantic import Field

from blocks.loading import load_saved_block

logger = logging.getLogger(__name__)


class DaskCompute(Block):
    """Dask cluster for per-partition work: a local cluster or an existing scheduler."""

    _block_type_name = "daqflow Dask Compute"
    _description = "Dask cluster for per-partition work: a local cluster on 127.0.0.1, or an existing scheduler."

    scheduler_address: str | None = Field(
        default=None,
        description="Address of a running Dask scheduler, e.g. tcp://10.0.0.5:8786. Empty: start a local cluster.",
    )
    n_workers: int | None = Field(
        default=None,
        description="Worker processes of the local cluster. Empty: one per CPU core.",
    )
    threads_per_worker: int = Field(
        default=1,
        description="Threads per local worker process. Feature code is numpy-bound, so one thread per core avoids oversubscription.",
    )
    memory_limit: str = Field(
        default="auto",
        description="Memory limit per local worker, e.g. '4GiB'; 'auto' splits the machine's memory between workers.",
    )

    @contextmanager
    def scheduler(self) -> Iterator[str]:
        """Yield the address of a scheduler for the duration of the block.

        A local cluster started here is closed on exit; an existing scheduler
        is left running.
        """
        if self.scheduler_address:
            yield self.scheduler_address
            return

        from distributed import LocalCluster

        # NOTE: without an explicit address LocalCluster serves its dashboard
        # on 0.0.0.0:8787; keep it on loopback, and off when bokeh is absent.
        dashboard = "127.0.0.1:0" if importlib.util.find_spec("bokeh") else None
        n_workers = self.n_workers or os.cpu_count() or 1
        # Worker start and stop chatter at INFO hides the flow's own logs.
        logging.getLogger("distributed").setLevel(logging.WARNING)
        cluster = LocalCluster(
            n_workers=n_workers,
            threads_per_worker=self.threads_per_worker,
            processes=True,
            host="127.0.0.1",
            dashboard_address=dashboard,
            memory_limit=self.memory_limit,
        )
        logger.info("Started a local Dask cluster at %s with %d workers", cluster.scheduler_address, n_workers)
        try:
            yield cluster.scheduler_address
        finally:
            # Workers that close before the scheduler log a harmless
            # CommClosedError traceback; keep the shutdown quiet.
            logging.getLogger("distributed").setLevel(logging.CRITICAL)
            cluster.close()
            logging.getLogger("distributed").setLevel(logging.WARNING)


def resolve_compute(compute: "DaskCompute | str | None") -> DaskCompute:
    """Return a compute block from a block, a saved block's name, or None (local cluster)."""
    if compute is None:
        return DaskCompute()
    if isinstance(compute, DaskCompute):
        return compute
    return load_saved_block(compute, DaskCompute, default_type=DaskCompute)
