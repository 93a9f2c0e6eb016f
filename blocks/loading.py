"""Load a saved block by name and check its type."""

from __future__ import annotations

from typing import TypeVar

from prefect.blocks.core import Block

BlockT = TypeVar("BlockT", bound=Block)


def load_saved_block(name: str, expected: type[BlockT], *, default_type: type[Block]) -> BlockT:
    """Load the saved block `name` and check that it is an `expected`.

    Args:
        name: ``"<block-type-slug>/<name>"``, or a bare name of a block saved as `default_type`.
        expected: the class the block must be an instance of (a base class is fine).
        default_type: the block type a bare name refers to.

    Raises:
        ValueError: no block of that name is saved (raised by Prefect, naming it).
        TypeError: the block is of another type.
    """
    full_name = name if "/" in name else f"{default_type.get_block_type_slug()}/{name}"
    block = Block.load(full_name)
    if not isinstance(block, expected):
        raise TypeError(
            f"block {full_name!r} has type {type(block).__name__}, expected {expected.__name__}. "
            f"Save a {default_type.__name__} block under that name."
        )
    return block
