"""Parse + clean throughput of the canonical CSV connector, one core, in CPU time.

    .venv/bin/python -m bench.bench_ingest_csv [--rows N] [--general] [--sim]

Generates (once, cached under /tmp) a seeded canonical order-event CSV with a realistic token mix
and cardinalities, a few resends and impossible values for the cleaning steps to find, and the
matching reference data (trader aliases, effective-dated symbology). Times
``connectors.csv_canonical`` and ``appliance.clean.apply_steps`` on it, without and with the
reference data. ``--sim``: the simulator's demo day as canonical CSV instead (cached by
``bench_ingest_fix``), with its own reference data. ``--general`` also times the connector's
general path (Arrow's typed CSV read, the path every file took before the one-pass reader) for a
before/after figure on the same run. Figures are CPU seconds of this process
(``time.process_time``; the machine is shared), with the load average; ``wall_s`` is there too.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from bench.common import cpu_timed, load_average, one_core, report

CACHE = Path(os.environ.get("SURVEIL_BENCH_CACHE", "/tmp/surveil-bench"))
TRADERS = 200
SYMBOLS = ("ESZ6", "NQZ6", "CLF7", "GCG7", "ZNH7")


def make_csv(path: Path, rows: int, seed: int = 1, resend: float = 0.002,
             impossible: float = 0.001) -> None:
    """``rows`` data lines: ``resend`` of them are exact repeats of the line before (a resend:
    same content, new line) and ``impossible`` carry an impossible value (NEW with qty 0, FILL
    without exec_price); traders appear under their id or its lower-case alias."""
    rng = np.random.default_rng(seed)
    t0 = np.datetime64("2026-11-23T14:30:00", "ns").astype(np.int64)
    ts = t0 + np.cumsum(rng.integers(1_000, 2_000_000, rows))
    names = np.array([f"T{i:03d}" for i in range(TRADERS)] + [f"t{i:03d}" for i in range(TRADERS)])
    symbols = np.array(SYMBOLS)
    events = np.array(["NEW", "CANCEL", "FILL", "MODIFY", "NEW"])
    side_tokens = np.array(["B", "S", "BUY", "SELL", "1", "2"])
    ev = events[rng.integers(0, 5, rows)]
    qty = rng.integers(1, 50, rows).astype(float)
    exec_price = np.round(100 + rng.normal(0, 1, rows), 2)
    bad = rng.random(rows) < impossible
    qty[bad & (ev == "NEW")] = 0
    no_price = bad & (ev == "FILL")
    table = pa.table({
        "ts": pa.array(ts.astype("datetime64[ns]")).cast(pa.string()),
        "firm": pa.array(np.full(rows, "F1")),
        "trader": pa.array(names[rng.integers(0, 2 * TRADERS, rows)]),
        "account": pa.array(np.char.add("A", rng.integers(0, 400, rows).astype(str))),
        "symbol": pa.array(symbols[rng.integers(0, len(SYMBOLS), rows)]),
        "side": pa.array(side_tokens[rng.integers(0, 6, rows)]),
        "event": pa.array(ev),
        "order_id": pa.array(np.char.add("o", np.arange(rows).astype(str))),
        "price": pa.array(np.round(100 + rng.normal(0, 1, rows), 2)),
        "qty": pa.array(qty),
        "leaves_qty": pa.array(rng.integers(0, 50, rows).astype(float)),
        "exec_qty": pa.array(rng.integers(1, 5, rows).astype(float)),
        "exec_price": pa.array(exec_price, mask=no_price),
        "venue": pa.array(np.full(rows, "CME")),
    })  # fmt: skip
    ts_iso = pc.replace_substring(table.column("ts"), " ", "T")
    table = table.set_column(0, "ts", pc.binary_join_element_wise(ts_iso, "Z", ""))
    # a resend repeats the previous line: row k is replaced by row k - 1
    src = np.arange(rows)
    again = np.flatnonzero(rng.random(rows) < resend)
    src[again[again > 0]] = again[again > 0] - 1
    table = table.take(pa.array(src))
    tmp = path.with_suffix(".tmp")
    pacsv.write_csv(table, tmp, pacsv.WriteOptions(quoting_style="none"))
    tmp.rename(path)


def bench_file(rows: int, seed: int = 1) -> Path:
    """The cached bench CSV for ``rows`` (generated on first use)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"orders_{rows}_{seed}_v2.csv"
    if not path.exists():
        make_csv(path, rows, seed)
    return path


