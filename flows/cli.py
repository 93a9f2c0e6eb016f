"""The `daqflow` command line.

Heavy imports (Prefect, Dask) happen inside the subcommands, so that
`daqflow edge ...` runs on an edge box with only the edge runtime installed.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import sys
from pathlib import Path
from typing import Any, Sequence

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE_MANIFEST = REPO_ROOT / "data" / "sample" / "cwru" / "recordings.csv"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["edge"]:
        from edge.cli import main as edge_main

        return edge_main(argv[1:])

    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    return args.handler(args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="daqflow", description="DAQ recordings to per-device fault models and edge bundles.")
    commands = parser.add_subparsers(dest="command")

    build = commands.add_parser("build", help="build the dataset of a recordings manifest")
    build.add_argument("--manifest", required=True, help="recordings manifest CSV (path or fsspec URL)")
    _add_workdir(build)
    build.add_argument("--windows-per-partition", type=int, default=8, help="windows per Parquet partition (default 8)")
    build.add_argument("--batches", type=int, default=4, help="Prefect tasks the partitions are split into (default 4)")
    build.add_argument("--summary-json", type=Path, help="also write the summary JSON to this file")
    build.set_defaults(handler=_build)

    run = commands.add_parser("run", help="run the nightly retraining once: build, train, gate, publish")
    run.add_argument("--manifest", required=True, help="recordings manifest CSV (path or fsspec URL)")
    run.add_argument("--fleet", type=Path, help="fleet configuration TOML (default: one LightGBM model per device)")
    _add_workdir(run)
    run.add_argument("--summary-json", type=Path, help="also write the run summary JSON to this file")
    run.set_defaults(handler=_run)

    evaluate = commands.add_parser("evaluate", help="score the current champions on a labelled manifest")
    evaluate.add_argument("--manifest", required=True, help="labelled recordings manifest CSV")
    evaluate.add_argument("--fleet", type=Path, help="fleet configuration TOML the champions were trained with")
    _add_workdir(evaluate)
    evaluate.add_argument("--summary-json", type=Path, help="also write the report JSON to this file")
    evaluate.set_defaults(handler=_evaluate)

    fixtures = commands.add_parser("fixtures", help="generate test inputs")
    fixture_kinds = fixtures.add_subparsers(dest="fixture", required=True)
    fleet = fixture_kinds.add_parser("fleet", help="derive a fleet of devices from the real sample recordings")
    fleet.add_argument("--devices", type=int, default=27, help="number of devices (default 27)")
    fleet.add_argument("--out", type=Path, required=True, help="output folder for the raw files and recordings.csv")
    fleet.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    fleet.add_argument("--manifest", type=Path, default=SAMPLE_MANIFEST, help="source manifest (default: the sample)")
    fleet.set_defaults(handler=_fixtures_fleet)

    demo = commands.add_parser(
        "demo", help="derive a 27-device fleet from data/sample, run the nightly retraining on it, predict at the edge"
    )
    _add_workdir(demo)
    demo.add_argument("--devices", type=int, default=27, help="devices in the derived fleet (default 27)")
    demo.set_defaults(handler=_demo)

    up = commands.add_parser("up", help="start a Prefect server on 127.0.0.1, one worker per pool, and deploy the flows")
    up.add_argument("--port", type=int, default=4200, help="server port on 127.0.0.1 (default 4200)")
    _add_workdir(up)
    up.add_argument("--manifest", type=Path, default=SAMPLE_MANIFEST, help="recordings manifest of the nightly deployment (default: the sample)")
    up.add_argument("--fleet", type=Path, help="fleet TOML of the nightly deployment")
    up.add_argument("--webhook-url", help="send failure notifications to this webhook URL")
    up.add_argument("--fast-polling", action="store_true", help="workers poll every second instead of every 10 s")
    up.set_defaults(handler=_up)

    down = commands.add_parser("down", help="stop the server and workers that `daqflow up` started")
    _add_workdir(down)
    down.set_defaults(handler=_down)

    trigger = commands.add_parser("trigger", help="start a run of the nightly-retrain deployment now")
    trigger.add_argument("--port", type=int, default=4200, help="server port on 127.0.0.1 (default 4200)")
    trigger.add_argument("--wait", action="store_true", help="wait for the run to finish and print its state")
    trigger.set_defaults(handler=_trigger)

    commands.add_parser("edge", help="edge runtime: verify, predict, rollback (see `daqflow edge --help`)")
    return parser


def _add_workdir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workdir", type=Path, default=Path(".daqflow"), help="folder of the local storage block (default ./.daqflow)"
    )


def _run_flow(flow_fn, **parameters: Any) -> Any:
    """Run a flow, wait until the server has recorded it, and return its result.

    Raises SystemExit(1) when the flow run fails.
    """
    from flows._runtime import wait_until_recorded

    state = flow_fn(return_state=True, **parameters)
    wait_until_recorded(state.state_details.flow_run_id)
    if not state.is_completed():
        print(f"flow run {state.state_details.flow_run_id} ended {state.name}: {state.message}", file=sys.stderr)
        raise SystemExit(1)
    return state.result()


def _check_inputs(manifest: str, fleet: Path | None = None) -> str | None:
    """Return an error message when the manifest or fleet file is unusable, before any flow starts."""
    from tasks.fleet import load_fleet
    from tasks.recordings import ManifestError, read_manifest

    try:
        read_manifest(manifest)
        if fleet is not None:
            load_fleet(fleet)
    except (ManifestError, FileNotFoundError, ValueError) as error:
        return str(error)
    return None


def _input_error(message: str) -> int:
    print(f"daqflow: error: {message}", file=sys.stderr)
    return 2


def _build(args: argparse.Namespace) -> int:
    if error := _check_inputs(str(args.manifest)):
        return _input_error(error)
    from flows._runtime import configure_environment

    configure_environment()
    from blocks.storage import LocalStorage
    from flows.build_dataset import build_dataset
    from tasks.dataset import BuildConfig

    summary = _run_flow(
        build_dataset,
        manifest=str(args.manifest),
        storage=LocalStorage(basepath=str(args.workdir)),
        config=BuildConfig(windows_per_partition=args.windows_per_partition),
        n_batches=args.batches,
    )
    _print_dataset(summary)
    _write_json(args.summary_json, summary)
    return 0


def _run(args: argparse.Namespace) -> int:
    if error := _check_inputs(str(args.manifest), args.fleet):
        return _input_error(error)
    from flows._runtime import configure_environment

    configure_environment()
    from blocks.edge import EdgeTarget
    from blocks.storage import LocalStorage
    from flows.nightly_retrain import nightly_retrain

    summary = _run_flow(
        nightly_retrain,
        manifest=str(args.manifest),
        fleet=str(args.fleet) if args.fleet else None,
        storage=LocalStorage(basepath=str(args.workdir)),
        edge_target=EdgeTarget(basepath=str(args.workdir / "edge")),
    )
    _print_run(summary)
    _write_json(args.summary_json, summary)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    if error := _check_inputs(str(args.manifest), args.fleet):
        return _input_error(error)
    from flows._runtime import configure_environment

    configure_environment()
    from blocks.storage import LocalStorage
    from flows.evaluate import evaluate_champions

    report = _run_flow(
        evaluate_champions,
        manifest=str(args.manifest),
        storage=LocalStorage(basepath=str(args.workdir)),
        fleet=str(args.fleet) if args.fleet else None,
    )
    print(json.dumps({"models": report["models"]}, indent=2, sort_keys=True))
    _write_json(args.summary_json, report)
    return 0


def _fixtures_fleet(args: argparse.Namespace) -> int:
    from tasks.fixtures import derive_fleet

    manifest = derive_fleet(args.manifest, n_devices=args.devices, out_dir=args.out, seed=args.seed)
    print(manifest)
    return 0


def _demo(args: argparse.Namespace) -> int:
    if not SAMPLE_MANIFEST.exists():
        print(f"sample manifest not found at {SAMPLE_MANIFEST}; run the demo from a daqflow checkout", file=sys.stderr)
        return 2
    from tasks.fixtures import derive_fleet

    fleet_dir = args.workdir / "fleet"
    manifest = derive_fleet(SAMPLE_MANIFEST, n_devices=args.devices, out_dir=fleet_dir)
    print(f"derived a {args.devices}-device fleet from the real recordings in {SAMPLE_MANIFEST.parent}: {manifest}")

    summary_path = args.workdir / "demo-summary.json"
    status = _run(argparse.Namespace(manifest=manifest, fleet=None, workdir=args.workdir, summary_json=summary_path))
    if status != 0:
        return status
    return _demo_predict(json.loads(summary_path.read_text()), manifest)


def _demo_predict(summary: dict[str, Any], manifest: Path) -> int:
    """Run the edge runtime on one held-out raw recording and print its verdict beside the true label."""
    from edge.cli import main as edge_main

    published = [m for m in summary["models"] if m["bundle"]]
    if not published:
        print("no device has a bundle in service, nothing to predict with", file=sys.stderr)
        return 1
    model = published[0]
    rows = [r for r in csv.DictReader(manifest.open()) if r["device_id"] == model["device_id"]]
    row = max(rows, key=lambda r: r["recorded_at"])  # the newest recording, held out from training
    recording = manifest.parent / row["path"]
    bundle = Path(model["bundle"]).parent.parent
    print(f"\nedge predict: device {model['device_id']}, recording {recording}, true label {row['label']}")
    argv = ["predict", str(bundle), str(recording), "--sampling-rate-hz", row["sampling_rate_hz"]]
    if row.get("shaft_speed_rpm"):
        argv += ["--shaft-speed-rpm", row["shaft_speed_rpm"]]
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        status = edge_main(argv)
    if status != 0:
        print(output.getvalue())
        return status
    result = json.loads(output.getvalue())
    print(f"edge verdict: {result['majority_label']} over {result['window_count']} windows; true label: {row['label']}")
    return 0


def _ops_home(workdir: Path) -> Path:
    return workdir / "ops"


def _up(args: argparse.Namespace) -> int:
    from flows._runtime import configure_environment

    configure_environment()
    from blocks import EDGE_BLOCK_NAME, STORAGE_BLOCK_NAME
    from deployments.deploy import deployment_specs
    from deployments.local import up

    specs = deployment_specs(
        storage_block=STORAGE_BLOCK_NAME,
        edge_block=EDGE_BLOCK_NAME,
        fleet=str(args.fleet.resolve()) if args.fleet else None,
        manifest=str(args.manifest.resolve()),
    )
    state = up(
        home=_ops_home(args.workdir),
        port=args.port,
        webhook_url=args.webhook_url,
        workdir=args.workdir,
        specs=specs,
        fast_polling=args.fast_polling,
    )
    print(f"Prefect UI: {state['ui_url']}  (database: {state['database']})")
    print(f"workers: {', '.join(f'{pool} pid {pid}' for pool, pid in state['worker_pids'].items())}")
    print(f"to use the prefect CLI: export PREFECT_API_URL={state['api_url']}")
    print("start the nightly retraining now: daqflow trigger --wait")
    return 0


def _down(args: argparse.Namespace) -> int:
    from deployments.local import down

    down(home=_ops_home(args.workdir))
    print("stopped")
    return 0


def _trigger(args: argparse.Namespace) -> int:
    from flows._runtime import configure_environment

    configure_environment()
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    api_url = f"http://127.0.0.1:{args.port}/api"
    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        flow_run = run_deployment("nightly-retrain/nightly-retrain", timeout=None if args.wait else 0)
    print(f"flow run {flow_run.name} ({flow_run.id}): http://127.0.0.1:{args.port}/runs/flow-run/{flow_run.id}")
    if not args.wait:
        return 0
    print(f"ended {flow_run.state.name}{': ' + flow_run.state.message if flow_run.state.message else ''}")
    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        summary = _read_run_summary(str(flow_run.id))
    if summary is not None:
        _print_run(summary)
    return 0 if flow_run.state.is_completed() else 1


def _read_run_summary(flow_run_id: str) -> dict[str, Any] | None:
    """Read a nightly run's summary through the saved storage block the deployment uses."""
    from blocks import STORAGE_BLOCK_NAME
    from blocks.storage import resolve_storage

    store = resolve_storage(STORAGE_BLOCK_NAME).get_store()
    key = f"runs/{flow_run_id}/run-summary.json"
    return store.read_json(key) if store.exists(key) else None


