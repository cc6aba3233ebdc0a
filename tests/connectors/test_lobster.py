"""The ``lobster`` connector: a hand-checked level-2 pair and the real AMZN sample."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from connectors.base import InputRefused
from connectors.lobster import LobsterConnector, new_york_offset

DATA = Path(__file__).resolve().parents[1] / "data" / "lobster"
MESSAGE = DATA / "XYZ_2024-01-05_34200000_57600000_message_2.csv"
SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "lobster"
AMZN = SHARED / "AMZN_2012-06-21_34200000_57600000_message_1.csv"


def test_hand_checked_pair():
    r = LobsterConnector().read(MESSAGE, "s")
    r.check_balance()
    rows = [(x["line"], x["bid"], x["bid_size"], x["ask"], x["ask_size"], x["last"],
             x["last_size"]) for x in r.events.drop_columns(["ts"]).to_pylist()]  # fmt: skip
    assert rows == [
        (1, 100.0, 100, None, None, None, None),  # empty ask level (dummy price)
        (2, 100.0, 100, 101.0, 50, None, None),
        (4, 100.0, 60, 101.0, 50, 100.0, 40),  # visible execution
        (8, 100.0, 60, 101.0, 50, 100.5, 7),  # hidden execution: book unchanged, still a trade
    ]
    first = r.events.column("ts").cast("int64")[0].as_py()
    assert first == 1704465000_000000001  # 2024-01-05T14:30:00.000000001Z = 09:30 EST, ns kept
    assert set(r.events.column("symbol").to_pylist()) == {"XYZ"}
    q = [(x["line"], x["reason"], x["field"]) for x in r.quarantine.to_pylist()]
    assert q == [
        (7, "unknown_token", "type"), (9, "non_numeric", "size"), (10, "column_count", None)
    ]  # fmt: skip
    assert (r.rows, r.accepted, r.quarantined, r.ignored) == (10, 4, 3, 3)  # 3, 5 (halt), 6


def test_missing_sibling_and_bad_name_are_refused(tmp_path):
    lonely = tmp_path / MESSAGE.name
    shutil.copy(MESSAGE, lonely)
    with pytest.raises(InputRefused, match="orderbook"):
        LobsterConnector().read(lonely, "s")
    with pytest.raises(InputRefused, match="file name"):
        LobsterConnector().read(tmp_path / "foo.csv", "s")


def test_dst_offsets():
    from datetime import date, timedelta

    assert new_york_offset(date(2012, 6, 21)) == timedelta(hours=-4)
    assert new_york_offset(date(2024, 1, 5)) == timedelta(hours=-5)


def test_real_amzn_sample():
    if not AMZN.exists():
        pytest.skip(f"LOBSTER sample not available at {AMZN} (shared data not mounted)")
    r = LobsterConnector().read(AMZN, "s")
    r.check_balance()
    assert (r.rows, r.quarantined) == (57515, 0)
    last = r.events.column("last").drop_null()
    assert len(last) == 8974 + 2445  # type 4 + type 5 executions
    ts = r.events.column("ts")
    assert ts[0].as_py().isoformat() == "2012-06-21T13:30:00.017460+00:00"  # 09:30 EDT
    assert ts[len(ts) - 1].as_py().hour == 19  # before 16:00 EDT
