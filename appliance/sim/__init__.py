"""Market simulator: labelled manipulation scenarios with hard negatives, at any volume.

>>> res = simulate(SimConfig(seed=7, minutes=30, instruments=2, traders=20), "out/")

See ``docs/simulator.md`` for the agents, patterns, parameters and the truth format.
"""

from __future__ import annotations

from .config import FORMATS, SimConfig, SimResult
from .driver import simulate

__all__ = ["FORMATS", "SimConfig", "SimResult", "simulate"]
