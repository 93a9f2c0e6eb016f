"""Model registry: versioned per-device models in a `Store`, with a champion alias.

Storage layout under the storage root::

    models/<device_id>/<version>/model.txt        files passed to `register`
    models/<device_id>/<version>/model.onnx
    models/<device_id>/<version>/metrics.json
    models/<device_id>/<version>/manifest.json    written last
    models/<device_id>/champion                   pointer to a version

A version counts as registered only once its manifest exists, so a crash
halfway through `register` leaves nothing that readers list or load. The
manifest records the sha256 of every file, and reads check it. Aliases are
small JSON pointer files written atomically by `Store.write_json`.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
from datetime import UTC, datetime
from typing import Any

from tasks.store import Store

MODELS_PREFIX = "models"
MANIFEST_NAME = "manifest.json"
METRICS_NAME = "metrics.json"
DEFAULT_ALIAS = "champion"

_RESERVED_FILE_NAMES = (MANIFEST_NAME, METRICS_NAME)
_RESERVED_MANIFEST_KEYS = ("device_id", "version", "created_at", "files")
# Device ids, versions, aliases and file names become path segments, so they
# must not contain "/" or start with "." (hidden, "..").
_NAME_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@=+-]*")


class ModelIntegrityError(RuntimeError):
    """A stored model file does not match the sha256 or size in its manifest."""


class ModelRegistry:
    """Per-device model versions and aliases stored under ``models/`` of a `Store`.

    Args:
        store: where the models live; a local folder or an S3 prefix.

    Example:
        Given a `TrainedModel` ``trained``, its ``metrics`` and provenance ``info``::

            registry = ModelRegistry(Store("file", "/srv/daqflow"))
            registry.register("rig1-drive-end", "3f2a9c0d1e4b5a67", files={"model.txt": trained.native_bytes()},
                              metrics=metrics, info=info)
            registry.set_alias("rig1-drive-end", "3f2a9c0d1e4b5a67")
            registry.get_alias("rig1-drive-end")  # "3f2a9c0d1e4b5a67"
    """

    def __init__(self, store: Store):
        self.store = store

    def __repr__(self) -> str:
        return f"ModelRegistry({self.store!r})"

    def register(
        self, device_id: str, version: str, *, files: dict[str, bytes], metrics: dict[str, Any], info: dict[str, Any]
    ) -> dict[str, Any]:
        """Store a new model version and return its manifest.

        Writes each file, then ``metrics.json``, then ``manifest.json`` last.
        The manifest is ``{device_id, version, created_at, files: {name:
        {sha256, bytes}}, **info}``; ``files`` includes ``metrics.json``.

        Args:
            device_id: the device the model is for.
            version: the model version, usually `tasks.train.training_key`.
            files: file name to content, such as ``model.txt`` and ``model.onnx``.
            metrics: evaluation metrics, stored as ``metrics.json``.
            info: provenance merged into the manifest: dataset_version,
                feature_config_hash, params, code_version, model_type,
                classes and feature_names.

        Raises:
            ValueError: when a name is not a valid path segment, a file name or
                info key is reserved, or the version is already registered.
                Versions are immutable, so register a new version instead.
        """
        self._check_new_version(device_id, version, files, info)

        recorded: dict[str, dict[str, Any]] = {}
        for name, data in files.items():
            recorded[name] = self._write_file(device_id, version, name, data)

        metrics_bytes = (json.dumps(metrics, indent=2, sort_keys=True) + "\n").encode("utf-8")
        recorded[METRICS_NAME] = self._write_file(device_id, version, METRICS_NAME, metrics_bytes)

        manifest = {
            **info,
            "device_id": device_id,
            "version": version,
            "created_at": _utc_now(),
            "files": recorded,
        }
        self.store.write_json(self._key(device_id, version, MANIFEST_NAME), manifest)
        return manifest

    def exists(self, device_id: str, version: str) -> bool:
        """Return whether the version is registered, that is, its manifest exists."""
        return self.store.exists(self._key(device_id, version, MANIFEST_NAME))

    def manifest(self, device_id: str, version: str) -> dict[str, Any]:
        """Read the manifest of a registered version.

        Raises:
            FileNotFoundError: when the version is not registered.
        """
        if not self.exists(device_id, version):
            known = self.versions(device_id)
            raise FileNotFoundError(
                f"model version {version!r} of device {device_id!r} is not registered in {self.store!r}; "
                f"registered versions: {known or 'none'}."
            )
        return self.store.read_json(self._key(device_id, version, MANIFEST_NAME))

    def metrics(self, device_id: str, version: str) -> dict[str, Any]:
        """Read the metrics stored with a version, checked against its manifest."""
        return json.loads(self.read_file(device_id, version, METRICS_NAME))

    def read_file(self, device_id: str, version: str, name: str) -> bytes:
        """Read one file of a version and check its sha256 and size against the manifest.

        Raises:
            FileNotFoundError: when the version is not registered or has no file `name`.
            ModelIntegrityError: when the stored bytes differ from what was registered.
        """
        recorded = self.manifest(device_id, version)["files"]
        if name not in recorded:
            raise FileNotFoundError(
                f"model version {version!r} of device {device_id!r} has no file {name!r}; files: {sorted(recorded)}."
            )

        key = self._key(device_id, version, name)
        data = self.store.read_bytes(key)
        digest = hashlib.sha256(data).hexdigest()
        expected = recorded[name]
        if digest != expected["sha256"] or len(data) != expected["bytes"]:
            raise ModelIntegrityError(
                f"{self.store.url(key)} has sha256 {digest} ({len(data)} bytes) but the manifest records "
                f"{expected['sha256']} ({expected['bytes']} bytes): the file changed after registration. "
                "Restore it from a backup or register the model again under a new version."
            )
        return data

    def versions(self, device_id: str) -> list[str]:
        """Return the registered versions of a device, oldest first.

        Folders without a manifest (an interrupted `register`) are left out.
        Costs one manifest read per version.
        """
        _check_name("device_id", device_id)

        created: list[tuple[datetime, str]] = []
        for key in self.store.list(posixpath.join(MODELS_PREFIX, device_id)):
            version = posixpath.basename(key)
            if self.exists(device_id, version):
                created_at = datetime.fromisoformat(self.manifest(device_id, version)["created_at"])
                created.append((created_at, version))
        return [version for _, version in sorted(created)]

    def devices(self) -> list[str]:
        """Return the devices with at least one registered version, sorted.

        Costs one listing per device and one manifest check per version folder.
        """
        names = (posixpath.basename(key) for key in self.store.list(MODELS_PREFIX))
        return [name for name in names if _NAME_PATTERN.fullmatch(name) and self._has_version(name)]

    def get_alias(self, device_id: str, alias: str = DEFAULT_ALIAS) -> str | None:
        """Return the version an alias points to, or None when the alias is not set."""
        key = self._alias_key(device_id, alias)
        if not self.store.exists(key):
            return None
        return self.store.read_json(key)["version"]

    def set_alias(self, device_id: str, version: str, alias: str = DEFAULT_ALIAS) -> None:
        """Point an alias at a registered version, replacing the pointer atomically.

        Readers see either the old or the new version, never a partial file.

        Raises:
            ValueError: when the version is not registered, or the alias name is
                already used by a version folder.
        """
        key = self._alias_key(device_id, alias)
        if not self.exists(device_id, version):
            raise ValueError(
                f"cannot point alias {alias!r} of device {device_id!r} at version {version!r}: it is not registered. "
                f"Registered versions: {self.versions(device_id) or 'none'}."
            )
        if self.exists(device_id, alias):
            raise ValueError(f"alias {alias!r} of device {device_id!r} is also a model version; choose another alias name.")

        pointer = {"alias": alias, "version": version, "updated_at": _utc_now()}
        self.store.write_json(key, pointer)

    def _has_version(self, device_id: str) -> bool:
        folders = self.store.list(posixpath.join(MODELS_PREFIX, device_id))
        return any(self.exists(device_id, posixpath.basename(key)) for key in folders)

    def _check_new_version(self, device_id: str, version: str, files: dict[str, bytes], info: dict[str, Any]) -> None:
        _check_name("device_id", device_id)
        _check_name("version", version)
        for name in files:
            _check_name("file name", name)

        reserved_files = sorted(set(files).intersection(_RESERVED_FILE_NAMES))
        if reserved_files:
            raise ValueError(
                f"files {reserved_files} of model version {version!r} use names the registry writes itself; "
                "pass metrics through `metrics` and rename the other files."
            )
        reserved_keys = sorted(set(info).intersection(_RESERVED_MANIFEST_KEYS))
        if reserved_keys:
            raise ValueError(f"info keys {reserved_keys} are set by the registry; remove them from info.")
        if self.exists(device_id, version):
            raise ValueError(
                f"model version {version!r} of device {device_id!r} is already registered; versions are immutable, "
                "so register under a new version."
            )

    def _write_file(self, device_id: str, version: str, name: str, data: bytes) -> dict[str, Any]:
        self.store.write_bytes(self._key(device_id, version, name), data)
        return {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}

    def _key(self, device_id: str, version: str, name: str) -> str:
        _check_name("device_id", device_id)
        _check_name("version", version)
        return posixpath.join(MODELS_PREFIX, device_id, version, name)

    def _alias_key(self, device_id: str, alias: str) -> str:
        _check_name("device_id", device_id)
        _check_name("alias", alias)
        return posixpath.join(MODELS_PREFIX, device_id, alias)


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _check_name(kind: str, value: str) -> None:
    if not (isinstance(value, str) and _NAME_PATTERN.fullmatch(value)):
        raise ValueError(
            f"{kind} {value!r} is not a valid name: start with a letter, digit or _, then use only letters, "
            "digits and _ . @ = + -."
        )
