"""Blocks saved on a real Prefect server and loaded back by name, as deployments do."""

from __future__ import annotations

import pytest

from blocks import register_blocks
from blocks.compute import DaskCompute, resolve_compute
from blocks.edge import EdgeTarget, resolve_edge_target
from blocks.storage import LocalStorage, resolve_storage

pytestmark = pytest.mark.usefixtures("prefect_server")


def test_register_blocks_then_resolve_by_name(tmp_path):
    names = register_blocks(tmp_path)

    storage = resolve_storage("daqflow")
    edge = resolve_edge_target("daqflow-edge")

    assert names == {"storage": "daqflow-local-storage/daqflow", "edge_target": "daqflow-edge-target/daqflow-edge"}
    assert isinstance(storage, LocalStorage)
    assert storage.basepath == str(tmp_path.resolve())
    assert isinstance(edge, EdgeTarget)
    assert edge.basepath == str(tmp_path.resolve() / "edge")


def test_resolve_by_full_name(tmp_path):
    register_blocks(tmp_path)

    assert isinstance(resolve_storage("daqflow-local-storage/daqflow"), LocalStorage)
    assert isinstance(resolve_edge_target("daqflow-edge-target/daqflow-edge"), EdgeTarget)


def test_resolve_compute_by_name():
    DaskCompute(scheduler_address="tcp://127.0.0.1:8786").save("plant-cluster", overwrite=True)

    assert resolve_compute("plant-cluster").scheduler_address == "tcp://127.0.0.1:8786"


def test_wrong_block_type_rejected(tmp_path):
    register_blocks(tmp_path)

    with pytest.raises(TypeError, match="expected EdgeTarget"):
        resolve_edge_target("daqflow-local-storage/daqflow")


def test_unknown_name_names_block():
    with pytest.raises(ValueError, match="no-such-block"):
        resolve_storage("no-such-block")
