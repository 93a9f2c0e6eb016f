"""Signed bundles, the edge folder layout and the verify, predict and rollback commands."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import lightgbm
import numpy as np
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from edge.bundle import (
    BUNDLE_FORMAT,
    BundleError,
    add_trusted_key,
    build_manifest,
    generate_signing_key,
    key_id,
    load_private_key,
    make_bundle,
    manifest_bytes,
    private_key_to_pem,
    public_key_pem,
    sign,
    verify_bundle,
)
from edge.cli import main
from edge.layout import (
    LayoutError,
    bundle_dir,
    current_version,
    find_trusted_keys,
    install_bundle,
    read_history,
    resolve_bundle,
    rollback,
    set_current,
    trusted_keys_dir,
)
from tasks.features import CWRU_DRIVE_END_BEARING, FeatureConfig, condition, extract_features, feature_names, frame
from tasks.onnx_export import lightgbm_to_onnx
from tasks.readers import read_signal_file

REPO_ROOT = Path(__file__).resolve().parents[1]
DEVICE = "rig1-drive-end"
CONFIG = FeatureConfig(hop_length=2048, bearing=CWRU_DRIVE_END_BEARING)
TRAINING_FILES = {"inner_race": "IR007_0.mat", "ball": "B007_0.mat", "outer_race": "OR007@6_0.mat"}
CLASSES = list(TRAINING_FILES)
INPUT_SPEC = {"kind": "features", "name": "features", "dtype": "float32", "feature_names": feature_names(CONFIG)}
FEATURE_SPEC = {
    "config": CONFIG.to_dict(),
    "config_hash": CONFIG.config_hash(),
    "window_length": CONFIG.window_length,
    "hop_length": CONFIG.hop_length,
    "target_sampling_rate_hz": CONFIG.target_sampling_rate_hz,
    "channel": "DE_time",
    "default_shaft_speed_rpm": 1797.0,
}


@pytest.fixture(scope="module")
def recording(sample_dir) -> str:
    return str(sample_dir / "12k_DE" / "IR021_0.mat")


@pytest.fixture(scope="module")
def model_onnx(sample_dir) -> bytes:
    """A LightGBM model trained on real windows of three drive-end recordings, as ONNX."""
    features, labels = [], []
    for index, name in enumerate(TRAINING_FILES.values()):
        signal, _ = read_signal_file(str(sample_dir / "12k_DE" / name), channel="DE_time")
        windows = frame(condition(signal.values, 12_000.0, CONFIG), CONFIG.window_length, CONFIG.hop_length)
        features.append(extract_features(windows, CONFIG, shaft_speed_rpm=signal.shaft_speed_rpm))
        labels += [index] * len(windows)

    matrix = np.vstack(features).astype(np.float32)
    model = lightgbm.LGBMClassifier(n_estimators=20, num_leaves=8, random_state=0, num_threads=1, verbose=-1)
    model.fit(matrix, np.array(labels))
    return lightgbm_to_onnx(model, n_features=matrix.shape[1])


@pytest.fixture(scope="module")
def signing_key():
    return generate_signing_key()


def _manifest(model_onnx: bytes, key, *, version: str = "1") -> dict:
    return build_manifest(
        device_id=DEVICE,
        version=version,
        model_type="lightgbm",
        classes=CLASSES,
        input_spec=INPUT_SPEC,
        feature_spec=FEATURE_SPEC,
        metrics={"macro_f1": 0.9},
        dataset_version="20260101-abc",
        files={"model.onnx": model_onnx},
        key_id=key_id(key.public_key()),
        created_at="2026-01-01T12:00:00+00:00",
    )


def _publish(edge_root: Path, model_onnx: bytes, key, *, version: str = "1") -> Path:
    files = make_bundle(model_onnx=model_onnx, manifest=_manifest(model_onnx, key, version=version), key=key)
    return install_bundle(edge_root, DEVICE, version, files)


@pytest.fixture
def edge_root(tmp_path, signing_key) -> Path:
    root = tmp_path / "edge"
    add_trusted_key(trusted_keys_dir(root), signing_key.public_key())
    return root


@pytest.fixture
def bundle(edge_root, model_onnx, signing_key) -> Path:
    folder = _publish(edge_root, model_onnx, signing_key)
    set_current(edge_root, DEVICE, "1")
    return folder


def _run_cli(capsys, *argv: str) -> tuple[int, dict]:
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, json.loads(captured.out if status == 0 else captured.err)


# Tampering: each case changes a published bundle in place.


def _flip_model_byte(bundle: Path, model_onnx: bytes) -> None:
    data = bytearray(model_onnx)
    data[len(data) // 2] ^= 0x01
    (bundle / "model.onnx").write_bytes(bytes(data))


def _truncate_model(bundle: Path, model_onnx: bytes) -> None:
    (bundle / "model.onnx").write_bytes(model_onnx[:-16])


def _sign_with_other_key(bundle: Path, model_onnx: bytes) -> None:
    document = (bundle / "manifest.json").read_bytes()
    (bundle / "manifest.sig").write_bytes(sign(document, generate_signing_key()))


def _edit_signed_manifest(bundle: Path, model_onnx: bytes) -> None:
    manifest = json.loads((bundle / "manifest.json").read_bytes())
    manifest["metrics"]["macro_f1"] = 1.0
    (bundle / "manifest.json").write_bytes(manifest_bytes(manifest))


def _write_non_base64_signature(bundle: Path, model_onnx: bytes) -> None:
    (bundle / "manifest.sig").write_bytes(b"not a signature!\n")


def _write_short_signature(bundle: Path, model_onnx: bytes) -> None:
    (bundle / "manifest.sig").write_bytes(base64.b64encode(b"x" * 32) + b"\n")


def _sign_with_untrusted_key(bundle: Path, model_onnx: bytes) -> None:
    stranger = generate_signing_key()
    files = make_bundle(model_onnx=model_onnx, manifest=_manifest(model_onnx, stranger), key=stranger)
    for name, data in files.items():
        (bundle / name).write_bytes(data)


def _garble_manifest(bundle: Path, model_onnx: bytes) -> None:
    (bundle / "manifest.json").write_bytes(b'{"format": "daqflow-edge-bundle/1", ')


def _add_unlisted_file(bundle: Path, model_onnx: bytes) -> None:
    (bundle / "notes.txt").write_text("added on the edge box\n")


def _remover(name: str):
    def remove(bundle: Path, model_onnx: bytes) -> None:
        (bundle / name).unlink()

    return remove


TAMPERING = [
    pytest.param(_flip_model_byte, "hash_mismatch", "model.onnx has sha256", id="changed-model-byte"),
    pytest.param(_truncate_model, "hash_mismatch", "model.onnx has", id="truncated-model"),
    pytest.param(_sign_with_other_key, "bad_signature", "does not verify", id="wrong-signature"),
    pytest.param(_edit_signed_manifest, "bad_signature", "does not verify", id="edited-manifest"),
    pytest.param(_write_non_base64_signature, "bad_signature", "is not base64", id="signature-not-base64"),
    pytest.param(_write_short_signature, "bad_signature", "contains 32 bytes", id="signature-too-short"),
    pytest.param(_sign_with_untrusted_key, "unknown_key", "which is not in", id="untrusted-key"),
    pytest.param(_remover("model.onnx"), "missing_file", "model.onnx is missing", id="missing-model"),
    pytest.param(_remover("manifest.json"), "missing_file", "manifest.json is missing", id="missing-manifest"),
    pytest.param(_remover("manifest.sig"), "missing_file", "manifest.sig is missing", id="missing-signature"),
    pytest.param(_garble_manifest, "bad_manifest", "is not valid JSON", id="unparsable-manifest"),
    pytest.param(_add_unlisted_file, "unlisted_file", "notes.txt", id="unlisted-file"),
]


def test_verify_bundle_accepts_good_bundle(bundle, edge_root, model_onnx):
    manifest = verify_bundle(bundle, trusted_keys=trusted_keys_dir(edge_root))

    assert manifest["format"] == BUNDLE_FORMAT
    assert (manifest["device_id"], manifest["version"]) == (DEVICE, "1")
    assert manifest["files"] == {"model.onnx": {"sha256": hashlib.sha256(model_onnx).hexdigest(), "bytes": len(model_onnx)}}


@pytest.mark.parametrize(("tamper", "reason", "fragment"), TAMPERING)
def test_verify_bundle_rejects(bundle, edge_root, model_onnx, tamper, reason, fragment):
    tamper(bundle, model_onnx)

    with pytest.raises(BundleError) as raised:
        verify_bundle(bundle, trusted_keys=trusted_keys_dir(edge_root))

    assert raised.value.reason == reason
    assert fragment in raised.value.message
    assert str(bundle) in raised.value.message


@pytest.mark.parametrize(("tamper", "reason", "fragment"), TAMPERING)
def test_cli_verify_rejects(bundle, model_onnx, capsys, tamper, reason, fragment):
    tamper(bundle, model_onnx)

    status, error = _run_cli(capsys, "verify", str(bundle))

    assert status == 1
    assert error["ok"] is False
    assert error["reason"] == reason
    assert fragment in error["error"]


@pytest.mark.parametrize(("tamper", "reason", "fragment"), TAMPERING)
def test_cli_predict_rejects(bundle, model_onnx, recording, capsys, tamper, reason, fragment):
    tamper(bundle, model_onnx)

    status, error = _run_cli(capsys, "predict", str(bundle), recording, "--sampling-rate-hz", "12000")

    assert status == 1
    assert error["reason"] == reason


def test_cli_verify_accepts_both_folders(bundle, capsys):
    for path in (bundle, bundle.parents[1]):
        status, result = _run_cli(capsys, "verify", str(path))

        assert status == 0
        assert result == {"ok": True, "device_id": DEVICE, "version": "1"}


def test_cli_verify_explicit_trusted_keys(bundle, edge_root, tmp_path, capsys):
    copy = tmp_path / "copied-bundle"
    copy.mkdir()
    for name in ("model.onnx", "manifest.json", "manifest.sig"):
        (copy / name).write_bytes((bundle / name).read_bytes())

    status, result = _run_cli(capsys, "verify", str(copy), "--trusted-keys", str(trusted_keys_dir(edge_root)))
    status_without_keys, error = _run_cli(capsys, "verify", str(copy))

    assert status == 0
    assert result["ok"] is True
    assert status_without_keys == 1
    assert "--trusted-keys" in error["error"]


def test_verify_rejects_misplaced_bundle(edge_root, model_onnx, signing_key):
    files = make_bundle(model_onnx=model_onnx, manifest=_manifest(model_onnx, signing_key, version="1"), key=signing_key)
    misplaced = install_bundle(edge_root, DEVICE, "2", files)

    with pytest.raises(BundleError, match="installed as device 'rig1-drive-end' version '2'") as raised:
        verify_bundle(misplaced, trusted_keys=trusted_keys_dir(edge_root))

    assert raised.value.reason == "bad_manifest"


def test_verify_rejects_mismatched_trusted_key(bundle, edge_root, signing_key):
    trusted = trusted_keys_dir(edge_root) / f"{key_id(signing_key.public_key())}.pem"
    trusted.write_bytes(public_key_pem(generate_signing_key()))

    with pytest.raises(BundleError, match="does not contain the Ed25519 key") as raised:
        verify_bundle(bundle, trusted_keys=trusted_keys_dir(edge_root))

    assert raised.value.reason == "unknown_key"


def test_python_module_cli_verifies(bundle):
    command = [sys.executable, "-m", "edge.cli", "verify", str(bundle)]
    environment = {**os.environ, "DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    options = {"capture_output": True, "text": True, "cwd": REPO_ROOT, "env": environment, "timeout": 120}

    good = subprocess.run(command, **options)
    _flip_model_byte(bundle, (bundle / "model.onnx").read_bytes())
    bad = subprocess.run(command, **options)

    assert good.returncode == 0, good.stderr
    assert json.loads(good.stdout)["ok"] is True
    assert bad.returncode == 1
    assert json.loads(bad.stderr)["reason"] == "hash_mismatch"


# Keys and manifests.


def test_private_key_pem_round_trip(signing_key):
    loaded = load_private_key(private_key_to_pem(signing_key))

    assert key_id(loaded.public_key()) == key_id(signing_key.public_key())


def test_key_id_hashes_raw_public_key(signing_key):
    raw = signing_key.public_key().public_bytes_raw()

    assert key_id(signing_key.public_key()) == hashlib.sha256(raw).hexdigest()[:16]


def test_public_key_pem_format(signing_key):
    pem = public_key_pem(signing_key)

    assert pem.startswith(b"-----BEGIN PUBLIC KEY-----")
    assert pem == public_key_pem(signing_key.public_key())


def test_load_private_key_rejects_other_key_types():
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )

    with pytest.raises(ValueError, match="bundles are signed with Ed25519 keys"):
        load_private_key(pem)


def test_manifest_bytes_are_canonical(model_onnx, signing_key):
    manifest = _manifest(model_onnx, signing_key)

    document = manifest_bytes(manifest)
    reordered = manifest_bytes(dict(reversed(list(manifest.items()))))

    assert document == reordered
    assert document.endswith(b"}\n")
    assert json.loads(document) == manifest


def test_manifest_bytes_reject_nan(model_onnx, signing_key):
    manifest = _manifest(model_onnx, signing_key)
    manifest["metrics"]["macro_f1"] = float("nan")

    with pytest.raises(ValueError, match="Store such metrics as null"):
        manifest_bytes(manifest)


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("classes", [], "non-empty list of class names"),
        ("classes", ["ball", "ball"], "lists a class twice"),
        ("files", {"weights.bin": b"1"}, "lists at least model.onnx"),
        ("files", {"model.onnx": b"1", "../escape": b"2"}, "must be plain names"),
        ("created_at", "yesterday", "not an ISO 8601 time"),
        ("device_id", "", "non-empty string 'device_id'"),
        ("metrics", None, "needs an object 'metrics'"),
        ("input_spec", {"kind": "features"}, "input_spec.name"),
    ],
)
def test_build_manifest_rejects_invalid_fields(model_onnx, signing_key, field, value, match):
    arguments = {
        "device_id": DEVICE,
        "version": "1",
        "model_type": "lightgbm",
        "classes": CLASSES,
        "input_spec": INPUT_SPEC,
        "feature_spec": FEATURE_SPEC,
        "metrics": {},
        "dataset_version": "d1",
        "files": {"model.onnx": model_onnx},
        "key_id": key_id(signing_key.public_key()),
        "created_at": "2026-01-01T12:00:00+00:00",
    }
    arguments[field] = value

    with pytest.raises(BundleError, match=match) as raised:
        build_manifest(**arguments)

    assert raised.value.reason == "bad_manifest"


def test_make_bundle_rejects_other_model_bytes(model_onnx, signing_key):
    manifest = _manifest(model_onnx, signing_key)

    with pytest.raises(ValueError, match="not the model passed to make_bundle"):
        make_bundle(model_onnx=model_onnx + b"\0", manifest=manifest, key=signing_key)


def test_make_bundle_rejects_other_signing_key(model_onnx, signing_key):
    manifest = _manifest(model_onnx, signing_key)

    with pytest.raises(ValueError, match="but the signing key is"):
        make_bundle(model_onnx=model_onnx, manifest=manifest, key=generate_signing_key())


# Layout: installing, putting into service and rolling back.


def test_set_current_records_history(edge_root, model_onnx, signing_key):
    for version in ("1", "2"):
        _publish(edge_root, model_onnx, signing_key, version=version)
        set_current(edge_root, DEVICE, version)

    assert current_version(edge_root, DEVICE) == "2"
    assert read_history(edge_root, DEVICE) == ["1", "2"]


def test_set_current_again_keeps_history(edge_root, bundle):
    set_current(edge_root, DEVICE, "1")

    assert read_history(edge_root, DEVICE) == ["1"]


def test_rollback_returns_previous_version(edge_root, model_onnx, signing_key):
    for version in ("1", "2"):
        _publish(edge_root, model_onnx, signing_key, version=version)
        set_current(edge_root, DEVICE, version)

    restored = rollback(edge_root, DEVICE)

    assert restored == "1"
    assert current_version(edge_root, DEVICE) == "1"
    assert read_history(edge_root, DEVICE) == ["1"]


def test_rollback_with_one_version_fails(edge_root, bundle):
    with pytest.raises(LayoutError, match="has no version before '1'"):
        rollback(edge_root, DEVICE)

    assert current_version(edge_root, DEVICE) == "1"


def test_rollback_without_version_in_service_fails(edge_root):
    with pytest.raises(LayoutError, match="has no version in service"):
        rollback(edge_root, DEVICE)


def test_rollback_detects_inconsistent_history(edge_root, model_onnx, signing_key):
    for version in ("1", "2"):
        _publish(edge_root, model_onnx, signing_key, version=version)
        set_current(edge_root, DEVICE, version)
    # The state a crash between the history.json and `current` writes of set_current leaves behind.
    (edge_root / "devices" / DEVICE / "current").write_text("1\n")

    with pytest.raises(LayoutError, match="history.json ends with"):
        rollback(edge_root, DEVICE)


def test_set_current_repairs_interrupted_switch(edge_root, model_onnx, signing_key):
    for version in ("1", "2"):
        _publish(edge_root, model_onnx, signing_key, version=version)
        set_current(edge_root, DEVICE, version)
    (edge_root / "devices" / DEVICE / "current").write_text("1\n")

    set_current(edge_root, DEVICE, "2")

    assert current_version(edge_root, DEVICE) == "2"
    assert read_history(edge_root, DEVICE) == ["1", "2"]
    assert rollback(edge_root, DEVICE) == "1"


def test_cli_rollback(edge_root, model_onnx, signing_key, capsys):
    for version in ("1", "2"):
        _publish(edge_root, model_onnx, signing_key, version=version)
        set_current(edge_root, DEVICE, version)

    status, result = _run_cli(capsys, "rollback", "--device", DEVICE, "--edge-dir", str(edge_root))
    second_status, error = _run_cli(capsys, "rollback", "--device", DEVICE, "--edge-dir", str(edge_root))

    assert status == 0
    assert result == {"ok": True, "device_id": DEVICE, "version": "1", "rolled_back_from": "2"}
    assert second_status == 1
    assert error["reason"] == "layout"
    assert "no version before '1'" in error["error"]


def test_cli_predict_uses_version_in_service(edge_root, model_onnx, signing_key, recording, capsys):
    for version in ("1", "2"):
        _publish(edge_root, model_onnx, signing_key, version=version)
        set_current(edge_root, DEVICE, version)
    device = edge_root / "devices" / DEVICE

    _, before = _run_cli(capsys, "predict", str(device), recording, "--sampling-rate-hz", "12000")
    rollback(edge_root, DEVICE)
    _, after = _run_cli(capsys, "predict", str(device), recording, "--sampling-rate-hz", "12000")

    assert before["version"] == "2"
    assert after["version"] == "1"


def test_set_current_rejects_missing_bundle(edge_root):
    with pytest.raises(LayoutError, match="Install the bundle before"):
        set_current(edge_root, DEVICE, "7")


def test_install_bundle_rejects_existing_version(edge_root, bundle, model_onnx, signing_key):
    with pytest.raises(LayoutError, match="already exists"):
        _publish(edge_root, model_onnx, signing_key, version="1")


@pytest.mark.parametrize(
    ("device_id", "version"),
    [("../other", "1"), ("", "1"), (DEVICE, "a/b"), (DEVICE, ".."), (DEVICE, ".hidden")],
)
def test_bundle_dir_rejects_path_like_names(edge_root, device_id, version):
    with pytest.raises(LayoutError, match="is not a plain folder or file name"):
        bundle_dir(edge_root, device_id, version)


def test_resolve_bundle_follows_current(edge_root, bundle):
    device = edge_root / "devices" / DEVICE

    assert resolve_bundle(device) == bundle
    assert resolve_bundle(bundle) == bundle


@pytest.mark.parametrize(
    ("setup", "match"),
    [
        ("missing", "does not exist or is not a folder"),
        ("device-without-current", "has no version in service"),
    ],
)
def test_resolve_bundle_rejects(tmp_path, setup, match):
    path = tmp_path / "devices" / DEVICE
    if setup == "device-without-current":
        (path / "bundles").mkdir(parents=True)

    with pytest.raises(LayoutError, match=match):
        resolve_bundle(path)


def test_find_trusted_keys(edge_root, bundle, tmp_path):
    assert find_trusted_keys(bundle) == trusted_keys_dir(edge_root).resolve()

    with pytest.raises(LayoutError, match="Pass the trusted keys folder explicitly"):
        find_trusted_keys(tmp_path)
