"""Spoofing features in DuckDB SQL and in polars vs the numba path, on the same data, one run.

    .venv-bench/bin/python bench/bench_spoofing_sql.py [SIM_DIR] [--copies K] [--repeat R]

Needs the separate bench venv (never the appliance's; see docs/benchmarks.md):
``python3 -m venv .venv-bench && .venv-bench/bin/pip install -r requirements.lock`` then
``.venv-bench/bin/pip install duckdb polars``. Data: the day that ``bench_detectors.py`` caches
(``--copies`` as there), read once into Arrow (not timed); every engine starts from that
in-memory table, with one thread.

Only the spoofing features that a relational engine can express are computed by all three:
the trader × instrument clusters (a new cluster at a key change or a pause longer than the
instrument's adaptive gap) and per cluster ``n_events``, ``n_orders``, ``duration_s``,
``cancel_ratio``, ``msgs_per_s``, ``order_to_fill``. The other 27 spoofing features need the
order-book state machine (resting quantity per side over time, bait/genuine sides, fill →
cancel timing, the market as of each event), which neither engine can express as set
operations. The numba path is timed twice: for the same 6 features, and as the full spoofing
detector (all 33 features, order walk, market join) on the same rows. The three engines'
6-feature results are checked equal.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("POLARS_MAX_THREADS", "1")

import duckdb  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from numba import njit  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_detectors as bd  # noqa: E402

from appliance import context, pipeline, spool  # noqa: E402
from appliance.detectors import REGISTRY  # noqa: E402
from appliance.detectors.common import (  # noqa: E402
    adaptive_gaps,
    composite,
    dict_codes,
    gap_grouping,
)

COLS = ["n_events", "n_orders", "duration_s", "cancel_ratio", "msgs_per_s", "order_to_fill"]


@njit(cache=True)
def _basic(idx, starts, ts, event):  # pragma: no cover - numba
    nc = starts.shape[0] - 1
    out = np.full((nc, 6), np.nan)
    for c in range(nc):
        a, b = starts[c], starts[c + 1]
        n_new = 0
        n_cancel = 0
        n_fill = 0
        for j in range(a, b):
            e = event[idx[j]]
            if e == 0:
                n_new += 1
            elif e == 2:
                n_cancel += 1
            elif e == 3:
                n_fill += 1
        dur = (ts[idx[b - 1]] - ts[idx[a]]) / 1e9
        out[c, 0] = b - a
        out[c, 1] = n_new
        out[c, 2] = dur
        out[c, 3] = n_cancel / max(n_new, 1)
        out[c, 4] = (b - a) / max(dur, 1e-3)
        out[c, 5] = (b - a) / n_fill if n_fill else np.nan
    return out


def numba_basic(ev: pa.Table, gaps: dict[str, int], default_gap: int):
    codes, names = {}, {}
    for c in ("trader", "instrument"):
        codes[c], names[c] = dict_codes(ev.column(c))
    ts = np.asarray(ev.column("ts").cast(pa.int64()).to_numpy(), dtype=np.int64)
    event = np.asarray(pc.fill_null(pc.index_in(ev.column("event"), value_set=pa.array(
        ["NEW", "MODIFY", "CANCEL", "FILL", "REJECT"])), -1).to_numpy(), dtype=np.int8)
    b = SimpleNamespace(ts=ts, codes=codes, names=names)
    tord = np.argsort(ts, kind="stable")
    b.key_order = lambda keys: tord[np.argsort(composite(b, keys)[tord], kind="stable")]
    g = gap_grouping(b, ("trader", "instrument"), gaps, default_gap)
    m = _basic(g.idx, g.starts, ts, event)
    tr = np.array(names["trader"], object)[codes["trader"][g.name_row]]
    ins = np.array(names["instrument"], object)[codes["instrument"][g.name_row]]
    return pa.table({"trader": tr.tolist(), "instrument": ins.tolist(),
                     "start": ts[g.idx[g.starts[:-1]]], **{c: m[:, k] for k, c in
                                                         enumerate(COLS)}})


SQL = """
WITH e AS (
  SELECT coalesce(trader, '') AS trader, instrument, epoch_ns(ts) AS t, event, gap_ns
  FROM ev JOIN gaps USING (instrument)),
b AS (
  SELECT *, CASE WHEN lag(t) OVER w IS NULL OR t - lag(t) OVER w > gap_ns THEN 1 ELSE 0 END
         AS brk
  FROM e WINDOW w AS (PARTITION BY trader, instrument ORDER BY t)),
c AS (
  SELECT *, sum(brk) OVER (PARTITION BY trader, instrument ORDER BY t, brk DESC
                           ROWS UNBOUNDED PRECEDING) AS cid FROM b)
SELECT trader, instrument, min(t) AS start,
       count(*)::DOUBLE AS n_events,
       count(*) FILTER (event = 'NEW')::DOUBLE AS n_orders,
       (max(t) - min(t)) / 1e9 AS duration_s,
       count(*) FILTER (event = 'CANCEL') / greatest(count(*) FILTER (event = 'NEW'), 1)
         AS cancel_ratio,
       count(*) / greatest((max(t) - min(t)) / 1e9, 1e-3) AS msgs_per_s,
       CASE WHEN count(*) FILTER (event = 'FILL') > 0
            THEN count(*) / count(*) FILTER (event = 'FILL') END AS order_to_fill
