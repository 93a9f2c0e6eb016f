"""Key-value access to a storage root on any fsspec filesystem.

`Store` is what tasks use to read and write datasets, models and bundles. It
does not import Prefect: a storage block builds one with `get_store()`, and the
same object can be shipped to Dask workers.

Writes are never half-visible. On a local or NFS filesystem a file is written
under a temporary name in the same folder and renamed into place; on an object
store (S3) a single PUT is already atomic.
"""

from __future__ import annotations

import json
import posixpath
import uuid
from typing import Any

import fsspec


class Store:
    """A folder on a filesystem, addressed by relative keys such as
    ``datasets/<version>/manifest.json``.

    Args:
        protocol: fsspec protocol, ``"file"`` or ``"s3"``.
        root: the folder (local path) or ``bucket/prefix`` (object store).
        storage_options: keyword arguments for `fsspec.filesystem`, for
            example the endpoint and credentials of an S3 server. They may
            hold secrets: never log them.
    """

    def __init__(self, protocol: str, root: str, storage_options: dict[str, Any] | None = None):
        self.protocol = protocol
        self.root = root.rstrip("/") or "/"
        self.storage_options = dict(storage_options or {})
        self._fs: fsspec.AbstractFileSystem | None = None

    def __repr__(self) -> str:
        return f"Store({self.url('')!r})"

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_fs"] = None
        return state

    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        if self._fs is None:
            self._fs = fsspec.filesystem(self.protocol, **self.storage_options)
        return self._fs

    @property
    def is_local(self) -> bool:
        return self.protocol in ("file", "local")

    def path(self, key: str) -> str:
        """Return the filesystem path of `key` (no protocol prefix)."""
        key = key.lstrip("/")
        if not key:
            return self.root
        return posixpath.join(self.root, key)

    def url(self, key: str) -> str:
        """Return a URL for `key` that fsspec and pyarrow can open."""
        return f"{self.protocol}://{self.path(key)}"

    def exists(self, key: str) -> bool:
        return self.fs.exists(self.path(key))

    def read_bytes(self, key: str) -> bytes:
        return self.fs.cat_file(self.path(key))

    def read_text(self, key: str) -> str:
        return self.read_bytes(key).decode("utf-8")

    def read_json(self, key: str) -> Any:
        return json.loads(self.read_bytes(key))

    def write_bytes(self, key: str, data: bytes) -> str:
        """Write `data` to `key` atomically and return the key."""
        target = self.path(key)
        if not self.is_local:
            self.fs.pipe_file(target, data)
            return key

        folder = posixpath.dirname(target)
        self.fs.makedirs(folder, exist_ok=True)
        temporary = posixpath.join(folder, f".{posixpath.basename(target)}.tmp-{uuid.uuid4().hex}")
        try:
            with self.fs.open(temporary, "wb") as fh:
                fh.write(data)
            self.fs.mv(temporary, target)
        finally:
            if self.fs.exists(temporary):
                self.fs.rm(temporary)
        return key

    def write_text(self, key: str, text: str) -> str:
        return self.write_bytes(key, text.encode("utf-8"))

    def write_json(self, key: str, obj: Any) -> str:
        return self.write_bytes(key, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode("utf-8"))

    def list(self, prefix: str) -> list[str]:
        """Return the keys of the files and folders directly under `prefix`, sorted."""
        folder = self.path(prefix)
        if not self.fs.exists(folder):
            return []
        names = self.fs.ls(folder, detail=False)
        relative = (posixpath.relpath(name.rstrip("/"), self.root.lstrip("/") if not self.is_local else self.root) for name in names)
        return sorted(key for key in relative if not posixpath.basename(key).startswith("."))

    def delete(self, key: str, *, recursive: bool = False) -> None:
        if self.exists(key):
            self.fs.rm(self.path(key), recursive=recursive)
