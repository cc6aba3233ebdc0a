"""Simulator configuration and result types."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

FORMATS = ("canonical", "fix", "vendor-a", "vendor-b", "fixed-width")


@dataclass(frozen=True)
class SimConfig:
    seed: int = 0
    minutes: float = 30.0
    instruments: int = 2
    traders: int = 20
    fmt: str = "canonical"
    dirty: float = 0.0
    #: session date (UTC) and open time (UTC, HH:MM); the session lasts ``minutes``
    date: str = "2026-11-23"
    open_utc: str = "14:30"
    #: background market events per second per instrument (before the U-shape)
    bg_rate: float = 250.0
    #: closing (settlement) window length in seconds; capped at a tenth of the session
    close_window_s: float = 120.0
    #: simulated seconds per streamed chunk
    chunk_s: float = 10.0
    #: FIX dialect for fmt="fix": "4.2" or "4.4"; field separator "soh" or "pipe"
    fix_version: str = "4.4"
    fix_sep: str = "soh"
    #: agent roles to switch off (e.g. ("close_marker",)) for counterfactual runs
    disable: tuple[str, ...] = ()
    #: PU realism: this fraction of each pattern's positive episodes (rounded down) is left out
    #: of truth.csv and written to truth_hidden.csv instead (manipulations nobody labelled)
    unlabelled: float = 0.1

    def __post_init__(self) -> None:
        if self.fmt not in FORMATS:
            raise ValueError(f"fmt must be one of {FORMATS}, not {self.fmt!r}")
        if self.minutes <= 0 or self.instruments < 1 or self.traders < 1:
            raise ValueError("minutes, instruments and traders must be positive")
        if not 0.0 <= self.dirty <= 1.0:
            raise ValueError("dirty must be within [0, 1]")
        if not 0.0 <= self.unlabelled < 1.0:
            raise ValueError("unlabelled must be within [0, 1)")

    @classmethod
    def demo(cls, seed: int = 7, **kw) -> SimConfig:
        """The `surveil demo` preset: ~30 simulated minutes, 2 instruments, 20 firm traders
        (every pattern and hard negative), a few seconds of generation."""
        base = {"seed": seed, "minutes": 30.0, "instruments": 2, "traders": 20}
        base.update(kw)
        return cls(**base)


@dataclass
class SimResult:
    out_dir: Path
    orders_path: Path
    market_path: Path
    truth_path: Path
    reference_dir: Path
    n_events: int
    n_order_events: int
    n_market_events: int
    episodes: list[dict] = field(default_factory=list)
    settlement: dict = field(default_factory=dict)
    defects_path: Path | None = None
    clean_orders_path: Path | None = None
    seconds: float = 0.0
    #: positive episodes left unlabelled on purpose (truth_hidden.csv), same dict shape
    hidden_episodes: list[dict] = field(default_factory=list)

