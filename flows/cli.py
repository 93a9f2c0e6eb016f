"""The `daqflow` command line.

Heavy imports (Prefect, Dask) happen inside the subcommands, so that
`daqflow edge ...` runs on an edge box with only the edge runtime installed.
"""

from __future__ import annotations

import argparse
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

    demo = commands.add_parser("demo", help="run the pipeline on the sample recordings in data/sample")
    _add_workdir(demo)
    demo.set_defaults(handler=_demo)

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


def _build(args: argparse.Namespace) -> int:
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


def _demo(args: argparse.Namespace) -> int:
    if not SAMPLE_MANIFEST.exists():
        print(f"sample manifest not found at {SAMPLE_MANIFEST}; run the demo from a daqflow checkout", file=sys.stderr)
        return 2
    build_args = argparse.Namespace(
        manifest=SAMPLE_MANIFEST, workdir=args.workdir, windows_per_partition=8, batches=4, summary_json=None
    )
    return _build(build_args)


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
