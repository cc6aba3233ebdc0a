"""Detectors. A detector is one module plus one line in ``REGISTRY`` (a static dict: explicit,
and it survives PyInstaller freezing)."""

from __future__ import annotations

from appliance.detectors.base import Detector, Feature, KernelInputs, Scores
from appliance.detectors.front_running import FrontRunning
from appliance.detectors.layering import Layering
from appliance.detectors.marking_the_close import MarkingTheClose
from appliance.detectors.momentum_ignition import MomentumIgnition
from appliance.detectors.quote_stuffing import QuoteStuffing
from appliance.detectors.spoofing import Spoofing
from appliance.detectors.wash_trade import WashTrade

REGISTRY: dict[str, Detector] = {
    Spoofing.name: Spoofing(),
    Layering.name: Layering(),
    WashTrade.name: WashTrade(),
    QuoteStuffing.name: QuoteStuffing(),
    FrontRunning.name: FrontRunning(),
    MarkingTheClose.name: MarkingTheClose(),
    MomentumIgnition.name: MomentumIgnition(),
}

__all__ = ["REGISTRY", "Detector", "Feature", "KernelInputs", "Scores"]
