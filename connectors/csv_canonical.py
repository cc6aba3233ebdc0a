"""``csv`` and ``md-csv``: the canonical delimited formats (order events and market data).

Columns are matched by header name (any order, case-insensitive; unknown extra columns are
ignored). A missing required column refuses the whole file; a row that cannot be parsed is
quarantined with its line, byte offset, field and reason, and its raw bytes.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from appliance.clean.tokens import EVENT_TOKENS, SIDE_TOKENS
from appliance.schema import MARKET_DATA, ORDER_EVENTS, TIMESTAMP
from connectors.base import InputRefused, Kind, ReadResult
from connectors.lines import join_lines, quarantine_lines, scan_lines
from connectors.parse import clean_string, normalise_tokens, parse_iso_utc, parse_number

# Column kinds: how a text cell becomes a canonical value.
TS, NUM, STR, SIDE, EVENT = "ts", "num", "str", "side", "event"


def _parse(kind: str, col: pa.Array) -> tuple[pa.Array, np.ndarray, np.ndarray, str]:
    """Return (values, missing, bad, reason-for-bad) for one column."""
    if kind == TS:
        return (*parse_iso_utc(col), "bad_timestamp")
    if kind == NUM:
        return (*parse_number(col), "non_numeric")
    if kind == SIDE:
        return (*normalise_tokens(col, SIDE_TOKENS), "unknown_token")
    if kind == EVENT:
        return (*normalise_tokens(col, EVENT_TOKENS), "unknown_token")
    values, missing = clean_string(col)
    return values, missing, np.zeros(len(missing), bool), ""


def _null_mask(col: pa.Array) -> np.ndarray:
    return np.asarray(col.is_null().to_numpy(zero_copy_only=False), dtype=bool)


def _typed_cells(kind: str, col: pa.Array):
    """(values, missing, bad, reason) for a column Arrow already converted; ``bad`` is None when
    the type guarantees validity. Text is normalised once per distinct value (dictionary)."""
    if kind == TS:
        return col, _null_mask(col), None, ""
    if kind == NUM:
        missing = _null_mask(col)
        bad = ~np.asarray(pc.fill_null(pc.is_finite(col), True).to_numpy(zero_copy_only=False))
        return pc.if_else(pa.array(bad), None, col), missing, bad, "non_numeric"
    if pa.types.is_dictionary(col.type):
        values, missing, bad, reason = _parse(kind, col.dictionary)
        idx = col.indices.to_numpy(zero_copy_only=False)
        is_null = _null_mask(col.indices)
        safe = np.where(is_null, 0, idx).astype(np.int64)
        row_missing = is_null | (missing[safe] if missing.size else is_null)
        row_bad = ~is_null & (bad[safe] if bad.size else False)
        taken = values.take(pa.array(safe)) if len(values) else pa.nulls(len(col), pa.string())
        cleaned = pc.if_else(pa.array(row_missing | row_bad), None, taken)
        return cleaned, row_missing, row_bad, reason
    return _parse(kind, col)


class _CanonicalDelimited:
    """Shared reader for the canonical delimited layouts; subclasses declare their columns."""

    name: ClassVar[str]
    kind: ClassVar[Kind]
    description: ClassVar[str]
    version: ClassVar[str] = "1"
    schema: ClassVar[pa.Schema]
    #: column -> (kind, header required, value required)
    columns: ClassVar[dict[str, tuple[str, bool, bool]]]
    #: text columns with (nearly) one value per row: not worth dictionary-encoding
    high_cardinality: ClassVar[frozenset[str]] = frozenset({"order_id"})

    @property
    def header(self) -> str:
        return ",".join(self.columns)

    def read(self, path: Path, source: str) -> ReadResult:
        data = Path(path).read_bytes()
        lines = scan_lines(data)
        nonblank = np.flatnonzero(~lines.blank)
        if nonblank.size == 0:
            return self._result(source, path, None, lines, np.zeros(0, np.int64), [])
        head = int(nonblank[0])
        names = self._header_names(path, data, lines, head)
        body = np.arange(head + 1, lines.count)
        body = body[~lines.blank[body]]
        garbage = ~lines.valid_utf8[body]
        width = lines.nfields[body] != len(names)
        rejects = [
            (body[garbage], "invalid_utf8", None),
            (body[~garbage & width], "column_count", None),
        ]
        good = body[~garbage & ~width]
        if good.size == 0:  # a header and nothing parseable below it
            return self._result(source, path, None, lines, good, rejects, head)
        if good.size == body.size:  # nothing refused by the scan: parse the bytes in place
            text = pa.py_buffer(data)[min(int(lines.ends[head]) + 1, len(data)):]
        else:
            text = join_lines(lines.buf, lines.starts[good], lines.ends[good])
        typed = self._read_typed(text, names)
        if typed is not None:
            table, kept, row_rejects = self._convert_typed(typed, good)
        else:  # some cell does not parse: find exactly which, row by row, column by column
            cells = self._read_cells(path, text, names)
            table, kept, row_rejects = self._convert(cells, good)
        rejects.extend(row_rejects)
        return self._result(source, path, (table, kept), lines, kept, rejects, head)

    def _header_names(self, path: Path, data: bytes, lines, head: int) -> list[str]:
        where = f"line {head + 1}"
        if not lines.valid_utf8[head]:
            raise InputRefused(path, where, "header is not valid UTF-8 text")
        raw = data[lines.starts[head] : lines.ends[head]].decode()
        names = [c.strip().strip('"').strip().lower() for c in raw.split(",")]
        missing = [c for c, (_, need, _) in self.columns.items() if need and c not in names]
        if missing:
            raise InputRefused(
                path, where, f"missing required column(s): {', '.join(missing)}",
                f"the {self.name} format expects the header {self.header}",
            )  # fmt: skip
        dupes = sorted({c for c in names if names.count(c) > 1 and c in self.columns})
        if dupes:
            raise InputRefused(path, where, f"duplicate column(s): {', '.join(dupes)}")
        # Unknown columns get unique placeholder names so they can be ignored safely.
        return [c if c in self.columns else f"__extra{i}" for i, c in enumerate(names)]

    def _typed_columns(self, names: list[str]) -> dict[str, pa.DataType]:
        types: dict[str, pa.DataType] = {}
        for name in names:
            kind = self.columns.get(name, (None,))[0]
            if kind == TS:
                types[name] = TIMESTAMP
            elif kind == NUM:
                types[name] = pa.float64()
            elif name in self.high_cardinality:
                types[name] = pa.string()
            else:
                types[name] = pa.dictionary(pa.int32(), pa.string())
        return types

    def _read_typed(self, text, names: list[str]) -> pa.Table | None:
        """Fast path: let Arrow parse timestamps and numbers natively and dictionary-encode the
        low-cardinality text. Any cell Arrow cannot convert sends the file to the exact path."""
        try:
            return pacsv.read_csv(
                pa.BufferReader(text) if isinstance(text, pa.Buffer) else io.BytesIO(text),
                read_options=pacsv.ReadOptions(column_names=names, use_threads=False,
                                               block_size=1 << 24),
                parse_options=pacsv.ParseOptions(newlines_in_values=False),
                convert_options=pacsv.ConvertOptions(
                    column_types=self._typed_columns(names),
                    include_columns=[c for c in names if c in self.columns],
                    strings_can_be_null=True,
                    null_values=[""],
                ),
            )
        except pa.ArrowInvalid:
            return None

    def _convert_typed(self, cells: pa.Table, good: np.ndarray):
        n = cells.num_rows
        failed = np.zeros(n, bool)
        rejects = []
        values: dict[str, pa.Array] = {}
        for name, (kind, _, required) in self.columns.items():
            if name not in cells.column_names:
                values[name] = pa.nulls(n, self.schema.field(name).type)
                continue
            parsed, missing, bad, reason = _typed_cells(kind, cells.column(name).combine_chunks())
            values[name] = parsed
            for mask, why in ((bad, reason), (missing & required, "missing_value")):
                new = mask & ~failed if mask is not None else None
                if new is not None and new.any():
                    rejects.append((good[new], why, name))
                    failed |= new
        if not failed.any():
            return pa.table(values), good, rejects
        keep = np.flatnonzero(~failed)
        table = pa.table({k: v.take(pa.array(keep)) for k, v in values.items()})
        return table, good[keep], rejects

    def _read_cells(self, path: Path, text: bytes, names: list[str]) -> pa.Table:
        wanted = [c for c in names if c in self.columns]
        try:
            return pacsv.read_csv(
                io.BytesIO(text),
                read_options=pacsv.ReadOptions(column_names=names, use_threads=False),
                parse_options=pacsv.ParseOptions(newlines_in_values=False),
                convert_options=pacsv.ConvertOptions(
                    column_types={c: pa.string() for c in names},
                    include_columns=wanted,
                    strings_can_be_null=True,
                    null_values=[""],
                ),
            )
        except pa.ArrowInvalid as exc:  # pre-scan should make this unreachable
            raise InputRefused(path, "body", f"CSV structure error: {exc}") from exc

    def _convert(self, cells: pa.Table, good: np.ndarray):
        n = cells.num_rows
        failed = np.zeros(n, bool)
        rejects = []
        values: dict[str, pa.Array] = {}
        for name, (kind, _, required) in self.columns.items():
            if name not in cells.column_names:
                values[name] = pa.nulls(n, self.schema.field(name).type)
                if required:  # only reachable for optional headers with required values
                    failed[:] = True
                continue
            col = cells.column(name).combine_chunks()
            parsed, missing, bad, reason = _parse(kind, col)
            values[name] = parsed
            for mask, why in ((bad, reason), (missing & required, "missing_value")):
                new = mask & ~failed
                if new.any():
                    rejects.append((good[new], why, name))
                    failed |= new
        keep = np.flatnonzero(~failed)
        table = pa.table({k: v.take(pa.array(keep)) for k, v in values.items()})
        return table, good[keep], rejects

    def _result(self, source, path, converted, lines, good, rejects, head=None) -> ReadResult:
        kept_table, kept_lines = converted if converted is not None else (None, good)
        events = self._canonical(kept_table, source, lines, kept_lines)
        quarantine, reasons = quarantine_lines(source, path, lines, rejects, f"{self.name}:parse")
        header_lines = 0 if head is None else 1
        rows = lines.count - header_lines
        result = ReadResult(
            events=events, quarantine=quarantine, rows=rows,
            ignored=int(lines.blank.sum()), reasons=reasons,
        )  # fmt: skip
        result.check_balance()
        return result

    def _canonical(self, table, source, lines, kept) -> pa.Table:
        if table is None:
            return self.schema.empty_table()
        cols = {}
        for field in self.schema:
            if field.name in table.column_names:
                cols[field.name] = table.column(field.name)
            elif field.name == "instrument":
                cols[field.name] = table.column("symbol")
            elif field.name == "source":
                cols[field.name] = pa.array([source] * len(kept), pa.string())
            elif field.name == "offset":
                cols[field.name] = pa.array(lines.starts[kept], pa.int64())
            elif field.name == "line":
                cols[field.name] = pa.array(kept + 1, pa.int64())
            else:
                cols[field.name] = pa.nulls(len(kept), field.type)
        return pa.table(cols).cast(self.schema)


class CanonicalCsv(_CanonicalDelimited):
    """Order events in the canonical CSV layout."""

    name = "csv"
    kind = "orders"
    description = "canonical order-event CSV (ts,firm,trader,account,symbol,side,event,...)"
    schema = ORDER_EVENTS
    columns = {
        "ts": (TS, True, True),
        "firm": (STR, False, False),
        "trader": (STR, True, True),
        "account": (STR, False, False),
        "symbol": (STR, True, True),
        "side": (SIDE, True, True),
        "event": (EVENT, True, True),
        "order_id": (STR, True, True),
        "price": (NUM, True, False),
        "qty": (NUM, True, False),
        "leaves_qty": (NUM, False, False),
        "exec_qty": (NUM, False, False),
        "exec_price": (NUM, False, False),
        "venue": (STR, False, False),
    }


class MarketCsv(_CanonicalDelimited):
    """Top-of-book quotes and trades in the canonical market-data CSV layout."""

    name = "md-csv"
    kind = "market"
    description = "canonical market-data CSV (ts,symbol,bid,bid_size,ask,ask_size,last,last_size)"
    schema = MARKET_DATA
    columns = {
        "ts": (TS, True, True),
        "symbol": (STR, True, True),
        "bid": (NUM, True, False),
        "bid_size": (NUM, True, False),
        "ask": (NUM, True, False),
        "ask_size": (NUM, True, False),
        "last": (NUM, True, False),
        "last_size": (NUM, True, False),
    }
