"""The ``fix`` connector: hand-checked fixtures, hostile input, and the real CME session logs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from connectors.base import attrs_map
from connectors.fix import FixConnector, _in_sorted, _numbers
from connectors.parse import parse_number
from tests.connectors.fixgen import EXCH, FIRM, fix, log

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


# --------------------------------------------------------------------------- across chunks
def reordered_log(orders: int = 3) -> bytes:
    """A QuickFIX log whose answers are logged before the messages they follow in time: per
    order an acknowledgement before its D, a cancel confirmation before its F, and (every other
    order) a fill, or a 35=9 refusal before the F it refuses. Whole-file reading stitches it in
    time order; no line is an orphan there."""
    t = lambda k, ms: f"20240105-14:31:{k:02d}.{ms:03d}"  # noqa: E731
    lines = [log(t(0, 0), fix([(35, "A"), (34, "1"), *FIRM, (52, t(0, 0)), (98, "0"),
                                (108, "30")]))]  # fmt: skip
    seq = 2
    for k in range(1, orders + 1):
        o, side = f"R{k}", [(54, "1"), (55, "ESH4")]
        msgs = [
            (t(k, 2), [(35, "8"), *EXCH, (11, o), (17, f"E{k}a"), (37, f"X{k}"), (38, "5"),
                       (39, "0"), (44, "99"), *side, (150, "0"), (151, "5")]),
            (t(k, 0), [(35, "D"), *FIRM, (1, "ACC1"), (11, o), (38, "5"), (40, "2"), (44, "99"),
                       *side]),
        ]  # fmt: skip
        if k % 2:
            msgs += [
                (t(k, 9), [(35, "8"), *EXCH, (11, o), (17, f"E{k}f"), (37, f"X{k}"), (38, "5"),
                           (39, "1"), (31, "99"), (32, "2"), *side, (150, "1"), (151, "3")]),
                (t(k, 12), [(35, "9"), *EXCH, (11, f"{o}c"), (41, o), (37, f"X{k}"), (39, "1"),
                            (434, "1"), (102, "0")]),
                (t(k, 11), [(35, "F"), *FIRM, (11, f"{o}c"), (41, o), (38, "5"), *side]),
            ]  # fmt: skip
        msgs += [
            (t(k, 22), [(35, "8"), *EXCH, (11, f"{o}x"), (41, o), (17, f"E{k}c"),
                        (37, f"X{k}"), (38, "5"), (39, "4"), *side, (150, "4"), (151, "0")]),
            (t(k, 20), [(35, "F"), *FIRM, (11, f"{o}x"), (41, o), (38, "5"), *side]),
        ]  # fmt: skip
        for ts_, fields in msgs:
            lines.append(log(ts_, fix([fields[0], (34, str(seq)), *fields[1:]])))
            seq += 1
    return ("\n".join(lines) + "\n").encode()


def read_split(path: Path, bounds: list[int], tail: bool = True):
    """Read ``path`` in pieces ending at ``bounds`` with the carry (each piece but the last with
    ``tail_limit`` its own length, as chunked ingest does; the held tail joins the next piece):
    (events, quarantine, counts) with provenance in the whole file."""
    from appliance.ingest import read_range
    from connectors.fix import FixCarry

    data = path.read_bytes()
    carry, start, line = FixCarry.empty(), 0, 1
    events, quarantine, counts = [], [], [0, 0, 0, 0]
    for end in sorted({*bounds, len(data)}):
        if end <= start:
            continue
        chunk = data[start:end]
        limit = len(chunk) if tail and end < len(data) else None
        r = read_range(FixConnector(), chunk, path=path, fid="s", start=start, first_line=line,
                       preamble=None, tmp_dir=path.parent, carry=carry, tail_limit=limit)
        carry = r.carry
        events += r.events.drop_columns(["source"]).to_pylist()
        quarantine += r.quarantine.drop_columns(["source", "path"]).to_pylist()
        for k, name in enumerate(("rows", "accepted", "quarantined", "ignored")):
            counts[k] += getattr(r, name)
        line += chunk[:r.consumed].count(b"\n")
        start += r.consumed
    key = lambda r: (r["offset"], r["event"] if "event" in r else r["reason"])  # noqa: E731
    return sorted(events, key=key), sorted(quarantine, key=key), counts


def whole(path: Path):
    r = read(path)
    return read_split(path, [])[:2] + ([r.rows, r.accepted, r.quarantined, r.ignored],)


def test_reordered_pairs_across_every_chunk_boundary(tmp_path):
    """Answers logged before their requests (acknowledgement before the D, cancel confirmation
    or refusal before the F): whatever the line at which a chunk ends, the pair ends up in one
    chunk (``_cut``: a suspect near the chunk's end is kept back) and the rows are the
    whole-file rows."""
    path = tmp_path / "reordered.log"
    path.write_bytes(reordered_log())
    want = whole(path)
    assert [e["event"] for e in want[0]] == ["NEW", "FILL", "CANCEL", "NEW", "CANCEL", "NEW",
                                             "FILL", "CANCEL"]  # fmt: skip
    assert want[1] == [] and want[2][2] == 0
    data = path.read_bytes()
    nls = [i + 1 for i, c in enumerate(data[:-1]) if c == 10]
    for b in nls[1:]:  # (a chunk that is all suspect tail is read whole: not the first line)
        assert read_split(path, [b]) == want, b
    assert read_split(path, nls[1::2]) == want  # many chunks
    # without the hold-back a boundary inside a pair orphans or doubles (what is fixed)
    assert any(read_split(path, [b], tail=False) != want for b in nls[1:])


def test_cut_chunks_stitched_again_equal_the_whole_file_with_and_without_times(
        tmp_path, monkeypatch):
    """A chunk that holds back a tail stitches its kept rows again from the chain state saved
    before its first stitch (``_restitched``), or, when the kept rows hold no time while the
    chunk does, re-reads them (their time key differs): both give the whole file's rows at
    every boundary, and both paths are taken here."""
    taken = {"again": 0, "reread": 0}
    restitched = FixConnector._restitched

    def counting(self, s, cut):
        again = restitched(self, s, cut)
        taken["again" if again is not None else "reread"] += 1
        return again

    monkeypatch.setattr(FixConnector, "_restitched", counting)
    untimed = [  # raw messages without a log time, 52 or 60: stitched, then quarantined
        fix([(35, "D"), (34, "90"), *FIRM, (11, "U1"), (38, "5"), (40, "2"), (44, "98"),
             (54, "2"), (55, "ESH4")]),
        fix([(35, "8"), (34, "91"), *EXCH, (11, "U1"), (17, "EU1"), (37, "XU1"), (38, "5"),
             (39, "0"), (44, "98"), (54, "2"), (55, "ESH4"), (150, "0"), (151, "5")]),
    ]  # fmt: skip
    path = tmp_path / "mixed.log"
    timed = reordered_log().split(b"\n", 1)[1]  # (from its first order: no logon)
    path.write_bytes(("\n".join(untimed) + "\n").encode() + timed)
    want = whole(path)
    assert [q["reason"] for q in want[1]] == ["missing_value"]  # the untimed NEW, once
    data = path.read_bytes()
    nls = [i + 1 for i, c in enumerate(data[:-1]) if c == 10]
    for b in nls[1:]:
        assert read_split(path, [b]) == want, b
    assert taken["again"] and taken["reread"]


def test_late_refusal_of_a_committed_request_is_quarantined(tmp_path):
    """A 35=9 arriving in a later range than the cancel request it refuses (no hold-back, or
    beyond its limits): the request's CANCEL was committed and stands (the store is
    append-only); the refusal is quarantined ``late_answer`` (field 11: its raw message names
    the request's ClOrdID) instead of being silently ignored, and the order keeps one CANCEL."""
    path = tmp_path / "session.log"
    path.write_bytes((DATA / "session.log").read_bytes())
    data = path.read_bytes()
    b = data.index(b"35=9")
    b = data.rindex(b"\n", 0, b) + 1  # between F D2 (line 18) and its refusal (line 19)
    events, quarantine, counts = read_split(path, [b], tail=False)
    assert counts == [22, 10, 4, 8]  # whole file: (22, 9, 3, 10), F and 35=9 ignored
    cancel = [(e["line"], e["order_id"]) for e in events if e["event"] == "CANCEL"]
    assert cancel == [(13, "B1"), (18, "D1")]
    late = [q for q in quarantine if q["reason"] == "late_answer"]
    assert [(q["line"], q["field"], q["step"]) for q in late] == [(19, "11", "fix:stitch")]
    assert b"11=D2" in late[0]["raw"]
    # with the hold-back the refusal is stitched to its request: exactly the whole file
    assert read_split(path, [b]) == whole(path)


def done_orders_log(orders: int, resend: bool = True) -> bytes:
    """``orders`` orders one second apart, each filled (OrdStatus 2); then (``resend``) a reused
    request ClOrdID and a repeated ExecID of the first orders, long after they were done."""
    t = lambda s: f"20240105-15:{s // 60:02d}:{s % 60:02d}.000"  # noqa: E731
    side = [(54, "2"), (55, "ESH4")]
    lines = []
    for k in range(orders):
        o = f"P{k}"
        lines += [
            log(t(k), fix([(35, "D"), (34, "1"), *FIRM, (11, o), (38, "3"), (40, "2"),
                           (44, "10"), *side])),
            log(t(k), fix([(35, "8"), (34, "1"), *EXCH, (11, o), (17, f"A{k}"), (37, f"Y{k}"),
                           (38, "3"), (39, "0"), (44, "10"), *side, (150, "0"), (151, "3")])),
            log(t(k), fix([(35, "8"), (34, "1"), *EXCH, (11, o), (17, f"F{k}"), (37, f"Y{k}"),
                           (38, "3"), (39, "2"), (31, "10"), (32, "3"), *side, (150, "2"),
                           (151, "0")])),
        ]  # fmt: skip
    if resend:
        lines += [
            log(t(orders), fix([(35, "D"), (34, "1"), *FIRM, (11, "P0"), (38, "3"), (40, "2"),
                                (44, "10"), *side])),
            log(t(orders), fix([(35, "8"), (34, "1"), *EXCH, (11, "P1"), (17, "F1"),
                                (37, "Y1"), (38, "3"), (39, "2"), (31, "10"), (32, "3"), *side,
                                (150, "2"), (151, "0")])),
        ]  # fmt: skip
    return ("\n".join(lines) + "\n").encode()


def test_carry_prunes_done_orders_and_still_catches_resends(tmp_path):
    """A long log read in chunks: the carry keeps the orders done in the last ``RETAIN_NS``
    only (plus 64-bit hashes of ExecIDs and of pruned request ClOrdIDs), so a request
    ClOrdID reused and an ExecID repeated minutes later are still ``duplicate``; the rows are
    the whole file's, and replaying the persisted deltas rebuilds the same state."""
    from connectors.fix import RETAIN_NS, FixCarry

    orders = 300
    path = tmp_path / "done.log"
    path.write_bytes(done_orders_log(orders))
    want = whole(path)
    assert want[2] == [3 * orders + 2, 2 * orders, 2, orders]
    data = path.read_bytes()
    nls = [i + 1 for i, c in enumerate(data[:-1]) if c == 10]
    bounds = nls[len(nls) // 7 :: len(nls) // 7]
    assert read_split(path, bounds) == want
    carry, deltas, start = FixCarry.empty(), [], 0
    for end in [*bounds, len(data)]:
        piece = tmp_path / "piece.log"
        piece.write_bytes(data[start:end])
        carry = FixConnector().read(piece, "s", carry=carry).carry
        deltas.append(carry.delta)
        start = end
    alive = RETAIN_NS // 1_000_000_000 + 2 * orders // 7  # retained + the last chunk's
    assert carry.table.num_rows <= 2 * alive < orders  # a ClOrdID and an OrderID per order
    assert carry.execs.size == 2 * orders and carry.pruned.size >= orders
    replayed = FixCarry.replay(deltas)
    key = [("key", "ascending")]
    assert replayed.table.sort_by(key).equals(carry.table.sort_by(key))
    assert np.array_equal(replayed.execs, carry.execs)
    a, b = replayed.pruned, carry.pruned  # (string codes depend on the interning order)
    assert np.array_equal(a.hashes, b.hashes) and np.array_equal(a.req_class, b.req_class)
    for name in ("root", "by37"):
        assert a._text(getattr(a, name)).equals(b._text(getattr(b, name)))
    assert carry.pruned.nbytes() < 120 * orders  # compact: ~100 bytes per pruned order


def late_references_log(orders: int = 70, late_s: int = 240) -> bytes:
    """``done_orders_log`` (``orders`` filled orders, one a second) followed, ``late_s`` seconds
    in (minutes after the first orders were done, so a chunked read has pruned them), by
    references to done orders: a cancel request for P0 refused by a 35=9 ("too late to
    cancel"), a replace request for P2 refused by an ExecutionReport (ExecType 8), a late fill
    report for P1 (a new ExecID) and a cancel request for P3 by its OrderID only, left
    unanswered."""
    t = f"20240105-15:{late_s // 60:02d}:{late_s % 60:02d}"
    side = [(54, "2"), (55, "ESH4")]
    lines = [
        log(f"{t}.000", fix([(35, "F"), (34, "2"), *FIRM, (11, "P0c"), (41, "P0"), (37, "Y0"),
                             (38, "3"), *side])),
        log(f"{t}.001", fix([(35, "9"), (34, "2"), *EXCH, (11, "P0c"), (41, "P0"), (37, "Y0"),
                             (39, "2"), (434, "1"), (102, "0"), (58, "Too late to cancel")])),
        log(f"{t}.100", fix([(35, "G"), (34, "3"), *FIRM, (11, "P2r"), (41, "P2"), (37, "Y2"),
                             (38, "4"), (40, "2"), (44, "11"), *side])),
        log(f"{t}.101", fix([(35, "8"), (34, "3"), *EXCH, (11, "P2r"), (41, "P2"), (17, "R2"),
                             (37, "Y2"), (38, "3"), (39, "2"), *side, (150, "8"), (151, "0")])),
        log(f"{t}.200", fix([(35, "8"), (34, "4"), *EXCH, (11, "P1"), (17, "F1late"),
                             (37, "Y1"), (38, "3"), (39, "2"), (31, "10"), (32, "1"), *side,
                             (150, "2"), (151, "0")])),
        log(f"{t}.300", fix([(35, "F"), (34, "4"), *FIRM, (11, "P3c"), (41, "nope"),
                             (37, "Y3"), (38, "3"), *side])),
    ]  # fmt: skip
    return done_orders_log(orders, resend=False) + ("\n".join(lines) + "\n").encode()


def test_reference_to_an_order_done_long_ago_is_stitched_whatever_the_chunking(tmp_path):
    """References to orders done minutes earlier (a refused cancel and replace, a late fill, a
    cancel by OrderID) after a chunked read has pruned them from the carry: the pruned chains
    are restored from the compact store, so every line boundary (and many chunks) gives the
    whole file's rows: the refused requests and their refusals ignored, the late FILL and the
    unanswered CANCEL attached to their orders, no ``orphan_reference``."""
    from connectors.fix import FixCarry

    orders = 70
    path = tmp_path / "late.log"
    path.write_bytes(late_references_log(orders))
    want = whole(path)
    late = [(e["event"], e["order_id"], e["exec_qty"]) for e in want[0] if e["line"] > 3 * orders]
    assert late == [("FILL", "P1", 1.0), ("CANCEL", "P3", None)]
    assert want[1] == [] and want[2] == [3 * orders + 6, 2 * orders + 2, 0, orders + 4]
    data = path.read_bytes()
    nls = [i + 1 for i, c in enumerate(data[:-1]) if c == 10]
    # the chunked read really prunes them: the carry before the late lines no longer holds P0
    first = tmp_path / "first.log"
    first.write_bytes(data[: nls[3 * orders - 1]])
    carry = FixConnector().read(first, "s", carry=FixCarry.empty()).carry
    assert "P0" not in carry.table.column("key").to_pylist() and carry.pruned.size
    for b in nls[1:]:  # (a chunk that is all held tail is read whole: not the first line)
        assert read_split(path, [b]) == want, b
    assert read_split(path, nls[1::3]) == want  # many chunks


def test_in_sorted_probes_sorted_or_not():
    """``_in_sorted`` sorts large probe sets first (cache-friendly search): same answers, in the
    probes' order, as a plain membership test."""
    rng = np.random.default_rng(7)
    s = np.unique(rng.integers(0, 2**63, 20_000, dtype=np.int64).astype(np.uint64))
    q = np.concatenate([s[::3], rng.integers(0, 2**63, 10_000, dtype=np.int64).astype(np.uint64)])
    rng.shuffle(q)
    want = np.isin(q, s)
    assert q.size >= 1024 and want.any() and not want.all()
    assert (_in_sorted(s, q) == want).all()
    assert (_in_sorted(s, q[:100]) == want[:100]).all()
    assert not _in_sorted(s[:0], q).any() and _in_sorted(s, q[:0]).size == 0
