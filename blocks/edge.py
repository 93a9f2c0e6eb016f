"""Edge target block: where signed bundles go and which key signs them."""

from __future__ import annotations

import os
from pathlib import Path

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from blocks.loading import load_saved_block
from edge.bundle import generate_signing_key, load_private_key, private_key_to_pem
from tasks.store import Store

SIGNING_KEY_KEY = "keys/edge-signing-key.pem"


class EdgeTarget(Block):
    """A folder that edge boxes read bundles from (a local path or a mounted share)."""

    _block_type_name = "daqflow Edge Target"
    _description = "Folder of signed edge bundles (devices/<id>/bundles/<version>) and the key that signs them."

    basepath: str = Field(
        default=".daqflow/edge",
        description="Edge folder: devices/<device>/bundles/<version>/, devices/<device>/current and trusted_keys/.",
    )
    signing_key: SecretStr | None = Field(
        default=None,
        description="Ed25519 private key (PEM) that signs bundle manifests. Empty: a key kept in the storage block under keys/ is created on first use.",
    )

    def root(self) -> Path:
        path = Path(os.path.expanduser(self.basepath)).resolve()
        path.mkdir(parents=True, exist_ok=True)
        return path

    def get_signing_key(self, store: Store):
        """Return the signing key: the block's own, else the storage's, created on first use."""
        if self.signing_key is not None:
            return load_private_key(self.signing_key.get_secret_value().encode())
        if store.exists(SIGNING_KEY_KEY):
            return load_private_key(store.read_bytes(SIGNING_KEY_KEY))

        # NOTE: a key kept beside the models suits one machine; in production
        # set `signing_key` on the block so that the key lives in Prefect's
        # encrypted block storage, and rotate it by saving a new one.
        key = generate_signing_key()
        store.write_bytes(SIGNING_KEY_KEY, private_key_to_pem(key))
        if store.is_local:
            os.chmod(store.path(SIGNING_KEY_KEY), 0o600)
        return key


def resolve_edge_target(edge_target: "EdgeTarget | str | None", *, default_basepath: str = ".daqflow/edge") -> EdgeTarget:
    """Return an edge target from a block, a saved block's name, or None (a local folder)."""
    if edge_target is None:
        return EdgeTarget(basepath=default_basepath)
    if isinstance(edge_target, EdgeTarget):
        return edge_target
    return load_saved_block(edge_target, EdgeTarget, default_type=EdgeTarget)
