"""Storage blocks: where datasets, models and edge bundles live.

Flows take a block (or the name of a saved one) and call `get_store()`; they
never see a path or a credential. `LocalStorage` is the on-prem case, a folder
on a local disk or NFS mount. `S3Storage` is the cloud case, a bucket prefix
reached through prefect-aws credentials and s3fs.
"""

from __future__ import annotations

import os
from pathlib import Path

from prefect.blocks.core import Block
from prefect_aws import AwsCredentials
from pydantic import Field

from blocks.loading import load_saved_block

from tasks.store import Store


class StorageBlock(Block):
    """Base class of daqflow storage blocks."""

    _block_type_name = "daqflow Storage"

    def get_store(self) -> Store:
        raise NotImplementedError(f"{type(self).__name__} does not implement get_store()")


class LocalStorage(StorageBlock):
    """A folder on this machine or on a mounted network share (on-prem)."""

    _block_type_name = "daqflow Local Storage"
    _description = "A local or NFS folder that holds daqflow datasets, models and bundles."

    basepath: str = Field(
        default=".daqflow",
        description="Folder that holds everything daqflow writes. Relative paths resolve against the working directory of the process that uses the block.",
    )

    def get_store(self) -> Store:
        root = Path(os.path.expanduser(self.basepath)).resolve()
        root.mkdir(parents=True, exist_ok=True)
        return Store("file", root.as_posix())


class S3Storage(StorageBlock):
    """A bucket prefix on AWS S3 or an S3-compatible server (MinIO, Ceph)."""

    _block_type_name = "daqflow S3 Storage"
    _description = "An S3 bucket prefix that holds daqflow datasets, models and bundles."

    bucket_name: str = Field(description="Name of the bucket.")
    prefix: str = Field(default="daqflow", description="Key prefix under which daqflow writes.")
    credentials: AwsCredentials = Field(
        default_factory=AwsCredentials,
        description="prefect-aws credentials; set aws_client_parameters.endpoint_url for an S3-compatible server.",
    )

    def get_store(self) -> Store:
        return Store("s3", f"{self.bucket_name}/{self.prefix.strip('/')}", _s3fs_options(self.credentials))


def _s3fs_options(credentials: AwsCredentials) -> dict:
    """Translate prefect-aws credentials into s3fs keyword arguments."""
    options: dict = {}
    if credentials.aws_access_key_id:
        options["key"] = credentials.aws_access_key_id
    if credentials.aws_secret_access_key:
        options["secret"] = credentials.aws_secret_access_key.get_secret_value()
    if credentials.aws_session_token:
        options["token"] = credentials.aws_session_token

    client_kwargs: dict = {}
    if credentials.region_name:
        client_kwargs["region_name"] = credentials.region_name
    endpoint = credentials.aws_client_parameters.endpoint_url
    if endpoint:
        client_kwargs["endpoint_url"] = endpoint
    if client_kwargs:
        options["client_kwargs"] = client_kwargs
    return options


def resolve_storage(storage: "StorageBlock | str | None", *, default_basepath: str = ".daqflow") -> StorageBlock:
    """Return a storage block from a block, a saved block's name, or None.

    Args:
        storage: a block object; the name of a saved block, either
            ``"<block-type-slug>/<name>"`` or a bare name saved as a
            ``daqflow-local-storage``; or None for a `LocalStorage` at
            `default_basepath`.
    """
    if storage is None:
        return LocalStorage(basepath=default_basepath)
    if isinstance(storage, StorageBlock):
        return storage
    return load_saved_block(storage, StorageBlock, default_type=LocalStorage)