FROM c GROUP BY trader, instrument, cid
"""


def duckdb_basic(ev: pa.Table, gaps: pa.Table) -> pa.Table:
    con = duckdb.connect()
    con.execute("SET threads = 1")
    con.register("ev", ev)
    con.register("gaps", gaps)
    return con.sql(SQL).to_arrow_table()


def polars_basic(ev: pa.Table, gaps: pa.Table) -> pa.Table:
    df = pl.from_arrow(ev)
    keyed = (df.select(pl.col("trader").fill_null(""), "instrument", "event",
                       pl.col("ts").dt.epoch("ns").alias("t"))
             .join(pl.from_arrow(gaps), on="instrument")
             .sort(["trader", "instrument", "t"], maintain_order=True))
    new = ((pl.col("trader") != pl.col("trader").shift(1))
           | (pl.col("instrument") != pl.col("instrument").shift(1))
           | ((pl.col("t") - pl.col("t").shift(1)) > pl.col("gap_ns"))).fill_null(True)
    dur = (pl.col("t").max() - pl.col("t").min()) / 1e9
    n = pl.len().cast(pl.Float64)
    n_new = (pl.col("event") == "NEW").sum()
    n_fill = (pl.col("event") == "FILL").sum()
    out = (keyed.with_columns(cid=new.cum_sum())
           .group_by("cid")
           .agg(pl.col("trader").first(), pl.col("instrument").first(),
                pl.col("t").min().alias("start"), n.alias("n_events"),
                n_new.cast(pl.Float64).alias("n_orders"), dur.alias("duration_s"),
                ((pl.col("event") == "CANCEL").sum() / pl.max_horizontal(n_new, 1))
                .alias("cancel_ratio"),
                (n / pl.max_horizontal(dur, 1e-3)).alias("msgs_per_s"),
                pl.when(n_fill > 0).then(n / n_fill).otherwise(None).alias("order_to_fill")))
    return out.drop("cid").to_arrow()


def _canon(t: pa.Table) -> pa.Table:
    t = t.select(["trader", "instrument", "start", *COLS]).cast(pa.schema(
        [("trader", pa.string()), ("instrument", pa.string()), ("start", pa.int64())]
        + [(c, pa.float64()) for c in COLS]))
    return t.sort_by([("trader", "ascending"), ("instrument", "ascending"),
                      ("start", "ascending")])


def _same(a: pa.Table, b: pa.Table) -> bool:
    a, b = _canon(a), _canon(b)
    if a.num_rows != b.num_rows:
        return False
    if a.select(["trader", "instrument", "start"]) != b.select(["trader", "instrument", "start"]):
        return False
    return all(np.allclose(pc.fill_null(a[c], np.nan).to_numpy(),
                           pc.fill_null(b[c], np.nan).to_numpy(), rtol=1e-12, equal_nan=True)
               for c in COLS)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("sim", nargs="?", default="/tmp/surveil-bench-sim")
    ap.add_argument("--copies", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    pa.set_cpu_count(1)
    files, market, accounts, _ = bd.day_files(Path(a.sim), a.copies)
    ev = pq.read_table(files, columns=list(spool.NEEDED))
    ev = pipeline.with_reference(ev, accounts)
    names, det, mparams, floors = bd.params()
    tapes = context.tapes(market)
    facts = context.DayFacts()
    for rb in ev.select(["ts", "symbol", "instrument", "price"]).combine_chunks().to_batches():
        rb = pa.Table.from_batches([rb])
        s, sn = dict_codes(rb.column(1))
        i, inn = dict_codes(rb.column(2))
        facts.add(np.asarray(rb.column(0).cast(pa.int64()).to_numpy()), s, i,
                  np.asarray(pc.fill_null(rb.column(3), np.nan).to_numpy()), sn, inn)
    info = facts.instrument_info(tapes)
    p = det["spoofing"]
    gaps = adaptive_gaps(info, p)
    default_gap = int(p.get("gap_seconds", 5.0) * 1e9)
    gap_table = pa.table({"instrument": list(gaps), "gap_ns": list(gaps.values())})
    shared = spool.DayShared(facts.day_market(
        tapes, after_ns=int(mparams.get("after_seconds", 1.0) * 1e9),
        reference_symbol=mparams.get("reference_symbol", "")), info, {})
    spoof = REGISTRY["spoofing"]

    def numba_full():
        from appliance.detectors.common import Batch

        batch = Batch.build(ev, shared.market)
        g = spoof.group(batch, info, p)
        return spoof.score(spoof.kernel(batch, g, p))

    engines = {
        "numba (6 features)": lambda: numba_basic(ev, gaps, default_gap),
        "numba (full spoofing, 33 features)": numba_full,
        "duckdb SQL (6 features)": lambda: duckdb_basic(ev, gap_table),
        "polars (6 features)": lambda: polars_basic(ev, gap_table),
    }
    results, times = {}, {}
    for name, fn in engines.items():
        results[name] = fn()  # warm (numba compile / cache load, engine start)
        runs = []
        for _ in range(a.repeat):
            c0 = time.process_time()
            fn()
            runs.append(time.process_time() - c0)
        times[name] = statistics.median(runs)
    ref = results["numba (6 features)"]
    with open("/proc/loadavg") as fh:
        load = " ".join(fh.read().split()[:3])
    print(f"{ev.num_rows:,} events, {ref.num_rows:,} trader×instrument clusters, 1 thread, "
          f"CPU s median of {a.repeat}, load {load}; duckdb {duckdb.__version__}, "
          f"polars {pl.__version__}")
    for name, t in times.items():
        same = "" if "full" in name else (
            "  results = numba" if _same(results[name], ref) else "  RESULTS DIFFER")
        print(f"  {name:<36} {t:7.3f} s  {ev.num_rows / t / 1e6:6.2f}M events/s  "
              f"{t / times['numba (6 features)']:5.1f}× numba-6{same}")


if __name__ == "__main__":
    main()
