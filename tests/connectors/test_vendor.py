"""The ``vendor`` connector: example mappings, inline mappings, and refused mappings."""

from __future__ import annotations

from pathlib import Path

import pytest

from connectors.base import InputRefused
from connectors.vendor import MAPPINGS, VendorConnector, builtin, parse_timestamp

DATA = Path(__file__).resolve().parents[1] / "data" / "vendor"


def brief(r):
    return [(x["line"], x["event"], x["order_id"], x["trader"], x["side"], x["price"], x["qty"],
             x["leaves_qty"], x["exec_qty"], x["exec_price"], x["firm"], x["venue"])
            for x in r.events.drop_columns(["ts"]).to_pylist()]  # fmt: skip


def quarantined(r):
    return [(q["line"], q["reason"], q["field"]) for q in r.quarantine.to_pylist()]


def test_builtin_mappings_ship():
    assert {"example-delimited", "example-fixed-width"} <= set(builtin())
    assert (MAPPINGS / "example-delimited.toml").exists()


def test_example_delimited():
    r = VendorConnector().read(DATA / "example-delimited.csv", "s")  # sidecar mapping
    r.check_balance()
    assert brief(r) == [
        (3, "NEW", "A-1", "T-MUELLER", "BUY", 1234.5, 100, 100, None, None, "BROKER-A", "XETR"),
        (4, "FILL", "A-1", "T-MUELLER", "BUY", 1234.5, 100, 40, 60, 1234.25, "BROKER-A", "XETR"),
        (6, "CANCEL", "A-1", "T-MUELLER", "BUY", None, None, 0, None, None, "BROKER-A", "XETR"),
    ]
    # Frankfurt: CET in January (+1), CEST in July (+2); fraction optional
    assert r.events.column("ts").cast("int64").to_pylist() == [
        1704441600125000000, 1720162801500000000, 1720162802000000000
    ]  # fmt: skip
    assert quarantined(r) == [
        (8, "unknown_token", "side"), (9, "bad_timestamp", "ts"), (10, "non_numeric", "price"),
        (11, "missing_value", "trader"), (12, "column_count", None),
        (13, "invalid_utf8", None),  # unbalanced quote
        (14, "invalid_utf8", None),  # latin-1 byte
    ]  # fmt: skip
    assert set(r.quarantine.column("step").to_pylist()) == {"vendor:example-delimited"}
    assert (r.rows, r.accepted, r.quarantined, r.ignored) == (13, 3, 7, 3)  # comments, blank


def test_example_fixed_width_by_name():
    r = VendorConnector("example-fixed-width").read(DATA / "example-fixed-width.txt", "s")
    r.check_balance()
    assert brief(r) == [
        (2, "NEW", "ORD1", "TRADER1", "BUY", 123.45, 100, 100, None, None, "BROKER-B", None),
        (3, "MODIFY", "ORD1", "TRADER1", "BUY", 123.5, 100, 100, None, None, "BROKER-B", None),
        (4, "FILL", "ORD1", "TRADER1", "BUY", 123.5, 100, 60, 40, 123.49, "BROKER-B", None),
        (5, "CANCEL", "ORD1", "TRADER1", "BUY", None, 100, 0, None, None, "BROKER-B", None),
    ]
    assert r.events.column("ts").cast("int64").to_pylist()[0] == 1704465000123456000  # EST
    assert quarantined(r) == [(6, "unknown_token", "event"), (7, "bad_timestamp", "ts"),
                              (8, "column_count", None)]  # fmt: skip


def test_inline_market_mapping_without_header(tmp_path):
    mapping = {
        "format": {"name": "quotes", "kind": "market", "delimiter": "|", "header": False},
        "columns": {
            "ts": {"index": 1, "format": "epoch_ms"}, "symbol": {"index": 2},
            "bid": {"index": 3}, "ask": {"index": 4}, "last": {"index": 5},
        },
    }  # fmt: skip
    p = tmp_path / "q.txt"
    p.write_text("1704465000000|XYZ|10.1|10.2|\n1704465000001|XYZ|inf|10.2|10.15\n")
    conn = VendorConnector(mapping)
    assert conn.kind == "market"
    r = conn.read(p, "s")
    r.check_balance()
    assert r.events.column("bid").to_pylist() == [10.1]
    assert r.events.column("ts").cast("int64").to_pylist() == [1704465000000000000]
    assert quarantined(r) == [(2, "non_numeric", "bid")]


@pytest.mark.parametrize(
    ("mapping", "match"),
    [
        (None, "no mapping"),
        ({"columns": {"ts": "t"}}, "lacks required"),
        ({"format": {"layout": "xml"}}, "layout"),
        ({"columns": {"nonsense": "x"}}, "not a column"),
        ("no-such-mapping", "not found"),
    ],
)
def test_bad_mappings_refuse_the_file(tmp_path, mapping, match):
    p = tmp_path / "x.csv"
    p.write_text("a,b\n")
    with pytest.raises(InputRefused, match=match):
        VendorConnector(mapping).read(p, "s")


def test_timestamp_formats():
    import pyarrow as pa

    col = pa.array(["05-Jan-24 02:30:00 PM", "05-Jan-24 12:00:00 AM", "05-Foo-24 01:00:00 PM"])
    ts, missing, bad = parse_timestamp(col, "%d-%b-%y %I:%M:%S %p".replace("%I", "%H"), "UTC")
    assert ts.cast("int64").to_pylist()[:2] == [1704465000000000000, 1704412800000000000]
    assert bad.tolist() == [False, False, True]


@pytest.mark.parametrize(
    ("name", "ts_ns"),
    [
        # 08:30 Chicago = 09:30 New York = 15:30 Berlin = 14:30Z on 2026-11-23
        ("sim-vendor-a.csv", 1795444200000000000),
        ("sim-vendor-b.tsv", 1795444200000000000),
        ("sim-fixed-width.txt", 1795444200000000000),
    ],
)
def test_simulator_dialects(name, ts_ns):
    r = VendorConnector().read(DATA / name, "s")
    r.check_balance()
    assert r.quarantined == 0
    first = r.events.drop_columns(["ts"]).to_pylist()[0]
    assert r.events.column("ts").cast("int64")[0].as_py() == ts_ns
    assert (first["trader"][:8], first["account"], first["symbol"], first["side"],
            first["event"], first["price"], first["qty"]) == (
        "M.IVANOV", "H10000", "ESZ6", "BUY", "NEW", 6012.25, 4)  # fmt: skip
    assert first["order_id"].endswith("000000000001")
    fills = [x for x in r.events.drop_columns(["ts"]).to_pylist() if x["event"] == "FILL"]
    assert fills and fills[0]["side"] == "SELL" and fills[0]["price"] == 71.87
    if name != "sim-fixed-width.txt":  # the renderer cuts fixed-width records at 79 characters
        assert (fills[0]["exec_qty"], fills[0]["exec_price"], fills[0]["leaves_qty"]) == (
            2, 71.87, 3)  # fmt: skip
