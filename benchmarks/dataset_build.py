"""Benchmark of the dataset build: a plain loop against Dask and the `build-dataset` flow.

Usage, from the repository root::

    python benchmarks/dataset_build.py --repeats 3 > dataset-build.json
    python benchmarks/dataset_build.py --repeats 3 --windows-per-partition 4

The script derives a fleet from the real CWRU sample (27 devices by default).
It then times three ways of building the same dataset:

- ``plain_loop``: the manual baseline, one process calling `prepare_recording`
  and `extract_partition` in a loop, with no Prefect and no Dask.
- ``dask``: the same functions through ``client.map`` on a `LocalCluster` of
  ``--workers`` processes with one thread each. Cluster start and close are
  reported apart from the build.
- ``flow``: the `build-dataset` flow (Prefect batches over Dask), in ephemeral
  mode, with the split of its own ``seconds``.

With ``--per-task-partitions N`` (default 200) it also times one Prefect task
per partition (on Prefect's thread pool task runner) for N partitions spread
over the fleet, against the plain loop on the same N, and extrapolates both
linearly to all partitions.

Every timed run is a child process of this script with a fresh, empty storage
folder. So no run reuses the conditioned signals or the dataset of another,
and the modes without Prefect run with no Prefect server beside them (an idle
ephemeral server keeps part of a core busy). A child first does its untimed
set-up: imports, a warm-up, and for the Prefect modes the server start. Then
it waits, up to ``--quiet-wait-s``, for the machine's CPU use to drop to
``--quiet-cpu-pct``, and times its mode. Repeats are interleaved (loop, Dask,
flow, loop, ...), so that a change in the load from other processes hits every
mode alike. The modes must write identical datasets (same partition keys and
content hashes), otherwise the script fails. The result is one JSON object on
stdout, and progress goes to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import json
import logging
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.metadata import PackageNotFoundError, version as package_version
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence, TypeVar

import psutil

# Importing `flows` sets DO_NOT_TRACK and PREFECT_SERVER_ANALYTICS_ENABLED
# before anything imports Prefect, here and in the child processes.
import flows  # noqa: F401  (imported for its environment set-up)
from tasks.dataset import (
    BuildConfig,
    build_manifest,
    commit_dataset,
    dataset_version,
    drop_duplicates,
    extract_partition,
    plan_partitions,
    prepare_recording,
    read_dataset_manifest,
)
from tasks.fixtures import MAX_DEVICES, derive_fleet
from tasks.recordings import RecordingSpec, read_manifest
from tasks.store import Store

logger = logging.getLogger("benchmarks")

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE_MANIFEST = REPO_ROOT / "data" / "sample" / "cwru" / "recordings.csv"
PACKAGES = (
    "prefect",
    "prefect-dask",
    "dask",
    "distributed",
    "numpy",
    "pandas",
    "pyarrow",
    "scipy",
    "lightgbm",
    "onnx",
    "onnxruntime",
    "onnxmltools",
)
# The flush intervals change how busy the ephemeral Prefect server keeps a core
# between flow runs, so the result records them.
REPORTED_ENVIRONMENT = (
    "DO_NOT_TRACK",
    "PREFECT_SERVER_ANALYTICS_ENABLED",
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_FLUSH_INTERVAL",
    "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_FLUSH_INTERVAL",
    "OMP_NUM_THREADS",
    "OMP_WAIT_POLICY",
)
MODES = ("plain_loop", "dask", "flow")
SUBSET_MODES = ("subset_plain_loop", "subset_prefect_tasks")
# A timed run on a busy 2-core machine takes up to a few minutes, so one that
# runs this long has hung.
CHILD_TIMEOUT_S = 1200

T = TypeVar("T")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print its JSON result to stdout."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    configure_logging()
    if args.timed_run:
        return run_child(args)

    work_dir = Path(tempfile.mkdtemp(prefix="daqflow-bench-", dir=args.work_dir))
    try:
        result = run_benchmark(args, argv=argv, work_dir=work_dir)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    emit_result(result, output=args.output)
    return 0


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser, child_modes=MODES + SUBSET_MODES)
    parser.add_argument(
        "--windows-per-partition", type=positive_int, default=8, help="windows per Parquet partition (default 8)"
    )
    parser.add_argument("--workers", type=positive_int, default=2, help="Dask worker processes, one thread each (default 2)")
    parser.add_argument("--batches", type=positive_int, default=4, help="Prefect tasks of the build-dataset flow (default 4)")
    parser.add_argument(
        "--per-task-partitions",
        type=non_negative_int,
        default=200,
        help="partitions for the run with one Prefect task per partition, or 0 to skip that run (default 200)",
    )
    parser.add_argument("--fleet-manifest", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--store-root", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def add_common_arguments(parser: argparse.ArgumentParser, *, child_modes: tuple[str, ...]) -> None:
    """Add the options that both benchmark scripts take, and the hidden option that makes a child process."""
    parser.add_argument(
        "--devices", type=device_count, default=27, help=f"devices in the derived fleet, 1 to {MAX_DEVICES} (default 27)"
    )
    parser.add_argument("--seed", type=non_negative_int, default=0, help="seed of the derived fleet (default 0)")
    parser.add_argument("--repeats", type=positive_int, default=3, help="timed runs of each mode; medians are reported (default 3)")
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
        "--source-manifest",
        type=Path,
        default=SAMPLE_MANIFEST,
        help="recordings manifest the fleet is derived from (default: the CWRU sample)",
    )
    parser.add_argument(
        "--work-dir", type=Path, default=None, help="folder for the temporary fleet and datasets (default: the system temp folder)"
    )
    parser.add_argument("--output", type=Path, default=None, help="also write the JSON result to this file")
    parser.add_argument("--timed-run", choices=child_modes, help=argparse.SUPPRESS)


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text}")
    return value


def device_count(text: str) -> int:
    value = positive_int(text)
    if value > MAX_DEVICES:
        raise argparse.ArgumentTypeError(f"expected at most {MAX_DEVICES} devices, which derive_fleet supports, got {text}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 0, got {text}")
    return value


def configure_logging() -> None:
    """Send progress to stderr and keep Dask's worker start and stop messages out of it.

    Importing Prefect configures the root logger, so the benchmark logger
    gets its own handler.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    logging.getLogger("distributed").setLevel(logging.WARNING)


