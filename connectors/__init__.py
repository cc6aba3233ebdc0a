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


def get_connector(name: str, mapping: str | None = None) -> Connector:
    """An instance of the connector registered as ``name`` (KeyError lists the choices).
    ``mapping`` is passed to connectors that are described by a mapping file (``vendor``)."""
    try:
        cls = REGISTRY[name]
    except KeyError:
        choices = ", ".join(sorted(REGISTRY))
        raise KeyError(f"unknown format {name!r}; choose one of: {choices}") from None
    if mapping is not None:
        if not getattr(cls, "takes_mapping", False):
            raise ValueError(f"format {name!r} takes no --mapping")
        return cls(mapping=mapping)  # type: ignore[call-arg]
    return cls()


__all__ = ["REGISTRY", "Connector", "InputRefused", "ReadResult", "get_connector"]
