"""Export cleaned canonical events (for data scientists and auditors) to Parquet or CSV."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from appliance import store
from appliance.config import Config
from appliance.schema import MARKET_DATA, ORDER_EVENTS

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _defuse_formulas(table: pa.Table) -> pa.Table:
    """Prefix text cells that a spreadsheet would run as a formula with a quote (CSV only)."""
    for i, field in enumerate(table.schema):
        if pa.types.is_string(field.type):
            col = table.column(i)
            risky = pc.fill_null(pc.starts_with(col, "="), False)
            for prefix in _FORMULA_START[1:]:
                risky = pc.or_(risky, pc.fill_null(pc.starts_with(col, prefix), False))
            table = table.set_column(
                i, field, pc.if_else(risky, pc.binary_join_element_wise("'", col, ""), col))
    return table


def _flatten_maps(table: pa.Table) -> pa.Table:
    """CSV has no map type: write ``attrs`` as JSON text (only rows that have attributes)."""
    import json

    for i, field in enumerate(table.schema):
        if pa.types.is_map(field.type):
            text = [None if v is None else json.dumps(dict(v), sort_keys=True)
                    for v in table.column(i).to_pylist()]
            table = table.set_column(i, field.name, pa.array(text, pa.string()))
    return table


def export_events(cfg: Config, out: Path, date: str | None, kind: str = "orders") -> dict[str, Any]:
    """Write the cleaned events of ``kind`` (one trade date or all) to ``out``."""
    if out.suffix not in (".parquet", ".csv"):
        raise ValueError(f"{out}: the output must end in .parquet or .csv")
    con = store.connect(cfg.store_path)
    sql = ("SELECT fd.parquet FROM file_dates fd JOIN files f USING (file_id) WHERE f.kind = ?"
           + (" AND fd.trade_date = ?" if date else "") + " ORDER BY fd.trade_date, fd.file_id")
    paths = [f for r in store.rows(con, sql, (kind, date) if date else (kind,))
             for f in store.parquet_files(cfg.data_dir, r["parquet"])]
    schema = ORDER_EVENTS if kind == "orders" else MARKET_DATA
    table = pq.read_table(paths, schema=schema) if paths else schema.empty_table()
    table = table.sort_by([("ts", "ascending"), ("source", "ascending"), ("line", "ascending")])
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".parquet":
        pq.write_table(table, out, compression="zstd")
    else:
        pacsv.write_csv(_defuse_formulas(_flatten_maps(table)), out)
    return {"out": str(out), "rows": table.num_rows, "files": len(paths), "date": date}
