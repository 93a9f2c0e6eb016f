"""Readers that turn the bytes of a raw recording into one channel's samples.

The format is chosen by the file name's suffix (see `SUPPORTED_SUFFIXES`):

- ``.mat``: MATLAB v5 files through `scipy.io.loadmat`, and MATLAB v7.3 files
  (an HDF5 container behind a 512-byte header) through h5py. The channels are
  the numeric vectors with more than one sample. When any of their names ends
  in ``_time``, as in CWRU's ``X105_DE_time``, only those count, so stray
  vectors such as CWRU's ``i`` are left out. A scalar whose name ends in
  ``RPM`` is read as the shaft speed.
- ``.csv`` and ``.parquet``: the channels are the numeric columns other than
  a time column (``time``, ``t`` or ``timestamp``, in any case).
- ``.npy``: a 1-D array is channel ``"0"``. A 2-D array contains one channel per
  column, named by the column index ``"0"``, ``"1"`` and so on.

A requested channel matches the channel of exactly that name, else the channels
whose names end in ``_<channel>`` or ``_<channel>_time``. So ``"DE"`` and
``"DE_time"`` both select ``X105_DE_time``. Samples are returned as stored,
without removing the DC offset or rescaling.

Readers raise `tasks.recordings.RecordingError` and do not import Prefect, so
the edge runtime can use them.
"""

from __future__ import annotations

import hashlib
import io
import posixpath
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import fsspec
import h5py
import numpy as np
import scipy.io

from tasks.recordings import RecordingError

if TYPE_CHECKING:
    import pandas as pd

SUPPORTED_SUFFIXES = (".mat", ".csv", ".parquet", ".npy")

# MATLAB v7.3 files are HDF5 files whose superblock follows a 512-byte MAT header.
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_MAT_V73_SIGNATURE_OFFSET = 512
# A MATLAB v5 header ends with a 2-byte endian indicator at offset 126.
_MAT_V5_ENDIAN_OFFSET = 126
_MAT_V5_ENDIAN_MARKERS = (b"IM", b"MI")

_TIME_COLUMNS = frozenset({"time", "t", "timestamp"})
_NUMERIC_KINDS = "iuf"


@dataclass(frozen=True)
class Signal:
    """One channel of a recording.

    Attributes:
        values: 1-D float64 samples exactly as stored in the file.
        channel: the variable or column that was read, e.g. ``X105_DE_time``.
        shaft_speed_rpm: the shaft speed stored in the file, or None when the
            file stores none.
    """

    values: np.ndarray
    channel: str
    shaft_speed_rpm: float | None


@dataclass(frozen=True)
class _Contents:
    """The channels of a decoded file and the shaft speeds it stores."""

    channels: dict[str, np.ndarray]
    description: str
    speeds_rpm: dict[str, float] = field(default_factory=dict)


def list_channels(data: bytes, *, name: str) -> list[str]:
    """Decode a recording and return the names of its channels, in the order the file lists them.

    Args:
        data: the file's bytes.
        name: file name or path, used to pick the format by its suffix and
            to name the file in error messages.

    Raises:
        RecordingError: ``empty_file`` or ``unreadable``.
    """
    return list(_decode(data, name=name).channels)


def read_signal(data: bytes, *, name: str, channel: str | None) -> Signal:
    """Decode a recording and return one channel's samples.

    Args:
        data: the file's bytes.
        name: file name or path, used to pick the format by its suffix and
            to name the file in error messages.
        channel: the channel to read, or None for the only one in the file.

    Raises:
        RecordingError: ``empty_file``, ``unreadable`` or ``channel_not_found``.
    """
    contents = _decode(data, name=name)
    selected = _select_channel(contents, channel, name=name)
    values = np.asarray(contents.channels[selected], dtype=np.float64).ravel()
    return Signal(values=values, channel=selected, shaft_speed_rpm=_shaft_speed(contents.speeds_rpm, selected))


def read_signal_file(
    uri: str,
    *,
    channel: str | None,
    storage_options: dict | None = None,
    name: str | None = None,
) -> tuple[Signal, str]:
    """Read a recording through fsspec and return one channel and the file's SHA-256.

    The whole file is read into memory, once for hashing and decoding. A CWRU
    file is 1 to 4 MB. Errors other than a missing file or a folder, such as
    network or permission errors, propagate unchanged because the recording
    itself may be fine.

    Args:
        uri: local path or fsspec URL of the file.
        channel: the channel to read, or None for the only one in the file.
        storage_options: fsspec options for the file's filesystem.
        name: the recording's path in the manifest, shown in error messages.
            Defaults to `uri`.

    Returns:
        The signal and the hex SHA-256 digest of the file's bytes.

    Raises:
        RecordingError: ``missing_file``, ``empty_file``, ``unreadable`` or
            ``channel_not_found``.
    """
    name = name or uri
    data = _read_bytes(uri, name=name, storage_options=storage_options)
    signal = read_signal(data, name=name, channel=channel)
    return signal, hashlib.sha256(data).hexdigest()


