"""Canonical Arrow schemas: the one shape every connector produces and every stage consumes.

Documented field by field in ``docs/schema.md``. Strings are plain UTF-8 (dictionary encoding is a
storage detail Parquet applies on its own); numeric values are float64 so that a missing value is
NaN inside numba kernels and nulls survive Arrow round trips.
"""

from __future__ import annotations

import pyarrow as pa

#: Canonical values of ``side``.
SIDES: tuple[str, ...] = ("BUY", "SELL")
#: Canonical values of ``event``.
EVENTS: tuple[str, ...] = ("NEW", "MODIFY", "CANCEL", "FILL", "REJECT")

#: Integer codes used by numba kernels (index into SIDES / EVENTS).
SIDE_CODE = {name: code for code, name in enumerate(SIDES)}
EVENT_CODE = {name: code for code, name in enumerate(EVENTS)}

TIMESTAMP = pa.timestamp("ns", tz="UTC")

#: Provenance columns carried by every canonical row: where its raw bytes are.
PROVENANCE_FIELDS: tuple[pa.Field, ...] = (
    pa.field("source", pa.string(), nullable=False),  # file id: first 16 hex of its SHA-256
    pa.field("offset", pa.int64(), nullable=False),  # byte offset of the raw record
    pa.field("line", pa.int64(), nullable=False),  # 1-based line number (0 when not line-based)
)

ORDER_EVENTS = pa.schema(
    [
        pa.field("ts", TIMESTAMP, nullable=False),
        pa.field("firm", pa.string()),
        pa.field("trader", pa.string(), nullable=False),
        pa.field("account", pa.string()),
        pa.field("symbol", pa.string(), nullable=False),
        pa.field("instrument", pa.string(), nullable=False),
        pa.field("side", pa.string(), nullable=False),
        pa.field("event", pa.string(), nullable=False),
        pa.field("order_id", pa.string(), nullable=False),
        pa.field("price", pa.float64()),
        pa.field("qty", pa.float64()),
        pa.field("leaves_qty", pa.float64()),
        pa.field("exec_qty", pa.float64()),
        pa.field("exec_price", pa.float64()),
        pa.field("venue", pa.string()),
        # Source-specific attributes kept verbatim (e.g. CME audit-trail tags 1028, 9702, 204).
        pa.field("attrs", pa.map_(pa.string(), pa.string())),
        *PROVENANCE_FIELDS,
    ],
    metadata={"surveil.schema": "order_events/1"},
)

MARKET_DATA = pa.schema(
    [
        pa.field("ts", TIMESTAMP, nullable=False),
        pa.field("symbol", pa.string(), nullable=False),
        pa.field("bid", pa.float64()),
        pa.field("bid_size", pa.float64()),
        pa.field("ask", pa.float64()),
        pa.field("ask_size", pa.float64()),
        pa.field("last", pa.float64()),
        pa.field("last_size", pa.float64()),
        *PROVENANCE_FIELDS,
    ],
    metadata={"surveil.schema": "market_data/1"},
)

#: One row per record a connector or cleaning step refused or repaired. ``raw`` keeps the exact
#: bytes so nothing is ever lost; ``step`` names the stage that decided.
QUARANTINE = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),
        pa.field("path", pa.string(), nullable=False),
        pa.field("line", pa.int64(), nullable=False),
        pa.field("offset", pa.int64(), nullable=False),
        pa.field("step", pa.string(), nullable=False),
        pa.field("field", pa.string()),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("raw", pa.binary(), nullable=False),
    ],
    metadata={"surveil.schema": "quarantine/1"},
)

SCHEMAS: dict[str, pa.Schema] = {
    "orders": ORDER_EVENTS,
    "market": MARKET_DATA,
    "quarantine": QUARANTINE,
}


def empty_table(schema: pa.Schema) -> pa.Table:
    """Return a zero-row table of ``schema`` (useful for concatenation and empty results)."""
    return schema.empty_table()
