"""ISSUE 5 acceptance: ingesting each dirty rendering of a simulator day gives back exactly the
clean events; every injected defect is either repaired or quarantined as ``defects.csv`` says.

For each dialect: simulate a small day with ``--dirty``, load the day's reference data (trader
aliases, symbology), ingest the dirty file into a fresh data dir, export the events, and compare
with the canonical ``clean/orders.csv`` ingested as ``csv`` into another data dir:

* every clean event comes back equal on (ts, trader, account, instrument, side, event, order_id,
  price, qty, leaves_qty, exec_qty, exec_price), ``ts`` at the dialect's resolution (µs, ms for
  fixed-width), or its loss is explained: its record carries a defect whose line was quarantined
  with a reason that fits the defect kind, or (FIX) it was quarantined as ``orphan_reference``
  because the order's NEW was lost to such a defect;
* no event comes back that is not a clean event;
* every quarantined line is a defect line; every defect is accounted for (repaired kinds come
  back, quarantined kinds are quarantined with a matching reason).
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from appliance import config, reference, store
from appliance.export import export_events
from appliance.ingest import ingest_file
from appliance.sim import SimConfig, simulate
from tests.conftest import ROOT

KEY = ("trader", "account", "instrument", "side", "event", "order_id", "price", "qty",
       "leaves_qty", "exec_qty", "exec_price")
#: reasons a quarantined defect line may carry, per defect kind
QUARANTINED = {  # (two damaged records can be identical: the second is then a "duplicate")
    "garbage": {"invalid_utf8", "malformed", "column_count", "duplicate"},
    "truncated": {"malformed", "column_count", "bad_checksum", "bad_body_length", "duplicate"},
    "missing_field": {"missing_value", "bad_timestamp", "impossible_value"},
    "extra_field": {"column_count"},
    "duplicate": {"duplicate"},
}
#: kinds whose event must come back (the reader repairs them)
REPAIRED = {"duplicate", "reordered", "bad_symbol"}
DIALECTS = [  # (id, sim format, fix version, fix separator, connector, mapping, ts resolution)
    ("fix-4.4-soh", "fix", "4.4", "soh", "fix", None, 1000),
    ("fix-4.2-pipe", "fix", "4.2", "pipe", "fix", None, 1000),
    ("fix-4.4-pipe", "fix", "4.4", "pipe", "fix", None, 1000),
    ("fix-4.2-soh", "fix", "4.2", "soh", "fix", None, 1000),
    ("vendor-a", "vendor-a", "4.4", "soh", "vendor", "sim-vendor-a", 1000),
    ("vendor-b", "vendor-b", "4.4", "soh", "vendor", "sim-vendor-b", 1000),
    ("fixed-width", "fixed-width", "4.4", "soh", "vendor", "sim-fixed-width", 10**6),
]
SIM = {"seed": 5, "minutes": 2.0, "instruments": 1, "traders": 10, "dirty": 0.02}


def _datadir(path: Path) -> config.Config:
    path.mkdir(parents=True)
    toml = path / "surveil.toml"
    toml.write_text(config.example_text(), encoding="utf-8")
    cfg = config.load(toml)
    store.connect(cfg.store_path, create=True).close()
    return cfg


def _ingest(cfg: config.Config, ref: Path, path: Path, fmt: str, mapping: str | None):
    con = store.connect(cfg.store_path)
    try:
        for kind in ("traders", "symbology"):
            reference.load(con, kind, ref / f"{kind}.csv", "test")
        report = ingest_file(cfg, con, path, fmt, "test", mapping=mapping)
    finally:
        con.close()
    out = cfg.data_dir / "x.parquet"
    export_events(cfg, out, None, "orders")
    qfiles = list((cfg.data_dir / "quarantine").glob("*.parquet"))
    quarantine = pq.read_table(qfiles[0]) if qfiles else None
    return report, pq.read_table(out), quarantine


def _keys(table: pa.Table, res: int) -> list[tuple]:
    ts = table.column("ts").cast(pa.int64()).to_pylist()
    cols = table.select(list(KEY)).to_pydict()
    return [(t // res * res, *(cols[c][i] for c in KEY)) for i, t in enumerate(ts)]


@pytest.fixture(scope="module")
def clean_day(tmp_path_factory):
    """The canonical day (the same events for every dialect: rendering draws no kernel random)."""
    root = tmp_path_factory.mktemp("roundtrip")
    res = simulate(SimConfig(**SIM, fmt="vendor-a"), root / "sim")
    cfg = _datadir(root / "clean")
    report, table, _ = _ingest(cfg, res.reference_dir, res.clean_orders_path, "csv", None)
    assert report.accepted == res.n_order_events and report.quarantined == 0
    return root, table


@pytest.mark.parametrize("dialect", DIALECTS, ids=[d[0] for d in DIALECTS])
def test_dirty_rendering_round_trips(clean_day, dialect):
    name, fmt, ver, sep, connector, mapping, res_ns = dialect
    root, clean = clean_day
    sim = simulate(SimConfig(**SIM, fmt=fmt, fix_version=ver, fix_sep=sep), root / name)
    assert sim.clean_orders_path.read_bytes() == (root / "sim/clean/orders.csv").read_bytes()
    report, dirty, quarantine = _ingest(_datadir(root / f"{name}-data"), sim.reference_dir,
                                        sim.orders_path, connector, mapping)
    with open(sim.defects_path, newline="") as fh:
        defects = list(csv.DictReader(fh))
    kinds = Counter(d["kind"] for d in defects)
    assert len(defects) >= 60 and len(kinds) >= 6, kinds  # a real test of every kind

    # clean events by key -> canonical rows (clean/orders.csv data row = line - 2)
    ck = _keys(clean, res_ns)
    pool: dict[tuple, list[int]] = defaultdict(list)
    for k, line in zip(ck, clean.column("line").to_pylist(), strict=True):
        pool[k].append(line - 2)
    back: set[int] = set()
    extra = []
    for k, line in zip(_keys(dirty, res_ns), dirty.column("line").to_pylist(), strict=True):
        if pool.get(k):
            back.add(pool[k].pop(0))
        else:
            extra.append((line, k))
    assert not extra, f"events that are not clean events: {extra[:5]}"

    qlines: dict[int, set[str]] = defaultdict(set)
    if quarantine is not None:
        for line, reason in zip(quarantine.column("line").to_pylist(),
                                quarantine.column("reason").to_pylist(), strict=True):
            qlines[line].add(reason)
    by_line = {int(d["line"]): d for d in defects}
    assert len(by_line) == len(defects)  # one defect per rendered line

    lost_by_defect: set[int] = set()
    for d in defects:
        line, kind, row = int(d["line"]), d["kind"], int(d["canonical_row"])
        reasons = qlines.get(line, set())
        if kind in REPAIRED:
            assert row in back, f"{kind} on line {line}: event not repaired"
            assert reasons <= QUARANTINED.get(kind, set()), (line, kind, reasons)
        elif reasons:  # quarantined: with a reason that fits the defect
            assert reasons <= QUARANTINED[kind], (line, kind, reasons)
            if row >= 0:
                assert row not in back, f"{kind} on line {line} quarantined and also kept"
                lost_by_defect.add(row)
        else:  # not quarantined: only where the reader legitimately recovers the event
            assert fmt == "fix" and kind in ("missing_field", "extra_field"), (line, kind)
            assert row in back, f"{kind} on line {line}: neither quarantined nor repaired"
    for line in qlines:  # orphans are checked below, through the NEW they lost
        assert line in by_line or qlines[line] == {"orphan_reference"}, (
            f"line {line} quarantined {qlines[line]} without a defect")

    # every clean event is back, or lost to a quarantined defect (FIX: or an orphan of one)
    lost_new = {ck[r][6] for r in lost_by_defect if ck[r][5] == "NEW"}
    unexplained = []
    for r in sorted(set(range(len(ck))) - back - lost_by_defect):
        orphan = fmt == "fix" and ck[r][6] in lost_new
        if not orphan:
            unexplained.append((r, ck[r]))
    assert not unexplained, f"clean events lost without a defect: {unexplained[:5]}"
    orphans = len(ck) - len(back) - len(lost_by_defect)
    assert report.reasons.get("orphan_reference", 0) == orphans
    assert report.accepted == len(back)


def test_cli_path(tmp_path):
    """The same round trip through the commands an operator types (one dialect)."""
    def run(*args: str) -> str:
        return subprocess.run([sys.executable, "-m", "appliance.cli", *args], cwd=ROOT,
                              check=True, capture_output=True, text=True).stdout

    toml = str(_datadir(tmp_path / "data").data_dir / "surveil.toml")
    sim = tmp_path / "sim"
    run("sim", "--out", str(sim), "--minutes", "1", "--instruments", "1", "--traders", "10",
        "--format", "vendor-b", "--dirty", "0.02", "--seed", "3")
    for kind in ("traders", "symbology"):
        run("--config", toml, "reference", "load", kind, str(sim / f"reference/{kind}.csv"))
    info = json.loads(run("--config", toml, "ingest", "--json", "--format", "vendor",
                          "--mapping", "sim-vendor-b", str(sim / "orders.vendor_b.tsv")))
    run("--config", toml, "events", "--out", str(tmp_path / "x.parquet"))
    got = pq.read_table(tmp_path / "x.parquet")
    assert got.num_rows == info["accepted"] > 0 and info["quarantined"] > 0
    assert set(got.column("instrument").to_pylist()) == {"ES 2026-12 FUT"}
    assert not {"H.", "I."} & {t[:2] for t in got.column("trader").to_pylist()}  # aliases resolved