# --- the parent process -------------------------------------------------------------------


def run_benchmark(args: argparse.Namespace, *, argv: list[str], work_dir: Path) -> dict[str, Any]:
    """Derive the fleet, time every mode `args.repeats` times in child processes and return the result object."""
    manifest = derive_benchmark_fleet(args.source_manifest, n_devices=args.devices, seed=args.seed, work_dir=work_dir)
    read_fleet_specs(manifest)
    timed_run = functools.partial(time_in_fresh_store, argv=argv, manifest=manifest, work_dir=work_dir)

    runs = repeat_interleaved(MODES, timed_run, repeats=args.repeats)
    check_identical_datasets({run.pop("dataset_digest") for mode_runs in runs.values() for run in mode_runs})
    median = {mode: median_of_runs(mode_runs) for mode, mode_runs in runs.items()}
    result = {
        "benchmark": "dataset_build",
        "command": command_line(),
        "machine": machine_info(),
        "workload": workload_info(median["plain_loop"], devices=args.devices, args=args),
        "repeats": args.repeats,
        "runs": runs,
        "median": median,
        "fastest_wall_s": {mode: min(run["wall_s"] for run in mode_runs) for mode, mode_runs in runs.items()},
        "reduction_vs_plain_loop_pct": dataset_reductions(median),
    }
    if args.per_task_partitions:
        subset_runs = repeat_interleaved(SUBSET_MODES, timed_run, repeats=args.repeats)
        result["prefect_per_partition"] = per_partition_summary(subset_runs, args=args)
    return result


