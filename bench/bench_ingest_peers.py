"""Canonical CSV parse + clean: surveil's path vs straightforward peers, same file, one thread.

    .venv-bench/bin/python -m bench.bench_ingest_peers [--rows N] [--repeat R]

Needs the separate bench venv (never the appliance's; see docs/benchmarks.md):
``python3 -m venv .venv-bench && .venv-bench/bin/pip install -r requirements.lock`` then
``.venv-bench/bin/pip install duckdb polars``.

The file is ``bench_ingest_csv``'s (seeded, cached under /tmp: 14 columns, mixed side tokens,
trader aliases, 0.2 % resends, 0.1 % impossible values) with its reference data (aliases,
effective-dated symbology). Every engine does the same work from the file on disk to a table of
classified rows:

* parse: typed timestamps (ns, UTC) and numbers; text trimmed, empty is null; side and event
  tokens normalised (trim, upper case, token table); a missing required value or an unknown token
  rejects the row;
* clean (``appliance.clean``'s order steps): trader alias → canonical trader (join); symbol →
  instrument through the symbology in force on the event's UTC date (valid_from ≤ day <
  valid_to, the latest valid_from wins; no mapping keeps the upper-cased symbol); impossible
  values (NEW/MODIFY with qty ≤ 0, FILL with exec_qty ≤ 0 or no exec_price, negative
  quantities); resends (exact repeats of the content columns, first kept).

Engines: surveil (``connectors.csv_canonical`` + ``apply_steps``), ``pyarrow.csv`` + polars
(lazy query, one thread), DuckDB SQL (``read_csv`` + one query, ``threads=1``). Each is timed
twice: the parse half alone (file → typed, normalised rows with their parse verdict), then parse +
clean. Figures are CPU seconds of this process (median of ``--repeat``), with the load average;
``vs_surveil`` is the engine's CPU time over surveil's. The check at the end compares the kept
and rejected row counts per reason, and the kept rows column by column; the exit status is 1
when an engine disagrees.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("POLARS_MAX_THREADS", "1")

try:
    import duckdb
    import polars as pl
except ImportError as exc:  # pragma: no cover - depends on the venv
    sys.exit(f"bench_ingest_peers needs duckdb and polars ({exc}); they live in the separate "
             "bench venv, never the appliance's: python3 -m venv .venv-bench && "
             ".venv-bench/bin/pip install -r requirements.lock && "
             ".venv-bench/bin/pip install duckdb polars; then run "
             ".venv-bench/bin/python -m bench.bench_ingest_peers")

import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
import pyarrow.csv as pacsv  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from appliance.clean.tokens import EVENT_TOKENS, SIDE_TOKENS  # noqa: E402
from bench.bench_ingest_csv import bench_file, reference_tables  # noqa: E402
from bench.common import load_average, one_core, report  # noqa: E402

TYPES = {"ts": pa.timestamp("ns", tz="UTC"), "firm": pa.string(), "trader": pa.string(),
         "account": pa.string(), "symbol": pa.string(), "side": pa.string(),
         "event": pa.string(), "order_id": pa.string(), "price": pa.float64(),
         "qty": pa.float64(), "leaves_qty": pa.float64(), "exec_qty": pa.float64(),
         "exec_price": pa.float64(), "venue": pa.string()}
TEXT = ("firm", "trader", "account", "symbol", "order_id", "venue")
REQUIRED = ("ts", "trader", "symbol", "side", "event", "order_id")
DUP_KEY = ("ts", "trader", "account", "symbol", "side", "event", "order_id", "price", "qty",
           "leaves_qty", "exec_qty", "exec_price")
CHECK = ("ts", "trader", "instrument", "side", "event", "order_id", "price", "qty", "exec_price")


# -- polars --------------------------------------------------------------------------------------

def run_polars(path: Path, traders: pa.Table, symbology: pa.Table,
               parse_only: bool = False) -> pa.Table:
    table = pacsv.read_csv(path, read_options=pacsv.ReadOptions(use_threads=False),
                           convert_options=pacsv.ConvertOptions(
                               column_types=TYPES, strings_can_be_null=True, null_values=[""]))
    df = pl.from_arrow(table).lazy().with_row_index("rn")
    tok = {c: pl.col(c).str.strip_chars().str.to_uppercase() for c in ("side", "event")}
    df = df.with_columns(
        *[pl.col(c).str.strip_chars().replace("", None) for c in TEXT],
        side=tok["side"].replace_strict(SIDE_TOKENS, default=None),
        event=tok["event"].replace_strict(EVENT_TOKENS, default=None),
        bad_side=tok["side"].is_not_null() & (tok["side"] != "")
        & ~tok["side"].is_in(list(SIDE_TOKENS)),
        bad_event=tok["event"].is_not_null() & (tok["event"] != "")
        & ~tok["event"].is_in(list(EVENT_TOKENS)),
    )
    parse_reject = pl.when(pl.col("bad_side") | pl.col("bad_event")).then(pl.lit("unknown_token"))
    for c in REQUIRED:
        parse_reject = parse_reject.when(pl.col(c).is_null()).then(pl.lit("missing_value"))
    df = df.with_columns(reject=parse_reject.otherwise(None)).drop("bad_side", "bad_event")
    if parse_only:
        return df.collect().to_arrow()
    aliases = pl.from_arrow(traders).lazy().rename({"trader": "canonical"})
    df = (df.join(aliases, left_on="trader", right_on="alias", how="left", maintain_order="left")
          .with_columns(trader=pl.coalesce("canonical", "trader")).drop("canonical"))
    sym = pl.from_arrow(symbology).lazy().with_columns(
        sym=pl.col("symbol").str.strip_chars().str.to_uppercase(),
        valid_to=pl.col("valid_to").fill_null("9999-12-31")).drop("symbol")
    df = df.with_columns(sym=pl.col("symbol").str.strip_chars().str.to_uppercase(),
                         day=pl.col("ts").dt.strftime("%Y-%m-%d"))
    hit = (df.select("rn", "sym", "day").join(sym, on="sym", how="inner")
           .filter((pl.col("day") >= pl.col("valid_from")) & (pl.col("day") < pl.col("valid_to")))
           .group_by("rn").agg(pl.col("instrument").sort_by("valid_from").last()))
    df = (df.join(hit, on="rn", how="left", maintain_order="left")
          .with_columns(instrument=pl.coalesce("instrument", "sym")).drop("sym", "day"))
    entry = pl.col("event").is_in(["NEW", "MODIFY"])
    fill = pl.col("event") == "FILL"
    negative = ((pl.col("qty") < 0).fill_null(False) | (pl.col("leaves_qty") < 0).fill_null(False)
                | (pl.col("exec_qty") < 0).fill_null(False))
    value_reject = (
        pl.when(entry & ~(pl.col("qty") > 0).fill_null(False)).then(pl.lit("impossible_value"))
        .when(fill & ~(pl.col("exec_qty") > 0).fill_null(False)).then(pl.lit("impossible_value"))
        .when(fill & pl.col("exec_price").is_null()).then(pl.lit("missing_value"))
        .when(negative).then(pl.lit("impossible_value")).otherwise(None))
    df = df.with_columns(reject=pl.coalesce("reject", value_reject))
    first = pl.struct(list(DUP_KEY)).is_first_distinct()
    alive = df.filter(pl.col("reject").is_null()).select("rn", first.alias("first"))
    df = (df.join(alive, on="rn", how="left", maintain_order="left")
          .with_columns(reject=pl.when(pl.col("first") == False)  # noqa: E712
                        .then(pl.lit("duplicate")).otherwise(pl.col("reject")))
          .drop("first"))
    return df.collect().to_arrow()


# -- DuckDB --------------------------------------------------------------------------------------

def _duck_type(t: pa.DataType) -> str:
    if pa.types.is_timestamp(t):
        return "TIMESTAMP_NS"
    return "DOUBLE" if pa.types.is_floating(t) else "VARCHAR"


def _values(d: dict[str, str]) -> str:
    return ", ".join(f"('{k}', '{v}')" for k, v in d.items())


SQL = """
WITH raw AS (
  SELECT row_number() OVER () - 1 AS rn, *
  FROM read_csv('{path}', header = true, auto_detect = false, delim = ',', quote = '"',
                nullstr = '', columns = {columns})),
