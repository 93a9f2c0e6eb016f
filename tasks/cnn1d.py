"""The ``cnn1d`` model type: a small 1-D CNN on conditioned waveform windows, with ONNX export.

The network normalises each window itself (subtract the window mean, divide by
its standard deviation + 1e-6), then runs conv blocks, global average pooling
and a linear layer. The exported ONNX graph follows the same contract as the
LightGBM export, so the edge runtime serves both unchanged: one float32 input
``waveform`` of shape ``[N, 1, window_length]`` and two outputs, ``label``
(int64 class index, ``[N]``) and ``probabilities`` (float32 softmax,
``[N, n_classes]``).

Importing this module loads torch, so other modules import it lazily, only
for devices whose model type is ``cnn1d``.

Example::

    trained = train_cnn1d(train_windows, train_labels, eval_windows, eval_labels, config=Cnn1dConfig())
    onnx_model = cnn1d_to_onnx(trained)
    report = check_waveform_parity(onnx_model, trained, eval_windows)
    assert report["ok"], report
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from tasks.onnx_export import ONNX_OUTPUT_NAMES, check_parity

logger = logging.getLogger(__name__)

ONNX_INPUT_NAME = "waveform"

# Added to each window's standard deviation, so that a constant window gives zeros instead of a division by zero.
NORMALISATION_EPSILON = 1e-6

# Each conv block shortens the window by this factor.
_POOL_SIZE = 4

# Windows per forward pass in prediction and evaluation; bounds memory, not results.
_PREDICT_BATCH_SIZE = 256

# Marks the dictionary that `TrainedCnn.native_bytes` writes, so `load_cnn1d` rejects other files.
_NATIVE_FORMAT = "daqflow-cnn1d-v1"


@dataclass(frozen=True)
class Cnn1dConfig:
    """Network shape and training settings of one device's ``cnn1d`` model.

    Args:
        epochs: maximum number of passes over the training windows.
        batch_size: training windows per optimizer step.
        learning_rate: Adam learning rate.
        patience: epochs without a lower evaluation loss before training stops.
        channels: output channels of each conv block; one block per entry.
        kernel_size: odd length, in samples, of every convolution kernel.
        seed: seed of the weight initialisation and of the batch order.
        num_threads: CPU threads torch uses during training.
    """

    epochs: int = 20
    batch_size: int = 64
    learning_rate: float = 1e-3
    patience: int = 4
    channels: tuple[int, ...] = (16, 32, 32)
    kernel_size: int = 9
    seed: int = 0
    num_threads: int = 1

    def __post_init__(self) -> None:
        # Stored as a tuple, so that a config read from JSON equals the one that wrote it.
        object.__setattr__(self, "channels", tuple(self.channels))

        for name in ("epochs", "batch_size", "patience", "num_threads"):
            if not _is_positive_int(getattr(self, name)):
                raise ValueError(f"Cnn1dConfig.{name} is {getattr(self, name)!r}; set a whole number >= 1.")
        if not self.channels or not all(_is_positive_int(count) for count in self.channels):
            raise ValueError(
                f"Cnn1dConfig.channels is {self.channels!r}; "
                "set one whole number >= 1 per conv block, such as (16, 32, 32)."
            )
        if not (_is_positive_int(self.kernel_size) and self.kernel_size % 2 == 1):
            raise ValueError(f"Cnn1dConfig.kernel_size is {self.kernel_size!r}; set an odd whole number, such as 9.")
        if not _is_positive_number(self.learning_rate):
            raise ValueError(
                f"Cnn1dConfig.learning_rate is {self.learning_rate!r}; set a positive number, such as 1e-3."
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"Cnn1dConfig.seed is {self.seed!r}; set a whole number.")

    @property
    def min_window_length(self) -> int:
        """Shortest window the network accepts: every conv block pools by a factor of 4."""
        return _POOL_SIZE ** len(self.channels)

    def to_dict(self) -> dict[str, Any]:
        """Return the config as JSON-ready data; `channels` becomes a list."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["channels"] = list(self.channels)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Cnn1dConfig:
        """Build a config from `to_dict` output; missing keys take their defaults.

        Raises:
            ValueError: when `data` has keys that are not Cnn1dConfig fields, or a value is invalid.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data).difference(known))
        if unknown:
            raise ValueError(f"unknown Cnn1dConfig keys {unknown}; valid keys are {sorted(known)}.")
        return cls(**data)


def _is_positive_int(value: Any) -> bool:
    # bool is a subclass of int, but True is no batch size.
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _is_positive_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


class WaveformCnn(nn.Module):
    """1-D CNN from raw windows ``[N, 1, L]`` to class logits ``[N, n_classes]``.

    Each conv block is Conv1d ("same" padding), BatchNorm1d, ReLU and
    MaxPool1d(4). Global average pooling over time makes the head independent
    of the window length.
    """

    def __init__(self, *, n_classes: int, channels: tuple[int, ...], kernel_size: int):
        super().__init__()
        self.channels = tuple(channels)
        self.kernel_size = kernel_size

        blocks: list[nn.Module] = []
        in_channels = 1
        for out_channels in channels:
            blocks += [
                nn.Conv1d(in_channels, out_channels, kernel_size, padding=kernel_size // 2),
                nn.BatchNorm1d(out_channels),
                nn.ReLU(),
                nn.MaxPool1d(_POOL_SIZE),
            ]
            in_channels = out_channels
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(in_channels, n_classes)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        mean = waveform.mean(dim=-1, keepdim=True)
        std = waveform.std(dim=-1, keepdim=True, correction=0)
        normalised = (waveform - mean) / (std + NORMALISATION_EPSILON)

        pooled = self.blocks(normalised).mean(dim=-1)
        return self.head(pooled)


class _EdgeCnn(nn.Module):
    """The exported graph: the network plus softmax and argmax, outputs in edge contract order."""

    def __init__(self, network: WaveformCnn):
        super().__init__()
        self.network = network

    def forward(self, waveform: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        probabilities = torch.softmax(self.network(waveform), dim=1)
        return torch.argmax(probabilities, dim=1), probabilities


@dataclass
class TrainedCnn:
    """A trained ``cnn1d`` network with the label order and window length it expects.

    Args:
        model: the network, in eval mode and on the CPU.
        classes: label of each probability column, sorted by name.
        window_length: samples per window.
        device_used: ``"cuda"`` or ``"cpu"``, where training ran.
        epochs_run: epochs trained before early stopping or the epoch limit.
    """

    model: torch.nn.Module
    classes: list[str]
    window_length: int
    device_used: str
    epochs_run: int

    def predict_proba(self, windows: np.ndarray) -> np.ndarray:
        """Return float32 class probabilities, one row per window and one column per class.

        Windows are cast to float32 first, as on the edge box. Runs on the CPU
        in batches of 256 windows, without gradients.
        """
        batch = torch.from_numpy(_as_float32_windows(windows, window_length=self.window_length)).unsqueeze(1)
        return _predict_logits(self.model, batch).softmax(dim=1).numpy()

    def predict_labels(self, windows: np.ndarray) -> list[str]:
        """Return the most probable label of each window."""
        best = np.argmax(self.predict_proba(windows), axis=1)
        return [self.classes[i] for i in best]

    def native_bytes(self) -> bytes:
        """Serialise the weights and what `load_cnn1d` needs to rebuild the network, with `torch.save`.

        The file holds only tensors and plain values, so it loads with
        ``torch.load(..., weights_only=True)``.
        """
        network = _network_of(self.model)
        payload = {
            "format": _NATIVE_FORMAT,
            "state_dict": {name: tensor.detach().cpu() for name, tensor in network.state_dict().items()},
            "classes": list(self.classes),
            "window_length": self.window_length,
            "channels": list(network.channels),
            "kernel_size": network.kernel_size,
            "device_used": self.device_used,
            "epochs_run": self.epochs_run,
        }
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        return buffer.getvalue()


def load_cnn1d(data: bytes) -> TrainedCnn:
    """Rebuild a `TrainedCnn` from `TrainedCnn.native_bytes` output.

    Raises:
        ValueError: when `data` is not a daqflow ``cnn1d`` model file.
    """
    try:
        payload = torch.load(io.BytesIO(data), weights_only=True)
    except Exception as error:  # noqa: BLE001 - torch raises many types for a file that is not its own.
        raise ValueError(
            f"the cnn1d model file could not be read by torch.load ({error}); pass TrainedCnn.native_bytes() output."
        ) from error
    if not isinstance(payload, dict) or payload.get("format") != _NATIVE_FORMAT:
        raise ValueError(
            f"the model file is not a daqflow cnn1d model (expected format {_NATIVE_FORMAT!r}); "
            "pass TrainedCnn.native_bytes() output."
        )

    network = WaveformCnn(
        n_classes=len(payload["classes"]), channels=tuple(payload["channels"]), kernel_size=payload["kernel_size"]
    )
    network.load_state_dict(payload["state_dict"])
    return TrainedCnn(
        model=network.eval(),
        classes=list(payload["classes"]),
        window_length=payload["window_length"],
        device_used=payload["device_used"],
        epochs_run=payload["epochs_run"],
    )


def train_cnn1d(
    train_windows: np.ndarray,
    train_labels: list[str],
    eval_windows: np.ndarray,
    eval_labels: list[str],
    *,
    config: Cnn1dConfig,
) -> TrainedCnn:
    """Train a `WaveformCnn` on one device's windows, stopping early on the evaluation loss.

    Trains with Adam and cross-entropy on float32 windows, on CUDA when
    ``torch.cuda.is_available()`` and on the CPU otherwise. After each epoch the evaluation
    windows are scored, and the weights of the epoch with the lowest
    evaluation loss are kept. On the CPU the result depends only on the inputs
    and the config, because the seed fixes the initial weights and batch
    order and torch runs in deterministic mode. The global torch RNG, thread
    count and deterministic mode are restored afterwards.

    Cost: linear in ``epochs * (n_train + n_eval) * window_length``. With the
    default config, one epoch over 650 training and 166 evaluation windows of
    2048 samples took about 0.65 s on 1 CPU thread of a shared 2-core build
    machine, so 13 s for all 20 epochs.

    Args:
        train_windows: ``(n_train, window_length)`` conditioned windows.
        train_labels: label of each training window.
        eval_windows: ``(n_eval, window_length)`` held-out windows for early stopping.
        eval_labels: label of each evaluation window.
        config: network shape and training settings.

    Returns:
        The network with the best evaluation loss, in eval mode on the CPU.

    Raises:
        ValueError: when windows and labels disagree in count or length,
            windows are empty, not finite or shorter than
            ``config.min_window_length``, fewer than two labels occur, or a
            label has no training windows.
    """
    train32 = _as_float32_windows(train_windows, window_length=None, role="train_windows")
    window_length = train32.shape[1]
    eval32 = _as_float32_windows(eval_windows, window_length=window_length, role="eval_windows")
    classes = _check_training_inputs(train32, train_labels, eval32, eval_labels, config=config)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with _reproducible_torch(config, device=device):
        network = WaveformCnn(n_classes=len(classes), channels=config.channels, kernel_size=config.kernel_size)
        epochs_run, best_loss = _fit(
            network.to(device),
            _to_tensors(train32, train_labels, classes, device=device),
            _to_tensors(eval32, eval_labels, classes, device=device),
            config=config,
        )

    logger.info(
        "Trained cnn1d on %s: %d training and %d evaluation windows, %d epochs, best evaluation loss %.4f",
        device.type, len(train32), len(eval32), epochs_run, best_loss,
    )
    return TrainedCnn(
        model=network.cpu().eval(),
        classes=classes,
        window_length=window_length,
        device_used=device.type,
        epochs_run=epochs_run,
    )


def _fit(
    network: WaveformCnn,
    train: tuple[torch.Tensor, torch.Tensor],
    evaluation: tuple[torch.Tensor, torch.Tensor],
    *,
    config: Cnn1dConfig,
) -> tuple[int, float]:
    """Train in place and keep the weights of the best evaluation epoch; return the epochs run and that loss."""
    optimizer = torch.optim.Adam(network.parameters(), lr=config.learning_rate)
    loss_function = nn.CrossEntropyLoss()
    batch_order = np.random.default_rng(config.seed)

    best_loss = math.inf
    best_state = copy.deepcopy(network.state_dict())
    stale_epochs = 0
    epoch = 0
    while epoch < config.epochs and stale_epochs < config.patience:
        epoch += 1
        batches = _batches(batch_order, len(train[0]), config.batch_size)
        _train_epoch(network, train, optimizer, loss_function, batches=batches)

        eval_loss = float(loss_function(_predict_logits(network, evaluation[0]), evaluation[1]))
        if eval_loss < best_loss:
            best_loss, best_state, stale_epochs = eval_loss, copy.deepcopy(network.state_dict()), 0
        else:
            stale_epochs += 1

    network.load_state_dict(best_state)
    return epoch, best_loss


def _batches(rng: np.random.Generator, n_windows: int, batch_size: int) -> list[np.ndarray]:
    """Split a fresh random order of the window indices into batches of at most `batch_size`."""
    order = rng.permutation(n_windows)
    return [order[start : start + batch_size] for start in range(0, n_windows, batch_size)]


def _train_epoch(
    network: WaveformCnn,
    train: tuple[torch.Tensor, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    loss_function: nn.Module,
    *,
    batches: list[np.ndarray],
) -> None:
    windows, targets = train
    network.train()
    for batch in batches:
        index = torch.from_numpy(batch).to(windows.device)
        optimizer.zero_grad()
        loss_function(network(windows[index]), targets[index]).backward()
        optimizer.step()


def _predict_logits(model: nn.Module, windows: torch.Tensor) -> torch.Tensor:
    """Return logits ``[N, n_classes]`` for ``[N, 1, L]`` windows, in eval mode, batched, without gradients."""
    model.eval()
    with torch.no_grad():
        parts = [model(batch) for batch in torch.split(windows, _PREDICT_BATCH_SIZE)]
    return torch.cat(parts)


@contextlib.contextmanager
def _reproducible_torch(config: Cnn1dConfig, *, device: torch.device) -> Iterator[None]:
    """Seed torch, set the CPU thread count and, on the CPU, deterministic mode; restore all three afterwards."""
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    # NOTE: CUDA runs stay nondeterministic because deterministic mode there needs CUBLAS_WORKSPACE_CONFIG set
    # before CUDA starts. The CUDA branch has not run on the build machines, which have a CPU-only torch.
    rng_devices = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=rng_devices, device_type=device.type):
            torch.manual_seed(config.seed)
            torch.set_num_threads(config.num_threads)
            torch.use_deterministic_algorithms(device.type == "cpu")
            yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def _to_tensors(
    windows: np.ndarray, labels: list[str], classes: list[str], *, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    position = {label: i for i, label in enumerate(classes)}
    targets = torch.tensor([position[str(label)] for label in labels], dtype=torch.int64)
    return torch.from_numpy(windows).unsqueeze(1).to(device), targets.to(device)


def _network_of(model: nn.Module) -> WaveformCnn:
    if not isinstance(model, WaveformCnn):
        raise ValueError(
            f"TrainedCnn.model is a {type(model).__name__}; cnn1d export needs the WaveformCnn from train_cnn1d."
        )
    return model


def cnn1d_to_onnx(trained: TrainedCnn) -> bytes:
    """Export the trained network to a serialized ONNX model with the edge contract.

    Uses the ``torch.export`` based exporter (``dynamo=True``) at its default
    opset, with a dynamic batch dimension ``N``. Window normalisation, softmax
    and argmax are part of the graph, so the edge box feeds raw conditioned
    windows. Check the result with `check_waveform_parity` before publishing.

    Raises:
        ValueError: when the exported graph does not have the input
            ``waveform`` and the outputs ``label`` and ``probabilities``.
    """
    network = copy.deepcopy(_network_of(trained.model)).cpu().eval()
    example = torch.zeros(2, 1, trained.window_length, dtype=torch.float32)

    program = torch.onnx.export(
        _EdgeCnn(network).eval(),
        (example,),
        dynamo=True,
        input_names=[ONNX_INPUT_NAME],
        output_names=list(ONNX_OUTPUT_NAMES),
        dynamic_shapes={"waveform": {0: "N"}},
        verbose=False,
    )
    model = program.model_proto
    _check_graph_io(model.graph)

    onnx.checker.check_model(model)
    return model.SerializeToString()


def _check_graph_io(graph: onnx.GraphProto) -> None:
    inputs = [value.name for value in graph.input]
    outputs = [value.name for value in graph.output]
    if inputs != [ONNX_INPUT_NAME] or outputs != list(ONNX_OUTPUT_NAMES):
        raise ValueError(
            f"the exported cnn1d graph has inputs {inputs} and outputs {outputs}, but the edge runtime needs "
            f"inputs {[ONNX_INPUT_NAME]} and outputs {list(ONNX_OUTPUT_NAMES)}; check the torch.onnx.export arguments."
        )


def check_waveform_parity(
    onnx_model: bytes, trained: TrainedCnn, windows: np.ndarray, *, atol: float = 1e-5
) -> dict[str, Any]:
    """Run the ONNX model and the torch model on the same windows and compare them.

    Both sides get the windows as float32. The ONNX model runs in
    onnxruntime on the CPUExecutionProvider, as on the edge box. Label mismatches are counted as
    `tasks.onnx_export.check_parity` counts them.

    Args:
        onnx_model: a serialized model from `cnn1d_to_onnx`.
        trained: the torch model that was exported.
        windows: ``(n_windows, window_length)`` conditioned windows, such as the evaluation split.
        atol: largest accepted absolute difference of a probability.

    Returns:
        ``{"windows", "max_abs_diff", "label_mismatches", "ok"}``; ``ok`` is
        true when no label differs and ``max_abs_diff <= atol``.

    Raises:
        ValueError: when `windows` is empty or has another window length, or
            the ONNX model returns another number of classes.
    """
    windows32 = _as_float32_windows(windows, window_length=trained.window_length)
    native = trained.predict_proba(windows32)
    report = check_parity(onnx_model, native, windows32[:, np.newaxis, :], input_name=ONNX_INPUT_NAME, atol=atol)
    return report.to_dict()


def _as_float32_windows(windows: np.ndarray, *, window_length: int | None, role: str = "windows") -> np.ndarray:
    """Return `windows` as a C-contiguous float32 ``(n, L)`` array, checking shape, length and finiteness."""
    array = np.ascontiguousarray(windows, dtype=np.float32)
    if array.ndim != 2 or array.shape[0] == 0:
        raise ValueError(f"{role} must be a non-empty (n_windows, window_length) array, got shape {array.shape}.")
    if window_length is not None and array.shape[1] != window_length:
        raise ValueError(
            f"{role} have {array.shape[1]} samples per window but the model expects {window_length}; "
            "cut windows with the window_length the model was trained on."
        )

    bad_rows = np.flatnonzero(~np.isfinite(array).all(axis=1))
    if bad_rows.size:
        raise ValueError(
            f"{role} rows {bad_rows[:5].tolist()} ({bad_rows.size} in all) contain NaN or infinite samples "
            "after the cast to float32; drop those windows or fix the recording."
        )
    return array


def _check_training_inputs(
    train: np.ndarray, train_labels: list[str], evaluation: np.ndarray, eval_labels: list[str], *, config: Cnn1dConfig
) -> list[str]:
    """Check counts, window length and labels; return the sorted class names."""
    for role, windows, labels in (("train", train, train_labels), ("eval", evaluation, eval_labels)):
        if len(labels) != len(windows):
            raise ValueError(
                f"{role}_windows has {len(windows)} windows but {role}_labels has {len(labels)} labels; "
                "pass one label per window."
            )

    if train.shape[1] < config.min_window_length:
        raise ValueError(
            f"windows have {train.shape[1]} samples but {len(config.channels)} conv blocks need at least "
            f"{config.min_window_length}; use longer windows or fewer Cnn1dConfig.channels."
        )

    trained_labels = set(map(str, train_labels))
    missing = sorted(set(map(str, eval_labels)).difference(trained_labels))
    if missing:
        raise ValueError(
            f"labels {missing} occur in eval_labels but have no training windows; add training windows "
            "of those labels or drop their evaluation windows."
        )
    if len(trained_labels) < 2:
        raise ValueError(
            f"train_labels contain only {sorted(trained_labels)}; a classifier needs windows of at least two labels."
        )
    return sorted(trained_labels)