def _read_bytes(uri: str, *, name: str, storage_options: dict | None) -> bytes:
    location = "" if name == uri else f" at `{uri}`"
    try:
        with fsspec.open(uri, "rb", **(storage_options or {})) as file:
            return file.read()
    except FileNotFoundError:
        raise RecordingError(
            "missing_file",
            f"recording `{name}` not found{location}. Fix `path` in the manifest or drop the row.",
        ) from None
    except IsADirectoryError:
        raise RecordingError(
            "unreadable",
            f"recording `{name}`{location} is a folder, not a file. Point `path` in the manifest at a file.",
        ) from None


def _decode(data: bytes, *, name: str) -> _Contents:
    if not data:
        raise RecordingError("empty_file", f"recording `{name}` is empty (0 bytes). Re-export it or drop the row.")

    suffix = posixpath.splitext(name)[1].lower()
    decoders = {".mat": _decode_mat, ".csv": _decode_csv, ".parquet": _decode_parquet, ".npy": _decode_npy}
    if suffix not in decoders:
        found = f"the unsupported suffix `{suffix}`" if suffix else "no suffix"
        raise RecordingError(
            "unreadable",
            f"recording `{name}` has {found}. "
            f"Supported suffixes: {', '.join(SUPPORTED_SUFFIXES)}. Convert the file or drop the row.",
        )

    return decoders[suffix](data, name=name)


def _unreadable(name: str, file_format: str, error: Exception) -> RecordingError:
    return RecordingError(
        "unreadable",
        f"recording `{name}` could not be read as {file_format} ({type(error).__name__}: {error}). "
        "The file may be truncated or corrupt. Copy it again from the DAQ or drop the row.",
    )


def _decode_mat(data: bytes, *, name: str) -> _Contents:
    signature_end = _MAT_V73_SIGNATURE_OFFSET + len(_HDF5_SIGNATURE)
    if data[_MAT_V73_SIGNATURE_OFFSET:signature_end] == _HDF5_SIGNATURE:
        variables = _read_mat_v73(data, name=name)
    elif data[_MAT_V5_ENDIAN_OFFSET : _MAT_V5_ENDIAN_OFFSET + 2] in _MAT_V5_ENDIAN_MARKERS:
        variables = _read_mat_v5(data, name=name)
    else:
        raise RecordingError(
            "unreadable",
            f"recording `{name}` is not a MATLAB v5 or v7.3 MAT-file (no MAT header). "
            "Check that the file really is a .mat export, or drop the row.",
        )

    return _mat_contents(variables)


def _read_mat_v5(data: bytes, *, name: str) -> dict[str, np.ndarray]:
    # On corrupt input scipy 1.17.1 raises many unrelated types (MatReadError,
    # OSError, ValueError, IndexError, TypeError, UnboundLocalError), so any
    # exception here means a bad file.
    # NOTE: a few corrupt headers crash the interpreter inside loadmat with a
    # segmentation fault, which no exception handler can turn into a quarantine.
    try:
        loaded = scipy.io.loadmat(io.BytesIO(data))
    except Exception as error:
        raise _unreadable(name, "a MATLAB v5 MAT-file", error) from None

    # loadmat also returns cell arrays, structs and text, and adds __header__ and similar keys.
    return {
        key: value
        for key, value in loaded.items()
        if not key.startswith("__") and isinstance(value, np.ndarray) and value.dtype.kind in _NUMERIC_KINDS
    }


def _read_mat_v73(data: bytes, *, name: str) -> dict[str, np.ndarray]:
    variables = {}
    try:
        with h5py.File(io.BytesIO(data), "r") as file:
            for key, item in file.items():
                if _is_matlab_numeric_vector(item):
                    variables[key] = item[()]
    except (OSError, ValueError) as error:
        raise _unreadable(name, "a MATLAB v7.3 MAT-file", error) from None

    return variables


def _is_matlab_numeric_vector(item: h5py.Group | h5py.Dataset) -> bool:
    """Tell whether an HDF5 item is a numeric MATLAB scalar or vector.

    MATLAB stores text (class ``char``) and ``logical`` values as integers, and
    marks empty arrays with ``MATLAB_empty``, so the dtype alone is not enough.
    """
    if not isinstance(item, h5py.Dataset) or item.dtype.kind not in _NUMERIC_KINDS:
        return False

    matlab_class = item.attrs.get("MATLAB_class", b"")
    if isinstance(matlab_class, bytes):
        matlab_class = matlab_class.decode("ascii", errors="replace")
    if matlab_class in ("char", "logical") or item.attrs.get("MATLAB_empty", 0):
        return False

    return _is_vector_shape(item.shape)