side_map(tok, val) AS (VALUES {sides}),
event_map(tok, val) AS (VALUES {events}),
parsed AS (
  SELECT r.rn, r.ts, {text}, s.val AS side, e.val AS event,
         r.price, r.qty, r.leaves_qty, r.exec_qty, r.exec_price,
         CASE WHEN (nullif(upper(trim(r.side)), '') IS NOT NULL AND s.val IS NULL)
                OR (nullif(upper(trim(r.event)), '') IS NOT NULL AND e.val IS NULL)
              THEN 'unknown_token'
              WHEN r.ts IS NULL OR nullif(trim(r.trader), '') IS NULL
                OR nullif(trim(r.symbol), '') IS NULL OR s.val IS NULL OR e.val IS NULL
                OR nullif(trim(r.order_id), '') IS NULL THEN 'missing_value' END AS reject
  FROM raw r
  LEFT JOIN side_map s ON s.tok = upper(trim(r.side))
  LEFT JOIN event_map e ON e.tok = upper(trim(r.event))){rest}ORDER BY rn
"""
CLEAN_SQL = """,
aliased AS (
  SELECT p.* REPLACE (coalesce(a.trader, p.trader) AS trader)
  FROM parsed p LEFT JOIN aliases a ON a.alias = p.trader),
sym AS (
  SELECT upper(trim(symbol)) AS sym, instrument, valid_from,
         coalesce(valid_to, '9999-12-31') AS valid_to FROM symbology),
