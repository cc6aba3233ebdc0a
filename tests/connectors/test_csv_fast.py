"""The one-pass CSV reader decides exactly as the general path (Arrow typed read, exact parsers)
or hands the file to it: same events, quarantine (line, offset, field, reason, raw bytes),
counts and reasons, on clean, messy and mutated files."""

from __future__ import annotations

import random

import pytest

from connectors import get_connector
from connectors.base import InputRefused
from tests.conftest import DATA

HEADER = b"ts,firm,trader,account,symbol,side,event,order_id,price,qty,leaves_qty,exec_qty,"\
         b"exec_price,venue\n"
ROWS = [
    b"2026-11-23T14:30:00.000000001Z,F1,T1,A1,ESZ6,B,NEW,o1,100.25,5,5,,,CME\n",
    b"2026-11-23T14:30:00.5Z,F1,t1,A1,ESZ6,buy,cancel,o1,100.25,5,0,,,CME\n",
    b"2026-11-23T14:30:01Z,F1,T2,,NQZ6,2,FILL,o2,-0.5,3,0,3,99.75,\n",
    b"2024-02-29T23:59:59.123456789Z,F1,T2,A9,NQZ6,SELL,Partial_Fill,o3,7,3,0,1,7,X\n",
]
CLEAN = HEADER + b"".join(ROWS)


def both(tmp_path, data: bytes, fmt: str = "csv"):
    """(fast result or None, general result) for ``data``; asserts they agree."""
    path = tmp_path / "f.csv"
    path.write_bytes(data)
    conn = get_connector(fmt)
    try:
        general = conn._read_general(path, "src", data)
    except InputRefused as exc:
        general = exc
    try:
        fast = conn._read_fast(path, "src", data)
    except InputRefused as exc:  # the header: refused by both
        assert str(exc) == str(general)
        return None, general
    if fast is not None:
        assert (fast.rows, fast.ignored) == (general.rows, general.ignored)
        assert fast.reasons == general.reasons
        assert fast.events.equals(general.events, check_metadata=True)
        assert fast.quarantine.equals(general.quarantine)
    return fast, general


@pytest.mark.parametrize("data", [
    CLEAN,
    CLEAN.replace(b"\n", b"\r\n"),
    b"\xef\xbb\xbf" + CLEAN,
    CLEAN.rstrip(b"\n"),
    b"\n\r\n" + CLEAN + b"\n\n" + ROWS[0],
    HEADER.replace(b",venue", b",venue,extra") + ROWS[0].replace(b"CME", b"CME,zz"),
    b"side,ts,trader,symbol,event,order_id,price,qty\nS,2026-11-23T14:30:00Z,T1,ES,NEW,o,1,2\n",
    CLEAN + b"notatime,F1,T1,A1,ESZ6,B,NEW,o2,1,1,1,,,CME\n",
    CLEAN + b"2026-02-30T14:30:01Z,F1,T1,A1,ESZ6,B,NEW,o2,1,1,1,,,CME\n",
    CLEAN + b"2026-11-23T14:30:60Z,F1,T1,A1,ESZ6,B,NEW,o2,1,1,1,,,CME\n",
    CLEAN + b"2026-11-23T14:30:01Z,F1,T1,A1,ESZ6,Q,NEW,o2,1,1,1,,,CME\n",
    CLEAN + b"2026-11-23T14:30:01Z,F1,,A1,ESZ6,B,NEW,o2,1,1,1,,,CME\n",
    CLEAN + b"2026-11-23T14:30:01Z,F1,T1,A1,ESZ6,B,NEW,o2,nan,1,1,,,CME\n",
    CLEAN + b"2026-11-23T14:30:01Z,F1,T1,A1,ESZ6,B,NEW,o2,abc,x,1,,,CME\n",
    CLEAN + b"2026-11-23T14:30:01Z,F1,T1\n",
    CLEAN + b"2026-11-23T14:30:01Z,F1,T1,A1,ES\xff,B,NEW,o2,1,1,1,,,CME\n",
    CLEAN + b"2026-11-23T14:30:01Z,F1,T1,A1,ESZ6,B,NEW,o2,1,1,1,,,CME\x00\n",
    CLEAN + b'2026-11-23T14:30:01Z,F1,T1,A1,ESZ6,B,NEW,"o2,1,1,1,,,CME\n',
    CLEAN + b"2026-11-23T14:30:01Z,F1,M\xc3\xbcller,A1,ESZ6,B,NEW,o2,1,1,1,,,CME\n",
])
def test_fast_path_takes_the_file_and_agrees(tmp_path, data):
    fast, _ = both(tmp_path, data)
    assert fast is not None


@pytest.mark.parametrize("row", [
    b'2026-11-23T14:30:01Z,F1,T1,A1,ESZ6,B,NEW,"o2",1,1,1,,,CME\n',  # quotes
    b"2026-11-23T14:30:01Z,F1, T1,A1,ESZ6,B,NEW,o2,1,1,1,,,CME\n",  # edge space
    b"1969-11-23T14:30:01Z,F1,T1,A1,ESZ6,B,NEW,o2,1,1,1,,,CME\n",  # Arrow takes it, regex not
    b"2026-11-23 14:30:01Z,F1,T1,A1,ESZ6,B,NEW,o2,1,1,1,,,CME\n",  # space separator
    b"2026-11-23T14:30:01Z,F1,T1,A1,ESZ6,B,NEW,o2,1e5,1,1,,,CME\n",  # exponent
    b"2026-11-23T14:30:01Z,F1,T1,A1,ESZ6,B,NEW,o2,0.12345678901234567,1,1,,,CME\n",  # digits
    b"2026-11-23T14:30:01Z,F1,T1,A1,ESZ6,\xc3\x9f,NEW,o2,1,1,1,,,CME\n",  # non-ASCII token
    b"2026-11-23T14:30:01Z,F1,T1\r,A1,ESZ6,B,NEW,o2,1,1,1,,,CME\n",  # bare CR
])
def test_uncertain_cells_go_to_the_general_path(tmp_path, row):
    fast, general = both(tmp_path, CLEAN + row)
    assert fast is None
    if not isinstance(general, InputRefused):  # a bare CR splits Arrow's rows: refused
        assert general.accepted + general.quarantined + general.ignored == general.rows


def test_messy_fixture_and_market_data_agree(tmp_path):
    fast, _ = both(tmp_path, (DATA / "csv" / "orders_messy.csv").read_bytes())
    assert fast is not None and dict(fast.reasons)["invalid_utf8"] == 3
    fast, _ = both(tmp_path, (DATA / "csv" / "market.csv").read_bytes(), "md-csv")
    assert fast is not None


def test_mutated_files_agree(tmp_path):
    rng = random.Random(5)
    pieces = [b'"', b"\r", b"\r\n", b"\n", b" ", b",", b"\x00", b"\xc3\xa9", b"\xff", b"nan",
              b"1e5", b"-", b".", b"5.", b".5", b"+1", b"abc", b"Q", b"-0", b"\xef\xbb\xbf",
              b"2026-02-30T00:00:00Z", b"1969-01-01T00:00:00Z", b"99999999999999999"]
    taken = 0
    for _ in range(150):
        data = bytearray(CLEAN * 3)
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(data))
            if rng.random() < 0.6:
                data[i:i] = rng.choice(pieces)
            else:
                del data[i : i + rng.randint(1, 5)]
        fast, _ = both(tmp_path, bytes(data))
        taken += fast is not None
    assert taken > 30  # most mutations stay on the fast path
