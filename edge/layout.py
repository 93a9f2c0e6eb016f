"""Folder layout of an edge box: trusted keys, bundles per device, the version in service.

An edge root looks like this::

    <edge_root>/trusted_keys/<key_id>.pem
    <edge_root>/devices/<device_id>/bundles/<version>/model.onnx, manifest.json, manifest.sig
    <edge_root>/devices/<device_id>/current         the version in service, one line
    <edge_root>/devices/<device_id>/history.json    versions in the order they went into service

`current` and `history.json` are replaced with `os.replace`, so a reader sees
either the old or the new file, never a partial one. This module uses the
standard library only, because the edge box runs it without the training stack.

NOTE: two processes that publish to the same device at the same time can lose
one history entry. Run one publisher per device.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

TRUSTED_KEYS_DIR = "trusted_keys"
DEVICES_DIR = "devices"
BUNDLES_DIR = "bundles"
CURRENT_FILE = "current"
HISTORY_FILE = "history.json"


class LayoutError(Exception):
    """An edge root, device folder or bundle folder that does not have the expected layout."""


def bundle_dir(edge_root: Path, device_id: str, version: str) -> Path:
    """Return the folder of one bundle version of a device.

    Raises:
        LayoutError: `device_id` or `version` is not a plain folder name.
    """
    _check_name(device_id, kind="device id")
    _check_name(version, kind="version")
    return _device_dir(edge_root, device_id) / BUNDLES_DIR / version


def trusted_keys_dir(edge_root: Path) -> Path:
    """Return the folder of the public keys that the edge box trusts."""
    return Path(edge_root) / TRUSTED_KEYS_DIR


def install_bundle(edge_root: Path, device_id: str, version: str, files: dict[str, bytes]) -> Path:
    """Write the files of a bundle into its version folder and return that folder.

    The files go to a temporary folder next to the target, which is then
    renamed into place, so a reader never sees a half-written bundle. The
    bundle is not put into service: call `set_current` for that.

    Raises:
        LayoutError: the version already exists, or a file name is not a plain name.
    """
    target = bundle_dir(edge_root, device_id, version)
    if target.exists():
        raise LayoutError(
            f"bundle folder {target} already exists. Publish under a new version "
            "instead of overwriting a bundle that may be in service."
        )

    for name in files:
        _check_name(name, kind="bundle file name")

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{version}.tmp-", dir=target.parent))
    try:
        # mkdtemp creates the folder readable by its owner only, but the runtime may run as another user.
        staging.chmod(0o755)
        for name, data in files.items():
            (staging / name).write_bytes(data)
        os.replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return target


def current_version(edge_root: Path, device_id: str) -> str | None:
    """Return the version in service for a device, or None when none was set."""
    path = _device_dir(edge_root, device_id) / CURRENT_FILE
    if not path.is_file():
        return None
    return path.read_text(encoding="utf-8").strip() or None


def read_history(edge_root: Path, device_id: str) -> list[str]:
    """Return the versions of a device in the order they went into service.

    Raises:
        LayoutError: history.json is not a JSON list of strings.
    """
    path = _device_dir(edge_root, device_id) / HISTORY_FILE
    if not path.is_file():
        return []

    try:
        history = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise LayoutError(f"{path} is not valid JSON ({error}). Restore it or remove it and call set_current again.") from error

    if not isinstance(history, list) or not all(isinstance(version, str) for version in history):
        raise LayoutError(f"{path} must be a JSON list of version strings. Restore it or remove it and call set_current again.")
    return history


def set_current(edge_root: Path, device_id: str, version: str) -> None:
    """Put a bundle version into service and append it to the device's history.

    history.json is written before `current`, so after a crash between the
    two writes `rollback` reports the mismatch instead of guessing. Calling
    `set_current` again repairs it, because a version already at the end of
    the history is not appended twice.

    Raises:
        LayoutError: the bundle folder of `version` does not exist.
    """
    target = bundle_dir(edge_root, device_id, version)
    if not target.is_dir():
        raise LayoutError(
            f"bundle folder {target} does not exist. Install the bundle before putting version {version!r} into service."
        )

    device = _device_dir(edge_root, device_id)
    history = read_history(edge_root, device_id)
    if history[-1:] != [version]:
        _write_atomically(device / HISTORY_FILE, json.dumps([*history, version], indent=2) + "\n")
    if current_version(edge_root, device_id) != version:
        _write_atomically(device / CURRENT_FILE, version + "\n")


def rollback(edge_root: Path, device_id: str) -> str:
    """Put the version that was in service before the current one back into service.

    The current version is removed from the end of history.json, so repeated
    rollbacks walk further back in time.

    Returns:
        The version now in service.

    Raises:
        LayoutError: no version is in service, `current` and history.json
            disagree, or there is no earlier version to return to.
    """
    device = _device_dir(edge_root, device_id)
    current = current_version(edge_root, device_id)
    if current is None:
        raise LayoutError(f"device {device_id!r} has no version in service under {device}. Nothing to roll back.")

    history = read_history(edge_root, device_id)
    if history[-1:] != [current]:
        raise LayoutError(
            f"device {device_id!r}: current is {current!r} but history.json ends with {history[-1:]}. "
            f"Call set_current with the version that should be in service to repair {device}."
        )
    if len(history) < 2:
        raise LayoutError(
            f"device {device_id!r} has no version before {current!r} in its history. Publish another version instead."
        )

    previous = history[-2]
    _write_atomically(device / HISTORY_FILE, json.dumps(history[:-1], indent=2) + "\n")
    _write_atomically(device / CURRENT_FILE, previous + "\n")
    return previous


def resolve_bundle(path: Path) -> Path:
    """Return the bundle folder for `path`, which is a bundle folder or a device folder.

    A device folder is one with a `current` file or a `bundles` folder, and
    for it the bundle in service is returned. Any other folder is taken as a bundle
    folder, and `verify_bundle` reports what is missing in it.

    Raises:
        LayoutError: `path` does not exist, or the device has no version in service.
    """
    path = Path(path)
    if not path.is_dir():
        raise LayoutError(f"bundle path {path} does not exist or is not a folder. Pass a bundle folder or a device folder.")

    is_device = (path / CURRENT_FILE).is_file() or (path / BUNDLES_DIR).is_dir()
    if not is_device:
        return path

    current_file = path / CURRENT_FILE
    version = current_file.read_text(encoding="utf-8").strip() if current_file.is_file() else ""
    if not version:
        raise LayoutError(f"device folder {path} has no version in service. Call set_current or pass a bundle folder.")

    _check_name(version, kind=f"version in {current_file}")
    return path / BUNDLES_DIR / version


def locate_bundle(bundle: Path) -> tuple[Path, str, str] | None:
    """Return (edge_root, device_id, version) for a bundle inside an edge root, else None."""
    bundle = Path(bundle).resolve()
    parents = bundle.parents
    if len(parents) < 4 or parents[0].name != BUNDLES_DIR or parents[2].name != DEVICES_DIR:
        return None
    return parents[3], parents[1].name, bundle.name


def find_trusted_keys(bundle: Path) -> Path:
    """Return `<edge_root>/trusted_keys` for a bundle folder inside an edge root.

    Raises:
        LayoutError: the bundle is not at `<edge_root>/devices/<device_id>/bundles/<version>`.
    """
    location = locate_bundle(bundle)
    if location is None:
        raise LayoutError(
            f"bundle {bundle} is not inside an edge root (<edge_root>/{DEVICES_DIR}/<device_id>/{BUNDLES_DIR}/<version>), "
            "so its trusted keys cannot be found. Pass the trusted keys folder explicitly (--trusted-keys)."
        )
    return trusted_keys_dir(location[0])


def _device_dir(edge_root: Path, device_id: str) -> Path:
    _check_name(device_id, kind="device id")
    return Path(edge_root) / DEVICES_DIR / device_id


def _check_name(name: str, *, kind: str) -> None:
    # Names become path components: a separator or ".." would escape the edge root.
    if not name or name in (".", "..") or "/" in name or "\\" in name or name.startswith("."):
        raise LayoutError(
            f"{kind} {name!r} is not a plain folder or file name. Use letters, digits, '-', '_' or '.' without '/'."
        )


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
