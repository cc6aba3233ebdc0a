"""The ``cat-json`` connector: a hand-checked CAT lifecycle and hostile JSON lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from connectors.cat_json import CatJsonConnector, Reject, parse_cat_ts

DATA = Path(__file__).resolve().parents[1] / "data" / "cat-json"


def test_lifecycle_and_hostile_lines():
    r = CatJsonConnector().read(DATA / "events.ndjson", "s")
    r.check_balance()
    rows = [(x["line"], x["event"], x["order_id"], x["trader"], x["side"], x["price"], x["qty"],
             x["leaves_qty"], x["exec_qty"], x["exec_price"])
            for x in r.events.drop_columns(["ts"]).to_pylist()]  # fmt: skip
    assert rows == [
        (1, "NEW", "O1", "FDID1", "BUY", 10.25, 100, None, None, None),
        (3, "MODIFY", "O1", "FDID1", "BUY", 10.30, 100, 100, None, None),  # O1b -> O1
        (4, "FILL", "O1", "FDID1", "BUY", 10.30, 100, 60, 40, 10.30),  # via buyDetails
        (6, "CANCEL", "O1", "FDID1", "BUY", 10.30, 100, 0, None, None),  # side, price inherited
        (17, "NEW", "O10", "FDID3", "SELL", 9.5, 7, None, None, None),
        (18, "MODIFY", "O10", "FDID3", "SELL", 9.5, 5, 5, None, None),  # partial cancel of 2
    ]
    assert r.events.column("ts").cast("int64").to_pylist() == [
        1704465000123456000,  # 09:30:00.123456 New York (EST) = 14:30Z
        1704465001000000000, 1704465002500000000, 1704465003000000000,  # ISO Z, epoch ms
        1704465009500000000, 1704465010000000000,
    ]  # fmt: skip
    q = [(x["line"], x["reason"], x["field"]) for x in r.quarantine.to_pylist()]
    assert q == [
        (7, "duplicate", "firmROEID"), (8, "duplicate_key", "orderID"), (9, "non_numeric", None),
        (10, "impossible_value", None), (11, "orphan_reference", "orderID"),
        (12, "bad_timestamp", "eventTimestamp"), (13, "unknown_token", "side"),
        (14, "malformed", None), (15, "malformed", None), (16, "unknown_token", "type"),
        (19, "invalid_utf8", None), (20, "invalid_utf8", None),
    ]  # fmt: skip
    assert (r.rows, r.accepted, r.quarantined, r.ignored) == (20, 6, 12, 2)  # MEOR, blank


def test_timestamp_formats():
    assert parse_cat_ts("20240705 093000", "t") == parse_cat_ts("2024-07-05T13:30:00Z", "t")  # EDT
    assert parse_cat_ts(1704465003000000, "t") == 1704465003000000000  # microseconds
    assert parse_cat_ts("2024-01-05T09:30:00.5-05:00", "t") == 1704465000500000000
    for bad in ("20240230 093000", "yesterday", True, 10**25):
        with pytest.raises(Reject):
            parse_cat_ts(bad, "t")