def repeat_interleaved(
    modes: Sequence[str], timed_run: Callable[[str], dict[str, Any]], *, repeats: int
) -> dict[str, list[dict[str, Any]]]:
    """Call `timed_run` for every mode in turn, `repeats` rounds, and return the runs by mode."""
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
    for repeat in range(repeats):
        logger.info("Round %d of %d", repeat + 1, repeats)
        for mode in modes:
            runs[mode].append(timed_run(mode))
    return runs


def time_in_fresh_store(mode: str, *, argv: list[str], manifest: Path, work_dir: Path) -> dict[str, Any]:
    with fresh_folder(work_dir) as root:
        return run_timed_child(mode, argv=argv, extra=["--fleet-manifest", str(manifest), "--store-root", str(root)])


def run_timed_child(mode: str, *, argv: list[str], extra: list[str], script: Path = Path(__file__)) -> dict[str, Any]:
    """Run one timed run of `mode` in a child process of `script`, and return the run record it prints.

    The child's stderr goes to this process's stderr, so its errors show there.
    """
    command = [sys.executable, str(script), *argv, "--timed-run", mode, *extra]
    try:
        completed = subprocess.run(command, stdout=subprocess.PIPE, text=True, timeout=CHILD_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise SystemExit(
            f"the timed run of {mode} did not finish within {CHILD_TIMEOUT_S} s. Check the machine's load, "
            "or lower --devices."
        ) from None
    if completed.returncode != 0:
        raise SystemExit(
            f"the timed run of {mode} failed with exit code {completed.returncode}. Its error is in the log above. "
            f"Command: {shlex.join(command)}"
        )
    return json.loads(completed.stdout.strip().splitlines()[-1])


def derive_benchmark_fleet(source_manifest: Path, *, n_devices: int, seed: int, work_dir: Path) -> Path:
    """Derive the benchmark fleet from real recordings and return its manifest path."""
    if not source_manifest.is_file():
        raise SystemExit(
            f"source manifest {source_manifest} not found. Run from a daqflow checkout or pass --source-manifest."
        )
    manifest = derive_fleet(source_manifest, n_devices=n_devices, out_dir=work_dir / "fleet", seed=seed)
    logger.info("Derived a fleet of %d devices from %s into %s", n_devices, source_manifest, manifest)
    return manifest


def read_fleet_specs(manifest: Path) -> list[RecordingSpec]:
    """Read the fleet manifest, and stop unless every row is valid, because every mode must get the same inputs."""
    specs, quarantined = read_manifest(str(manifest))
    if quarantined:
        reasons = "; ".join(f"{row.path}: {row.message}" for row in quarantined)
        raise SystemExit(f"fleet manifest {manifest} has {len(quarantined)} invalid rows: {reasons}. Fix the source manifest.")
    return specs


@contextlib.contextmanager
def fresh_folder(work_dir: Path) -> Iterator[Path]:
    """Yield a new, empty folder under `work_dir` and delete it afterwards."""
    root = Path(tempfile.mkdtemp(prefix="store-", dir=work_dir))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


# --- a child process: one timed run -------------------------------------------------------


def run_child(args: argparse.Namespace) -> int:
    """Do the untimed set-up of `args.timed_run`, time it once and print the run record as one JSON line."""
    timers: dict[str, Callable[..., dict[str, Any]]] = {
        "plain_loop": time_plain_loop,
        "dask": time_dask,
        "flow": time_flow,
        "subset_plain_loop": functools.partial(time_subset, in_prefect_tasks=False),
        "subset_prefect_tasks": functools.partial(time_subset, in_prefect_tasks=True),
    }
    config = BuildConfig(windows_per_partition=args.windows_per_partition)
    store = Store("file", args.store_root.resolve().as_posix())
    specs = read_fleet_specs(args.fleet_manifest)
    with contextlib.redirect_stdout(sys.stderr):
        run = timers[args.timed_run](specs, config=config, store=store, args=args)
    print(json.dumps(run))
    return 0


def warm_up_in_process(specs: list[RecordingSpec], *, config: BuildConfig, manifest: Path) -> None:
    """Build a one-recording dataset in a throwaway folder, so that the timed run pays no first imports."""
    with tempfile.TemporaryDirectory(prefix="warm-up-") as root:
        build_with(sequential_map, specs[:1], config=config, store=Store("file", root), manifest=manifest)


def start_prefect_server() -> float:
    """Start the ephemeral Prefect server with a no-op flow run, and return the seconds it took."""
    from prefect import flow

    from flows._runtime import wait_until_recorded

    @flow(name="benchmark-noop")
    def noop_flow() -> None:
        return None

    started = time.perf_counter()
    state = noop_flow(return_state=True)
    wait_until_recorded(state.state_details.flow_run_id)
    return time.perf_counter() - started


def watched(timed: Callable[[], T], *, args: argparse.Namespace) -> tuple[T, dict[str, float]]:
    """Call `timed` once the machine is quiet, and return its result with the machine's CPU use.

    ``machine_cpu_pct_before`` is the CPU use of all processes in the second
    before the call, when this process is idle, so it is the load from others.
    ``machine_cpu_pct_during`` covers the whole call, including untimed steps
    such as the wait for the Prefect server. On 2 cores one busy process
    alone is 50 %.
    """
    before = wait_for_quiet_machine(max_cpu_pct=args.quiet_cpu_pct, max_wait_s=args.quiet_wait_s)
    psutil.cpu_percent(interval=None)
    result = timed()
    during = psutil.cpu_percent(interval=None)
    return result, {"machine_cpu_pct_before": before, "machine_cpu_pct_during": during}


def wait_for_quiet_machine(*, max_cpu_pct: float, max_wait_s: float) -> float:
    """Sample the CPU use over one second until it is at most `max_cpu_pct` or `max_wait_s` has passed.

    Returns:
        The CPU use of the last sample, in percent of all cores.
    """
    deadline = time.monotonic() + max_wait_s
    busy = psutil.cpu_percent(interval=1.0)
    while busy > max_cpu_pct and time.monotonic() < deadline:
        busy = psutil.cpu_percent(interval=1.0)
    if busy > max_cpu_pct:
        logger.info("Machine still %.0f %% busy after %.0f s of waiting; timing anyway", busy, max_wait_s)
    return busy


def sequential_map(function: Callable[..., Any], items: list[Any], **kwargs: Any) -> list[Any]:
    return [function(item, **kwargs) for item in items]


def build_with(
    map_function: Callable[..., list[Any]],
    specs: list[RecordingSpec],
    *,
    config: BuildConfig,
    store: Store,
    manifest: Path,
) -> dict[str, Any]:
    """Build and commit a dataset, running the per-recording and per-partition work through `map_function`.

    Returns:
        Seconds per step, the summed seconds the partitions reported, and counts.
    """
    started = time.perf_counter()
    prepared = map_function(prepare_recording, specs, config=config, store=store)
    prepare_s = time.perf_counter() - started

    accepted = [record for record in prepared if "quarantined" not in record]
    accepted, duplicates = drop_duplicates(accepted)
    quarantined = [record["quarantined"] for record in prepared if "quarantined" in record] + duplicates
    version = dataset_version(accepted, config)
    partitions = plan_partitions(accepted, config=config, version=version)

    step = time.perf_counter()
    written = map_function(extract_partition, partitions, store=store)
    extract_s = time.perf_counter() - step

    dataset = build_manifest(
        version=version,
        config=config,
        recordings=accepted,
        partitions=written,
        quarantined=quarantined,
        source_manifest=str(manifest),
    )
    commit_dataset(store, dataset)
    return {
        "wall_s": time.perf_counter() - started,
        "prepare_s": prepare_s,
        "extract_s": extract_s,
        "feature_code_s": sum(record["seconds"]["features"] for record in written),
        "partition_work_s": sum(record["seconds"]["total"] for record in written),
        "recordings": len(accepted),
        "quarantined": len(quarantined),
        "partitions": len(written),
        "windows": sum(record["rows"] for record in written),
        "version": version,
    }


def time_plain_loop(specs: list[RecordingSpec], *, config: BuildConfig, store: Store, args: argparse.Namespace) -> dict[str, Any]:
    """Time the manual baseline: every recording and partition in turn, in this process."""
    warm_up_in_process(specs, config=config, manifest=args.fleet_manifest)

    def timed() -> dict[str, Any]:
        cpu_started = time.process_time()
        run = build_with(sequential_map, specs, config=config, store=store, manifest=args.fleet_manifest)
        run["cpu_s"] = time.process_time() - cpu_started
        return run

    run, machine = watched(timed, args=args)
    logger.info("plain loop: %.2f s wall, %.2f s CPU", run["wall_s"], run["cpu_s"])
    return {**run, **machine, "dataset_digest": dataset_digest(store)}


def time_dask(specs: list[RecordingSpec], *, config: BuildConfig, store: Store, args: argparse.Namespace) -> dict[str, Any]:
    """Time the same functions through ``client.map`` on a fresh local cluster of `args.workers` processes."""
    from distributed import Client, LocalCluster

    def timed() -> dict[str, Any]:
        started = time.perf_counter()
        cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1, host="127.0.0.1", dashboard_address=None)
        client = Client(cluster, set_as_default=False)
        cluster_start_s = time.perf_counter() - started

        def client_map(function: Callable[..., Any], items: list[Any], **kwargs: Any) -> list[Any]:
            return client.gather(client.map(function, items, pure=False, **kwargs))

        try:
            run = build_with(client_map, specs, config=config, store=store, manifest=args.fleet_manifest)
        finally:
            closing = time.perf_counter()
            close_quietly(client, cluster)
            cluster_close_s = time.perf_counter() - closing
        wall_with_cluster_s = cluster_start_s + run["wall_s"] + cluster_close_s
        return {**run, "cluster_start_s": cluster_start_s, "cluster_close_s": cluster_close_s, "wall_with_cluster_s": wall_with_cluster_s}

    run, machine = watched(timed, args=args)
    logger.info("dask: %.2f s wall, %.2f s with cluster start and close", run["wall_s"], run["wall_with_cluster_s"])
    return {**run, **machine, "dataset_digest": dataset_digest(store)}


