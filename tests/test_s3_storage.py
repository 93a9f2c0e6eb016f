"""The S3 storage block against a real S3 protocol server (moto) on 127.0.0.1."""

from __future__ import annotations

import socket

import boto3
import pytest
from moto.server import ThreadedMotoServer
from prefect_aws import AwsCredentials
from prefect_aws.client_parameters import AwsClientParameters

from blocks.storage import S3Storage
from flows.build_dataset import build_dataset
from tasks.dataset import load_device_frame, read_dataset_manifest

BUCKET = "plant-data"
SECRET = "not-a-real-secret-9f2c"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def s3_endpoint():
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    boto3.client(
        "s3", endpoint_url=endpoint, aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1"
    ).create_bucket(Bucket=BUCKET)
    try:
        yield endpoint
    finally:
        server.stop()


@pytest.fixture
def s3_storage(s3_endpoint, request) -> S3Storage:
    credentials = AwsCredentials(
        aws_access_key_id="test",
        aws_secret_access_key=SECRET,
        region_name="us-east-1",
        aws_client_parameters=AwsClientParameters(endpoint_url=s3_endpoint),
    )
    return S3Storage(bucket_name=BUCKET, prefix=f"daqflow/{request.node.name}", credentials=credentials)


def test_store_round_trip(s3_storage):
    store = s3_storage.get_store()

    store.write_json("models/dev-1/champion.json", {"version": "abc"})

    assert store.read_json("models/dev-1/champion.json") == {"version": "abc"}
    assert store.exists("models/dev-1/champion.json")
    assert store.list("models/dev-1") == ["models/dev-1/champion.json"]
    assert store.url("x").startswith(f"s3://{BUCKET}/daqflow/")


def test_secret_kept_out_of_repr_and_url(s3_storage):
    store = s3_storage.get_store()

    assert SECRET not in repr(store)
    assert SECRET not in store.url("datasets")
    assert SECRET not in repr(s3_storage)


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_dataset_build_on_s3(s3_storage, sample_manifest, dask_compute):
    summary = build_dataset(str(sample_manifest), storage=s3_storage, compute=dask_compute)
    store = s3_storage.get_store()
    manifest = read_dataset_manifest(store, summary["version"])
    frame = load_device_frame(store, manifest, "rig1-fan-end")

    assert summary["location"].startswith(f"s3://{BUCKET}/")
    assert summary["recordings"] == 13
    assert len(frame) == summary["devices"]["rig1-fan-end"]["windows"]
