"""Prefect blocks of daqflow: storage, compute and edge targets."""

from __future__ import annotations

from pathlib import Path

STORAGE_BLOCK_NAME = "daqflow"
EDGE_BLOCK_NAME = "daqflow-edge"


def register_blocks(workdir: Path = Path(".daqflow")) -> dict[str, str]:
    """Save the default local storage and edge target blocks on the configured Prefect server.

    Deployments name these blocks in their parameters, so a worker on any
    machine that mounts `workdir` at the same path reads and writes the same
    data. Saving again overwrites them. Returns the saved blocks' full names.
    """
    from blocks.edge import EdgeTarget
    from blocks.storage import LocalStorage

    root = Path(workdir).resolve()
    storage = LocalStorage(basepath=str(root))
    storage.save(STORAGE_BLOCK_NAME, overwrite=True)
    edge = EdgeTarget(basepath=str(root / "edge"))
    edge.save(EDGE_BLOCK_NAME, overwrite=True)
    return {
        "storage": f"{storage.get_block_type_slug()}/{STORAGE_BLOCK_NAME}",
        "edge_target": f"{edge.get_block_type_slug()}/{EDGE_BLOCK_NAME}",
    }
