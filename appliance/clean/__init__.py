"""Cleaning: an ordered, named, versioned list of steps applied to canonical rows after parsing.

A step takes a canonical table and returns ``(kept, rejected_mask, reason, field)``: it never drops
a row silently, and the ingest stage quarantines what it rejects. ``etl_version()`` hashes the step
list, the token tables and the connector versions, and is recorded with every output.

Hot paths are vectorised: the reference look-ups run once per distinct value (trader spelling,
symbol spelling × UTC day) and are taken back to the rows; the resend check hashes the content of
the rows that share a timestamp and compares only rows with equal hashes; the runner filters the
table once, after the last step.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numba import njit

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
    removed from the returned table by the runner, not by the step.

    ``row_local``: what the step does to a row (its values, whether and why it is rejected)
    depends on that row alone, so the runner may hand it rows that an earlier step rejected (and
    then ignores them) instead of filtering the table before every step. A step that is not
    row-local is called as ``fn(table, ctx, live)``, ``live`` being the mask of the rows no earlier
    step rejected, and must behave as if it saw only those rows."""

    name: str
    version: str
    fn: Callable[..., tuple[pa.Table, list[Rejection]]]
    doc: str
    row_local: bool = True


def _mask(arr) -> np.ndarray:
    return np.asarray(pc.fill_null(arr, False).to_numpy(zero_copy_only=False), dtype=bool)


def _norm(col) -> pa.ChunkedArray | pa.Array:
    return pc.utf8_upper(pc.utf8_trim_whitespace(col))


def _encoded(col) -> pa.DictionaryArray:
    """``col`` dictionary-encoded in one piece (one dictionary, nulls as null indices)."""
    if isinstance(col, pa.ChunkedArray):
        col = col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()
    return pc.dictionary_encode(col)


def resolve_trader_alias(table: pa.Table, ctx: CleanContext) -> tuple[pa.Table, list[Rejection]]:
    """One trader under several names: replace every known alias by the canonical trader id."""
    aliases = ctx.traders
    if aliases is None or aliases.num_rows == 0:
        return table, []
    # Resolve each distinct spelling once, then take back to the rows.
    enc = _encoded(table.column("trader"))
    names = enc.dictionary
    idx = pc.index_in(pc.utf8_trim_whitespace(names), value_set=aliases.column("alias"))
    mapped = pc.take(aliases.column("trader").combine_chunks(), idx)
    trader = pc.coalesce(mapped, names).take(enc.indices)
    i = table.schema.get_field_index("trader")
    return table.set_column(i, table.schema.field(i), trader), []


_NS_PER_DAY = {"s": 86_400, "ms": 86_400_000, "us": 86_400_000_000, "ns": 86_400_000_000_000}


