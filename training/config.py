"""Training parameters, read from `params.yaml` profiles (`quick` for tests, `full` for real)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Self

import yaml

PARAMS_FILE = Path("params.yaml")


def fingerprint(params: dict[str, Any]) -> str:
    """A hash of a whole configuration, frozen before a run: cards and the report carry it, so
    a table is never read against a configuration it did not come from."""
    canonical = json.dumps(params, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class TrainConfig:
    window: int = 30
    hidden: int = 32
    layers: int = 2
    heads: int = 4
    embedding_dim: int = 8
    dropout: float = 0.1
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 512
    max_epochs: int = 8
    patience: int = 2
    train_stride: int = 2
    seed: int = 7
    threads: int = 1  # torch intra-op threads; see training.fit
    tickers: tuple[str, ...] = ()  # empty = every ticker with enough history
    start: str | None = None  # ignore bars before this date (smaller quick runs)
    n_folds: int = 3
    test_days: int = 252
    val_days: int = 126
    embargo: int = 20
    cost_bps: float = 5.0
    horizons: tuple[int, ...] = (1, 5, 20)
    # what networks predict in units of: a classical model's h-day volatility forecast fitted
    # on each fold's fit rows (garch, gjr), or the trailing 60-day σ × √h (static)
    scale: str = "garch"
    calibrate: bool = True  # per-tail conformal offsets from each fold's validation block
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.embargo < max(self.horizons):
            raise ValueError("embargo must be at least the longest horizon")
        if self.scale not in ("static", "garch", "gjr"):
            raise ValueError("scale must be static, garch or gjr")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["tickers"] = list(self.tickers)
        out["horizons"] = list(self.horizons)
        return out

    def fingerprint(self) -> str:
        return fingerprint(self.to_dict())

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Self:
        known = {f.name for f in fields(cls)}
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"unknown training parameters: {sorted(unknown)}")
        values = dict(raw)
        for key in ("tickers", "horizons"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)

    def with_overrides(self, **overrides: Any) -> Self:
        return replace(self, **overrides)


def load_config(family: str, profile: str, path: Path = PARAMS_FILE) -> TrainConfig:
    """Profile defaults, then the family's own section, then any tuned values for it."""
    params = yaml.safe_load(path.read_text())
    if profile not in params.get("profiles", {}):
        raise ValueError(f"unknown profile {profile!r}; in {path}: {sorted(params['profiles'])}")
    raw: dict[str, Any] = dict(params["profiles"][profile].get("common", {}))
    raw.update(params["profiles"][profile].get(family, {}) or {})
    raw.update((params.get("tuned", {}) or {}).get(profile, {}).get(family, {}) or {})
    return TrainConfig.from_dict(raw)
