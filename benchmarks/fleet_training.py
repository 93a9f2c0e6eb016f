"""Benchmark of fleet training: one model after the other against the `train-fleet` fan-out.

Usage, from the repository root::

    python benchmarks/fleet_training.py --repeats 3 > fleet-training.json

The script derives a fleet from the real CWRU sample (27 devices by default)
and builds its dataset once and trains one device, both untimed. Each timed run then trains, exports,
checks and gates every device's LightGBM model on a fresh copy of that
dataset, so no run finds the models of another and skips them:

- ``sequential_all_cores``: the manual baseline, `train_and_gate` for one
  device after the other in this process, each model on every CPU core.
- ``sequential_one_thread``: the same loop with one thread per model. It
  shows how much of the fan-out's gain comes from LightGBM scaling poorly
  with threads on datasets of this size.
- ``fan_out``: the `train-fleet` flow in ephemeral mode, which trains
  ``--concurrency`` devices at once on one thread each.

Repeats are interleaved, so that a change in the load from other processes
hits every mode alike. Before each timed run the script waits, up to
``--quiet-wait-s``, for the machine's CPU use to drop to ``--quiet-cpu-pct``,
and records the CPU use before and during the run. Every mode must train every device (no
failed or skipped device) and register the same model versions, otherwise the
script fails. The result is one JSON object on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

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
    machine_info,
    median_of_runs,
    positive_int,
    read_fleet_specs,
    reduction_pct,
    sequential_map,
    start_prefect_server,
    time_until_recorded,
    watched,
)

from blocks.storage import LocalStorage
from flows.train_fleet import train_fleet
from tasks.dataset import read_dataset_manifest
from tasks.device_training import train_and_gate
from tasks.fleet import FleetConfig
from tasks.store import Store

logger = logging.getLogger("benchmarks")

# A device whose model is below the gate's floor is "kept_champion"; it was
# still trained. "skipped_unchanged" means no training happened, "failed" an error.
TRAINED_STATUSES = ("promoted", "kept_champion")


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
    add_common_arguments(parser)
    parser.add_argument(
        "--concurrency",
        type=positive_int,
        default=os.cpu_count() or 1,
        help="devices the fan-out trains at once (default: the CPU cores of this machine)",
    )
    return parser.parse_args(argv)


def run_benchmark(args: argparse.Namespace, *, work_dir: Path) -> dict[str, Any]:
    """Build the dataset once, run every mode `args.repeats` times and return the result object."""
    fleet = FleetConfig(max_concurrency=args.concurrency)
    cores = os.cpu_count() or 1
    template = work_dir / "template"
    dataset = build_template_dataset(args, fleet=fleet, work_dir=work_dir, root=template)
    device_ids = sorted(dataset["devices"])
    warm_up_training(device_ids[0], dataset=dataset, fleet=fleet, template=template, work_dir=work_dir)
    server_start_s = start_prefect_server()

    runs = time_modes(device_ids, dataset=dataset, fleet=fleet, template=template, work_dir=work_dir, args=args)
    median = {mode: median_of_runs(mode_runs) for mode, mode_runs in runs.items()}
    fastest = {mode: min(run["wall_s"] for run in mode_runs) for mode, mode_runs in runs.items()}
    baseline_s = median["sequential_all_cores"]["wall_s"]
    return {
        "benchmark": "fleet_training",
        "command": command_line(),
        "machine": machine_info(),
        "workload": {
            "devices": len(device_ids),
            "model_type": "lightgbm",
            "dataset_version": dataset["version"],
            "windows": sum(p["rows"] for p in dataset["partitions"]),
            "fan_out_concurrency": fleet.concurrency,
            "fan_out_threads_per_model": max(1, cores // fleet.concurrency),
            "sequential_threads_per_model": cores,
        },
        "repeats": args.repeats,
        "prefect_server_start_s": server_start_s,
        "runs": runs,
        "median": median,
        "fastest_wall_s": fastest,
        "reduction_vs_sequential_all_cores_pct": {
            mode: reduction_pct(baseline_s, values["wall_s"]) for mode, values in median.items() if mode != "sequential_all_cores"
        },
    }


def time_modes(
    device_ids: list[str],
    *,
    dataset: dict[str, Any],
    fleet: FleetConfig,
    template: Path,
    work_dir: Path,
    args: argparse.Namespace,
) -> dict[str, list[dict[str, Any]]]:
    """Time the modes in turn, `args.repeats` rounds; stop if they registered different models."""
    cores = os.cpu_count() or 1
    timers: dict[str, Callable[[Store], tuple[dict[str, Any], list[dict[str, Any]]]]] = {
        "sequential_all_cores": functools.partial(time_sequential, device_ids, dataset=dataset, fleet=fleet, num_threads=cores),
        "sequential_one_thread": functools.partial(time_sequential, device_ids, dataset=dataset, fleet=fleet, num_threads=1),
        "fan_out": functools.partial(time_fan_out, dataset["version"], fleet=fleet),
    }
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in timers}
    versions: dict[str, set[tuple[str, str]]] = {mode: set() for mode in timers}
    for repeat in range(args.repeats):
        logger.info("Repeat %d of %d", repeat + 1, args.repeats)
        for mode, timer in timers.items():
            with store_copy(template, work_dir) as store:
                (run, records), machine = watched(functools.partial(timer, store=store), args=args)
            runs[mode].append({**run, **machine})
            versions[mode] |= model_versions(records)
    check_same_models(versions)
    return runs


def build_template_dataset(args: argparse.Namespace, *, fleet: FleetConfig, work_dir: Path, root: Path) -> dict[str, Any]:
    """Derive the fleet and build its dataset under `root` with the plain loop; return the dataset manifest."""
    manifest = derive_benchmark_fleet(args.source_manifest, n_devices=args.devices, seed=args.seed, work_dir=work_dir)
    specs = read_fleet_specs(manifest)
    config = fleet.build_config(sorted({spec.device_id for spec in specs}))
    store = Store("file", root.as_posix())
    build = build_with(sequential_map, specs, config=config, store=store, manifest=manifest)
    logger.info("Built dataset %s: %d partitions in %.1f s (untimed set-up)", build["version"], build["partitions"], build["wall_s"])
    return read_dataset_manifest(store, build["version"])


@contextlib.contextmanager
def store_copy(template: Path, work_dir: Path) -> Iterator[Store]:
    """Yield a store on a fresh copy of `template` and delete the copy afterwards."""
    root = Path(tempfile.mkdtemp(prefix="store-", dir=work_dir)) / "root"
    shutil.copytree(template, root)
    try:
        yield Store("file", root.as_posix())
    finally:
        shutil.rmtree(root.parent, ignore_errors=True)


def warm_up_training(device_id: str, *, dataset: dict[str, Any], fleet: FleetConfig, template: Path, work_dir: Path) -> None:
    """Train one device untimed, so that no timed run pays the first import of LightGBM, onnxmltools and onnxruntime."""
    with store_copy(template, work_dir) as store:
        train_and_gate(store, dataset, fleet.device(device_id), gate=fleet.gate, num_threads=1)


def time_sequential(
    device_ids: list[str], *, dataset: dict[str, Any], store: Store, fleet: FleetConfig, num_threads: int
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Time `train_and_gate` for one device after the other, each on `num_threads` threads."""
    started = time.perf_counter()
    records = [
        train_and_gate(store, dataset, fleet.device(device_id), gate=fleet.gate, num_threads=num_threads)
        for device_id in device_ids
    ]
    wall_s = time.perf_counter() - started

    check_all_trained(records, mode=f"sequential, {num_threads} thread(s)")
    run = training_run(wall_s, records)
    logger.info("sequential on %d thread(s): %.2f s wall", num_threads, wall_s)
    return run, records


