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


# --------------------------------------------------------------------------- in chunks
def _split_read(path, mapping, cut: int, tmp_path):
    """Read ``path`` as two chunks cut at byte ``cut`` (a line start), carrying the state, with
    provenance shifted back to the file; return comparable (events, quarantine, counts)."""
    from appliance.ingest import read_range
    from connectors.vendor import VendorCarry

    data = path.read_bytes()
    carry, out = VendorCarry.empty(), []
    deltas = []
    for start, end in ((0, cut), (cut, len(data))):
        r = read_range(VendorConnector(mapping), data[start:end], path=path, fid="s",
                       start=start, first_line=data[:start].count(b"\n") + 1, preamble=None,
                       tmp_dir=tmp_path, carry=carry)
        carry = r.carry
        deltas.append(carry.delta)
        out.append(r)
    events = [x for r in out for x in r.events.drop_columns(["source"]).to_pylist()]
    q = [(x["line"], x["offset"], x["reason"], x["field"], x["raw"]) for r in out
         for x in r.quarantine.to_pylist()]
    counts = [sum(getattr(r, k) for r in out) for k in ("rows", "accepted", "quarantined",
                                                        "ignored")]  # fmt: skip
    replayed = VendorCarry.replay(deltas)
    assert (replayed.lines, replayed.decided, replayed.names, replayed.width) == (
        carry.lines, carry.decided, carry.names, carry.width)
    assert replayed.seen_hi.tolist() == carry.seen_hi.tolist()
    assert replayed.seen_lo.tolist() == carry.seen_lo.tolist()
    return events, sorted(q), counts, carry


def _whole_read(path, mapping):
    r = VendorConnector(mapping).read(path, "s")
    q = [(x["line"], x["offset"], x["reason"], x["field"], x["raw"])
         for x in r.quarantine.to_pylist()]
    counts = [r.rows, r.accepted, r.quarantined, r.ignored]
    return r.events.drop_columns(["source"]).to_pylist(), sorted(q), counts


def test_cut_at_every_line_header_comments_skip_and_duplicates(tmp_path):
    """Comment lines and ``skip_lines`` before the header, the header, a duplicate in the second
    chunk of a line in the first: cut anywhere, the same rows as the whole file."""
    from connectors.vendor import load_mapping

    base = load_mapping("example-delimited")
    mapping = {**base, "format": {**base["format"], "skip_lines": 2}}
    src = (DATA / "example-delimited.csv").read_bytes()
    lines = src.splitlines(keepends=True)
    data = b"junk line one\njunk;two\n" + b"".join(lines) + lines[-3] + lines[2]
    path = tmp_path / "f.csv"
    path.write_bytes(data)
    whole = _whole_read(path, mapping)
    assert ("duplicate" in {q[2] for q in whole[1]}) and whole[0]
    for cut in (i + 1 for i, c in enumerate(data[:-1]) if c == 10):
        got = _split_read(path, mapping, cut, tmp_path)
        assert got[:3] == whole, cut


def test_headerless_field_count_is_the_whole_files(tmp_path):
    """Without a header a record needs the file's most common field count: a first chunk whose
    own mode differs is parsed again with the file's (``VendorCarry.exact``)."""
    from appliance import config, store
    from appliance.ingest import ingest_files

    mapping = {"format": {"name": "q", "kind": "market", "delimiter": "|", "header": False},
               "columns": {"ts": {"index": 1, "format": "epoch_ms"}, "symbol": {"index": 2},
                           "bid": {"index": 3}}}  # fmt: skip
    short = [f"17044650{i:05d}|XYZ|10.{i}\n" for i in range(30)]  # 3 fields, first
    long = [f"17044651{i:05d}|XYZ|11.{i}|x\n" for i in range(60)]  # 4 fields: the file's mode
    path = tmp_path / "q.txt"
    path.write_text("".join(short + long))
    whole = _whole_read(path, mapping)
    assert len(whole[0]) == 60 and {q[2] for q in whole[1]} == {"column_count"}
    first = _split_read(path, mapping, len("".join(short)), tmp_path)
    assert not first[3].exact()  # chunked with the first chunk's mode: not the file's
    results = []
    for chunk in (0, 600):
        root = tmp_path / f"d{chunk}"
        root.mkdir()
        (root / "surveil.toml").write_text(config.example_text())
        cfg = config.load(root / "surveil.toml")
        if chunk:
            import dataclasses

            cfg = dataclasses.replace(cfg, values={**cfg.values, "ingest.chunk_bytes": chunk})
        store.connect(cfg.store_path, create=True).close()
        con = store.connect(cfg.store_path)
        try:
            results.append(ingest_files(cfg, con, [path], "vendor", "t", mapping)[0].to_json())
        finally:
            con.close()
    assert results[0] == {**results[1], "file_id": results[0]["file_id"]}
    assert results[0]["accepted"] == 60 and results[0]["reasons"] == {"column_count": 30}
