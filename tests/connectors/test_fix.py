"""The ``fix`` connector: hand-checked fixtures, hostile input, and the real CME session logs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from connectors.base import attrs_map
from connectors.fix import FixConnector, _numbers
from connectors.parse import parse_number
from tests.connectors.fixgen import FIRM, fix, log

DATA = Path(__file__).resolve().parents[1] / "data" / "fix"
SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "fix"
CME = {  # file: (records, accepted, quarantined, ignored, NEW, CANCEL, FILL)
    "FIX.4.2-CME-4G8287N.messages.current.log": (980, 527, 0, 453, 254, 191, 82),
    "FIX.4.2-CME-4G8288N.messages.current.log": (827, 450, 0, 377, 215, 154, 81),
}


def read(path: Path):
    result = FixConnector().read(path, "src0")
    result.check_balance()
    return result


def brief(result):
    return [
        (r["line"], r["event"], r["order_id"], r["side"], r["price"], r["qty"], r["leaves_qty"],
         r["exec_qty"], r["exec_price"])
        for r in result.events.to_pylist()
    ]  # fmt: skip


def test_session_log_hand_checked():
    r = read(DATA / "session.log")
    assert brief(r) == [
        (3, "NEW", "A1", "BUY", 100.5, 10, 10, None, None),  # D stitched with its ack (line 4)
        (5, "MODIFY", "A1", "BUY", 101, 10, 10, None, None),  # G A2 -> A1, ack line 6 stitched
        (7, "FILL", "A1", "BUY", 101, 10, 6, 4, 101),  # partial fill through ClOrdID A2
        (9, "FILL", "A1", "BUY", 101, 10, 0, 6, 100.75),
        (11, "NEW", "B1", "SELL", 99, 5, 5, None, None),
        (13, "CANCEL", "B1", "SELL", 99, 5, 0, None, None),  # F B2, confirmation stitched;
        (15, "NEW", "C1", "BUY", 98, 1, None, None, None),  # price: the order's, F has no 44
        (16, "REJECT", "C1", "BUY", 98, 1, 0, None, None),
        (17, "NEW", "D1", "BUY", 97, 2, None, None, None),  # its cancel (F D2) refused by 35=9
    ]
    quarantined = r.quarantine.select(["line", "reason", "field", "step"]).to_pylist()
    assert [tuple(q.values()) for q in quarantined] == [
        (8, "duplicate", "17", "fix:stitch"),  # PossDup resend of the partial fill
        (20, "bad_checksum", "10", "fix:parse"),
        (21, "bad_body_length", "9", "fix:parse"),
    ]
    # 21 messages + 1 blank line; ignored: logon, heartbeat, 4 stitched acks, F D2 + its 35=9,
    # logout, blank
    assert (r.rows, r.accepted, r.quarantined, r.ignored) == (22, 9, 3, 10)
    first = r.events.slice(0, 1).to_pylist()[0]
    assert first["ts"].isoformat() == "2024-01-05T14:30:00.010000+00:00"  # log timestamp
    assert (first["trader"], first["firm"], first["account"], first["venue"]) == (
        "TR1", "FIRM1", "ACC1", "EXCH"
    )
    fill = r.events.slice(2, 1).to_pylist()[0]
    assert (fill["trader"], fill["firm"], fill["account"]) == ("TR1", "FIRM1", "ACC1")
    raw = (DATA / "session.log").read_bytes()
    for q in r.quarantine.to_pylist():
        assert raw[q["offset"] : q["offset"] + len(q["raw"])] == q["raw"]
        assert q["raw"].startswith(b"20240105-")  # the whole log line is kept


def test_audit_trail_extras_aligned_with_events():
    r = read(DATA / "session.log")
    extras = r.extras
    assert extras.num_rows == r.events.num_rows
    row = extras.slice(0, 1).to_pylist()[0]
    assert row["manual_order_indicator"] == "Y"
    assert (row["cti_code"], row["customer_or_firm"], row["security_desc"]) == ("1", "0", "ESH4")
    assert row["cl_ord_id"] == "A1" and row["msg_type"] == "D"
    assert extras.column("cl_ord_id").to_pylist()[1] == "A2"


def test_fix44_pipe_parties_trades_and_two_messages_per_line():
    r = read(DATA / "fix44_pipe.txt")
    rows = r.events.to_pylist()
    assert [x["event"] for x in rows] == ["NEW", "FILL", "FILL"]  # ack without request -> NEW
    assert {x["trader"] for x in rows} == {"TRADER9"}  # PartyRole 11
    assert {x["firm"] for x in rows} == {"BANK"}  # PartyRole 13
    assert rows[0]["side"] == "SELL"  # 54=5 sell short
    assert rows[0]["ts"].isoformat() == "2024-01-05T15:00:00.000123+00:00"  # 60, microseconds
    assert [(x["exec_qty"], x["exec_price"], x["leaves_qty"]) for x in rows[1:]] == [
        (40, 10.5, 60), (60, 10.4, 0)
    ]  # fmt: skip
    assert [x["price"] for x in rows] == [10.5, 10.5, 10.5]  # trades without 44: the order's
    assert rows[1]["venue"] == "XNYS"
    # 5 messages on 4 lines: an order-status report and a heartbeat share line 4
    assert (r.rows, r.accepted, r.quarantined, r.ignored) == (5, 3, 0, 2)


def test_fix50_caret_delimiter():
    r = read(DATA / "fix50_caret.txt")
    assert [(x["event"], x["order_id"], x["trader"]) for x in r.events.to_pylist()] == [
        ("NEW", "K1", "T2"), ("CANCEL", "K1", "T2")
    ]  # fmt: skip


def test_hostile_lines_are_quarantined_never_crash():
    r = read(DATA / "hostile.txt")
    assert [x["order_id"] for x in r.events.to_pylist()] == ["H1"]  # after a BOM
    got = [(q["line"], q["reason"], q["field"]) for q in r.quarantine.to_pylist()]
    assert got == [
        (2, "invalid_utf8", None), (3, "invalid_utf8", None), (4, "malformed", "10"),
        (5, "malformed", "8"), (6, "non_numeric", "44"), (7, "impossible_value", "38"),
        (8, "unknown_token", "54"), (9, "orphan_reference", "41"), (10, "duplicate", "11"),
        (11, "bad_timestamp", "52"), (12, "missing_value", "55"), (13, "missing_value", "50"),
        (14, "bad_checksum", "10"), (14, "bad_checksum", "10"),
    ]  # fmt: skip


def test_cr_only_line_endings_and_resent_request(tmp_path):
    d = fix([(35, "D"), *FIRM, (52, "20240105-17:00:00"), (11, "R1"), (38, "1"), (44, "5"),
             (54, "1"), (55, "ABC")], delim="\x01")  # fmt: skip
    resend = fix([(35, "D"), (43, "Y"), *FIRM, (52, "20240105-17:00:09"), (11, "R1"),
                  (38, "1"), (44, "5"), (54, "1"), (55, "ABC")], delim="\x01")  # fmt: skip
    p = tmp_path / "cr.log"
    p.write_bytes("\r".join([log("20240105-17:00:00.000", d), "",
                             log("20240105-17:00:09.000", resend)]).encode())  # fmt: skip
    r = read(p)
    assert (r.rows, r.accepted, r.ignored, dict(r.reasons)) == (3, 1, 1, {"duplicate": 1})
    assert r.quarantine.column("line").to_pylist() == [3]


def test_empty_and_blank_files(tmp_path):
    for content in (b"", b"\n\n  \r\n"):
        p = tmp_path / "e.log"
        p.write_bytes(content)
        r = read(p)
        assert r.accepted == 0 and r.quarantined == 0 and r.ignored == r.rows


@pytest.mark.parametrize("name", sorted(CME))
def test_real_cme_ilink_logs(name):
    path = SHARED / name
    if not path.exists():
        pytest.skip(f"real CME iLink log not available at {path} (shared data not mounted)")
    r = read(path)
    records, accepted, quarantined, ignored, new, cancel, fill = CME[name]
    assert (r.rows, r.accepted, r.quarantined, r.ignored) == (records, accepted, quarantined,
                                                              ignored)  # fmt: skip
    events = r.events.column("event").to_pylist()
    assert (events.count("NEW"), events.count("CANCEL"), events.count("FILL")) == (new, cancel,
                                                                                  fill)  # fmt: skip
    # every cancel and fill belongs to an order whose NEW is in the file
    ids = r.events.column("order_id").to_pylist()
    news = {o for o, e in zip(ids, events, strict=True) if e == "NEW"}
    assert set(r.events.column("order_id").to_pylist()) == news
    assert set(r.events.column("trader").to_pylist()) <= {"ST1", "ST2"}
    assert set(r.extras.column("manual_order_indicator").drop_null().to_pylist()) == {"N"}
    # the audit-trail tags travel with each canonical event as attributes
    attrs = [dict(a) for a in r.events.column("attrs").to_pylist()]
    assert all(a.get("manual_order_indicator") == "N" for a in attrs
               if "manual_order_indicator" in a)
    assert sum("manual_order_indicator" in a for a in attrs) > 0
    assert all(a["cl_ord_id"] for a in attrs)


def test_simulator_drop_copy_fix42_pipe():
    """An excerpt of the simulator's FIX 4.2 ``|`` renderer: execution reports only (drop copy),
    trader in SenderSubID(50) of the report; every message is an event."""
    r = read(DATA / "sim_fix42_pipe.log")
    assert (r.rows, r.accepted, r.quarantined, r.ignored) == (170, 170, 0, 0)
    events = r.events.column("event").to_pylist()
    assert (events.count("NEW"), events.count("CANCEL"), events.count("FILL")) == (103, 66, 1)
    fill = r.events.drop_columns(["ts"]).to_pylist()[events.index("FILL")]
    assert (fill["line"], fill["order_id"], fill["trader"], fill["side"], fill["leaves_qty"],
            fill["exec_qty"], fill["exec_price"], fill["venue"]) == (
        165, "O010000000006", "M.IVANOVA", "SELL", 3, 2, 71.87, "XNYM")  # fmt: skip
    assert r.events.column("ts").cast("int64")[164].as_py() == 1795444202272511000


def test_attrs_map_matches_a_per_row_reference():
    """``attrs_map`` (one numba pass) against the obvious per-row construction: nulls, empty
    values, sliced and chunked inputs, non-ASCII names and values."""
    rng = np.random.default_rng(3)
    for _ in range(40):
        n, k = int(rng.integers(0, 30)), int(rng.integers(1, 6))
        cols = {}
        for j in range(k):
            vals = [None if rng.random() < 0.4 else "é" * int(rng.integers(0, 3)) + str(j)
                    for _ in range(n + 2)]
            arr = pa.array(vals, pa.string()).slice(1, n)
            cols[f"k{j}ü"] = pa.chunked_array([arr.slice(0, n // 2), arr.slice(n // 2)])
        got = attrs_map(cols, n).to_pylist()
        want = [[(name, col[r].as_py()) for name, col in cols.items() if col[r].is_valid]
                for r in range(n)]
        assert got == want


def test_plain_decimals_parse_exactly_as_parse_number():
    """The numba fast path for plain decimals gives ``parse_number``'s values bit for bit and
    leaves everything else (exponents, spaces, text, long mantissas) to it."""
    rng = np.random.default_rng(5)
    texts = ["0", "-0", "+1", "1.", ".5", "00012.50", "1e3", " 7 ", "", "abc", "1.2.3", "-",
             "123456789012345", "1234567890123456", "0.000000000000001", "99999999999999.9"]
    for _ in range(3000):
        digits = "".join(rng.choice(list("0123456789"), int(rng.integers(1, 17))))
        cut = int(rng.integers(0, len(digits) + 1))
        sign = str(rng.choice(["", "-", "+"]))
        texts.append(sign + (digits[:cut] + "." + digits[cut:] if cut < len(digits) else digits))
    raw = "".join(texts).encode()
    buf = np.frombuffer(raw, np.uint8)
    lens = np.array([len(t.encode()) for t in texts], np.int32)
    st = np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(np.int64)
    vals, state = _numbers(buf, st[None], lens[None])
    got, missing, bad = FixConnector._number(buf, st, lens, vals[0], state[0])
    want, want_missing, want_bad = parse_number(pa.array(texts, pa.string()))
    want = want.to_numpy(zero_copy_only=False).astype(float)
    assert np.array_equal(missing, want_missing) and np.array_equal(bad, want_bad)
    assert np.array_equal(np.isnan(got), np.isnan(want))
    ok = ~np.isnan(want)
    assert np.array_equal(got[ok].view(np.int64), want[ok].view(np.int64))  # incl. -0.0
    assert (state[0] == 0).sum() > 2000  # the fast path takes the plain ones


def test_attrs_column_is_the_extras_as_a_map():
    for name in ("session.log", "fix44_pipe.txt", "hostile.txt", "sim_fix42_pipe.log"):
        r = read(DATA / name)
        want = attrs_map({c: r.extras.column(c) for c in r.extras.column_names},
                         r.events.num_rows)
        assert r.events.column("attrs").combine_chunks().equals(want)


def test_record_longer_than_16_bit_spans(tmp_path):
    """A record of 32 KiB or more is scanned again with 32-bit spans: same events."""
    fields = [(35, "D"), *FIRM, (52, "20240105-17:00:00"), (11, "L1"), (38, "1"), (44, "5"),
              (54, "1"), (55, "ABC")]  # fmt: skip
    short, long_ = tmp_path / "short.log", tmp_path / "long.log"
    short.write_text(log("20240105-17:00:00.000", fix(fields, delim="\x01")) + "\n")
    long_.write_text(log("20240105-17:00:00.000", fix([*fields, (58, "x" * 40000)],
                                                      delim="\x01")) + "\n")  # fmt: skip
    a, b = read(short), read(long_)
    assert b.accepted == 1 and b.extras.num_rows == 1
    assert a.events.drop_columns(["source"]).equals(b.events.drop_columns(["source"]))
