"""Benchmark of the nightly job: in this process against a Prefect server with process workers.

Usage, from the repository root::

    python benchmarks/server_vs_inprocess.py > server-vs-inprocess.json
    python benchmarks/server_vs_inprocess.py --modes in_process per_pool --repeats 2

The script derives a fleet from the real CWRU sample (27 devices by default,
all LightGBM) and times `nightly_retrain` on it in up to three modes. Every run
gets a fresh storage and edge folder, so that no run finds the dataset or the
models of another and every device is trained:

- ``in_process``: `nightly_retrain` called in this process against the
  ephemeral Prefect server, timed from the call to its return. Devices train
  as mapped tasks of `train-fleet`.
- ``per_pool``: `deployments.local.up` starts `prefect server` on 127.0.0.1
  with one process worker per work pool, polling every second, and the run is
  triggered with `run_deployment("nightly-retrain/nightly-retrain")`. It is
  timed from the trigger until the API reports a final state. `train-fleet`
  sends all devices to the CPU pool as one `train-device` run.
- ``per_device``: the server path with the fleet option
  `dispatch = "per_device"`, so every device is a `train-device` run of its own.

The server, its workers and the deployments start once, untimed
(``server_start_s``). Before each server run the storage and edge blocks are
saved again with a fresh folder. Repeats are interleaved. Every run must
publish every device, otherwise the script stops. The server stores its data
in SQLite unless PREFECT_API_DATABASE_CONNECTION_URL is set. The result is one
JSON object on stdout; progress goes to stderr.

Cost, measured on 2 shared cores with 27 devices: about 1.5 to 2.5 minutes
per run of ``in_process`` or ``per_pool``, and about 16 minutes per run of
``per_device``, whose device runs wait for one another on the CPU pool.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import shutil
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from uuid import UUID

from dataset_build import (
    SAMPLE_MANIFEST,
    command_line,
    configure_logging,
    derive_benchmark_fleet,
    emit_result,
    flow_result,
    machine_info,
    median_of_runs,
    non_negative_int,
    positive_int,
    start_prefect_server,
    time_until_recorded,
    watched,
)
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowFilter, FlowFilterName, FlowRunFilter, FlowRunFilterParentFlowRunId
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_URL, temporary_settings

from blocks import EDGE_BLOCK_NAME, STORAGE_BLOCK_NAME, register_blocks
from blocks.edge import EdgeTarget
from blocks.storage import LocalStorage
from deployments.deploy import deployment_specs
from deployments.local import down, up
from flows.nightly_retrain import nightly_retrain

logger = logging.getLogger("benchmarks")

MODES = ("in_process", "per_pool", "per_device")
SERVER_MODES = ("per_pool", "per_device")
NIGHTLY_DEPLOYMENT = "nightly-retrain/nightly-retrain"
DAQ_ID = "daq-01"
STAGES = ("build_dataset", "train_fleet", "publish_edge", "total")
LOG_TAIL_LINES = 30


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print its JSON result to stdout."""
    args = parse_args(argv)
    configure_logging()
    work_dir = Path(tempfile.mkdtemp(prefix="daqflow-bench-", dir=args.work_dir))
    try:
        with contextlib.redirect_stdout(sys.stderr):
            result = run_benchmark(args, work_dir=work_dir)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    emit_result(result, output=args.output)
    return 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=positive_int, default=27, help="devices in the derived fleet, 1 to 200 (default 27)")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="seed of the derived fleet (default 0)")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES), help="modes to time, in this order (default: all)")
    parser.add_argument("--repeats", type=positive_int, default=1, help="timed runs of each mode; medians are reported (default 1)")
    parser.add_argument(
        "--quiet-cpu-pct",
        type=float,
        default=30.0,
        help="before each timed run, wait until the machine's CPU use over one second is at most this percent (default 30)",
    )
    parser.add_argument(
        "--quiet-wait-s",
        type=float,
        default=10.0,
        help="maximum wait for that quiet second, in seconds, after which the run starts anyway (default 10, 0: no wait)",
    )
    parser.add_argument(
        "--run-timeout-s", type=positive_int, default=1800, help="seconds to wait for one server run to end (default 1800)"
    )
    parser.add_argument(
        "--source-manifest",
        type=Path,
        default=SAMPLE_MANIFEST,
        help="recordings manifest the fleet is derived from (default: the CWRU sample)",
    )
    parser.add_argument(
        "--work-dir", type=Path, default=None, help="folder for the temporary fleet and storage (default: the system temp folder)"
    )
    parser.add_argument("--output", type=Path, default=None, help="also write the JSON result to this file")
    return parser.parse_args(argv)