def time_fan_out(dataset_version: str, *, store: Store, fleet: FleetConfig) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Time the `train-fleet` flow; the wait until the server has recorded it is reported apart."""
    started = time.perf_counter()
    state = train_fleet(
        return_state=True, dataset_version=dataset_version, fleet=fleet, storage=LocalStorage(basepath=store.root)
    )
    wall_s = time.perf_counter() - started
    records = flow_result(state, name="train-fleet")
    recorded_after_s = time_until_recorded(state)

    check_all_trained(records, mode="fan-out")
    run = training_run(wall_s, records)
    run["recorded_after_s"] = recorded_after_s
    logger.info("fan-out, %d at a time: %.2f s wall", fleet.concurrency, wall_s)
    return run, records


def training_run(wall_s: float, records: list[dict[str, Any]]) -> dict[str, Any]:
    """Summarize one timed run: wall time, each device's own seconds, and the mean macro-F1."""
    device_seconds = [record["seconds"] for record in records]
    return {
        "wall_s": wall_s,
        "wall_per_device_s": wall_s / len(records),
        "device_mean_s": statistics.mean(device_seconds),
        "device_max_s": max(device_seconds),
        "devices": len(records),
        "macro_f1_mean": statistics.mean(record["metrics"]["macro_f1"] for record in records),
    }


def check_all_trained(records: list[dict[str, Any]], *, mode: str) -> None:
    untrained = [f"{r['device_id']} ({r['status']}: {r.get('reason', '')})" for r in records if r["status"] not in TRAINED_STATUSES]
    if untrained:
        raise SystemExit(
            f"{mode} did not train {len(untrained)} of {len(records)} devices: {', '.join(untrained)}. "
            "A run that skips devices is not comparable; fix the failures before benchmarking."
        )


def model_versions(records: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(record["device_id"], record["version"]) for record in records}


def check_same_models(versions: dict[str, set[tuple[str, str]]]) -> None:
    """Stop unless every mode registered the same model version for every device."""
    distinct = {frozenset(pairs) for pairs in versions.values()}
    if len(distinct) != 1:
        raise SystemExit(
            "the modes registered different model versions for the same dataset and fleet, so they did not do "
            f"the same work: {', '.join(f'{mode}: {len(pairs)} versions' for mode, pairs in versions.items())}. "
            "Check that training_key leaves the thread count out of the model version."
        )


if __name__ == "__main__":
    raise SystemExit(main())
