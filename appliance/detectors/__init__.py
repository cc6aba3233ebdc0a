"""Detectors. A detector is one module plus one line in ``REGISTRY`` (a static dict: explicit,
and it survives PyInstaller freezing)."""

from __future__ import annotations

from appliance.detectors.base import Detector, Feature, KernelInputs, Scores
from appliance.detectors.spoofing import Spoofing

REGISTRY: dict[str, Detector] = {
    Spoofing.name: Spoofing(),
}

__all__ = ["REGISTRY", "Detector", "Feature", "KernelInputs", "Scores"]
