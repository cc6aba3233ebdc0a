"""Input formats. A connector is one module plus one line in ``REGISTRY`` (a static dict, so that
it is explicit and survives PyInstaller freezing)."""

from __future__ import annotations

from connectors.base import Connector, InputRefused, ReadResult
from connectors.cat_json import CatJsonConnector
from connectors.csv_canonical import CanonicalCsv, MarketCsv
from connectors.fix import FixConnector
from connectors.lobster import LobsterConnector
from connectors.vendor import VendorConnector

REGISTRY: dict[str, type[Connector]] = {
    CanonicalCsv.name: CanonicalCsv,
    MarketCsv.name: MarketCsv,
    FixConnector.name: FixConnector,
    LobsterConnector.name: LobsterConnector,
    CatJsonConnector.name: CatJsonConnector,
    VendorConnector.name: VendorConnector,
}


def get_connector(name: str) -> Connector:
    """Return an instance of the connector registered as ``name`` (KeyError lists the choices)."""
    try:
        return REGISTRY[name]()
    except KeyError:
        choices = ", ".join(sorted(REGISTRY))
        raise KeyError(f"unknown format {name!r}; choose one of: {choices}") from None


__all__ = ["REGISTRY", "Connector", "InputRefused", "ReadResult", "get_connector"]