def _is_vector_shape(shape: tuple[int, ...]) -> bool:
    return sum(1 for size in shape if size > 1) <= 1


def _mat_contents(variables: dict[str, np.ndarray]) -> _Contents:
    vectors = {
        key: value.ravel() for key, value in variables.items() if _is_vector_shape(value.shape) and value.size > 1
    }
    timed = {key: value for key, value in vectors.items() if key.endswith("_time")}
    speeds = {key: float(value.item()) for key, value in variables.items() if value.size == 1 and key.endswith("RPM")}
    if timed:
        return _Contents(channels=timed, description="vectors named *_time", speeds_rpm=speeds)
    return _Contents(channels=vectors, description="numeric vectors with more than one sample", speeds_rpm=speeds)


def _decode_csv(data: bytes, *, name: str) -> _Contents:
    import pandas as pd

    try:
        frame = pd.read_csv(io.BytesIO(data))
    except ValueError as error:
        raise _unreadable(name, "CSV with a header row", error) from None

    return _table_contents(frame)


def _decode_parquet(data: bytes, *, name: str) -> _Contents:
    import pandas as pd

    try:
        frame = pd.read_parquet(io.BytesIO(data))
    except (ValueError, OSError) as error:
        raise _unreadable(name, "Parquet", error) from None

    return _table_contents(frame)


def _table_contents(frame: pd.DataFrame) -> _Contents:
    from pandas.api.types import is_bool_dtype, is_numeric_dtype

    channels = {}
    for column in frame.columns:
        dtype = frame[column].dtype
        if str(column).strip().lower() in _TIME_COLUMNS or is_bool_dtype(dtype) or not is_numeric_dtype(dtype):
            continue
        channels[str(column)] = frame[column].to_numpy(dtype=np.float64)

    return _Contents(channels=channels, description="numeric columns other than time")


def _decode_npy(data: bytes, *, name: str) -> _Contents:
    try:
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError as error:
        raise _unreadable(name, "a NumPy .npy array", error) from None

    if array.dtype.kind not in _NUMERIC_KINDS or array.ndim not in (1, 2):
        raise RecordingError(
            "unreadable",
            f"recording `{name}` contains a {array.ndim}-D array of {array.dtype}, but a .npy recording must be "
            "a 1-D or 2-D (samples x channels) array of numbers. Save it in that layout or drop the row.",
        )

    columns = array if array.ndim == 2 else array[:, np.newaxis]
    channels = {str(index): columns[:, index] for index in range(columns.shape[1])}
    return _Contents(channels=channels, description="array columns")


def _select_channel(contents: _Contents, channel: str | None, *, name: str) -> str:
    names = list(contents.channels)
    if not names:
        raise RecordingError(
            "channel_not_found",
            f"recording `{name}` has no channels ({contents.description}). "
            "Check that the file contains the recording, or drop the row.",
        )

    if channel is not None:
        return _match_channel(contents, channel, name=name)

    if len(names) > 1:
        raise RecordingError(
            "channel_not_found",
            f"recording `{name}` has {len(names)} channels ({contents.description}): {', '.join(names)}. "
            "Set `channel` in the manifest to pick one, or drop the row.",
        )
    return names[0]


def _match_channel(contents: _Contents, channel: str, *, name: str) -> str:
    if channel in contents.channels:
        return channel

    names = list(contents.channels)
    matches = [key for key in names if key.endswith((f"_{channel}", f"_{channel}_time"))]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise RecordingError(
            "channel_not_found",
            f"recording `{name}` has no channel matching `{channel}`. "
            f"Channels present ({contents.description}): {', '.join(names)}. "
            "Set `channel` in the manifest or drop the row.",
        )
    raise RecordingError(
        "channel_not_found",
        f"recording `{name}` has several channels matching `{channel}`: {', '.join(matches)}. "
        "Set `channel` in the manifest to one of these names.",
    )


def _shaft_speed(speeds_rpm: dict[str, float], channel: str) -> float | None:
    """Pick the speed stored beside a channel: ``X105RPM`` for ``X105_DE_time``, else the only one."""
    prefix = channel.split("_", 1)[0]
    if f"{prefix}RPM" in speeds_rpm:
        return speeds_rpm[f"{prefix}RPM"]
    if len(speeds_rpm) == 1:
        return next(iter(speeds_rpm.values()))
    return None
