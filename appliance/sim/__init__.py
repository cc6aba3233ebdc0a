"""Market simulator: labelled manipulation scenarios with hard negatives, at any volume.

>>> res = simulate(SimConfig(seed=7, minutes=30, instruments=2, traders=20), "out/")

See ``docs/simulator.md`` for the agents, patterns, parameters and the truth format.
"""

from __future__ import annotations

from typing import Any

from .config import FORMATS, SimConfig, SimResult

__all__ = ["FORMATS", "SimConfig", "SimResult", "simulate"]


def __getattr__(name: str) -> Any:
    # The engine (numba) loads on first use, so `surveil --help` stays fast.
    if name == "simulate":
        from .driver import simulate

        return simulate
    raise AttributeError(name)