def close_quietly(client: Any, cluster: Any) -> None:
    """Close a client and its cluster with Dask's logs muted, because workers that close first log a harmless CommClosedError."""
    distributed_logger = logging.getLogger("distributed")
    distributed_logger.setLevel(logging.CRITICAL)
    try:
        client.close()
        cluster.close()
    finally:
        distributed_logger.setLevel(logging.WARNING)


def time_flow(specs: list[RecordingSpec], *, config: BuildConfig, store: Store, args: argparse.Namespace) -> dict[str, Any]:
    """Time the `build-dataset` flow, which starts and closes its own local cluster.

    ``prefect_overhead_s`` is the wall time outside the cluster start and the
    two Dask steps: flow and task run bookkeeping, artifacts, manifest
    writing and the cluster close. `specs` is unused because the flow reads
    the manifest itself.
    """
    from blocks.compute import DaskCompute
    from blocks.storage import LocalStorage
    from flows.build_dataset import build_dataset

    server_start_s = start_prefect_server()

    run_flow = functools.partial(
        build_dataset,
        return_state=True,
        manifest=str(args.fleet_manifest),
        storage=LocalStorage(basepath=store.root),
        compute=DaskCompute(n_workers=args.workers, threads_per_worker=1),
        config=config,
        n_batches=args.batches,
    )
    (wall_s, state), machine = watched(functools.partial(stopwatch, run_flow), args=args)
    summary = flow_result(state, name="build-dataset")
    seconds = summary["seconds"]
    dask_steps_s = seconds["prepare_recordings"] + seconds["extract_features"]
    logger.info("flow: %.2f s wall", wall_s)
    return {
        "wall_s": wall_s,
        "flow_total_s": seconds["total"],
        "cluster_start_s": seconds["cluster_start"],
        "prepare_s": seconds["prepare_recordings"],
        "extract_s": seconds["extract_features"],
        "dask_steps_s": dask_steps_s,
        "prefect_overhead_s": wall_s - seconds["cluster_start"] - dask_steps_s,
        "feature_code_s": seconds["feature_code"],
        "recorded_after_s": time_until_recorded(state),
        "prefect_server_start_s": server_start_s,
        "partitions": summary["partitions"],
        "windows": summary["windows"],
        "version": summary["version"],
        **machine,
        "dataset_digest": dataset_digest(store),
    }


