"""Parse + clean throughput of the canonical CSV connector, one core.

    .venv/bin/python -m bench.bench_ingest_csv [--rows N]

Generates a canonical order-event CSV (seeded, realistic token mix and cardinalities), then times
``connectors.csv_canonical`` + ``appliance.clean.apply_steps`` on it.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from bench.common import one_core, report, timed


def make_csv(path: Path, rows: int, seed: int = 1) -> None:
    rng = np.random.default_rng(seed)
    t0 = np.datetime64("2026-11-23T14:30:00", "ns").astype(np.int64)
    ts = t0 + np.cumsum(rng.integers(1_000, 2_000_000, rows))
    traders = np.array([f"T{i:03d}" for i in range(200)])
    symbols = np.array(["ESZ6", "NQZ6", "CLF7", "GCG7", "ZNH7"])
    events = np.array(["NEW", "CANCEL", "FILL", "MODIFY", "NEW"])
    side_tokens = np.array(["B", "S", "BUY", "SELL", "1", "2"])
    table = pa.table({
        "ts": pa.array(ts.astype("datetime64[ns]")).cast(pa.string()),
        "firm": pa.array(np.full(rows, "F1")),
        "trader": pa.array(traders[rng.integers(0, 200, rows)]),
        "account": pa.array(np.char.add("A", rng.integers(0, 400, rows).astype(str))),
        "symbol": pa.array(symbols[rng.integers(0, 5, rows)]),
        "side": pa.array(side_tokens[rng.integers(0, 6, rows)]),
        "event": pa.array(events[rng.integers(0, 5, rows)]),
        "order_id": pa.array(np.char.add("o", np.arange(rows).astype(str))),
        "price": pa.array(np.round(100 + rng.normal(0, 1, rows), 2)),
        "qty": pa.array(rng.integers(1, 50, rows).astype(float)),
        "leaves_qty": pa.array(rng.integers(0, 50, rows).astype(float)),
        "exec_qty": pa.array(rng.integers(1, 5, rows).astype(float)),
        "exec_price": pa.array(np.round(100 + rng.normal(0, 1, rows), 2)),
        "venue": pa.array(np.full(rows, "CME")),
    })  # fmt: skip
    ts_iso = pa.compute.replace_substring(table.column("ts"), " ", "T")
    table = table.set_column(0, "ts", pa.compute.binary_join_element_wise(ts_iso, "Z", ""))
    pacsv.write_csv(table, path, pacsv.WriteOptions(quoting_style="none"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=2_000_000)
    args = parser.parse_args()
    one_core()
    from appliance.clean import apply_steps
    from connectors import get_connector

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "orders.csv"
        make_csv(path, args.rows)
        conn = get_connector("csv")
        conn.read(path, "warm")  # compile the numba kernels outside the timing
        seconds, result = timed(lambda: conn.read(path, "bench"), repeat=3)
        report("csv parse", result.rows, seconds, bytes=path.stat().st_size)
        clean_s, _ = timed(lambda: apply_steps(result.events, "orders"), repeat=3)
        report("csv clean", result.rows, clean_s)
        report("csv parse + clean", result.rows, seconds + clean_s)


if __name__ == "__main__":
    main()
