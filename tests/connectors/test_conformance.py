"""Every registered format against every fixture in ``tests/data/<format>/``: the contract all
connectors share (schemas, record balance, provenance that points at the raw bytes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.schema import EVENTS, QUARANTINE, SCHEMAS, SIDES
from connectors import REGISTRY, InputRefused, get_connector

DATA = Path(__file__).resolve().parents[1] / "data"
ALIASES = {"md-csv": "csv"}  # formats whose fixtures share another format's folder


def fixtures():
    cases = []
    for name, cls in sorted(REGISTRY.items()):
        folder = DATA / ALIASES.get(name, name)
        pattern = getattr(cls, "inputs", "*")
        files = sorted(p for p in folder.glob(pattern) if p.is_file() and p.suffix != ".toml")
        if not files:
            cases.append(pytest.param(name, None, id=f"{name}-no-fixtures"))
        cases.extend(pytest.param(name, f, id=f"{name}-{f.name}") for f in files)
    return cases


@pytest.mark.parametrize(("name", "path"), fixtures())
def test_connector_contract(name, path):
    if path is None:
        pytest.skip(f"no fixtures in tests/data/{name}/")
    conn = get_connector(name)
    for attr in ("name", "kind", "description", "version"):
        assert isinstance(getattr(conn, attr), str) and getattr(conn, attr)
    assert conn.kind in ("orders", "market")
    try:
        result = conn.read(path, "0123456789abcdef")
    except InputRefused as exc:  # refusing a whole file is part of the contract (not a crash)
        assert exc.reason and exc.where
        return
    result.check_balance()
    schema = SCHEMAS[conn.kind]
    assert result.events.schema.equals(schema), result.events.schema
    assert result.quarantine.schema.equals(QUARANTINE)
    assert sum(result.reasons.values()) == result.quarantined
    reasons = result.quarantine.column("reason").to_pylist()
    assert sorted(result.reasons.elements()) == sorted(reasons)
    for table in (result.events, result.quarantine):
        for field in table.schema:
            if not field.nullable:
                assert table.column(field.name).null_count == 0, field.name
    data = path.read_bytes()
    size = len(data)
    if result.accepted:
        ev = result.events
        assert set(ev.column("source").to_pylist()) == {"0123456789abcdef"}
        offsets = ev.column("offset").to_numpy()
        assert ((offsets >= 0) & (offsets < size)).all()
        assert (ev.column("line").to_numpy() >= 0).all()
        if conn.kind == "orders":
            assert set(ev.column("side").to_pylist()) <= set(SIDES)
            assert set(ev.column("event").to_pylist()) <= set(EVENTS)
    for q in result.quarantine.to_pylist():
        assert q["source"] == "0123456789abcdef"
        assert q["step"].startswith(f"{name}:") and q["reason"]
        assert data[q["offset"] : q["offset"] + len(q["raw"])] == q["raw"]


def test_registry_names_match_classes():
    for name, cls in REGISTRY.items():
        assert cls.name == name
        assert callable(cls().read)