def flow_result(state: Any, *, name: str) -> Any:
    """Return the result of a finished flow run, or stop the benchmark if it did not complete."""
    if not state.is_completed():
        raise SystemExit(f"flow run {name} ({state.state_details.flow_run_id}) ended {state.name}: {state.message}")
    return state.result()


def time_until_recorded(state: Any) -> float:
    """Wait until the server has recorded the flow run's task runs, and return the seconds waited."""
    from flows._runtime import wait_until_recorded

    started = time.perf_counter()
    wait_until_recorded(state.state_details.flow_run_id)
    return time.perf_counter() - started


def time_subset(
    specs: list[RecordingSpec], *, config: BuildConfig, store: Store, args: argparse.Namespace, in_prefect_tasks: bool
) -> dict[str, Any]:
    """Time the extraction of `args.per_task_partitions` partitions, in a plain loop or as one Prefect task each.

    The tasks run on Prefect's `ThreadPoolTaskRunner` with ``--workers``
    threads in this process. A `DaskTaskRunner` does not work in ephemeral
    mode, because each Dask worker would start a Prefect server of its own.
    The recordings are prepared, and the first partition extracted, untimed.
    """
    partitions = plan_prepared_partitions(specs, config=config, store=store)
    subset = spread_subset(partitions, args.per_task_partitions)
    extract_partition(subset[0], store=store)
    run: dict[str, Any] = {"partitions": len(subset), "of_partitions": len(partitions)}
    if in_prefect_tasks:
        run["prefect_server_start_s"] = start_prefect_server()
        work = functools.partial(extract_in_prefect_tasks, subset, store=store, threads=args.workers)
    else:
        work = functools.partial(sequential_map, extract_partition, subset, store=store)

    (run["wall_s"], outcome), machine = watched(functools.partial(stopwatch, work), args=args)
    if in_prefect_tasks:
        run["recorded_after_s"] = time_until_recorded(outcome)
    logger.info("%d partitions%s: %.2f s wall", len(subset), " as Prefect tasks" if in_prefect_tasks else "", run["wall_s"])
    return {**run, **machine}


