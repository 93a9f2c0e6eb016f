"""Benchmark of fleet training: one model after the other against the `train-fleet` fan-out.

Usage, from the repository root::

    python benchmarks/fleet_training.py --repeats 3 > fleet-training.json

The script derives a fleet from the real CWRU sample (27 devices by default)
and builds its dataset once, untimed. Each timed run then trains, exports to
ONNX, checks and gates every device's LightGBM model:

- ``sequential_all_cores``: the manual baseline, `train_and_gate` for one
  device after the other in one process, each model on every CPU core.
- ``sequential_one_thread``: the same loop with one thread per model. It
  shows how much of the fan-out's gain comes from LightGBM making little use
  of a second thread on datasets of this size.
- ``thread_pool``: ``--concurrency`` devices at once in a plain
  `ThreadPoolExecutor`, on one thread each. This is the fan-out without
  Prefect, so the difference to ``fan_out`` is Prefect's cost.
- ``process_pool``: ``--concurrency`` devices at once in a
  `ProcessPoolExecutor` of fresh (spawned) processes. It shows what work
  that holds the GIL, such as the ONNX conversion, gains from processes.
  The worker start and imports are inside the timed run.
- ``fan_out``: the `train-fleet` flow in ephemeral mode, which trains
  ``--concurrency`` devices at once on one thread each.

Every timed run is a child process of this script and works on a fresh copy
of the dataset. So no run finds the models of another and skips them, and the
sequential modes run with no Prefect server beside them. A child first
trains one device in a throwaway copy (so that the timed run pays no first
imports of LightGBM, onnxmltools and onnxruntime) and, for the fan-out, starts
the ephemeral Prefect server. Then it waits, up to ``--quiet-wait-s``, for the
machine's CPU use to drop to ``--quiet-cpu-pct``, and times its mode. Repeats
are interleaved, so that a change in the load from other processes hits every
mode alike. Every mode must train every device (no failed or skipped device)
and register the same model versions, otherwise the script fails. The result
is one JSON object on stdout, and progress goes to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Sequence

# `dataset_build` imports `flows` first, which sets DO_NOT_TRACK and
# PREFECT_SERVER_ANALYTICS_ENABLED before anything imports Prefect.
from dataset_build import (
    add_common_arguments,
    build_with,
    command_line,
    configure_logging,
    derive_benchmark_fleet,
    emit_result,
    flow_result,
    fresh_folder,
    logger,
    machine_info,
    median_of_runs,
    positive_int,
    read_fleet_specs,
    reduction_pct,
    repeat_interleaved,
    run_timed_child,
    sequential_map,
    start_prefect_server,
    stopwatch,
    time_until_recorded,
    watched,
)

from tasks.dataset import read_dataset_manifest
from tasks.device_training import train_and_gate
from tasks.fleet import FleetConfig
from tasks.store import Store

MODES = ("sequential_all_cores", "sequential_one_thread", "thread_pool", "process_pool", "fan_out")
# A device whose model is below the gate's floor is "kept_champion", but it was
# still trained. "skipped_unchanged" means no training happened, "failed" an error.
TRAINED_STATUSES = ("promoted", "kept_champion")


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
    add_common_arguments(parser, child_modes=MODES)
    parser.add_argument(
        "--concurrency",
        type=positive_int,
        default=os.cpu_count() or 1,
        help="devices the fan-out trains at once (default: the CPU cores of this machine)",
    )
    parser.add_argument("--template", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--dataset-version", help=argparse.SUPPRESS)
    parser.add_argument("--store-root", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# --- the parent process -------------------------------------------------------------------


def run_benchmark(args: argparse.Namespace, *, argv: list[str], work_dir: Path) -> dict[str, Any]:
    """Build the dataset once, time every mode `args.repeats` times in child processes and return the result object."""
    fleet = FleetConfig(max_concurrency=args.concurrency)
    cores = os.cpu_count() or 1
    template = work_dir / "template"
    dataset = build_template_dataset(args, fleet=fleet, work_dir=work_dir, root=template)
    timed_run = functools.partial(time_on_copy, argv=argv, template=template, version=dataset["version"], work_dir=work_dir)

    runs = repeat_interleaved(MODES, timed_run, repeats=args.repeats)
    versions = {mode: set() for mode in MODES}
    for mode, mode_runs in runs.items():
        for run in mode_runs:
            versions[mode] |= {tuple(pair) for pair in run.pop("model_versions")}
    check_same_models(versions)
    median = {mode: median_of_runs(mode_runs) for mode, mode_runs in runs.items()}
    baseline_s = median["sequential_all_cores"]["wall_s"]
    return {
        "benchmark": "fleet_training",
        "command": command_line(),
        "machine": machine_info(),
        "workload": {
            "devices": len(dataset["devices"]),
            "model_type": "lightgbm",
            "dataset_version": dataset["version"],
            "windows": sum(p["rows"] for p in dataset["partitions"]),
            "fan_out_concurrency": fleet.concurrency,
            "pool_and_fan_out_threads_per_model": max(1, cores // fleet.concurrency),
            "sequential_threads_per_model": cores,
        },
        "repeats": args.repeats,
        "runs": runs,
        "median": median,
        "fastest_wall_s": {mode: min(run["wall_s"] for run in mode_runs) for mode, mode_runs in runs.items()},
        "reduction_vs_sequential_all_cores_pct": {
            mode: reduction_pct(baseline_s, values["wall_s"]) for mode, values in median.items() if mode != "sequential_all_cores"
        },
    }


def build_template_dataset(args: argparse.Namespace, *, fleet: FleetConfig, work_dir: Path, root: Path) -> dict[str, Any]:
    """Derive the fleet, build its dataset under `root` with the plain loop, and return the dataset manifest."""
    manifest = derive_benchmark_fleet(args.source_manifest, n_devices=args.devices, seed=args.seed, work_dir=work_dir)
    specs = read_fleet_specs(manifest)
    config = fleet.build_config(sorted({spec.device_id for spec in specs}))
    store = Store("file", root.as_posix())
    build = build_with(sequential_map, specs, config=config, store=store, manifest=manifest)
    logger.info("Built dataset %s: %d partitions in %.1f s (untimed set-up)", build["version"], build["partitions"], build["wall_s"])
    return read_dataset_manifest(store, build["version"])


def time_on_copy(mode: str, *, argv: list[str], template: Path, version: str, work_dir: Path) -> dict[str, Any]:
    with fresh_folder(work_dir) as folder:
        extra = ["--template", str(template), "--dataset-version", version, "--store-root", str(folder / "root")]
        return run_timed_child(mode, argv=argv, extra=extra, script=Path(__file__))


def check_same_models(versions: dict[str, set[tuple[str, str]]]) -> None:
    """Stop unless every mode registered the same model version for every device."""
    distinct = {frozenset(pairs) for pairs in versions.values()}
    if len(distinct) != 1:
        raise SystemExit(
            "the modes registered different model versions for the same dataset and fleet, so they did not do "
            f"the same work ({', '.join(f'{mode}: {len(pairs)} versions' for mode, pairs in versions.items())}). "
            "Check that tasks.train.training_key leaves the thread count out of the model version."
        )


# --- a child process: one timed run -------------------------------------------------------


def run_child(args: argparse.Namespace) -> int:
    """Copy the dataset, do the untimed set-up of `args.timed_run`, time it once and print the run record."""
    fleet = FleetConfig(max_concurrency=args.concurrency)
    shutil.copytree(args.template, args.store_root)
    store = Store("file", args.store_root.resolve().as_posix())
    dataset = read_dataset_manifest(store, args.dataset_version)
    device_ids = sorted(dataset["devices"])
    warm_up_training(device_ids[0], dataset=dataset, fleet=fleet, template=args.template)

    with contextlib.redirect_stdout(sys.stderr):
        if args.timed_run == "fan_out":
            run = time_fan_out(dataset["version"], store=store, fleet=fleet, args=args)
        else:
            run = time_pool_mode(args.timed_run, device_ids, dataset=dataset, store=store, fleet=fleet, args=args)
    print(json.dumps(run))
    return 0


def warm_up_training(device_id: str, *, dataset: dict[str, Any], fleet: FleetConfig, template: Path) -> None:
    """Train one device in a throwaway copy of the dataset, so that the timed run pays no first imports."""
    with tempfile.TemporaryDirectory(prefix="warm-up-") as folder:
        root = Path(folder) / "root"
        shutil.copytree(template, root)
        train_and_gate(Store("file", root.as_posix()), dataset, fleet.device(device_id), gate=fleet.gate, num_threads=1)


def time_pool_mode(
    mode: str,
    device_ids: list[str],
    *,
    dataset: dict[str, Any],
    store: Store,
    fleet: FleetConfig,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Time `train_and_gate` for every device, one after the other or `fleet.concurrency` at a time without Prefect."""
    train = trainer(mode, concurrency=fleet.concurrency)
    work = functools.partial(train, device_ids, dataset=dataset, store=store, fleet=fleet)

    (wall_s, records), machine = watched(functools.partial(stopwatch, work), args=args)
    check_all_trained(records, mode=mode)
    logger.info("%s: %.2f s wall", mode, wall_s)
    return {**training_run(wall_s, records), **machine}


