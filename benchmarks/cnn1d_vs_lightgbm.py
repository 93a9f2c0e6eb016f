"""Benchmark of the two model types: macro-F1 and CPU seconds of cnn1d against LightGBM, device by device.

Usage, from the repository root::

    python benchmarks/cnn1d_vs_lightgbm.py > cnn1d-vs-lightgbm.json
    python benchmarks/cnn1d_vs_lightgbm.py --compare-devices 6

The script derives a fleet from the real CWRU sample (27 devices by default)
and builds its dataset once, untimed. It then trains each compared device
twice with `train_and_gate`, once from a fleet file with
`[defaults] model_type = "lightgbm"` and once with `model_type = "cnn1d"`,
both with default parameters. In every repeat each model type works on a
fresh copy of the dataset, so no model is gated against another's champion.
One device of each type is trained untimed first, so no timed device pays
the first import of LightGBM, PyTorch or the ONNX exporters.

Per device and model type it reports the macro-F1 on the device's
evaluation windows and the wall and CPU seconds of `train_and_gate`, which
trains, exports to ONNX, checks parity, registers and gates. CPU seconds are
`time.process_time` of this process, so they count every thread. Times are
the median over ``--repeats``. Devices run one after the other, LightGBM then
cnn1d, each on ``--threads`` threads. Training is seeded, so the macro-F1 of
a device is expected to be the same in every repeat; the per-run values are
kept in ``runs``. The result is one JSON object on stdout; progress goes to
stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import logging
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

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
    spread_subset,
    watched,
)

from blocks.storage import LocalStorage
from flows.build_dataset import build_dataset
from tasks.dataset import read_dataset_manifest
from tasks.device_training import train_and_gate
from tasks.fleet import FleetConfig, load_fleet
from tasks.store import Store

logger = logging.getLogger("benchmarks")

MODEL_TYPES = ("lightgbm", "cnn1d")
# A model below the gate's floor is "kept_champion" but was trained; "skipped_unchanged" and "failed" were not.
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
    parser.add_argument("--devices", type=positive_int, default=27, help="devices in the derived fleet, 1 to 200 (default 27)")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="seed of the derived fleet (default 0)")
    parser.add_argument(
        "--compare-devices",
        type=non_negative_int,
        default=0,
        help="devices to train with both model types, spread evenly over the fleet; 0 means all (default 0)",
    )
    parser.add_argument("--threads", type=positive_int, default=1, help="CPU threads per model (default 1)")
    parser.add_argument("--repeats", type=positive_int, default=1, help="trainings of each device and model type; medians are reported (default 1)")
    parser.add_argument(
        "--quiet-cpu-pct",
        type=float,
        default=30.0,
        help="before each timed training, wait until the machine's CPU use over one second is at most this percent (default 30)",
    )
    parser.add_argument(
        "--quiet-wait-s",
        type=float,
        default=10.0,
        help="maximum wait for that quiet second, in seconds, after which the training starts anyway (default 10, 0: no wait)",
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
    return parser.parse_args(argv)


def run_benchmark(args: argparse.Namespace, *, work_dir: Path) -> dict[str, Any]:
    """Build the dataset once, train every compared device with both model types and return the result object."""
    fleets = {model_type: load_fleet(write_fleet_file(work_dir, model_type)) for model_type in MODEL_TYPES}
    template = work_dir / "template"
    manifest = derive_benchmark_fleet(args.source_manifest, n_devices=args.devices, seed=args.seed, work_dir=work_dir)
    dataset = build_template_dataset(manifest, fleet=fleets["lightgbm"], root=template)
    devices = sorted(dataset["devices"])
    compared = spread_subset(devices, args.compare_devices or len(devices))
    for model_type, fleet in fleets.items():
        warm_up(devices[0], model_type, dataset=dataset, fleet=fleet, template=template, work_dir=work_dir, threads=args.threads)

    runs: dict[str, dict[str, list[dict[str, Any]]]] = {device_id: {m: [] for m in MODEL_TYPES} for device_id in compared}
    for repeat in range(args.repeats):
        logger.info("Repeat %d of %d", repeat + 1, args.repeats)
        with contextlib.ExitStack() as stack:
            stores = {model_type: stack.enter_context(store_copy(template, work_dir)) for model_type in MODEL_TYPES}
            for device_id in compared:
                for model_type in MODEL_TYPES:
                    runs[device_id][model_type].append(
                        time_training(device_id, model_type, dataset=dataset, fleet=fleets[model_type], store=stores[model_type], args=args)
                    )
    per_device = {
        device_id: {model_type: median_of_runs(model_runs) for model_type, model_runs in device_runs.items()}
        for device_id, device_runs in runs.items()
    }

    return {
        "benchmark": "cnn1d_vs_lightgbm",
        "command": command_line(),
        "machine": machine_info(),
        "workload": {
            "fleet_devices": len(devices),
            "compared_devices": compared,
            "dataset_version": dataset["version"],
            "threads_per_model": args.threads,
            "repeats": args.repeats,
            "params": {model_type: fleets[model_type].device(compared[0]).train.params for model_type in MODEL_TYPES},
        },
        "devices": per_device,
        "runs": runs,
        "summary": {model_type: summarize(per_device, model_type) for model_type in MODEL_TYPES},
        "cnn1d_at_least_lightgbm_devices": sum(
            1 for models in per_device.values() if models["cnn1d"]["macro_f1"] >= models["lightgbm"]["macro_f1"]
        ),
    }


def write_fleet_file(work_dir: Path, model_type: str) -> Path:
    """Write a fleet TOML that gives every device `model_type` with its default parameters."""
    path = work_dir / f"fleet-{model_type}.toml"
    path.write_text(f'[defaults]\nmodel_type = "{model_type}"\n')
    return path


def build_template_dataset(manifest: Path, *, fleet: FleetConfig, root: Path) -> dict[str, Any]:
    """Build the fleet's dataset under `root` with the `build-dataset` flow (untimed) and return its manifest."""
    state = build_dataset(
        str(manifest), storage=LocalStorage(basepath=str(root)), config=fleet.build_config(read_device_ids(manifest)), return_state=True
    )
    version = flow_result(state, name="build-dataset")["version"]
    logger.info("Built dataset %s under %s (untimed set-up)", version, root)
    return read_dataset_manifest(Store("file", root.as_posix()), version)