def stopwatch(function: Callable[[], T]) -> tuple[float, T]:
    """Call `function` and return the wall seconds it took with its result."""
    started = time.perf_counter()
    result = function()
    return time.perf_counter() - started, result


def extract_in_prefect_tasks(partitions: list[dict[str, Any]], *, store: Store, threads: int) -> Any:
    """Run one Prefect task per partition in a flow on a thread pool, and return the flow run's final state."""
    from prefect import flow, task, unmapped
    from prefect.cache_policies import NO_CACHE
    from prefect.task_runners import ThreadPoolTaskRunner

    extract_task = task(extract_partition, name="extract-partition", cache_policy=NO_CACHE)

    @flow(name="benchmark-extract-per-partition", task_runner=ThreadPoolTaskRunner(max_workers=threads), validate_parameters=False)
    def extract_per_partition(partitions: list[dict[str, Any]], store: Store) -> int:
        futures = extract_task.map(partitions, store=unmapped(store))
        return len([future.result() for future in futures])

    state = extract_per_partition(partitions, store, return_state=True)
    flow_result(state, name="benchmark-extract-per-partition")
    return state


def plan_prepared_partitions(specs: list[RecordingSpec], *, config: BuildConfig, store: Store) -> list[dict[str, Any]]:
    prepared = sequential_map(prepare_recording, specs, config=config, store=store)
    accepted, _duplicates = drop_duplicates([record for record in prepared if "quarantined" not in record])
    return plan_partitions(accepted, config=config, version=dataset_version(accepted, config))


def spread_subset(items: list[Any], count: int) -> list[Any]:
    """Pick `count` items at even steps, so that every device is in the subset."""
    if count >= len(items):
        return list(items)
    step = len(items) / count
    return [items[int(index * step)] for index in range(count)]