def trainer(mode: str, *, concurrency: int) -> Callable[..., list[dict[str, Any]]]:
    """Return the function that trains every device the way `mode` names."""
    cores = os.cpu_count() or 1
    pooled_threads = max(1, cores // concurrency)
    if mode == "sequential_all_cores":
        return functools.partial(train_sequentially, num_threads=cores)
    if mode == "sequential_one_thread":
        return functools.partial(train_sequentially, num_threads=1)
    if mode == "thread_pool":
        return functools.partial(train_in_pool, functools.partial(ThreadPoolExecutor, concurrency), num_threads=pooled_threads)
    spawn = multiprocessing.get_context("spawn")
    return functools.partial(
        train_in_pool, functools.partial(ProcessPoolExecutor, concurrency, mp_context=spawn), num_threads=pooled_threads
    )


def train_sequentially(
    device_ids: list[str], *, dataset: dict[str, Any], store: Store, fleet: FleetConfig, num_threads: int
) -> list[dict[str, Any]]:
    return [
        train_and_gate(store, dataset, fleet.device(device_id), gate=fleet.gate, num_threads=num_threads)
        for device_id in device_ids
    ]


def train_in_pool(
    make_pool: Callable[[], Executor],
    device_ids: list[str],
    *,
    dataset: dict[str, Any],
    store: Store,
    fleet: FleetConfig,
    num_threads: int,
) -> list[dict[str, Any]]:
    """Train the devices on a new pool and shut it down, so that the start of a process pool counts too."""
    with make_pool() as pool:
        futures = [
            pool.submit(train_and_gate, store, dataset, fleet.device(device_id), gate=fleet.gate, num_threads=num_threads)
            for device_id in device_ids
        ]
        return [future.result() for future in futures]


def time_fan_out(dataset_version: str, *, store: Store, fleet: FleetConfig, args: argparse.Namespace) -> dict[str, Any]:
    """Time the `train-fleet` flow, and report the server start and the wait until it has recorded the run apart."""
    from blocks.storage import LocalStorage
    from flows.train_fleet import train_fleet

    server_start_s = start_prefect_server()
    run_flow = functools.partial(
        train_fleet, return_state=True, dataset_version=dataset_version, fleet=fleet, storage=LocalStorage(basepath=store.root)
    )
    (wall_s, state), machine = watched(functools.partial(stopwatch, run_flow), args=args)
    records = flow_result(state, name="train-fleet")
    check_all_trained(records, mode="fan-out")
    logger.info("fan-out, %d at a time: %.2f s wall", fleet.concurrency, wall_s)
    return {
        **training_run(wall_s, records),
        "recorded_after_s": time_until_recorded(state),
        "prefect_server_start_s": server_start_s,
        **machine,
    }


def training_run(wall_s: float, records: list[dict[str, Any]]) -> dict[str, Any]:
    """Summarize one timed run: wall time, each device's own seconds, the mean macro-F1 and the model versions."""
    device_seconds = [record["seconds"] for record in records]
    return {
        "wall_s": wall_s,
        "wall_per_device_s": wall_s / len(records),
        "device_mean_s": statistics.mean(device_seconds),
        "device_max_s": max(device_seconds),
        "devices": len(records),
        "macro_f1_mean": statistics.mean(record["metrics"]["macro_f1"] for record in records),
        "model_versions": sorted([record["device_id"], record["version"]] for record in records),
    }


def check_all_trained(records: list[dict[str, Any]], *, mode: str) -> None:
    untrained = [f"{r['device_id']} ({r['status']}: {r.get('reason', '')})" for r in records if r["status"] not in TRAINED_STATUSES]
    if untrained:
        raise SystemExit(
            f"{mode} did not train {len(untrained)} of {len(records)} devices: {', '.join(untrained)}. "
            "A run that skips devices is not comparable, so fix the failures before benchmarking."
        )


if __name__ == "__main__":
    raise SystemExit(main())
