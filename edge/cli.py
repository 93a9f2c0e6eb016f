"""Command line of the edge box: verify a bundle, classify a recording, roll back a device.

Usage::

    daqflow edge verify BUNDLE [--trusted-keys DIR]
    daqflow edge predict BUNDLE RECORDING [--channel C] [--sampling-rate-hz F] [--shaft-speed-rpm R] [--trusted-keys DIR]
    daqflow edge rollback --device D [--edge-dir DIR]

`python -m edge.cli ...` takes the same arguments. BUNDLE is a bundle folder
or a device folder, whose `current` file names the bundle in service. Results
are printed to stdout as JSON. Errors are printed to stderr as a JSON object
with ``ok`` (false), ``reason`` and ``error``. The reason is a `BundleError` or
`RecordingError` reason, or ``layout`` for a missing folder or a failed
rollback.

Exit status: 0 on success, 1 when the bundle is rejected or the device cannot
be rolled back, 2 when the recording is unusable (and, from argparse, for
invalid arguments).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from edge.bundle import BundleError
from edge.layout import LayoutError, current_version, rollback
from edge.runtime import EdgeModel
from tasks.recordings import RecordingError

EXIT_OK = 0
EXIT_REJECTED = 1
EXIT_BAD_RECORDING = 2
DEFAULT_EDGE_DIR = Path(".daqflow/edge")


def main(argv: list[str] | None = None) -> int:
    """Run one edge command and return its exit status."""
    args = _parser().parse_args(argv)
    return args.run(args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="daqflow edge", description="Verify and run signed daqflow model bundles on an edge box."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    verify = commands.add_parser("verify", help="check a bundle's signature and hashes and that this box can run it")
    _add_bundle_arguments(verify)
    verify.set_defaults(run=_verify)

    predict = commands.add_parser("predict", help="classify every window of a raw recording with a verified bundle")
    _add_bundle_arguments(predict)
    predict.add_argument("recording", help="path of the raw recording (.mat, .csv, .parquet or .npy)")
    predict.add_argument("--channel", help="channel to read, e.g. DE_time (default: the channel named in the manifest)")
    predict.add_argument(
        "--sampling-rate-hz",
        type=float,
        help="rate the recording was made at, in Hz (required for files that do not store it, such as .mat)",
    )
    predict.add_argument(
        "--shaft-speed-rpm",
        type=float,
        help="shaft speed in rpm (default: the speed stored in the file, else the manifest's default)",
    )
    predict.set_defaults(run=_predict)

    roll_back = commands.add_parser(
        "rollback", help="put the version that was in service before the current one back into service"
    )
    roll_back.add_argument("--device", required=True, help="device id")
    roll_back.add_argument(
        "--edge-dir", type=Path, default=DEFAULT_EDGE_DIR, help=f"edge root folder (default: {DEFAULT_EDGE_DIR})"
    )
    roll_back.set_defaults(run=_rollback)
    return parser


def _add_bundle_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", type=Path, help="bundle folder, or device folder to use the bundle in service")
    parser.add_argument(
        "--trusted-keys", type=Path, help="folder of trusted public keys (default: trusted_keys in the bundle's edge root)"
    )


def _verify(args: argparse.Namespace) -> int:
    try:
        model = EdgeModel.load(args.bundle, trusted_keys=args.trusted_keys)
    except BundleError as error:
        return _fail(error.reason, error.message, EXIT_REJECTED)
    except LayoutError as error:
        return _fail("layout", str(error), EXIT_REJECTED)

    _print({"ok": True, "device_id": model.device_id, "version": model.version})
    return EXIT_OK


def _predict(args: argparse.Namespace) -> int:
    try:
        model = EdgeModel.load(args.bundle, trusted_keys=args.trusted_keys)
    except BundleError as error:
        return _fail(error.reason, error.message, EXIT_REJECTED)
    except LayoutError as error:
        return _fail("layout", str(error), EXIT_REJECTED)

    try:
        result = model.predict_recording(
            args.recording,
            channel=args.channel,
            sampling_rate_hz=args.sampling_rate_hz,
            shaft_speed_rpm=args.shaft_speed_rpm,
        )
    except RecordingError as error:
        return _fail(error.reason, error.message, EXIT_BAD_RECORDING)

    _print(result)
    return EXIT_OK


def _rollback(args: argparse.Namespace) -> int:
    try:
        previous = current_version(args.edge_dir, args.device)
        version = rollback(args.edge_dir, args.device)
    except LayoutError as error:
        return _fail("layout", str(error), EXIT_REJECTED)

    _print({"ok": True, "device_id": args.device, "version": version, "rolled_back_from": previous})
    return EXIT_OK


def _fail(reason: str, message: str, status: int) -> int:
    print(json.dumps({"ok": False, "reason": reason, "error": message}), file=sys.stderr)
    return status


def _print(result: dict[str, Any]) -> None:
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    sys.exit(main())