def _utc_days(ts) -> tuple[np.ndarray, np.ndarray, pa.Array]:
    """Per row, a code for its UTC date, whether it has one (``ts`` not null), and the dates
    (``%Y-%m-%d`` strings, what ``strftime`` gives per row) indexed by code."""
    if isinstance(ts, pa.ChunkedArray):
        ts = ts.chunk(0) if ts.num_chunks == 1 else ts.combine_chunks()
    if pa.types.is_timestamp(ts.type) and ts.type.tz in (None, "UTC"):
        per_day = _NS_PER_DAY[ts.type.unit]
        valid = ~_mask(pc.is_null(ts)) if ts.null_count else np.ones(len(ts), bool)
        raw = pc.fill_null(ts.cast(pa.int64()), 0).to_numpy() if ts.null_count else \
            ts.cast(pa.int64()).to_numpy()
        day = raw // per_day  # floor: the UTC date, also before 1970
        first = int(day[valid].min()) if valid.any() else 0
        code = np.where(valid, day - first, 0)
        span = int(code.max()) + 1 if len(code) else 0
        dates = pa.array((np.arange(span, dtype=np.int64) + first) * per_day, ts.type)
        return code, valid, pc.strftime(dates, format="%Y-%m-%d")
    # another time zone or type: the dates as strftime writes them, then encoded
    enc = _encoded(pc.strftime(ts, format="%Y-%m-%d"))
    valid = np.asarray(enc.indices.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    code = pc.fill_null(enc.indices, 0).to_numpy().astype(np.int64)
    return code, valid, enc.dictionary


def _in_force(symbol, day, sym: pa.Table) -> pa.Array:
    """Effective-dated look-up, one row per (symbol, day): the instrument of the mapping in force
    that day (valid_from ≤ day < valid_to; the latest valid_from wins), null when none."""
    n = len(symbol)
    rows = pa.table({"__row": pa.array(np.arange(n)), "symbol": symbol, "day": day})
    maps = pa.table({"symbol": _norm(sym.column("symbol")),
                     "instrument": sym.column("instrument"),
                     "valid_from": sym.column("valid_from"),
                     "valid_to": pc.fill_null(sym.column("valid_to"), "9999-12-31")})
    joined = rows.join(maps, "symbol", join_type="inner", use_threads=False)
    live = pc.and_(pc.greater_equal(joined.column("day"), joined.column("valid_from")),
                   pc.less(joined.column("day"), joined.column("valid_to")))
    joined = joined.filter(live).sort_by([("__row", "ascending"), ("valid_from", "descending")])
    rows_hit = joined.column("__row").to_numpy()
    first = np.ones(len(rows_hit), bool)
    first[1:] = rows_hit[1:] != rows_hit[:-1]
    hit = np.full(n, -1, np.int64)
    hit[rows_hit[first]] = np.flatnonzero(first)
    return pc.take(joined.column("instrument").combine_chunks(), pa.array(hit, mask=hit < 0))


def resolve_instrument(table: pa.Table, ctx: CleanContext) -> tuple[pa.Table, list[Rejection]]:
    """Symbol → instrument through effective-dated symbology (valid_from ≤ UTC date < valid_to);
    a symbol with no mapping that day keeps its own upper-cased name as the instrument."""
    # Everything runs on the distinct symbol spellings, then on the distinct (spelling, UTC day)
    # pairs, and is taken back to the rows: same result as per row, a few hundred look-ups.
    enc = _encoded(table.column("symbol"))
    symbols = _norm(enc.dictionary)
    sym = ctx.symbology
    if sym is None or not sym.num_rows or not table.num_rows:
        instrument = symbols.take(enc.indices)
    else:
        n, n_sym = table.num_rows, len(symbols)
        s_code = pc.fill_null(enc.indices, n_sym).to_numpy().astype(np.int64)  # null: own code
        d_code, d_valid, dates = _utc_days(table.column("ts"))
        n_day = len(dates) + 1  # the last code: no timestamp
        key = s_code * n_day + np.where(d_valid, d_code, n_day - 1)
        slots = (n_sym + 1) * n_day
        if slots <= 2 * n + 4096:  # dense: a flag per possible pair, ranks by cumsum
            present = np.zeros(slots, bool)
            present[key] = True
            pairs = np.flatnonzero(present)
            rank = np.cumsum(present) - 1
            row_pair = rank[key]
        else:
            pairs, row_pair = np.unique(key, return_inverse=True)
        p_sym, p_day = pairs // n_day, pairs % n_day
        pair_symbol = symbols.take(pa.array(p_sym, mask=p_sym == n_sym))
        pair_day = dates.take(pa.array(p_day, mask=p_day == n_day - 1))
        pair_instrument = pc.coalesce(_in_force(pair_symbol, pair_day, sym), pair_symbol)
        instrument = pair_instrument.take(pa.array(row_pair))
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


def _key_columns(sub: pa.Table) -> list[np.ndarray]:
    """The content of ``sub``'s rows as int64 columns compared exactly as ``group_by`` compares
    them: strings by dictionary code, floats by bit pattern (0.0 ≠ -0.0), integers and times by
    value; null equals null, never a value (one extra column of null flags)."""
    out, nulls = [], np.zeros(sub.num_rows, np.int64)
    for j, col in enumerate(sub.columns):
        col = col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()
        t = col.type
        if pa.types.is_floating(t):
            vals = pc.fill_null(col.cast(pa.float64()), 0.0).to_numpy().view(np.int64)
        elif pa.types.is_integer(t) or pa.types.is_temporal(t):
            vals = pc.fill_null(col.cast(pa.int64()), 0).to_numpy()
        else:
            vals = pc.fill_null(pc.dictionary_encode(col).indices, -1).to_numpy()
        if col.null_count:
            isnull = _mask(pc.is_null(col))
            vals = np.where(isnull, 0, vals)
            nulls |= isnull.astype(np.int64) << j
        out.append(vals.astype(np.int64, copy=False))
    out.append(nulls)
    return out


def _first_of_equal(cols: list[np.ndarray]) -> np.ndarray:
    """Per row, whether no earlier row has the same values in every column (exact: lexsort)."""
    n = len(cols[0])
    order = np.lexsort([np.arange(n), *cols[::-1]])  # last key first; ties in row order
    start = np.ones(n, bool)
    same = np.ones(n - 1, bool)
    for c in cols:
        v = c[order]
        same &= v[1:] == v[:-1]
    start[1:] = ~same
    first = np.empty(n, bool)
    first[order] = start
    return first


_U = np.uint64
_SEED, _MUL1, _MUL2 = _U(0x9E3779B97F4A7C15), _U(0xBF58476D1CE4E5B9), _U(0x94D049BB133111EB)
_FNV, _NULL = _U(0x100000001B3), _U(0x5BD1E9955BD1E995)


@njit(cache=True, inline="always")
def _mix(h, v):  # pragma: no cover - numba
    h = (h ^ v) * _MUL1
    h = (h ^ (h >> _U(29))) * _MUL2
    return h ^ (h >> _U(32))


@njit(cache=True, inline="always")
def _num(fixed, fbit, nulls, j, row, i):  # pragma: no cover - numba
    return _U(0) if (nulls[i] >> fbit[j]) & 1 else _U(fixed[j][row])


@njit(cache=True)
def _hash_rows(idx, fixed, fbit, offsets, datas, sbit, nulls):  # pragma: no cover - numba
    """A 64-bit hash of each row ``idx[i]``'s content: its null flags, fixed-width values by
    bits, strings by bytes. It depends on the row alone (not on the table around it), so rows
    hashed in different chunks, processes or ranges compare (appliance.clean.resends)."""
    m, k, s = idx.size, len(fbit), len(sbit)
    h = np.empty(m, np.uint64)
    for i in range(m):
        row = idx[i]
        x = _mix(_SEED, _U(nulls[i]))
        for j in range(k):
            x = _mix(x, _num(fixed, fbit, nulls, j, row, i))
        for j in range(s):
            if (nulls[i] >> sbit[j]) & 1:
                continue
            a, b = offsets[j][row], offsets[j][row + 1]
            y = _U(b - a)
            d = datas[j]
            for q in range(a, b):
                y = (y ^ _U(d[q])) * _FNV
            x = _mix(x, y)
        h[i] = x
    return h


@njit(cache=True)
def _first_kernel(idx, fixed, fbit, offsets, datas, sbit, nulls):  # pragma: no cover - numba
    """Per row ``idx[i]``, whether no earlier one of those rows is equal in every column:
    fixed-width values ``fixed[j]`` (int64 bits), strings ``datas[j][offsets[j][r]:...]``;
    ``nulls[i]`` has bit ``fbit[j]``/``sbit[j]`` set where the value is null (null equals null
    only). Open-addressing hash table of the distinct rows seen; equal hashes compared in full."""
    m = idx.size
    h = _hash_rows(idx, fixed, fbit, offsets, datas, sbit, nulls)
    size = 1
    while size < 2 * m:
        size *= 2
    slots = np.full(size, -1, np.int64)
    first = np.ones(m, np.bool_)
    for i in range(m):
        slot = np.int64(h[i] & _U(size - 1))
        while True:
            r = slots[slot]
            if r < 0:
                slots[slot] = i
                break
            if h[r] == h[i] and _same_row(idx, fixed, fbit, offsets, datas, sbit, nulls, r, i):
                first[i] = False
                break
            slot = (slot + 1) & (size - 1)
    return first


@njit(cache=True)
def _same_row(idx, fixed, fbit, offsets, datas, sbit, nulls, r, i):  # pragma: no cover - numba
    if nulls[r] != nulls[i]:
        return False
    for j in range(len(fbit)):
        if _num(fixed, fbit, nulls, j, idx[r], r) != _num(fixed, fbit, nulls, j, idx[i], i):
            return False
    for j in range(len(sbit)):
        if (nulls[i] >> sbit[j]) & 1:
            continue
        off, d = offsets[j], datas[j]
        a, b, c = off[idx[r]], off[idx[r] + 1], off[idx[i]]
        if b - a != off[idx[i] + 1] - c:
            return False
        for q in range(b - a):
            if d[a + q] != d[c + q]:
                return False
    return True


_WIDTH = {8: np.int8, 16: np.int16, 32: np.int32, 64: np.int64}


def _first_of_content(table: pa.Table, idx: np.ndarray) -> np.ndarray | None:
    """``_first_of_equal`` on ``table``'s rows ``idx`` (ascending), read straight from the Arrow
    buffers by a numba kernel (no take, no copy for 64-bit values and string columns); None when
    a column is neither fixed-width numeric nor string/binary."""
    args = _content_args(table, idx)
    return None if args is None else _first_kernel(*args)


def content_hashes(table: pa.Table, idx: np.ndarray | None = None) -> np.ndarray:
    """A 64-bit hash (uint64) of each row ``idx`` (all rows by default) of ``table``'s
    ``_DUP_KEY`` columns, as the resend check hashes them: equal rows hash equal whatever table,
    chunk or process they are in (null ≠ any value, 0.0 ≠ -0.0, strings by bytes). Only a hint:
    equal hashes must still be compared in full."""
    idx = np.arange(table.num_rows, dtype=np.int64) if idx is None else idx.astype(np.int64)
    args = _content_args(table.select(list(_DUP_KEY)), idx)
    if args is None:  # not the canonical schema: nothing here writes such a table
        raise TypeError(f"content_hashes: a column type the kernel cannot read: {table.schema}")
    return _hash_rows(*args)


def _content_args(table: pa.Table, idx: np.ndarray) -> tuple | None:
    """The numba kernels' arguments for ``table``'s rows ``idx`` (see ``_first_kernel``)."""
    fixed, fbit, offsets, datas, sbit = [], [], [], [], []
    nulls = np.zeros(idx.size, np.int64)
    for j, col in enumerate(table.columns):
        arr = col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()
        t = arr.type
        if arr.null_count:
            pos = idx + arr.offset
            bits = np.frombuffer(arr.buffers()[0], np.uint8)
            nulls |= (((bits[pos >> 3] >> (pos & 7).astype(np.uint8)) & 1) ^ 1).astype(
                np.int64) << j
        if pa.types.is_string(t) or pa.types.is_binary(t) or pa.types.is_large_string(t) \
                or pa.types.is_large_binary(t):
            large = pa.types.is_large_string(t) or pa.types.is_large_binary(t)
            off = np.frombuffer(arr.buffers()[1], np.int64 if large else np.int32)
            offsets.append(off[arr.offset: arr.offset + len(arr) + 1])
            buf = arr.buffers()[2]
            datas.append(np.frombuffer(buf if buf is not None else b"", np.uint8))
            sbit.append(j)
        elif (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_temporal(t)) \
                and t.bit_width in _WIDTH:  # exact bits: 0.0 and -0.0 differ, as in group_by
            vals = np.frombuffer(arr.buffers()[1], _WIDTH[t.bit_width])
            fixed.append(vals[arr.offset: arr.offset + len(arr)])
            fbit.append(j)
        else:
            return None
    # the kernel takes tuples of one array type (read-only int64 / uint8): widen the odd ones
    # (not in the canonical schema)
    if len({a.dtype for a in offsets}) > 1:
        offsets = [_readonly(a.astype(np.int64)) for a in offsets]
    fixed = [a if a.dtype == np.int64 else _readonly(a.astype(np.int64)) for a in fixed]
    empty = _readonly(np.zeros(0, np.int64))
    return (idx, tuple(fixed) or (empty,), np.array(fbit, np.int64), tuple(offsets) or (empty,),
            tuple(datas) or (_readonly(np.zeros(0, np.uint8)),), np.array(sbit, np.int64), nulls)


def _readonly(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


def drop_resent_duplicates(
    table: pa.Table, ctx: CleanContext, live: np.ndarray | None = None
) -> tuple[pa.Table, list[Rejection]]:
    """Exact repeats of an event (same content, any provenance) are resends: keep the first."""
    n = table.num_rows
    if n == 0:
        return table, []
    # Only rows sharing a timestamp can be repeats: compare full content among those alone.
    ts = table.column("ts")
    rows = np.arange(n) if live is None else np.flatnonzero(live)
    if ts.null_count:  # a row without a timestamp is never a repeat
        rows = rows[~_mask(pc.is_null(ts))[rows]]
    ts = pc.fill_null(ts.cast(pa.int64()), 0)
    ts = (ts.chunk(0) if ts.num_chunks == 1 else ts.combine_chunks()).to_numpy()[rows]
    if ts.size > 1 and not np.all(ts[1:] >= ts[:-1]):
        order = np.argsort(ts, kind="stable")
        ts, rows = ts[order], rows[order]
    same = np.zeros(ts.size, bool)
    tied = ts[1:] == ts[:-1]
    same[1:] |= tied
    same[:-1] |= tied
    candidates = np.sort(rows[same])
    if candidates.size == 0:
        return table, []
    content = table.select(list(_DUP_KEY))
    first = _first_of_content(content, candidates)
    if first is None:  # a column type the kernel does not read: exact sort instead
        first = _first_of_equal(_key_columns(content.take(pa.array(candidates))))
    dup = np.zeros(n, bool)
    dup[candidates[~first]] = True
    return table, [Rejection(dup, "duplicate", None)]


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
    Step("drop_resent_duplicates", "2", drop_resent_duplicates,
         drop_resent_duplicates.__doc__ or "", row_local=False),
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
    ``(original row indices, reason, field, step name)``; a row is rejected by its first step.

    The table is filtered once, at the end: a row-local step also sees the rows earlier steps
    rejected (its verdict on them is ignored), any other step gets the mask of live rows."""
    ctx = ctx or CleanContext()
    dead = np.zeros(table.num_rows, bool)
    rejected = []
    for step in STEPS[kind]:
        if step.row_local:
            table, rejections = step.fn(table, ctx)
        else:
            table, rejections = step.fn(table, ctx, ~dead)
        for r in rejections:
            new = r.mask & ~dead
            if new.any():
                rejected.append((np.flatnonzero(new), r.reason, r.field, step.name))
                dead |= new
    if dead.any():
        table = _filter(table, ~dead)
    return table, rejected


def _filter(table: pa.Table, keep: np.ndarray) -> pa.Table:
    """``table.filter(keep)``, column by column: ``Table.filter`` turns the mask into indices and
    takes, which costs about twice the filter kernel on string columns."""
    mask = pa.array(keep)
    cols = [c.chunk(0).filter(mask) if c.num_chunks == 1 else c.filter(mask) for c in table.columns]
    return pa.Table.from_arrays(cols, schema=table.schema)


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