hit AS (
  SELECT p.rn, arg_max(m.instrument, m.valid_from) AS instrument
  FROM aliased p JOIN sym m ON m.sym = upper(trim(p.symbol))
   AND strftime(p.ts, '%Y-%m-%d') >= m.valid_from AND strftime(p.ts, '%Y-%m-%d') < m.valid_to
  GROUP BY p.rn),
checked AS (
  SELECT p.*, coalesce(h.instrument, upper(trim(p.symbol))) AS instrument,
         coalesce(p.reject, CASE
           WHEN p.event IN ('NEW', 'MODIFY') AND NOT coalesce(p.qty > 0, false)
             THEN 'impossible_value'
           WHEN p.event = 'FILL' AND NOT coalesce(p.exec_qty > 0, false) THEN 'impossible_value'
           WHEN p.event = 'FILL' AND p.exec_price IS NULL THEN 'missing_value'
           WHEN coalesce(p.qty < 0, false) OR coalesce(p.leaves_qty < 0, false)
             OR coalesce(p.exec_qty < 0, false) THEN 'impossible_value' END) AS reject2
  FROM aliased p LEFT JOIN hit h USING (rn)),
dedup AS (
  SELECT rn, row_number() OVER (PARTITION BY {dup_key} ORDER BY rn) > 1 AS dup
  FROM checked WHERE reject2 IS NULL)
SELECT c.* EXCLUDE (reject, reject2),
       CASE WHEN d.dup THEN 'duplicate' ELSE c.reject2 END AS reject
