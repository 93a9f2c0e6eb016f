"""Fleet configuration: which devices a DAQ feeds, and how each one is trained.

A fleet file is TOML. Everything is optional: with no file, every device in
the recordings manifest gets a LightGBM model with the defaults below.

```toml
daq_id = "daq-01"
max_concurrency = 2        # device trainings at once; default: CPU cores
max_failed_share = 0.25    # the run fails when more devices than this share fail
dispatch = "per_pool"      # on a Prefect server: one train-device run per pool, or "per_device"
windows_per_partition = 8

[gate]
tolerance = 0.01           # challenger macro-F1 may be this much below the champion's
min_macro_f1 = 0.5         # and never below this floor

[defaults]
model_type = "lightgbm"    # or "cnn1d"
eval_share = 0.2
seed = 0
[defaults.params]          # LightGBM parameters (or Cnn1dConfig fields for cnn1d)
n_estimators = 200
[defaults.features]        # FeatureConfig fields
window_length = 2048

[devices.rig1-drive-end.features.bearing]
n_balls = 9
ball_diameter = 0.3126
pitch_diameter = 1.537

[devices.press-3]
model_type = "cnn1d"
params = { epochs = 10 }
```
Device tables merge over `[defaults]`: `params` and `features` key by key.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tasks.dataset import BuildConfig
from tasks.features import FeatureConfig
from tasks.gate import GateConfig
from tasks.train import MODEL_TYPES, TrainConfig

DISPATCH_MODES = ("per_pool", "per_device")
_FLEET_KEYS = {"daq_id", "max_concurrency", "max_failed_share", "dispatch", "windows_per_partition", "gate", "defaults", "devices"}
_DEVICE_KEYS = {"model_type", "eval_share", "seed", "params", "features"}


@dataclass(frozen=True)
class DeviceConfig:
    """Feature and training configuration of one device."""

    device_id: str
    train: TrainConfig
    features: FeatureConfig

    @property
    def model_type(self) -> str:
        return self.train.model_type


@dataclass(frozen=True)
class FleetConfig:
    """A DAQ's devices and how to train them; see the module docstring for the TOML form."""

    daq_id: str = "daq-01"
    max_concurrency: int | None = None
    max_failed_share: float = 0.25
    dispatch: str = "per_pool"
    windows_per_partition: int = 8
    gate: GateConfig = field(default_factory=GateConfig)
    defaults: dict[str, Any] = field(default_factory=dict)
    devices: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.dispatch not in DISPATCH_MODES:
            raise ValueError(f"fleet dispatch {self.dispatch!r} is not one of {DISPATCH_MODES}")
        if not 0.0 <= self.max_failed_share <= 1.0:
            raise ValueError(f"max_failed_share must be between 0 and 1, got {self.max_failed_share}")
        if self.max_concurrency is not None and self.max_concurrency < 1:
            raise ValueError(f"max_concurrency must be at least 1, got {self.max_concurrency}")
        for device_id in self.devices:
            self.device(device_id)  # fail early on a bad device table

    @property
    def concurrency(self) -> int:
        """Device trainings at once: `max_concurrency`, else one per CPU core."""
        return self.max_concurrency or os.cpu_count() or 1

    def device(self, device_id: str) -> DeviceConfig:
        """Return the merged configuration of `device_id` (defaults when it is not listed)."""
        table = _merge(self.defaults, self.devices.get(device_id, {}))
        unknown = set(table) - _DEVICE_KEYS
        if unknown:
            raise ValueError(f"fleet device `{device_id}` has unknown keys {sorted(unknown)}; known: {sorted(_DEVICE_KEYS)}")
        model_type = table.get("model_type", "lightgbm")
        if model_type not in MODEL_TYPES:
            raise ValueError(f"fleet device `{device_id}` has model_type {model_type!r}; known model types: {MODEL_TYPES}")
        train = TrainConfig(
            model_type=model_type,
            params=dict(table.get("params", {})),
            eval_share=float(table.get("eval_share", TrainConfig.eval_share)),
            seed=int(table.get("seed", TrainConfig.seed)),
        )
        return DeviceConfig(device_id, train, FeatureConfig.from_dict(table.get("features", {})))

    def build_config(self, device_ids: list[str]) -> BuildConfig:
        """Return the dataset build configuration for these devices."""
        default_features = FeatureConfig.from_dict(self.defaults.get("features", {}))
        overrides = {d: self.device(d).features for d in device_ids if self.device(d).features != default_features}
        return BuildConfig(features=default_features, device_features=overrides, windows_per_partition=self.windows_per_partition)

    def to_dict(self) -> dict[str, Any]:
        return {
            "daq_id": self.daq_id,
            "max_concurrency": self.max_concurrency,
            "max_failed_share": self.max_failed_share,
            "dispatch": self.dispatch,
            "windows_per_partition": self.windows_per_partition,
            "gate": self.gate.to_dict(),
            "defaults": self.defaults,
            "devices": self.devices,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "FleetConfig":
        unknown = set(data) - _FLEET_KEYS
        if unknown:
            raise ValueError(f"unknown fleet keys {sorted(unknown)}; known: {sorted(_FLEET_KEYS)}")
        values = {k: v for k, v in data.items() if k in _FLEET_KEYS and v is not None}
        values["gate"] = GateConfig(**data.get("gate", {}))
        return cls(**values)

    @classmethod
    def from_toml(cls, path: str | Path) -> "FleetConfig":
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"fleet file {path} not found; pass an existing TOML file or omit --fleet") from None
        except tomllib.TOMLDecodeError as error:
            raise ValueError(f"fleet file {path} is not valid TOML: {error}") from None
        try:
            return cls.from_dict(data)
        except (TypeError, ValueError) as error:
            raise ValueError(f"fleet file {path}: {error}") from None


def load_fleet(fleet: "FleetConfig | str | Path | dict[str, Any] | None") -> FleetConfig:
    """Return a fleet configuration from an object, a TOML path, a dict, or None (defaults)."""
    if fleet is None:
        return FleetConfig()
    if isinstance(fleet, FleetConfig):
        return fleet
    if isinstance(fleet, dict):
        return FleetConfig.from_dict(fleet)
    return FleetConfig.from_toml(fleet)


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Merge two device tables; `params` and `features` merge key by key."""
    merged = {**base, **override}
    for key in ("params", "features"):
        if key in base or key in override:
            merged[key] = {**base.get(key, {}), **override.get(key, {})}
    return merged
