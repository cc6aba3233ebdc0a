"""Property tests: for any mix of valid rows and hostile bytes, a connector never crashes and
accounts for every record (rows = accepted + quarantined + ignored), keeps every rejected record's
exact bytes, and accepts every valid row."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors import get_connector
from tests.conftest import DATA

HEADER = (b"ts,firm,trader,account,symbol,side,event,order_id,price,qty,leaves_qty,exec_qty,"
          b"exec_price,venue")
EXAMPLES = int(os.environ.get("SURVEIL_PROPERTY_EXAMPLES", "60"))  # raise it for a long hunt
SETTINGS = settings(max_examples=EXAMPLES, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])

valid_row = st.builds(
    lambda s, trader, side, event, oid, price, qty: (
        f"2026-11-23T14:30:{s:02d}.{s * 7919 % 10**9:09d}Z,F1,{trader},A1,ESZ6,{side},{event},"
        f"{oid},{price},{qty},{qty},,,CME").encode(),
    st.integers(0, 59), st.sampled_from(["T1", "T2", "jsmith"]),
    st.sampled_from(["B", "S", "BUY", "sell", "1", "2", "K"]),
    st.sampled_from(["NEW", "N", "CANCEL", "MODIFY"]), st.integers(1, 10**6),
    st.decimals(min_value=-1000, max_value=10**6, places=4, allow_nan=False),
    st.integers(1, 10**6),
)
hostile = st.one_of(
    st.binary(max_size=200).map(lambda b: b.replace(b"\n", b"")),
    st.sampled_from([b"\x00\x00\x00", b"\xef\xbb\xbf", b"\r", b'"unclosed,quote', b"=1+2,",
                     b"NaN,inf,-inf", b"9" * 400, b",,,,,,,,,,,,,", "é,ü,中".encode()]),
)


@SETTINGS
@given(rows=st.lists(st.tuples(st.booleans(), valid_row, hostile), max_size=40),
       crlf=st.booleans())
def test_csv_accounts_for_every_record(tmp_path_factory, rows, crlf):
    eol = b"\r\n" if crlf else b"\n"
    lines = [HEADER] + [v if keep else h for keep, v, h in rows]
    data = eol.join(lines) + eol
    path = tmp_path_factory.mktemp("p") / "f.csv"
    path.write_bytes(data)
    r = get_connector("csv").read(path, "prop")
    assert r.accepted + r.quarantined + r.ignored == r.rows == len(lines) - 1
    for q in r.quarantine.to_pylist():
        assert data[q["offset"]:].startswith(q["raw"])
    accepted_lines = set(r.events.column("line").to_pylist())
    for number, (keep, _, _) in enumerate(rows, start=2):
        if keep:
            assert number in accepted_lines


FIX_GOOD = [line for line in (DATA / "fix" / "session.log").read_bytes().splitlines() if line]


@SETTINGS
@given(picks=st.lists(st.one_of(st.sampled_from(FIX_GOOD), hostile), max_size=30))
def test_fix_never_crashes_and_balances(tmp_path_factory, picks):
    data = b"\n".join(picks) + b"\n"
    path = tmp_path_factory.mktemp("p") / "f.log"
    path.write_bytes(data)
    r = get_connector("fix").read(path, "prop")
    assert r.accepted + r.quarantined + r.ignored == r.rows
    for q in r.quarantine.to_pylist():
        assert data[q["offset"]:].startswith(q["raw"])