def dataset_digest(store: Store) -> str:
    """Return a hash of the latest dataset's version, partition keys and partition content hashes."""
    dataset = read_dataset_manifest(store)
    contents = [(p["key"], p["content_sha256"]) for p in dataset["partitions"]]
    return hashlib.sha256(json.dumps([dataset["version"], contents]).encode()).hexdigest()


# --- results ------------------------------------------------------------------------------


def check_identical_datasets(digests: set[str]) -> None:
    if len(digests) != 1:
        raise SystemExit(
            f"the timed runs wrote {len(digests)} different datasets from the same recordings and configuration. "
            "The modes did not do the same work, so their times are not comparable. Look for nondeterminism in "
            "tasks.dataset before benchmarking."
        )


def per_partition_summary(runs: dict[str, list[dict[str, Any]]], *, args: argparse.Namespace) -> dict[str, Any]:
    """Summarize the subset runs, with a linear extrapolation to all partitions that is an estimate, not a measurement."""
    median = {mode: median_of_runs(mode_runs) for mode, mode_runs in runs.items()}
    subset, total = median["subset_plain_loop"]["partitions"], median["subset_plain_loop"]["of_partitions"]
    per_partition_s = {mode: values["wall_s"] / subset for mode, values in median.items()}
    return {
        "partitions": subset,
        "of_partitions": total,
        "task_runner": f"prefect.task_runners.ThreadPoolTaskRunner(max_workers={args.workers})",
        "runs": runs,
        "median": median,
        "wall_per_partition_ms": {mode: 1000 * seconds for mode, seconds in per_partition_s.items()},
        "extrapolated_wall_all_partitions_s": {mode: seconds * total for mode, seconds in per_partition_s.items()},
    }


def median_of_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Return the median of every numeric field that varies between `runs`, and the first run's other fields."""
    merged: dict[str, Any] = {}
    for key, value in runs[0].items():
        values = [run[key] for run in runs]
        if len(set(values)) > 1 and isinstance(value, (int, float)) and not isinstance(value, bool):
            merged[key] = statistics.median(values)
        else:
            merged[key] = value
    return merged


def reduction_pct(baseline_s: float, other_s: float) -> float:
    """Return how much less wall time `other_s` took than `baseline_s`, in percent (negative: slower)."""
    return 100.0 * (1.0 - other_s / baseline_s)


def dataset_reductions(median: dict[str, dict[str, Any]]) -> dict[str, float]:
    baseline = median["plain_loop"]["wall_s"]
    return {
        "dask_build_only": reduction_pct(baseline, median["dask"]["wall_s"]),
        "dask_with_cluster_start_and_close": reduction_pct(baseline, median["dask"]["wall_with_cluster_s"]),
        "flow": reduction_pct(baseline, median["flow"]["wall_s"]),
    }


def workload_info(run: dict[str, Any], *, devices: int, args: argparse.Namespace) -> dict[str, Any]:
    return {
        "devices": devices,
        "recordings": run["recordings"],
        "partitions": run["partitions"],
        "windows": run["windows"],
        "windows_per_partition": args.windows_per_partition,
        "window_length": BuildConfig().features.window_length,
        "dask_workers": args.workers,
        "flow_batches": args.batches,
        "dataset_version": run["version"],
    }


def machine_info() -> dict[str, Any]:
    """Describe the machine and the installed package versions."""
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_at_end": os.getloadavg(),
        "packages": {name: installed_version(name) for name in PACKAGES},
        "environment": {name: os.environ.get(name) for name in REPORTED_ENVIRONMENT},
    }


def cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def installed_version(name: str) -> str | None:
    try:
        return package_version(name)
    except PackageNotFoundError:
        return None


def command_line() -> str:
    return shlex.join(["python", os.path.relpath(sys.argv[0], REPO_ROOT), *sys.argv[1:]])


def emit_result(result: dict[str, Any], *, output: Path | None) -> None:
    text = json.dumps(result, indent=2, sort_keys=True)
    print(text)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