def run_benchmark(args: argparse.Namespace, *, work_dir: Path) -> dict[str, Any]:
    """Derive the fleet, run every mode `args.repeats` times and return the result object."""
    manifest = derive_benchmark_fleet(args.source_manifest, n_devices=args.devices, seed=args.seed, work_dir=work_dir)
    fleets = write_fleet_files(work_dir)
    server_modes = [mode for mode in args.modes if mode in SERVER_MODES]
    result: dict[str, Any] = {"benchmark": "server_vs_inprocess", "command": command_line(), "repeats": args.repeats}
    if "in_process" in args.modes:
        result["prefect_ephemeral_start_s"] = start_prefect_server()

    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in args.modes}
    with running_server(work_dir, manifest=manifest, fleet=fleets["per_pool"], enabled=bool(server_modes)) as server:
        if server is not None:
            result["server"] = {key: server[key] for key in ("database", "server_start_s")}
        for repeat in range(args.repeats):
            logger.info("Repeat %d of %d", repeat + 1, args.repeats)
            for mode in args.modes:
                root = Path(tempfile.mkdtemp(prefix=f"{mode}-", dir=work_dir))
                if mode == "in_process":
                    timed = functools.partial(time_in_process, manifest, fleet=fleets[mode], root=root)
                else:
                    timed = functools.partial(time_server_run, server, mode, fleet=fleets[mode], root=root, timeout_s=args.run_timeout_s)
                run, machine_cpu = watched(timed, args=args)
                runs[mode].append({**run, **machine_cpu})
                shutil.rmtree(root, ignore_errors=True)

    result.update(
        machine=machine_info(),
        workload={"devices": args.devices, "model_type": "lightgbm", "seed": args.seed},
        runs=runs,
        median={mode: median_of_runs(mode_runs) for mode, mode_runs in runs.items()},
    )
    return result


def write_fleet_files(work_dir: Path) -> dict[str, Path]:
    """Write one fleet TOML per mode; all devices keep the default LightGBM model."""
    fleets = {}
    for mode in MODES:
        dispatch = "per_device" if mode == "per_device" else "per_pool"
        path = work_dir / f"fleet-{mode}.toml"
        path.write_text(f'daq_id = "{DAQ_ID}"\ndispatch = "{dispatch}"\n')
        fleets[mode] = path
    return fleets


# --- in process ---------------------------------------------------------------------------


def time_in_process(manifest: Path, *, fleet: Path, root: Path) -> dict[str, Any]:
    """Time `nightly_retrain` in this process on unsaved blocks at `root`, so devices train as tasks here."""
    started = time.perf_counter()
    state = nightly_retrain(
        str(manifest),
        fleet=str(fleet),
        storage=LocalStorage(basepath=str(root)),
        edge_target=EdgeTarget(basepath=str(root / "edge")),
        return_state=True,
    )
    wall_s = time.perf_counter() - started
    summary = flow_result(state, name="nightly-retrain")
    recorded_after_s = time_until_recorded(state)

    check_all_published(summary, mode="in_process")
    run = {"wall_s": wall_s, **stage_seconds(summary), "recorded_after_s": recorded_after_s}
    logger.info("in_process: %.1f s wall (%s)", wall_s, format_stages(summary))
    return run


# --- on the server ------------------------------------------------------------------------