FROM checked c LEFT JOIN dedup d USING (rn)
"""
PARSE_SQL = "\nSELECT * FROM parsed\n"


def run_duckdb(con, path: Path, parse_only: bool = False) -> pa.Table:
    rest = PARSE_SQL if parse_only else CLEAN_SQL.format(dup_key=", ".join(DUP_KEY))
    sql = SQL.format(rest=rest,
        path=str(path).replace("'", "''"),
        columns="{" + ", ".join(f"'{c}': '{_duck_type(t)}'" for c, t in TYPES.items()) + "}",
        sides=_values(SIDE_TOKENS), events=_values(EVENT_TOKENS),
        text=", ".join(f"nullif(trim(r.{c}), '') AS {c}" for c in TEXT))
    return con.sql(sql).to_arrow_table()


# -- surveil -------------------------------------------------------------------------------------

def run_surveil(path: Path, ctx) -> tuple[pa.Table, dict[str, int]]:
    from appliance.clean import apply_steps
    from connectors import get_connector

    result = get_connector("csv").read(path, "bench")
    kept, rejected = apply_steps(result.events, "orders", ctx)
    counts = dict(result.reasons)
    for idx, reason, _, _ in rejected:
        counts[reason] = counts.get(reason, 0) + len(idx)
    return kept, counts


def _split(table: pa.Table) -> tuple[pa.Table, dict[str, int]]:
    reject = table.column("reject")
    counts = {r["values"]: r["counts"] for r in pc.value_counts(reject).to_pylist()
              if r["values"] is not None}
    return table.filter(pc.is_null(reject)), counts


def _canon(table: pa.Table) -> pa.Table:
    """The checked columns in one type and row order (polars returns large strings)."""
    cols = {c: table.column(c).cast(pa.int64() if c == "ts" else TYPES.get(c, pa.string()))
            for c in CHECK}
    return pa.table(cols).sort_by([("order_id", "ascending"), ("ts", "ascending")])


def cpu(fn, repeat: int):
    times, out = [], None
    for _ in range(repeat):
        c0 = time.process_time()
        out = fn()
        times.append(time.process_time() - c0)
    return statistics.median(times), out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    one_core()
    from appliance.clean import CleanContext

    path = bench_file(args.rows)
    traders, symbology = reference_tables()
    ctx = CleanContext(traders=traders, symbology=symbology)
    con = duckdb.connect()
    con.execute("SET threads = 1")
    con.register("aliases", traders)
    con.register("symbology", symbology)
    run_surveil(path, ctx)  # compile numba kernels, warm the page cache
    print(f"# {path} ({path.stat().st_size / 2**20:.0f} MiB, {args.rows:,} rows), 1 thread, "
          f"load average {load_average()}", flush=True)
    from connectors import get_connector

    conn = get_connector("csv")
    p_cpu, parsed = cpu(lambda: conn.read(path, "bench"), args.repeat)
    report("peers: surveil parse", args.rows, p_cpu, accepted=parsed.accepted)
    for name, fn in (
            ("pyarrow.csv + polars", lambda: run_polars(path, traders, symbology, True)),
            ("duckdb", lambda: run_duckdb(con, path, True))):
        t, table = cpu(fn, args.repeat)
        report(f"peers: {name} parse", args.rows, t, accepted=table.column("reject").null_count,
               vs_surveil=round(t / p_cpu, 2))
    s_cpu, (s_kept, s_counts) = cpu(lambda: run_surveil(path, ctx), args.repeat)
    report("peers: surveil parse + clean", args.rows, s_cpu, kept=s_kept.num_rows,
           rejected=s_counts)
    results = {"surveil": (s_kept, s_counts)}
    for name, fn in (("pyarrow.csv + polars", lambda: run_polars(path, traders, symbology)),
                     ("duckdb", lambda: run_duckdb(con, path))):
        t, table = cpu(fn, args.repeat)
        kept, counts = _split(table)
        results[name] = (kept, counts)
        report(f"peers: {name}", args.rows, t, kept=kept.num_rows, rejected=counts,
               vs_surveil=round(t / s_cpu, 2))
    ok = True
    ref = _canon(s_kept)
    for name, (kept, counts) in results.items():
        same_counts = counts == s_counts and kept.num_rows == s_kept.num_rows
        same_rows = same_counts and _canon(kept).equals(ref)
        ok &= same_rows
        print(f"# check {name:<22} kept {kept.num_rows:,} rejected {counts}: "
              f"{'same as surveil' if same_rows else 'DIFFERENT from surveil'}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