def reference_tables() -> tuple[pa.Table, pa.Table]:
    """Reference data for the bench file: every trader under its id and a lower-case alias →
    ``TRADER###``; symbology with an expired and a current mapping per symbol (ZNH7 has none:
    it stays its own instrument)."""
    ids = [f"T{i:03d}" for i in range(TRADERS)]
    traders = pa.table({"alias": ids + [s.lower() for s in ids],
                        "trader": [f"TRADER{i:03d}" for i in range(TRADERS)] * 2})
    sym, inst, frm, to = [], [], [], []
    for s in SYMBOLS[:-1]:
        sym += [s, s]
        inst += [f"{s[:-2]} OLD", f"{s[:-2]} 20{s[-1]}{s[-2]} FUT"]
        frm += ["2025-01-01", "2026-01-01"]
        to += ["2026-01-01", None]
    symbology = pa.table({"symbol": sym, "instrument": inst, "valid_from": frm,
                          "valid_to": pa.array(to, pa.string())})
    return traders, symbology


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--general", action="store_true",
                        help="also time the general (pre-one-pass) path")
    parser.add_argument("--sim", action="store_true",
                        help="the simulator's demo day as canonical CSV (and its reference "
                             "data) instead of the synthetic file")
    args = parser.parse_args()
    one_core()
    from appliance.clean import CleanContext, apply_steps
    from connectors import get_connector

    if args.sim:
        from bench.bench_ingest_fix import sim_day, sim_reference

        day = sim_day()
        path = day / "clean" / "orders.csv"
        traders, symbology = sim_reference(day)
    else:
        path = bench_file(args.rows)
        traders, symbology = reference_tables()
    size = path.stat().st_size
    conn = get_connector("csv")
    ctx = CleanContext(traders=traders, symbology=symbology)
    result = conn.read(path, "warm")  # compile the numba kernels outside the timing
    apply_steps(result.events, "orders", ctx)
    print(f"# {path} ({size / 2**20:.0f} MiB), load average {load_average()}", flush=True)
    if args.general:
        data = path.read_bytes()
        cpu, wall, _ = cpu_timed(lambda: conn._read_general(path, "bench", data), args.repeat)
        report("csv parse (general path)", result.rows, cpu, wall_s=round(wall, 4))
    cpu, wall, result = cpu_timed(lambda: conn.read(path, "bench"), args.repeat)
    report("csv parse", result.rows, cpu, wall_s=round(wall, 4), bytes=size,
           accepted=result.accepted, quarantined=result.quarantined, ignored=result.ignored)
    clean_cpu, clean_wall, (kept, _) = cpu_timed(
        lambda: apply_steps(result.events, "orders"), args.repeat)
    report("csv clean", result.rows, clean_cpu, wall_s=round(clean_wall, 4), kept=kept.num_rows)
    ref_cpu, ref_wall, (kept, _) = cpu_timed(
        lambda: apply_steps(result.events, "orders", ctx), args.repeat)
    report("csv clean (with reference data)", result.rows, ref_cpu, wall_s=round(ref_wall, 4),
           kept=kept.num_rows)
    report("csv parse + clean", result.rows, cpu + clean_cpu, wall_s=round(wall + clean_wall, 4))
    report("csv parse + clean (with reference data)", result.rows, cpu + ref_cpu,
           wall_s=round(wall + ref_wall, 4), kept=kept.num_rows)


if __name__ == "__main__":
    main()
