"""Signed edge bundles: the manifest format, Ed25519 signing and verification.

A bundle is a folder with these three files, plus any further files that its
manifest lists::

    model.onnx      the model
    manifest.json   what the model is for and the sha256 and size of every bundle file
    manifest.sig    base64 of the Ed25519 signature over the exact bytes of manifest.json

The signature covers the manifest, and the manifest lists the sha256 of every
other file, so one signature check plus one hash per file proves that nothing
changed since publishing. The edge box trusts the public keys in its
`trusted_keys` folder, each stored as `<key_id>.pem`.

Example, with `fields` holding the other arguments of `build_manifest`::

    key = generate_signing_key()
    manifest = build_manifest(**fields, files={"model.onnx": model}, key_id=key_id(key.public_key()))
    files = make_bundle(model_onnx=model, manifest=manifest, key=key)
    bundle = install_bundle(edge_root, manifest["device_id"], manifest["version"], files)
    verify_bundle(bundle, trusted_keys=trusted_keys_dir(edge_root))  # returns the manifest

This module uses only `cryptography` and the standard library, so the edge box
can verify bundles without the training stack.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edge.layout import locate_bundle

BUNDLE_FORMAT = "daqflow-edge-bundle/1"
MODEL_FILE = "model.onnx"
MANIFEST_FILE = "manifest.json"
SIGNATURE_FILE = "manifest.sig"

_SIGNATURE_LENGTH = 64
_REQUIRED_TEXT_FIELDS = ("device_id", "version", "model_type", "dataset_version", "key_id", "created_at")
_REQUIRED_DICT_FIELDS = ("input_spec", "feature_spec", "metrics")


class BundleError(Exception):
    """A bundle that failed verification or cannot be used.

    Attributes:
        reason: a short code for the cause: ``missing_file``, ``bad_manifest``,
            ``unknown_key``, ``bad_signature``, ``hash_mismatch``,
            ``unlisted_file`` (a file in the bundle folder that the manifest
            does not list) or ``unsupported`` (a verified bundle that this
            runtime cannot run).
        message: what failed, on which file, and what to do.
    """

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


def generate_signing_key() -> Ed25519PrivateKey:
    """Create a new Ed25519 signing key."""
    return Ed25519PrivateKey.generate()


def private_key_to_pem(key: Ed25519PrivateKey) -> bytes:
    """Serialize a signing key as unencrypted PKCS#8 PEM.

    The PEM is a secret: keep it in a secret store, never in a bundle or a log.
    """
    return key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    )


def load_private_key(pem: bytes) -> Ed25519PrivateKey:
    """Load a signing key from unencrypted PKCS#8 PEM.

    Raises:
        ValueError: the PEM cannot be parsed or contains another kind of key.
    """
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(
            f"the signing key PEM contains a {type(key).__name__}, but bundles are signed with Ed25519 keys. "
            "Create one with generate_signing_key()."
        )
    return key


def public_key_pem(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    """Return the public key of `key` as PEM (SubjectPublicKeyInfo), the format of trusted key files."""
    public_key = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public_key.public_bytes(encoding=serialization.Encoding.PEM, format=serialization.PublicFormat.SubjectPublicKeyInfo)


def key_id(public_key: Ed25519PublicKey) -> str:
    """Return the first 16 hex digits of the sha256 of the raw 32-byte public key."""
    return hashlib.sha256(public_key.public_bytes_raw()).hexdigest()[:16]


def add_trusted_key(trusted_keys: Path, public_key: Ed25519PublicKey) -> Path:
    """Write `public_key` into a trusted keys folder as `<key_id>.pem` and return the file."""
    trusted_keys = Path(trusted_keys)
    trusted_keys.mkdir(parents=True, exist_ok=True)
    path = trusted_keys / f"{key_id(public_key)}.pem"
    path.write_bytes(public_key_pem(public_key))
    return path


def build_manifest(
    *,
    device_id: str,
    version: str,
    model_type: str,
    classes: list[str],
    input_spec: dict,
    feature_spec: dict,
    metrics: dict,
    dataset_version: str,
    files: dict[str, bytes],
    key_id: str,
    created_at: str,
    extra: dict | None = None,
) -> dict:
    """Build the manifest of a bundle.

    Args:
        device_id: the device the model is for.
        version: the model version, which is also the bundle's folder name on the edge box.
        model_type: the kind of model, for example ``"lightgbm"``.
        classes: class names in the order of the model's probability columns.
        input_spec: the model input: ``kind`` (``"features"`` or ``"waveform"``),
            ``name``, ``dtype`` and, by kind, ``feature_names`` or ``shape``.
        feature_spec: how windows and features are computed from a recording.
        metrics: evaluation metrics of the model.
        dataset_version: the dataset the model was trained on.
        files: every bundle file other than manifest.json and manifest.sig, by name.
        key_id: id of the key that will sign the manifest.
        created_at: ISO 8601 time of publishing.
        extra: more JSON fields, stored under ``"extra"``.

    Raises:
        BundleError: with reason ``bad_manifest`` when a field is invalid.
    """
    manifest = {
        "format": BUNDLE_FORMAT,
        "device_id": device_id,
        "version": version,
        "model_type": model_type,
        "classes": list(classes),
        "input_spec": input_spec,
        "feature_spec": feature_spec,
        "metrics": metrics,
        "dataset_version": dataset_version,
        "files": {name: {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)} for name, data in files.items()},
        "key_id": key_id,
        "created_at": created_at,
        "extra": dict(extra or {}),
    }
    check_manifest(manifest, source="the new manifest")
    return manifest


def manifest_bytes(manifest: dict) -> bytes:
    """Serialize a manifest as canonical JSON: sorted keys, indent 2, trailing newline.

    Raises:
        ValueError: the manifest contains NaN or infinity, which JSON cannot represent.
    """
    try:
        text = json.dumps(manifest, sort_keys=True, indent=2, allow_nan=False)
    except ValueError as error:
        raise ValueError(
            f"manifest of device {manifest.get('device_id')!r} contains NaN or infinity ({error}). Store such metrics as null."
        ) from error
    return (text + "\n").encode("utf-8")


def sign(manifest_json: bytes, key: Ed25519PrivateKey) -> bytes:
    """Return the contents of manifest.sig: base64 of the 64-byte signature and a newline."""
    return base64.b64encode(key.sign(manifest_json)) + b"\n"


def make_bundle(*, model_onnx: bytes, manifest: dict, key: Ed25519PrivateKey) -> dict[str, bytes]:
    """Sign a manifest and return the bundle files by name.

    Raises:
        ValueError: the manifest lists other files than model.onnx, describes
            other model bytes, or names another signing key.
    """
    if set(manifest["files"]) != {MODEL_FILE}:
        raise ValueError(
            f"manifest lists files {sorted(manifest['files'])}, but make_bundle packs only {MODEL_FILE}. "
            f"Build the manifest with files={{'{MODEL_FILE}': model_onnx}}."
        )

    listed = manifest["files"][MODEL_FILE]
    if listed != {"sha256": hashlib.sha256(model_onnx).hexdigest(), "bytes": len(model_onnx)}:
        raise ValueError(
            f"manifest lists {MODEL_FILE} with sha256 {listed['sha256']}, which is not the model passed to make_bundle. "
            "Build the manifest from the same model bytes."
        )

    signing_key_id = key_id(key.public_key())
    if manifest["key_id"] != signing_key_id:
        raise ValueError(
            f"manifest names key {manifest['key_id']}, but the signing key is {signing_key_id}. "
            "Build the manifest with key_id(key.public_key())."
        )

    document = manifest_bytes(manifest)
    return {MODEL_FILE: model_onnx, MANIFEST_FILE: document, SIGNATURE_FILE: sign(document, key)}


def verify_bundle(bundle: Path, *, trusted_keys: Path) -> dict:
    """Verify a bundle folder and return its manifest.

    Checks, in order: the three bundle files exist, manifest.json parses, its
    key is in `trusted_keys`, the signature verifies, the manifest fields are
    valid, every listed file has its listed size and sha256, and no other file
    is in the folder. For a bundle inside an edge root, the manifest's device
    id and version must also match the folder it is in. Cost: one read of
    every bundle file.

    Raises:
        BundleError: the first check that failed, with its reason.
    """
    bundle = Path(bundle)
    _check_present(bundle, [MANIFEST_FILE, SIGNATURE_FILE, MODEL_FILE])

    document = (bundle / MANIFEST_FILE).read_bytes()
    manifest = _parse_manifest(document, source=bundle / MANIFEST_FILE)
    public_key = _trusted_key(manifest.get("key_id"), trusted_keys=Path(trusted_keys), manifest_path=bundle / MANIFEST_FILE)
    _check_signature(document, bundle / SIGNATURE_FILE, public_key)

    check_manifest(manifest, source=bundle / MANIFEST_FILE)
    _check_location(bundle, manifest)
    _check_present(bundle, list(manifest["files"]))
    for name, listed in manifest["files"].items():
        _check_file(bundle / name, listed)
    _check_unlisted(bundle, manifest)
    return manifest


def check_manifest(manifest: Any, *, source: Path | str) -> None:
    """Raise BundleError (``bad_manifest``) unless `manifest` has every field of the bundle format."""
    if not isinstance(manifest, dict):
        _bad_manifest(source, f"is a JSON {type(manifest).__name__}, not an object")
    if manifest.get("format") != BUNDLE_FORMAT:
        _bad_manifest(source, f"has format {manifest.get('format')!r}, expected {BUNDLE_FORMAT!r}")

    for field in _REQUIRED_TEXT_FIELDS:
        if not isinstance(manifest.get(field), str) or not manifest[field]:
            _bad_manifest(source, f"needs a non-empty string {field!r}, found {manifest.get(field)!r}")
    for field in _REQUIRED_DICT_FIELDS:
        if not isinstance(manifest.get(field), dict):
            _bad_manifest(source, f"needs an object {field!r}, found {manifest.get(field)!r}")

    _check_created_at(manifest["created_at"], source=source)
    _check_classes(manifest.get("classes"), source=source)
    _check_input_spec(manifest["input_spec"], source=source)
    _check_files_field(manifest.get("files"), source=source)
    if not isinstance(manifest.get("extra", {}), dict):
        _bad_manifest(source, f"needs an object 'extra', found {manifest.get('extra')!r}")


def _check_created_at(created_at: str, *, source: Path | str) -> None:
    try:
        datetime.fromisoformat(created_at)
    except ValueError:
        _bad_manifest(source, f"has created_at {created_at!r}, which is not an ISO 8601 time")


def _check_classes(classes: Any, *, source: Path | str) -> None:
    if not isinstance(classes, list) or not classes or not all(isinstance(name, str) and name for name in classes):
        _bad_manifest(source, f"needs 'classes' as a non-empty list of class names, found {classes!r}")
    if len(set(classes)) != len(classes):
        _bad_manifest(source, f"lists a class twice in 'classes': {classes}")


def _check_input_spec(input_spec: dict, *, source: Path | str) -> None:
    for field in ("kind", "name", "dtype"):
        if not isinstance(input_spec.get(field), str):
            _bad_manifest(source, f"needs a string input_spec.{field}, found {input_spec.get(field)!r}")


def _check_files_field(files: Any, *, source: Path | str) -> None:
    if not isinstance(files, dict) or MODEL_FILE not in files:
        _bad_manifest(source, f"needs 'files' as an object that lists at least {MODEL_FILE}, found {files!r}")

    for name, listed in files.items():
        if "/" in name or "\\" in name or name.startswith(".") or name in (MANIFEST_FILE, SIGNATURE_FILE):
            _bad_manifest(
                source, f"lists file {name!r}, but bundle files must be plain names other than {MANIFEST_FILE} and {SIGNATURE_FILE}"
            )
        if not isinstance(listed, dict) or not _is_sha256(listed.get("sha256")) or not _is_size(listed.get("bytes")):
            _bad_manifest(source, f"lists file {name!r} as {listed!r}, but each file needs a hex 'sha256' and a 'bytes' count")


def _is_sha256(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(character in "0123456789abcdef" for character in value)


def _is_size(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _bad_manifest(source: Path | str, problem: str) -> NoReturn:
    raise BundleError("bad_manifest", f"{source} {problem}. Publish the bundle again with a valid manifest.")


def _check_present(bundle: Path, names: list[str]) -> None:
    if not bundle.is_dir():
        raise BundleError(
            "missing_file", f"bundle folder {bundle} does not exist. Pass the folder that contains {MANIFEST_FILE}."
        )

    for name in names:
        if not (bundle / name).is_file():
            raise BundleError("missing_file", f"{bundle / name} is missing. Copy the complete bundle again.")


def _parse_manifest(document: bytes, *, source: Path) -> dict:
    try:
        manifest = json.loads(document)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BundleError("bad_manifest", f"{source} is not valid JSON ({error}). Copy the bundle again.") from error

    if not isinstance(manifest, dict):
        _bad_manifest(source, f"is a JSON {type(manifest).__name__}, not an object")
    return manifest


def _trusted_key(signer: Any, *, trusted_keys: Path, manifest_path: Path) -> Ed25519PublicKey:
    if not isinstance(signer, str) or not signer or not all(character in "0123456789abcdef" for character in signer):
        _bad_manifest(manifest_path, f"needs a hex 'key_id' naming the signing key, found {signer!r}")

    path = trusted_keys / f"{signer}.pem"
    if not path.is_file():
        raise BundleError(
            "unknown_key",
            f"{manifest_path} is signed with key {signer}, which is not in {trusted_keys}. If you trust the publisher, "
            f"add its public key as {path}.",
        )

    try:
        public_key = serialization.load_pem_public_key(path.read_bytes())
    except ValueError as error:
        raise BundleError(
            "unknown_key",
            f"trusted key file {path} is not a PEM public key ({error}). Replace it with the publisher's public key.",
        ) from error
    if not isinstance(public_key, Ed25519PublicKey) or key_id(public_key) != signer:
        raise BundleError(
            "unknown_key",
            f"trusted key file {path} does not contain the Ed25519 key {signer}. "
            "Replace it with the publisher's public key.",
        )
    return public_key


def _check_signature(document: bytes, signature_path: Path, public_key: Ed25519PublicKey) -> None:
    try:
        signature = base64.b64decode(signature_path.read_bytes().strip(), validate=True)
    except binascii.Error as error:
        raise BundleError("bad_signature", f"{signature_path} is not base64 ({error}). Copy the bundle again.") from error

    if len(signature) != _SIGNATURE_LENGTH:
        raise BundleError(
            "bad_signature",
            f"{signature_path} contains {len(signature)} bytes, not a {_SIGNATURE_LENGTH}-byte Ed25519 signature. "
            "Copy the bundle again.",
        )

    try:
        public_key.verify(signature, document)
    except InvalidSignature as error:
        raise BundleError(
            "bad_signature",
            f"{signature_path} does not verify {signature_path.with_name(MANIFEST_FILE)} with key {key_id(public_key)}: "
            "the manifest or its signature changed after signing. Do not run this bundle. Publish it again.",
        ) from error


def _check_location(bundle: Path, manifest: dict) -> None:
    location = locate_bundle(bundle)
    if location is None:
        return

    _, device_id, version = location
    if (manifest["device_id"], manifest["version"]) != (device_id, version):
        raise BundleError(
            "bad_manifest",
            f"{bundle / MANIFEST_FILE} is for device {manifest['device_id']!r} version {manifest['version']!r}, "
            f"but the bundle is installed as device {device_id!r} version {version!r}. "
            "Install it in the folder its manifest names.",
        )


def _check_file(path: Path, listed: dict) -> None:
    size = path.stat().st_size
    if size != listed["bytes"]:
        raise BundleError(
            "hash_mismatch", f"{path} has {size} bytes but {MANIFEST_FILE} lists {listed['bytes']}. Copy the bundle again."
        )

    with path.open("rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
    if digest != listed["sha256"]:
        raise BundleError(
            "hash_mismatch",
            f"{path} has sha256 {digest} but {MANIFEST_FILE} lists {listed['sha256']}, "
            "so the file changed after signing. Copy the bundle again.",
        )


def _check_unlisted(bundle: Path, manifest: dict) -> None:
    allowed = {*manifest["files"], MANIFEST_FILE, SIGNATURE_FILE}
    unlisted = sorted(entry.name for entry in bundle.iterdir() if entry.name not in allowed)
    if unlisted:
        raise BundleError(
            "unlisted_file",
            f"bundle {bundle} contains {unlisted}, which {MANIFEST_FILE} does not list. Remove them or copy the bundle again.",
        )