@contextlib.contextmanager
def running_server(work_dir: Path, *, manifest: Path, fleet: Path, enabled: bool) -> Iterator[dict[str, Any] | None]:
    """Start the server, workers and deployments under `work_dir/ops` and stop them on exit; yield None when not `enabled`."""
    if not enabled:
        yield None
        return

    home = work_dir / "ops"
    specs = deployment_specs(storage_block=STORAGE_BLOCK_NAME, edge_block=EDGE_BLOCK_NAME, fleet=str(fleet), manifest=str(manifest))
    started = time.perf_counter()
    try:
        info = up(home=home, port=free_port(), workdir=work_dir / "server-initial", specs=specs, fast_polling=True)
        info["server_start_s"] = time.perf_counter() - started
        logger.info("Server, workers and deployments up after %.1f s (database: %s)", info["server_start_s"], info["database"])
        yield {**info, "home": home}
    finally:
        down(home=home)


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def time_server_run(server: dict[str, Any], mode: str, *, fleet: Path, root: Path, timeout_s: float) -> dict[str, Any]:
    """Point the storage and edge blocks at `root`, trigger the nightly deployment and time it until it ends."""
    with temporary_settings(updates={PREFECT_API_URL: server["api_url"]}):
        register_blocks(root)
        started = time.perf_counter()
        flow_run = run_deployment(NIGHTLY_DEPLOYMENT, parameters={"fleet": str(fleet)}, timeout=0)
        flow_run = wait_for_final(flow_run.id, home=server["home"], timeout_s=timeout_s)
        wall_s = time.perf_counter() - started
        train_runs = train_device_runs(flow_run.id)

    if not flow_run.state.is_completed():
        raise SystemExit(f"{mode}: flow run {flow_run.name} ended {flow_run.state.name}: {flow_run.state.message}\n{log_tails(server['home'])}")
    summary = read_summary(root, flow_run.id)
    check_all_published(summary, mode=mode)
    run = {
        "wall_s": wall_s,
        **stage_seconds(summary),
        "created_to_running_s": seconds_between(flow_run.created, flow_run.start_time),
        "train_device_runs": len(train_runs),
        "train_device_created_to_running_median_s": statistics.median(seconds_between(r.created, r.start_time) for r in train_runs),
        "train_device_run_median_s": statistics.median(r.total_run_time.total_seconds() for r in train_runs),
    }
    logger.info("%s: %.1f s from trigger to final state (%s), %d train-device run(s)", mode, wall_s, format_stages(summary), len(train_runs))
    return run


def wait_for_final(flow_run_id: UUID, *, home: Path, timeout_s: float) -> FlowRun:
    """Poll the API every half second until the flow run is final; stop the benchmark after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            flow_run = client.read_flow_run(flow_run_id)
            if flow_run.state is not None and flow_run.state.is_final():
                return flow_run
            time.sleep(0.5)
    raise SystemExit(
        f"flow run {flow_run_id} of {NIGHTLY_DEPLOYMENT} timed out: no final state after {timeout_s:.0f} s. "
        f"Raise --run-timeout-s, or read the server and worker logs:\n{log_tails(home)}"
    )


def train_device_runs(nightly_id: UUID) -> list[FlowRun]:
    """Return the `train-device` flow runs that the `train-fleet` subflow of a nightly run dispatched."""
    with get_client(sync_client=True) as client:
        stages = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["train-fleet"])), flow_run_filter=children_of(nightly_id)
        )
        if not stages:
            raise SystemExit(
                f"nightly run {nightly_id} completed without a train-fleet subflow run, so its devices were not dispatched; "
                "check that the nightly-retrain deployment runs flows/nightly_retrain.py"
            )
        return client.read_flow_runs(flow_run_filter=children_of(stages[0].id))


def children_of(flow_run_id: UUID) -> FlowRunFilter:
    return FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id]))


def read_summary(root: Path, flow_run_id: UUID) -> dict[str, Any]:
    path = root / "runs" / str(flow_run_id) / "run-summary.json"
    if not path.is_file():
        raise SystemExit(f"run summary {path} not found, though flow run {flow_run_id} completed; check the storage block")
    return json.loads(path.read_text())


def log_tails(home: Path) -> str:
    parts = []
    for log in sorted(Path(home).glob("*.log")):
        lines = log.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
        parts.append(f"--- {log} ---\n" + "\n".join(lines))
    return "\n".join(parts)


# --- shared -------------------------------------------------------------------------------


def check_all_published(summary: dict[str, Any], *, mode: str) -> None:
    """Stop unless every device was trained and published; a skipped or failed device makes the run incomparable."""
    others = [f"{m['device_id']} ({m['status']}: {m.get('reason') or ''})" for m in summary["models"] if m["status"] != "published"]
    if others:
        raise SystemExit(f"{mode}: {len(others)} of {len(summary['models'])} devices were not published: {', '.join(others)}")


def stage_seconds(summary: dict[str, Any]) -> dict[str, float]:
    return {f"{stage}_s": summary["seconds"][stage] for stage in STAGES}


def format_stages(summary: dict[str, Any]) -> str:
    return ", ".join(f"{stage} {summary['seconds'][stage]:.1f} s" for stage in STAGES)


def seconds_between(earlier: Any, later: Any) -> float:
    return (later - earlier).total_seconds()


if __name__ == "__main__":
    raise SystemExit(main())
