"""Large files in chunks (issue #5): the same rows, quarantine and report whatever the chunk size
and whether the chunks ran in this process or as Ray tasks; FIX order chains across chunks."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from appliance import config, reference, store
from appliance.ingest import ingest_files, read_range
from appliance.sim import SimConfig, simulate
from connectors import get_connector
from connectors.base import InputRefused
from connectors.fix import FixCarry
from tests.conftest import DATA

FIXTURES = [  # (format, file, mapping)
    ("csv", DATA / "csv" / "orders_shuffled.csv", None),
    ("md-csv", DATA / "csv" / "market.csv", None),
    *(("fix", p, None) for p in sorted((DATA / "fix").iterdir())),
    ("cat-json", DATA / "cat-json" / "events.ndjson", None),
    ("vendor", DATA / "vendor" / "sim-vendor-a.csv", None),  # read whole (documented)
]
SIM = {"seed": 7, "minutes": 2.0, "instruments": 2, "traders": 8}


def _datadir(path: Path, **values) -> config.Config:
    path.mkdir(parents=True)
    toml = path / "surveil.toml"
    toml.write_text(config.example_text(), encoding="utf-8")
    cfg = config.load(toml)
    store.connect(cfg.store_path, create=True).close()
    return dataclasses.replace(cfg, values={**cfg.values, **values})


def _rows(table: pa.Table) -> list[dict]:
    """Rows as dicts, timestamps as integer ns (they may carry nanoseconds)."""
    for i, f in enumerate(table.schema):
        if pa.types.is_timestamp(f.type):
            table = table.set_column(i, f.name, table.column(i).cast(pa.int64()))
    return table.to_pylist()


def _ingest(root: Path, path: Path, fmt: str, mapping=None, ref: Path | None = None,
            **values):
    """Ingest ``path`` in a fresh data dir; return (report, events, quarantine), sorted."""
    cfg = _datadir(root, **values)
    con = store.connect(cfg.store_path)
    try:
        if ref is not None:
            for kind in ("traders", "symbology"):
                reference.load(con, kind, ref / f"{kind}.csv", "test")
        report = ingest_files(cfg, con, [path], fmt, "test", mapping)[0]
        parts = [f for r in store.rows(con, "SELECT parquet FROM file_dates ORDER BY parquet")
                 for f in store.parquet_files(cfg.data_dir, r["parquet"])]
    finally:
        con.close()
    events = pq.read_table(parts) if parts else None
    keys = [(k, "ascending") for k in ("offset", "event", "order_id")
            if events is not None and k in events.column_names]
    events = _rows(events.sort_by(keys)) if events is not None else []
    qfile = cfg.data_dir / "quarantine" / f"{report.file_id}.parquet"
    quarantine = (pq.read_table(qfile).sort_by([("offset", "ascending"), ("step", "ascending")])
                  .to_pylist() if qfile.exists() else [])  # fmt: skip
    assert not list((cfg.data_dir / "tmp" / "parts").glob("*/*")), "parts left behind"
    return report.to_json(), events, quarantine


@pytest.mark.parametrize("fmt,path,mapping", FIXTURES, ids=[f"{f}-{p.name}" for f, p, _ in
                                                           FIXTURES])
def test_fixtures_same_result_whatever_the_chunk_size(tmp_path, fmt, path, mapping):
    whole = _ingest(tmp_path / "whole", path, fmt, mapping)
    # FIX: exact when a request's answer is within half a chunk of it (docs/connectors.md)
    for chunk in (256, 700, 3000) if fmt != "fix" else (1500, 3000):
        got = _ingest(tmp_path / f"c{chunk}", path, fmt, mapping, **{"ingest.chunk_bytes": chunk})
        assert got == whole, (fmt, path.name, chunk)


def test_resend_in_another_chunk(tmp_path):
    path = DATA / "csv" / "orders_messy.csv"  # line 17 repeats line 11
    whole = _ingest(tmp_path / "whole", path, "csv")
    assert whole[0]["reasons"]["duplicate"] == 1
    for chunk in (64, 256, 700):
        got = _ingest(tmp_path / f"c{chunk}", path, "csv", **{"ingest.chunk_bytes": chunk})
        assert got == whole, chunk


@pytest.fixture(scope="module")
def sim_days(tmp_path_factory):
    root = tmp_path_factory.mktemp("simchunks")
    out = {}
    for name, fmt, extra in (("csv", "vendor-a", {}),
                             ("fix", "fix", {"fix_version": "4.2", "fix_sep": "pipe"}),
                             ("fix-dirty", "fix", {"dirty": 0.02})):
        out[name] = simulate(SimConfig(**SIM, fmt=fmt, **extra), root / name)
    return out


@pytest.mark.parametrize("day,fmt", [("csv", "csv"), ("fix", "fix"), ("fix-dirty", "fix")])
def test_simulator_day_same_result_in_chunks(tmp_path, sim_days, day, fmt):
    res = sim_days[day]
    path = res.clean_orders_path if fmt == "csv" else res.orders_path
    whole = _ingest(tmp_path / "whole", path, fmt, ref=res.reference_dir)
    assert whole[0]["accepted"] > 1000
    size = path.stat().st_size
    for chunk in (size // 13, size // 4):
        got = _ingest(tmp_path / f"c{chunk}", path, fmt, ref=res.reference_dir,
                      **{"ingest.chunk_bytes": chunk})
        assert got == whole, (day, chunk)
    if day == "fix":  # a clean day: no chain broken by a boundary, no orphan at all
        assert "orphan_reference" not in whole[0]["reasons"]


def test_simulator_csv_with_ray_tasks(tmp_path, sim_days):
    res = sim_days["csv"]
    path = res.clean_orders_path
    whole = _ingest(tmp_path / "whole", path, "csv", ref=res.reference_dir)
    chunk = path.stat().st_size // 5
    got = _ingest(tmp_path / "ray", path, "csv", ref=res.reference_dir,
                  **{"ingest.chunk_bytes": chunk, "ingest.mode": "ray", "ray.num_cpus": 2})
    assert got == whole


def _with_resends(path: Path, dest: Path, n: int, seed: int) -> Path:
    """``path`` with ``n`` of its records resent (exact copies, some twice) far from their
    originals, a few right after them, and near-copies differing in one byte of the quantity."""
    rng = random.Random(seed)
    head, *lines = path.read_bytes().splitlines(keepends=True)
    out = list(lines)
    for i in rng.sample(range(len(lines)), n):
        at = out.index(lines[i])
        far = rng.randrange(at + 1, len(out) + 1) if rng.random() < 0.8 else at + 1
        out.insert(far, lines[i])
        if i % 5 == 0:
            out.insert(rng.randrange(at + 1, len(out) + 1), lines[i])
        if i % 7 == 0:
            fields = lines[i].split(b",")
            fields[9] = fields[9] + b"0"  # another quantity: not a resend
            out.insert(rng.randrange(at + 1, len(out) + 1), b",".join(fields))
    dest.write_bytes(head + b"".join(out))
    return dest


@pytest.mark.parametrize("mode", ["inprocess", "ray"])
def test_simulator_day_resends_across_chunks(tmp_path, sim_days, mode):
    """Resends whose originals are in other chunks: the same rows, quarantine (raw line, line,
    offset, step) and report as the whole file, whatever the chunk size and the mode."""
    res = sim_days["csv"]
    path = _with_resends(res.clean_orders_path, tmp_path / "resent.csv", 60, seed=11)
    whole = _ingest(tmp_path / "whole", path, "csv", ref=res.reference_dir)
    assert whole[0]["reasons"]["duplicate"] >= 70
    size = path.stat().st_size
    sizes = (size // 17, size // 3) if mode == "inprocess" else (size // 5,)
    extra = {"ingest.mode": "ray", "ray.num_cpus": 2} if mode == "ray" else {}
    for chunk in sizes:
        got = _ingest(tmp_path / f"c{chunk}", path, "csv", ref=res.reference_dir,
                      **{"ingest.chunk_bytes": chunk, **extra})
        assert got == whole, (mode, chunk)


def test_resend_check_exact_under_hash_buckets(tmp_path, monkeypatch):
    """Many hash ranges and verification batches (a tiny budget) and a forced hash collision
    between different rows: still exactly the whole file (hashes only pick candidates)."""
    from appliance import ingest
    from appliance.clean import resends

    path = DATA / "csv" / "orders_messy.csv"
    whole = _ingest(tmp_path / "whole", path, "csv")
    real_build = resends.build_index

    def colliding(kept, dates, source):
        index = real_build(kept, dates, source)
        index[0] = (index[0] & 0xF) << 60  # 16 hash values in all: collisions everywhere
        return index[:, index[0].argsort(kind="stable")]

    monkeypatch.setattr(resends, "build_index", colliding)
    monkeypatch.setattr(ingest, "RESEND_MIN_BUDGET", 2)
    got = _ingest(tmp_path / "c", path, "csv", **{"ingest.chunk_bytes": 128})
    assert got == whole


# --------------------------------------------------------------------------- FIX across chunks
def _read_split(path: Path, bounds: list[int]) -> tuple[list, list, list[int]]:
    """Read a FIX file in the pieces that end at ``bounds`` (each chunk may stop early to keep a
    request with its answer; the rest joins the next piece), carrying the chain state."""
    data = path.read_bytes()
    connector = get_connector("fix")
    carry, start, line = FixCarry.empty(), 0, 1
    events, quarantine, counts = [], [], [0, 0, 0, 0]
    ends = sorted(set(bounds) | {len(data)})
    i = 0
    while start < len(data):
        while ends[i] <= start:
            i += 1
        chunk = data[start:ends[i]]
        final = ends[i] == len(data)
        r = read_range(connector, chunk, path=path, fid="s", start=start, first_line=line,
                       preamble=None, tmp_dir=path.parent / "tmp", carry=carry,
                       tail_limit=None if final else len(chunk))
        carry = r.carry
        events += _rows(r.events)
        quarantine += r.quarantine.to_pylist()
        for k, name in enumerate(("rows", "accepted", "quarantined", "ignored")):
            counts[k] += getattr(r, name)
        line += chunk[:r.consumed].count(b"\n")
        start += r.consumed
        i += 1
    return events, quarantine, counts


def _whole(path: Path):
    r = get_connector("fix").read(path, "s")
    return (_rows(r.events), r.quarantine.to_pylist(),
            [r.rows, r.accepted, r.quarantined, r.ignored])


def _canon(result):
    events, quarantine, counts = result
    key = lambda r: (r["offset"], r["event"])  # noqa: E731
    return sorted(events, key=key), sorted(quarantine, key=lambda r: r["offset"]), counts


def _copy(path: Path, tmp_path: Path) -> Path:
    dest = tmp_path / path.name
    dest.write_bytes(path.read_bytes())
    (tmp_path / "tmp").mkdir(exist_ok=True)
    return dest


@pytest.mark.parametrize("name", ["session.log", "sim_fix42_pipe.log", "hostile.txt"])
def test_fix_split_at_every_line_boundary(tmp_path, name):
    path = _copy(DATA / "fix" / name, tmp_path)
    data = path.read_bytes()
    whole = _canon(_whole(path))
    assert whole[0]
    for b in (i + 1 for i, c in enumerate(data[:-1]) if c == 10):
        assert _canon(_read_split(path, [b])) == whole, b


def test_fix_random_boundaries_simulator_day(tmp_path, sim_days):
    path = _copy(sim_days["fix"].orders_path, tmp_path)
    data = path.read_bytes()
    whole = _canon(_whole(path))
    assert "orphan_reference" not in {q["reason"] for q in whole[1]}
    nls = [i + 1 for i, c in enumerate(data[:-1]) if c == 10]
    rng = random.Random(5)
    for k in (2, 7, 40):
        bounds = sorted(rng.sample(nls, k))
        assert _canon(_read_split(path, bounds)) == whole, bounds


def test_fix_carry_replays_from_deltas(tmp_path, sim_days):
    """The tee persists each chunk's delta; replaying them gives the same state."""
    path = _copy(sim_days["fix"].orders_path, tmp_path)
    data = path.read_bytes()
    connector = get_connector("fix")
    carry, deltas, start = FixCarry.empty(), [], 0
    for end in (len(data) // 3, 2 * len(data) // 3, len(data)):
        end = data.rfind(b"\n", 0, end) + 1 if end < len(data) else end
        piece = tmp_path / "piece"
        piece.write_bytes(data[start:end])
        carry = connector.read(piece, "s", carry=carry).carry
        deltas.append(carry.delta)
        start = end
    replayed = FixCarry.replay(deltas).table
    key = [("kind", "ascending"), ("key", "ascending")]
    assert replayed.sort_by(key).equals(carry.table.sort_by(key))
    assert pa.concat_tables(deltas).num_rows >= carry.table.num_rows


# --------------------------------------------------------------------------- vendor in chunks
VENDOR = {"vendor-a": "sim-vendor-a", "vendor-b": "sim-vendor-b",
          "fixed-width": "sim-fixed-width"}  # fmt: skip


@pytest.fixture(scope="module")
def vendor_days(tmp_path_factory):
    """Dirty simulator days in the three vendor dialects (headers, a banner comment, resent
    duplicate lines, broken values)."""
    root = tmp_path_factory.mktemp("simvendor")
    return {fmt: simulate(SimConfig(**SIM, fmt=fmt, dirty=0.02), root / fmt) for fmt in VENDOR}


@pytest.mark.parametrize("dialect", list(VENDOR))
def test_vendor_day_same_result_in_chunks(tmp_path, vendor_days, dialect):
    """Header, skipped/comment lines, duplicates across chunks (``VendorCarry``), line numbers
    and offsets: the same events, quarantine (raw bytes included) and report at any chunk size."""
    res = vendor_days[dialect]
    path, mapping = res.orders_path, VENDOR[dialect]
    whole = _ingest(tmp_path / "whole", path, "vendor", mapping, ref=res.reference_dir)
    assert whole[0]["accepted"] > 1000 and whole[0]["quarantined"] > 10
    assert "duplicate" in whole[0]["reasons"], whole[0]["reasons"]
    size = path.stat().st_size
    for chunk in (size // 13, size // 4, 4096):
        got = _ingest(tmp_path / f"c{chunk}", path, "vendor", mapping, ref=res.reference_dir,
                      **{"ingest.chunk_bytes": chunk})
        assert got == whole, (dialect, chunk)


def test_vendor_day_with_ray(tmp_path, vendor_days):
    res = vendor_days["vendor-b"]
    path = res.orders_path
    whole = _ingest(tmp_path / "whole", path, "vendor", "sim-vendor-b", ref=res.reference_dir)
    got = _ingest(tmp_path / "ray", path, "vendor", "sim-vendor-b", ref=res.reference_dir,
                  **{"ingest.chunk_bytes": path.stat().st_size // 5, "ingest.mode": "ray",
                     "ray.num_cpus": 2})
    assert got == whole


# --------------------------------------------------------------------------- files concurrently
@pytest.fixture(scope="module")
def fix_days(tmp_path_factory):
    """FIX session logs of three simulator days (different seeds: different content)."""
    root = tmp_path_factory.mktemp("simfix")
    return [simulate(SimConfig(**{**SIM, "seed": seed, "minutes": 1.0}, fmt="fix",
                               **({"dirty": 0.02} if seed == 9 else {})), root / f"s{seed}")
            for seed in (7, 8, 9)]


def _ingest_many(root: Path, paths: list[Path], fmt: str, ref: Path, **values) -> dict:
    """Ingest ``paths`` in one call in a fresh data dir; return the reports, the store rows
    (timestamps left out) and each file's events and quarantine, in store order."""
    cfg = _datadir(root, **values)
    con = store.connect(cfg.store_path)
    try:
        for kind in ("traders", "symbology"):
            reference.load(con, kind, ref / f"{kind}.csv", "test")
        reports = [r.to_json() for r in ingest_files(cfg, con, paths, fmt, "test")]
        files = [{k: v for k, v in r.items() if k != "ingested_at"}
                 for r in store.rows(con, "SELECT * FROM files ORDER BY rowid")]
        dates = list(store.rows(con, "SELECT * FROM file_dates ORDER BY rowid"))
        audit = [(r["action"], r["target"], r["detail"]) for r in store.rows(
            con, "SELECT * FROM audit_log WHERE action = 'ingest' ORDER BY audit_id")]
        events = [_rows(pq.read_table(store.parquet_files(cfg.data_dir, r["parquet"])))
                  for r in dates]  # fmt: skip
    finally:
        con.close()
    quarantine = {f["file_id"]: pq.read_table(q).to_pylist() for f in files
                  if (q := cfg.data_dir / "quarantine" / f"{f['file_id']}.parquet").exists()}
    assert not list((cfg.data_dir / "tmp" / "parts").glob("*/*")), "parts left behind"
    return {"reports": reports, "files": files, "dates": [dict(r) for r in dates],
            "audit": audit, "events": events, "quarantine": quarantine}


def test_fix_files_concurrently_with_ray(tmp_path, fix_days):
    """Several FIX session logs (chunked ones: a chunk chain per task; a small one read whole),
    the same content twice (the same path, and a copy elsewhere) in one ``ray`` mode call: the
    reports, store rows (in input order), events and quarantine of the in-process serial loop."""
    logs = [d.orders_path for d in fix_days]
    copy = tmp_path / "copy.log"
    copy.write_bytes(logs[1].read_bytes())
    small = DATA / "fix" / "session.log"
    paths = [logs[0], small, logs[1], logs[0], logs[2], copy]
    chunk = max(p.stat().st_size for p in logs) // 4
    assert small.stat().st_size < chunk < min(p.stat().st_size for p in logs) // 2
    ref = fix_days[0].reference_dir
    serial = _ingest_many(tmp_path / "serial", paths, "fix", ref,
                          **{"ingest.chunk_bytes": chunk, "ingest.mode": "inprocess"})
    assert [r["status"] for r in serial["reports"]] == [
        "ingested", "ingested", "ingested", "already_ingested", "ingested", "already_ingested"]
    assert all(serial["reports"][i]["accepted"] > 100 for i in (0, 2, 4))
    assert len({r["accepted"] for r in serial["reports"]}) == 4  # distinct days
    assert [json.loads(a[2]).get("chunks", 1) > 1 for a in serial["audit"]] == [
        True, False, True, True]
    ray = _ingest_many(tmp_path / "ray", paths, "fix", ref,
                       **{"ingest.chunk_bytes": chunk, "ingest.mode": "ray", "ray.num_cpus": 2})
    assert ray == serial


def test_csv_files_concurrently_with_ray(tmp_path, sim_days):
    """Stateless files: one in chunks with resends across them, small ones, a duplicate."""
    res = sim_days["csv"]
    big = _with_resends(res.clean_orders_path, tmp_path / "resent.csv", 40, seed=3)
    messy = DATA / "csv" / "orders_messy.csv"
    paths = [messy, big, DATA / "csv" / "orders_shuffled.csv", messy, res.clean_orders_path]
    values = {"ingest.chunk_bytes": big.stat().st_size // 5}
    serial = _ingest_many(tmp_path / "serial", paths, "csv", res.reference_dir,
                          **values, **{"ingest.mode": "inprocess"})
    assert [r["status"] for r in serial["reports"]].count("already_ingested") == 1
    assert serial["reports"][1]["reasons"]["duplicate"] >= 40
    ray = _ingest_many(tmp_path / "ray", paths, "csv", res.reference_dir,
                       **values, **{"ingest.mode": "ray", "ray.num_cpus": 2})
    assert ray == serial


@pytest.mark.parametrize("mode", ["inprocess", "ray"])
def test_refused_file_among_many(tmp_path, mode):
    """A refused file raises ``InputRefused`` (unwrapped from Ray's error) once the files before
    it are recorded; the files after it are not recorded, in either mode."""
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"foo,bar\n1,2\n")
    cfg = _datadir(tmp_path / "d", **{"ingest.mode": mode, "ray.num_cpus": 2})
    con = store.connect(cfg.store_path)
    paths = [DATA / "csv" / "orders_messy.csv", bad, DATA / "csv" / "orders_shuffled.csv"]
    try:
        with pytest.raises(InputRefused) as err:
            ingest_files(cfg, con, paths, "csv", "test")
        assert type(err.value) is InputRefused and err.value.path == str(bad)
        recorded = [r["path"] for r in store.rows(con, "SELECT path FROM files")]
    finally:
        con.close()
    assert recorded == [str(paths[0].resolve())]


@pytest.mark.parametrize("tz", ["UTC", "America/New_York", "Europe/London", "Asia/Kolkata",
                                "Asia/Kathmandu", "Australia/Lord_Howe", "America/St_Johns"])
def test_trade_dates_match_per_row_formatting(tz):
    """Trade dates formatted once per quarter hour equal per-row ``strftime`` around DST changes
    and midnights, in zones offset by 30 and 45 minutes too; nulls stay null."""
    import numpy as np
    import pyarrow.compute as pc

    from appliance.ingest import _trade_dates

    rng = np.random.default_rng(5)
    hour = 3600 * 10**9
    edges = [np.datetime64(d, "ns").astype(np.int64) for d in (
        "2024-03-10T07:00", "2024-03-31T01:00", "2024-04-06T15:00", "2024-10-27T01:00",
        "2024-11-03T06:00", "2025-01-01T00:00")]
    ns = np.concatenate([e + rng.integers(-8 * hour, 8 * hour, 3000) for e in edges])
    ts = pa.array(np.append(ns, 0), pa.int64()).cast(pa.timestamp("ns"))
    ts = pc.if_else(pc.equal(pa.array(np.append(ns, 0)), 0), pa.scalar(None, ts.type), ts)
    want = pc.strftime(pc.cast(ts, pa.timestamp("ns", tz=tz)), format="%Y-%m-%d")
    got = _trade_dates(pa.chunked_array([ts[:100], ts[100:]]), tz)
    assert got.equals(want) and got.null_count == 1