def _print_run(summary: dict[str, Any]) -> None:
    dataset = summary["dataset"]
    print(f"flow run {summary['flow_run_id']}")
    print(f"dataset {dataset['version']}: {dataset['recordings']} recordings, {dataset['windows']} windows, {dataset['partitions']} partitions")
    for item in dataset["quarantined"]:
        print(f"  quarantined {item['path']} [{item['reason']}]")
    print(f"{'device':<20}{'model':<10}{'status':<19}{'version':<18}{'accuracy':>9}{'macro-F1':>9}")
    for model in summary["models"]:
        metrics = model["metrics"]
        accuracy = f"{metrics['accuracy']:.3f}" if "accuracy" in metrics else "-"
        f1 = f"{metrics['macro_f1']:.3f}" if "macro_f1" in metrics else "-"
        print(f"{model['device_id']:<20}{model['model_type']:<10}{model['status']:<19}{model['version'] or '-':<18}{accuracy:>9}{f1:>9}")
        if model.get("reason"):
            print(f"    {model['reason']}")
    print(f"edge: {summary['edge']['location']}, {len(summary['edge']['published'])} bundles published")
    print("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in summary["seconds"].items()))


def _print_dataset(summary: dict[str, Any]) -> None:
    print(f"dataset {summary['version']} at {summary['location']}{' (reused)' if summary['cached'] else ''}")
    print(f"{summary['recordings']} recordings, {summary['partitions']} partitions, {summary['windows']} windows")
    print(f"{'device':<24}{'recordings':>11}{'partitions':>11}{'windows':>9}  labels (windows)")
    for device, info in sorted(summary["devices"].items()):
        labels = ", ".join(f"{label} {count}" for label, count in sorted(info["labels"].items()))
        print(f"{device:<24}{info['recordings']:>11}{info['partitions']:>11}{info['windows']:>9}  {labels}")
    print(f"quarantined: {len(summary['quarantined'])}")
    for item in summary["quarantined"]:
        print(f"  {item['path']} [{item['reason']}] {item['message']}")


def _write_json(path: Path | None, obj: Any) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
