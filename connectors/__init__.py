"""Input formats. A connector is one module plus one line in ``REGISTRY`` (a static dict, so that
it is explicit and survives PyInstaller freezing)."""

from __future__ import annotations

from connectors.base import Connector, InputRefused, ReadResult
from connectors.csv_canonical import CanonicalCsv, MarketCsv

REGISTRY: dict[str, type[Connector]] = {
    CanonicalCsv.name: CanonicalCsv,
    MarketCsv.name: MarketCsv,
}


def get_connector(name: str) -> Connector:
    """Return an instance of the connector registered as ``name`` (KeyError lists the choices)."""
    try:
        return REGISTRY[name]()
    except KeyError:
        raise KeyError(f"unknown format {name!r}; choose one of: {', '.join(sorted(REGISTRY))}") from None


__all__ = ["REGISTRY", "Connector", "InputRefused", "ReadResult", "get_connector"]
