"""Cleaning: an ordered, named, versioned list of steps applied to canonical rows after parsing.

A step takes a canonical table and returns ``(kept, rejected_mask, reason, field)``: it never drops
a row silently, and the ingest stage quarantines what it rejects. ``etl_version()`` hashes the step
list, the token tables and the connector versions, and is recorded with every output.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from appliance.clean.tokens import EVENT_TOKENS, SIDE_TOKENS


@dataclass(frozen=True)
class Rejection:
    mask: np.ndarray
    reason: str
    field: str | None


@dataclass(frozen=True)
class CleanContext:
    """Reference data the steps consult (current versions; empty tables when never loaded)."""

    traders: pa.Table | None = None
    symbology: pa.Table | None = None


@dataclass(frozen=True)
class Step:
    """One cleaning step. ``fn(table, ctx) -> (table, [Rejection, ...])``; rejected rows are
    removed from the returned table by the runner, not by the step."""

    name: str
    version: str
    fn: Callable[[pa.Table, CleanContext], tuple[pa.Table, list[Rejection]]]
    doc: str


def _mask(arr) -> np.ndarray:
    return np.asarray(pc.fill_null(arr, False).to_numpy(zero_copy_only=False), dtype=bool)


def _norm(col) -> pa.ChunkedArray | pa.Array:
    return pc.utf8_upper(pc.utf8_trim_whitespace(col))


def resolve_trader_alias(table: pa.Table, ctx: CleanContext) -> tuple[pa.Table, list[Rejection]]:
    """One trader under several names: replace every known alias by the canonical trader id."""
    aliases = ctx.traders
    if aliases is None or aliases.num_rows == 0:
        return table, []
    idx = pc.index_in(pc.utf8_trim_whitespace(table.column("trader")),
                      value_set=aliases.column("alias"))
    mapped = pc.take(aliases.column("trader").combine_chunks(), idx)
    trader = pc.coalesce(mapped, table.column("trader"))
    i = table.schema.get_field_index("trader")
    return table.set_column(i, table.schema.field(i), trader), []


def resolve_instrument(table: pa.Table, ctx: CleanContext) -> tuple[pa.Table, list[Rejection]]:
    """Symbol → instrument through effective-dated symbology (valid_from ≤ UTC date < valid_to);
    a symbol with no mapping that day keeps its own upper-cased name as the instrument."""
    symbol = _norm(table.column("symbol"))
    instrument = symbol
    sym = ctx.symbology
    if sym is not None and sym.num_rows and table.num_rows:
        day = pc.strftime(table.column("ts"), format="%Y-%m-%d")
        rows = pa.table({"__row": pa.array(np.arange(table.num_rows)), "symbol": symbol,
                         "day": day})
        maps = pa.table({"symbol": _norm(sym.column("symbol")),
                         "instrument": sym.column("instrument"),
                         "valid_from": sym.column("valid_from"),
                         "valid_to": pc.fill_null(sym.column("valid_to"), "9999-12-31")})
        joined = rows.join(maps, "symbol", join_type="inner", use_threads=False)
        live = pc.and_(pc.greater_equal(joined.column("day"), joined.column("valid_from")),
                       pc.less(joined.column("day"), joined.column("valid_to")))
        joined = joined.filter(live).sort_by([("__row", "ascending"), ("valid_from", "descending")])
        out = np.full(table.num_rows, None, dtype=object)
        rows_hit = joined.column("__row").to_numpy()
        first = np.ones(len(rows_hit), bool)
        first[1:] = rows_hit[1:] != rows_hit[:-1]
        out[rows_hit[first]] = np.asarray(joined.column("instrument").to_pylist(),
                                          dtype=object)[first]
        instrument = pc.coalesce(pa.array(out, pa.string()), symbol)
    i = table.schema.get_field_index("instrument")
    return table.set_column(i, table.schema.field(i), instrument), []


def check_order_values(table: pa.Table, ctx: CleanContext) -> tuple[pa.Table, list[Rejection]]:
    """Impossible values: NEW/MODIFY need qty > 0; FILL needs exec_qty > 0 and an exec_price;
    no quantity may be negative."""
    event = table.column("event")
    is_entry = _mask(pc.is_in(event, pa.array(["NEW", "MODIFY"])))
    is_fill = _mask(pc.equal(event, "FILL"))
    qty = table.column("qty")
    bad_qty = is_entry & ~_mask(pc.greater(qty, 0))
    exec_qty = table.column("exec_qty")
    bad_exec = is_fill & ~_mask(pc.greater(exec_qty, 0))
    no_price = is_fill & _mask(pc.is_null(table.column("exec_price")))
    negative = np.zeros(table.num_rows, bool)
    for name in ("qty", "leaves_qty", "exec_qty"):
        negative |= _mask(pc.less(table.column(name), 0))
    return table, [
        Rejection(bad_qty, "impossible_value", "qty"),
        Rejection(bad_exec, "impossible_value", "exec_qty"),
        Rejection(no_price, "missing_value", "exec_price"),
        Rejection(negative, "impossible_value", "qty"),
    ]


_DUP_KEY = ("ts", "trader", "account", "symbol", "side", "event", "order_id", "price", "qty",
            "leaves_qty", "exec_qty", "exec_price")  # fmt: skip


def drop_resent_duplicates(
    table: pa.Table, ctx: CleanContext
) -> tuple[pa.Table, list[Rejection]]:
    """Exact repeats of an event (same content, any provenance) are resends: keep the first."""
    if table.num_rows == 0:
        return table, []
    # Only rows sharing a timestamp can be repeats: compare full content among those alone.
    ts = table.column("ts").cast(pa.int64()).to_numpy()
    order = np.argsort(ts, kind="stable")
    same = np.zeros(ts.size, bool)
    tied = ts[order][1:] == ts[order][:-1]
    same[order[1:][tied]] = True
    same[order[:-1][tied]] = True
    candidates = np.flatnonzero(same)
    if candidates.size == 0:
        return table, []
    sub = table.take(pa.array(candidates)).select(list(_DUP_KEY))
    sub = sub.append_column("__row", pa.array(candidates))
    first = sub.group_by(list(_DUP_KEY), use_threads=False).aggregate([("__row", "min")])
    keep = np.ones(table.num_rows, bool)
    keep[candidates] = False
    keep[first.column("__row_min").to_numpy()] = True
    return table, [Rejection(~keep, "duplicate", None)]


def check_market_values(table: pa.Table, ctx: CleanContext) -> tuple[pa.Table, list[Rejection]]:
    """Sizes cannot be negative and a row must carry a quote or a trade."""
    negative = np.zeros(table.num_rows, bool)
    for name in ("bid_size", "ask_size", "last_size"):
        negative |= _mask(pc.less(table.column(name), 0))
    empty = np.ones(table.num_rows, bool)
    for name in ("bid", "ask", "last"):
        empty &= _mask(pc.is_null(table.column(name)))
    return table, [
        Rejection(negative, "impossible_value", "size"),
        Rejection(empty, "missing_value", "bid/ask/last"),
    ]


ORDER_STEPS: tuple[Step, ...] = (
    Step("resolve_trader_alias", "1", resolve_trader_alias, resolve_trader_alias.__doc__ or ""),
    Step("resolve_instrument", "2", resolve_instrument, resolve_instrument.__doc__ or ""),
    Step("check_order_values", "1", check_order_values, check_order_values.__doc__ or ""),
    Step("drop_resent_duplicates", "1", drop_resent_duplicates,
         drop_resent_duplicates.__doc__ or ""),
)  # fmt: skip
MARKET_STEPS: tuple[Step, ...] = (
    Step("check_market_values", "1", check_market_values, check_market_values.__doc__ or ""),
)

STEPS = {"orders": ORDER_STEPS, "market": MARKET_STEPS}


Rejected = list[tuple[np.ndarray, str, str | None, str]]


def apply_steps(
    table: pa.Table, kind: str, ctx: CleanContext | None = None
) -> tuple[pa.Table, Rejected]:
    """Run every step for ``kind`` in order. Returns the kept rows and, for the rejected ones,
    ``(original row indices, reason, field, step name)``; a row is rejected by its first step."""
    ctx = ctx or CleanContext()
    alive = np.arange(table.num_rows)
    rejected = []
    for step in STEPS[kind]:
        table, rejections = step.fn(table, ctx)
        dead = np.zeros(table.num_rows, bool)
        for r in rejections:
            new = r.mask & ~dead
            if new.any():
                rejected.append((alive[new], r.reason, r.field, step.name))
                dead |= new
        if dead.any():
            table = table.filter(pa.array(~dead))
            alive = alive[~dead]
    return table, rejected


def etl_version(reference_digest: str = "") -> str:
    """Hash of everything that decides what the cleaned rows are: steps, token tables,
    connector versions and the current reference data."""
    from connectors import REGISTRY

    doc = {
        "reference": reference_digest,
        "steps": {k: [(s.name, s.version) for s in v] for k, v in STEPS.items()},
        "tokens": [SIDE_TOKENS, EVENT_TOKENS],
        "connectors": {name: c.version for name, c in sorted(REGISTRY.items())},
    }
    digest = hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()
    return f"etl-{digest[:12]}"