def read_device_ids(manifest: Path) -> list[str]:
    with manifest.open(newline="") as handle:
        return sorted({row["device_id"] for row in csv.DictReader(handle)})


@contextlib.contextmanager
def store_copy(template: Path, work_dir: Path) -> Iterator[Store]:
    """Yield a store on a fresh copy of `template` and delete the copy afterwards."""
    root = Path(tempfile.mkdtemp(prefix="store-", dir=work_dir)) / "root"
    shutil.copytree(template, root)
    try:
        yield Store("file", root.as_posix())
    finally:
        shutil.rmtree(root.parent, ignore_errors=True)


def warm_up(
    device_id: str, model_type: str, *, dataset: dict[str, Any], fleet: FleetConfig, template: Path, work_dir: Path, threads: int
) -> None:
    """Train one device untimed on a throwaway copy of the dataset, so that no timed run pays first imports."""
    logger.info("Warm-up: %s on %s (untimed)", model_type, device_id)
    with store_copy(template, work_dir) as store:
        train_and_gate(store, dataset, fleet.device(device_id), gate=fleet.gate, num_threads=threads)


def time_training(
    device_id: str, model_type: str, *, dataset: dict[str, Any], fleet: FleetConfig, store: Store, args: argparse.Namespace
) -> dict[str, Any]:
    """Train, export and gate one device; return its macro-F1, wall seconds and this process's CPU seconds."""

    def timed() -> tuple[dict[str, Any], float, float]:
        cpu_started = time.process_time()
        started = time.perf_counter()
        record = train_and_gate(store, dataset, fleet.device(device_id), gate=fleet.gate, num_threads=args.threads)
        return record, time.perf_counter() - started, time.process_time() - cpu_started

    (record, wall_s, cpu_s), machine_cpu = watched(timed, args=args)
    if record["status"] not in TRAINED_STATUSES:
        raise SystemExit(f"{model_type} on {device_id} ended {record['status']}, so nothing was trained; fix that before benchmarking")
    logger.info("%s %s: macro-F1 %.3f, %.1f s wall, %.1f s CPU", device_id, model_type, record["metrics"]["macro_f1"], wall_s, cpu_s)
    return {
        "macro_f1": record["metrics"]["macro_f1"],
        "accuracy": record["metrics"]["accuracy"],
        "wall_s": wall_s,
        "cpu_s": cpu_s,
        "train_windows": record["windows"]["train"],
        "eval_windows": record["windows"]["eval"],
        "status": record["status"],
        "version": record["version"],
        **machine_cpu,
    }


def summarize(per_device: dict[str, dict[str, Any]], model_type: str) -> dict[str, float]:
    runs = [device_runs[model_type] for device_runs in per_device.values()]
    return {
        "macro_f1_mean": statistics.mean(run["macro_f1"] for run in runs),
        "macro_f1_min": min(run["macro_f1"] for run in runs),
        "wall_s_mean": statistics.mean(run["wall_s"] for run in runs),
        "cpu_s_mean": statistics.mean(run["cpu_s"] for run in runs),
        "cpu_s_max": max(run["cpu_s"] for run in runs),
    }


if __name__ == "__main__":
    raise SystemExit(main())
