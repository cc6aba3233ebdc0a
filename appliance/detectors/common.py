"""What every detector shares: the prepared partition (``Batch``), the per-order state walk, the
clustering rules (adaptive time gap, session window) and the rules-score scaffolding.

A partition is prepared once (``Batch.build``): NumPy columns, the market context joined by
``appliance.context``, and one numba pass over the events in time order (``walk``) that follows
every order (side, open quantity, entry time, price, marketability) and records, per event, the
change of resting quantity it caused, the order's age, its distance from the touch in ticks and
whether the order was aggressive. Orders never change key, so the walk does not depend on how a
detector clusters; each detector's grouping is just row indices (``Grouping``) into the batch.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numba import njit

from appliance.cluster import Clusters
from appliance.context import CONTEXT_COLUMNS, DayMarket, InstrumentInfo, attach_arrays
from appliance.detectors.base import Feature, Scores
from appliance.schema import EVENTS, SIDES
from appliance.scoring import probability_from_log2_odds, score_from_log2_odds

NEW, MODIFY, CANCEL, FILL, REJECT = 0, 1, 2, 3, 4
BUY, SELL = 0, 1
#: without market context an order counts as aggressive when it fills within this of entry
AGGRESSIVE_FILL_NS = 1_000_000


def _codes(col, values) -> np.ndarray:
    idx = pc.index_in(col, value_set=pa.array(values, pa.string()))
    return np.asarray(pc.fill_null(idx, -1).to_numpy(), dtype=np.int8)


def _numpy(col, dtype, arrow_type: pa.DataType) -> np.ndarray:
    """A column as one NumPy array, copied a chunk at a time (nulls: NaN for floats). Not
    ``ChunkedArray.to_numpy``: that concatenates in Arrow's memory pool, whose freed pages
    NumPy cannot reuse (a task's arrays are all in one heap); a memory-mapped chunk without
    nulls is copied straight from its pages."""
    out = np.empty(len(col), dtype)
    at = 0
    for c in col.chunks if isinstance(col, pa.ChunkedArray | StreamedColumn) else [col]:
        if c.type != arrow_type:
            c = c.cast(arrow_type)
        out[at:at + len(c)] = c.to_numpy(zero_copy_only=False)
        at += len(c)
    return out


def _floats(col) -> np.ndarray:
    """A numeric column as float64 with NaN for nulls."""
    return _numpy(col, np.float64, pa.float64())


def dict_codes(col) -> tuple[np.ndarray, list[str]]:
    """Dense codes of a string column (nulls → ''), and the values they stand for."""
    enc = pc.dictionary_encode(pc.fill_null(col, "") if col.null_count else col).combine_chunks()
    return np.asarray(enc.indices.to_numpy(), dtype=np.int64), enc.dictionary.to_pylist()


@njit(cache=True)
def walk(tord, ts, side, event, order, n_orders, price, qty, leaves, exec_qty, bid, ask,
         tick):  # pragma: no cover - numba
    """One pass in time order over every order's life; per event: resolved side, change of the
    order's open quantity (``dq``), order age, order size, current order price, distance from the
    same-side touch in ticks (+ = behind the touch), aggressive order flag, executed quantity."""
    n = ts.shape[0]
    rside = np.zeros(n, np.int8)
    dq = np.zeros(n)
    life = np.zeros(n, np.int64)
    oqty = np.zeros(n)
    opx = np.full(n, np.nan)
    dist = np.full(n, np.nan)
    aggr = np.zeros(n, np.bool_)
    fill = np.zeros(n)
    o_side = np.full(n_orders, -1, np.int8)
    o_entry = np.zeros(n_orders, np.int64)
    o_open = np.zeros(n_orders, np.bool_)
    o_leaves = np.zeros(n_orders)
    o_qty = np.zeros(n_orders)
    o_filled = np.zeros(n_orders)
    o_price = np.full(n_orders, np.nan)
    o_aggr = np.zeros(n_orders, np.bool_)
    for j in range(n):
        i = tord[j]
        o = order[i]
        s = side[i]
        if s < 0:
            s = o_side[o] if o_side[o] >= 0 else 0
        e = event[i]
        t = ts[i]
        if o_side[o] < 0:
            o_side[o] = s
            o_entry[o] = t
            o_price[o] = price[i]
        before = o_leaves[o] if o_open[o] else 0.0
        if e == NEW:
            q = 0.0 if np.isnan(qty[i]) else qty[i]
            o_side[o] = s
            o_entry[o] = t
            o_qty[o] = q
            o_filled[o] = 0.0
            o_leaves[o] = q if np.isnan(leaves[i]) else leaves[i]
            o_open[o] = o_leaves[o] > 0
            o_price[o] = price[i]
            p = price[i]
            o_aggr[o] = np.isnan(p) or (s == BUY and p >= ask[i]) or (s == SELL and p <= bid[i])
        elif e == MODIFY:
            if not np.isnan(price[i]):
                o_price[o] = price[i]
            if not np.isnan(leaves[i]):
                nl = leaves[i]
            elif not np.isnan(qty[i]):
                nl = qty[i] - o_filled[o]
            else:
                nl = o_leaves[o]
            if not np.isnan(qty[i]):
                o_qty[o] = qty[i]
            o_leaves[o] = max(nl, 0.0)
            o_open[o] = o_leaves[o] > 0
        elif e == CANCEL or e == REJECT:  # noqa: SIM109 (numba)
            o_leaves[o] = 0.0
            o_open[o] = False
        elif e == FILL:
            x = 0.0 if np.isnan(exec_qty[i]) else exec_qty[i]
            fill[i] = x
            o_filled[o] += x
            rest = before - x if np.isnan(leaves[i]) else leaves[i]
            o_leaves[o] = max(rest, 0.0)
            o_open[o] = o_leaves[o] > 0
            if np.isnan(bid[i]) and np.isnan(ask[i]) and t - o_entry[o] <= AGGRESSIVE_FILL_NS:
                o_aggr[o] = True
        after = o_leaves[o] if o_open[o] else 0.0
        dq[i] = after - before
        rside[i] = s
        life[i] = t - o_entry[o]
        oqty[i] = o_qty[o]
        opx[i] = o_price[o]
        aggr[i] = o_aggr[o]
        tk = tick[i]
        if tk > 0:
            if s == BUY:
                dist[i] = (bid[i] - o_price[o]) / tk
            else:
                dist[i] = (o_price[o] - ask[i]) / tk
    return rside, dq, life, oqty, opx, dist, aggr, fill


#: the market context the order walk reads (a batch always has it)
WALK_CONTEXT = ("ctx_bid", "ctx_ask", "ctx_tick")
#: the string columns a batch holds as codes (``Batch.codes``)
CODE_COLUMNS = ("trader", "instrument", "symbol", "account", "owner", "source")
#: the ``Batch`` arrays a detector may declare it reads (``RulesDetector.batch_fields``); the
#: others (``ts``, ``event``, the codes) every detector and the explanations read. ``tord``
#: is read by the groupings (``key_order``, which recomputes it once released)
RELEASABLE = ("tord", "side", "price", "qty", "leaves", "exec_qty", "exec_price", "acct_type",
              "order", "rside", "dq", "life", "oqty", "opx", "dist", "aggr", "fill")


@dataclass
class Batch:
    """One partition, prepared once for every detector: columns as NumPy arrays (row order of
    the partition), context columns (NaN when absent) and the order walk. The partition's
    table itself is not kept, so its memory is released once the batch is built. A scoring
    task builds only what its detectors read and drops each array once no detector still to
    run reads it (``release``): its peak is about the batch, ≤ 2× the spooled partition."""

    ts: np.ndarray
    tord: np.ndarray  # rows in time order (ties: input order)
    side: np.ndarray
    event: np.ndarray
    order: np.ndarray
    n_orders: int
    price: np.ndarray
    qty: np.ndarray
    leaves: np.ndarray
    exec_qty: np.ndarray
    exec_price: np.ndarray
    ctx: dict[str, np.ndarray]
    codes: dict[str, np.ndarray]
    names: dict[str, list[str]]
    acct_type: np.ndarray  # 1 client, 0 house, -1 unknown
    rside: np.ndarray
    dq: np.ndarray
    life: np.ndarray
    oqty: np.ndarray
    opx: np.ndarray
    dist: np.ndarray
    aggr: np.ndarray
    fill: np.ndarray
    line: np.ndarray | None  # provenance (breadcrumbs): None until ``provenance()`` reads it
    offset: np.ndarray | None
    #: rows ordered by (key code, ts, row) per key tuple, computed once for every detector
    _key_orders: dict[tuple[str, ...], np.ndarray] = field(default_factory=dict, repr=False)
    #: where ``provenance()`` and ``ensure_codes()`` read what was not built
    _source: LazyColumns | None = field(default=None, repr=False)
    _day_names: dict[str, list[str]] | None = field(default=None, repr=False)

    def ensure_codes(self, columns: tuple[str, ...]) -> None:
        """Read the codes of ``columns`` not read yet (a lazily built batch reads only the
        codes its kernels need; the explanations name traders, accounts and sources)."""
        for c in columns:
            if c in self.codes or self._source is None:
                continue
            if c in self._source.column_names:
                self.codes[c], self.names[c] = _coded(self._source, c, self._day_names)
            elif c == "owner":  # no reference data: an account is its own beneficial owner
                self.ensure_codes(("account",))
                self.codes[c], self.names[c] = self.codes["account"], self.names["account"]

    def provenance(self) -> tuple[np.ndarray, np.ndarray]:
        """``(line, offset)`` of every row, read from the partition on first use: only the
        explanations need them, after the kernels, when the arrays those read are gone."""
        if self.line is None or self.offset is None:
            n = self.ts.shape[0]
            self.line = _provenance(self._source, "line", n)
            self.offset = _provenance(self._source, "offset", n)
        return self.line, self.offset

    def release(self, fields: set[str], context_columns: set[str]) -> None:
        """Drop the arrays of ``RELEASABLE`` not in ``fields`` and the context columns not in
        ``context_columns`` (what the detectors still to run read): a task holds the union
        of what its remaining detectors need, not of all. A dropped array is ``None``, so a
        detector that reads one it did not declare fails loudly (numba refuses ``None``)."""
        for name in RELEASABLE:
            if name not in fields:
                setattr(self, name, None)
        for c in [c for c in self.ctx if c not in context_columns]:
            del self.ctx[c]

    def key_order(self, keys: tuple[str, ...]) -> np.ndarray:
        """Row indices sorted by (``composite(keys)``, ts, row): a stable sort of the time order
        by key code (linear for integer keys), cached per key tuple."""
        found = self._key_orders.get(keys)
        if found is None:
            span = 1
            for k in keys:
                span *= len(self.names[k]) + 1
            if span <= 4 * self.ts.shape[0] + 1024:
                # a counting sort on the key columns themselves: no composite code, gathered
                # copy or argsort permutation at the task's peak (24 B per row), same order
                found = _stable_by_code(self.time_order(), *key_columns(self, keys), span)
            else:
                code, tord = composite(self, keys), self.time_order()
                found = tord[np.argsort(code[tord], kind="stable")]
            self._key_orders[keys] = found
        return found

    def time_order(self) -> np.ndarray:
        """``tord``, or the same order again where it was released (``release``)."""
        return self.tord if self.tord is not None else np.argsort(self.ts, kind="stable")

    @property
    def mid(self) -> np.ndarray:
        return (self.ctx["ctx_bid"] + self.ctx["ctx_ask"]) / 2

    @classmethod
    def build(cls, table: pa.Table | LazyColumns, day: DayMarket | None = None,
              day_names: dict[str, list[str]] | None = None,
              ctx_columns: tuple[str, ...] = CONTEXT_COLUMNS,
              fields: tuple[str, ...] = RELEASABLE,
              code_columns: tuple[str, ...] = CODE_COLUMNS) -> Batch:
        """Prepare a partition. ``table`` is either canonical events (string columns, ``ctx_*``
        columns if joined already) or a spooled partition (``appliance.spool``: string
        columns as int32 codes into ``day_names``, without ``ctx_*``; then ``day`` joins the
        market context here, per partition), whole or read a column at a time
        (``LazyColumns``). Only ``ctx_columns`` of the context are kept (the walk's
        ``ctx_bid``, ``ctx_ask`` and ``ctx_tick`` always). Of the ``RELEASABLE`` arrays only
        ``fields`` are kept (the walk's inputs are dropped after it), and from ``LazyColumns``
        only the codes of ``code_columns`` (with ``instrument`` and ``symbol``) are read
        here, the others when asked for (``ensure_codes``).

        Each column is converted and dropped before the next is read, and the steps with the
        largest temporaries (the order ids' hash table) come first, while little else is
        held: the peak is the batch itself, not the batch plus its source."""
        cols = table.column_names
        codes: dict[str, np.ndarray] = {}
        names: dict[str, list[str]] = {}

        def coded(c: str) -> None:
            if c in cols:
                codes[c], names[c] = _coded(table, c, day_names)

        oid, n_oid = order_id_codes(table.column("order_id"))
        n = oid.shape[0]
        coded("instrument")
        order, n_orders = order_codes(oid, n_oid, codes["instrument"], len(names["instrument"]))
        del oid
        ts = _ints(table.column("ts"))
        tord = np.argsort(ts, kind="stable")  # ties: input order
        coded("symbol")

        def context(which: tuple[str, ...]) -> dict[str, np.ndarray]:
            if day is not None:
                return attach_arrays(ts, tord, codes["symbol"], names["symbol"], day, which)
            return {c: (_floats(table.column(c)) if c in cols else np.full(n, np.nan))
                    for c in which}  # fmt: skip

        # the walk's context now, the rest after it: those then reuse the walk's state
        ctx = context(WALK_CONTEXT)
        side, event = (_ints(table.column(c), np.int8)
                       if pa.types.is_integer(table.schema.field(c).type)
                       else _codes(table.column(c), values)
                       for c, values in (("side", SIDES), ("event", EVENTS)))
        price, qty = _floats(table.column("price")), _floats(table.column("qty"))
        leaves, exq = _floats(table.column("leaves_qty")), _floats(table.column("exec_qty"))
        if n:
            w = walk(tord, ts, side, event, order, n_orders, price, qty, leaves, exq,
                     ctx["ctx_bid"], ctx["ctx_ask"], ctx["ctx_tick"])
        else:
            w = (np.zeros(0, np.int8), np.zeros(0), np.zeros(0, np.int64), np.zeros(0),
                 np.zeros(0), np.zeros(0), np.zeros(0, np.bool_), np.zeros(0))
        # the walk's inputs no detector reads go now, before the next columns are read
        price, side, qty, leaves, exq = (x if f in fields else None for x, f in (
            (price, "price"), (side, "side"), (qty, "qty"), (leaves, "leaves"),
            (exq, "exec_qty")))
        ctx.update(context(tuple(c for c in ctx_columns if c not in WALK_CONTEXT)))
        ctx = {c: ctx[c] for c in CONTEXT_COLUMNS if c in ctx}  # the usual column order
        lazy = isinstance(table, LazyColumns)  # codes, provenance: read when needed
        for c in ("trader", "account", "owner", "source"):
            if not lazy or c in code_columns:
                coded(c)
        if "owner" not in cols and "account" in codes:  # no reference data: an account is
            codes["owner"], names["owner"] = codes["account"], names["account"]  # its owner
        if "acct_type" not in fields:
            acct_type = None
        elif "account_type" not in cols:
            acct_type = np.full(n, -1, np.int8)
        elif pa.types.is_integer(table.schema.field("account_type").type):
            acct_type = _ints(table.column("account_type"), np.int8)
        else:
            acct_type = _codes(table.column("account_type"), ("house", "client"))
        exec_price = _floats(table.column("exec_price")) if "exec_price" in fields else None
        return cls(ts, tord, side, event, order, n_orders, price, qty, leaves, exq,
                   exec_price, ctx, codes, names, acct_type, *w,
                   None if lazy else _provenance(table, "line", n),
                   None if lazy else _provenance(table, "offset", n),
                   _source=table if lazy else None, _day_names=day_names)


def _coded(table: pa.Table | LazyColumns, c: str, day_names: dict[str, list[str]] | None
           ) -> tuple[np.ndarray, list[str]]:
    """Partition codes of a string column (spooled: day codes made dense) and their names."""
    if day_names is not None and pa.types.is_integer(table.schema.field(c).type):
        return dense_codes(_ints(table.column(c), np.int32), day_names[c])
    return dict_codes(table.column(c))


@dataclass(frozen=True)
class LazyColumns:
    """A partition whose columns are read when asked for, each a piece at a time (``read``:
    a column name → its chunks), so that a task holds the memory-mapped pages of one piece
    of one column while converting it (``Batch.build``), never its whole partition next to
    the batch built from it."""

    read: Callable[[str], Iterable[pa.Array]]
    schema: pa.Schema
    num_rows: int

    @property
    def column_names(self) -> list[str]:
        return self.schema.names

    def column(self, name: str) -> StreamedColumn:
        return StreamedColumn(self.read, name, self.schema.field(name).type, self.num_rows)


@dataclass(frozen=True)
class StreamedColumn:
    """One column of a ``LazyColumns``: ``chunks`` reads it afresh, a piece at a time."""

    read: Callable[[str], Iterable[pa.Array]]
    name: str
    type: pa.DataType
    rows: int

    def __len__(self) -> int:
        return self.rows

    @property
    def chunks(self) -> Iterable[pa.Array]:
        return self.read(self.name)


@njit(cache=True)
def _intern(offsets, data, slots):  # pragma: no cover - numba
    """Dense codes of strings ``data[offsets[r]:offsets[r + 1]]`` in order of first
    appearance: an open-addressing hash table (``slots``: a power of two, ≥ 2× the rows) of
    each distinct string's first row, compared byte by byte (no collision can merge ids)."""
    n = offsets.shape[0] - 1
    mask = slots.shape[0] - 1
    first = np.empty(n, np.int64)  # row of each code's first occurrence
    out = np.empty(n, np.int32)
    k = 0
    for r in range(n):
        a, b = offsets[r], offsets[r + 1]
        h = np.uint64(14695981039346656037)
        for q in range(a, b):
            h = (h ^ np.uint64(data[q])) * np.uint64(1099511628211)
        s = np.int64(h & np.uint64(mask))
        while True:
            c = slots[s]
            if c < 0:
                slots[s] = k
                first[k] = r
                out[r] = k
                k += 1
                break
            f = first[c]
            fa, fb = offsets[f], offsets[f + 1]
            same = fb - fa == b - a
            if same:
                for q in range(b - a):
                    if data[fa + q] != data[a + q]:
                        same = False
                        break
            if same:
                out[r] = c
                break
            s = (s + 1) & mask
    return out, k


def order_id_codes(col) -> tuple[np.ndarray, int]:
    """Dense int32 codes of the order ids in order of first appearance (what ``dict_codes``
    gives), and how many there are. Interned here from the string buffers (one copy of the
    bytes, a table of 4 B per slot): Arrow's ``dictionary_encode`` needs ≈ 60 B per row of
    hash table and dictionary, which its allocator keeps resident under the batch built next;
    the ids themselves are not kept (the features need the codes only)."""
    n = len(col)
    if not pa.types.is_string(col.type) or (isinstance(col, pa.ChunkedArray | pa.Array)
                                            and col.null_count):
        return _arrow_codes(col)
    offsets = np.empty(n + 1, np.int64)
    offsets[0] = 0
    parts, at, size = [], 0, 0
    for c in col.chunks if isinstance(col, pa.ChunkedArray | StreamedColumn) else [col]:
        if c.null_count:  # pragma: no cover - a spooled order id is never null
            return _arrow_codes(col)
        rel = np.frombuffer(c.buffers()[1], np.int32, len(c) + 1, c.offset * 4)
        offsets[at + 1:at + len(c) + 1] = rel[1:] - rel[0] + size
        # a copy of the piece's bytes: its pages are released with it
        parts.append(np.frombuffer(c.buffers()[2], np.uint8, int(rel[-1] - rel[0]),
                                   int(rel[0])).copy() if len(c) else np.zeros(0, np.uint8))
        at, size = at + len(c), size + int(rel[-1] - rel[0])
    data = np.concatenate(parts) if parts else np.zeros(0, np.uint8)
    del parts
    slots = np.full(1 << max(int(2 * n - 1).bit_length(), 1), -1, np.int32)
    return _intern(offsets, data, slots)


def _arrow_codes(col) -> tuple[np.ndarray, int]:
    """``order_id_codes`` by Arrow (nulls → '', any string type)."""
    if isinstance(col, StreamedColumn | pa.Array):
        col = pa.chunked_array(list(col.chunks) if isinstance(col, StreamedColumn) else [col],
                               col.type)
    enc = pc.dictionary_encode(pc.fill_null(col, "") if col.null_count else col).combine_chunks()
    return np.asarray(enc.indices.to_numpy(), dtype=np.int32), len(enc.dictionary)


def _provenance(table: pa.Table | LazyColumns, name: str, n: int) -> np.ndarray:
    if name not in table.column_names:
        return np.zeros(n, np.int64)
    return _ints(table.column(name))


def _ints(col, dtype=np.int64) -> np.ndarray:
    if pa.types.is_timestamp(col.type):
        return _numpy(col, dtype, pa.int64())
    return _numpy(col, dtype, col.type)


@njit(cache=True)
def _dense(day_codes, n_day):  # pragma: no cover - numba
    remap = np.full(n_day, -1, np.int64)
    out = np.empty(day_codes.shape[0], np.int32)  # half of int64: a partition's codes fit
    seen = np.empty(n_day, np.int64)
    k = 0
    for r in range(day_codes.shape[0]):
        c = day_codes[r]
        if remap[c] < 0:
            remap[c] = k
            seen[k] = c
            k += 1
        out[r] = remap[c]
    return out, seen[:k]


def dense_codes(day_codes: np.ndarray, day_names: list[str]) -> tuple[np.ndarray, list[str]]:
    """Day-level codes → partition codes in order of first appearance, exactly what
    ``dict_codes`` gives on the same rows as strings (so every result is the same)."""
    out, seen = _dense(day_codes, max(len(day_names), 1))
    return out, [day_names[c] for c in seen.tolist()]


@njit(cache=True)
def _order_pairs(oid, n_oid, inst):  # pragma: no cover - numba
    """Order id codes are the order numbers unless an order id occurs in two instruments."""
    first = np.full(n_oid, -1, np.int64)
    for r in range(oid.shape[0]):
        o = oid[r]
        if first[o] < 0:
            first[o] = inst[r]
        elif first[o] != inst[r]:
            return False
    return True


def order_codes(oid: np.ndarray, n_oid: int, inst: np.ndarray, n_inst: int
                ) -> tuple[np.ndarray, int]:
    """One dense number per order (order id × instrument: ids are unique per instrument only).
    The numbering is internal (state arrays), so any bijection gives the same features."""
    if n_inst <= 1 or _order_pairs(oid, max(n_oid, 1), inst):
        return oid, n_oid
    _, order = np.unique(oid.astype(np.int64) * n_inst + inst, return_inverse=True)
    order = order.astype(np.int32)
    return order, (int(order.max()) + 1 if order.size else 0)


@dataclass(frozen=True)
class Grouping:
    """Clusters as row indices into a ``Batch``: cluster ``c`` is ``idx[starts[c]:starts[c+1]]``
    (time order). ``name_row`` is the row whose trader/instrument name the cluster."""

    idx: np.ndarray
    starts: np.ndarray
    name_row: np.ndarray

    @property
    def count(self) -> int:
        return int(self.starts.shape[0] - 1)

    def rows(self, c: int) -> np.ndarray:
        """Cluster ``c``'s rows in time order."""
        return self.idx[self.starts[c]:self.starts[c + 1]]

    def sizes(self) -> np.ndarray:
        return np.diff(self.starts)

    def first_rows(self) -> np.ndarray:
        """Each cluster's first row in time order."""
        return self.idx[self.starts[:-1]] if self.count else np.zeros(0, np.int64)

    def last_rows(self) -> np.ndarray:
        return self.idx[self.starts[1:] - 1] if self.count else np.zeros(0, np.int64)

    @classmethod
    def empty(cls) -> Grouping:
        return cls(np.zeros(0, np.int64), np.zeros(1, np.int64), np.zeros(0, np.int64))


@njit(cache=True)
def _stable_by_code(tord, k1, k2, w2, span):  # pragma: no cover - numba
    """``tord`` stably sorted by the key code ``k1 * w2 + k2`` (``k1`` alone when ``w2`` is
    1; values in ``[0, span)``): a counting sort."""
    at = np.zeros(span + 1, np.int64)
    for r in range(k1.shape[0]):
        at[k1[r] * w2 + (k2[r] if w2 > 1 else 0) + 1] += 1
    for c in range(span):
        at[c + 1] += at[c]
    out = np.empty(tord.shape[0], np.int64)
    for j in range(tord.shape[0]):
        r = tord[j]
        c = k1[r] * w2 + (k2[r] if w2 > 1 else 0)
        out[at[c]] = r
        at[c] += 1
    return out


def key_columns(batch: Batch, keys: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray, int]:
    """``(k1, k2, w2)`` whose per-row ``k1 * w2 + k2`` (``k1`` when ``w2`` is 1) is
    ``composite(keys)``: the key columns themselves for one or two keys (the kernels combine
    them per row, without an 8 B per row code array), else the composite code."""
    if len(keys) == 1:
        return batch.codes[keys[0]], batch.codes[keys[0]], 1
    if len(keys) == 2:
        return batch.codes[keys[0]], batch.codes[keys[1]], len(batch.names[keys[1]]) + 1
    code = composite(batch, keys)
    return code, code, 1


def composite(batch: Batch, keys: tuple[str, ...], rows: np.ndarray | None = None
              ) -> np.ndarray:
    """One int64 code per row (of ``rows``, default all) for a tuple of key columns."""
    code = np.zeros(batch.ts.shape[0] if rows is None else rows.shape[0], np.int64)
    for k in keys:  # in place: one array of 8 B per row, no temporaries
        code *= len(batch.names[k]) + 1
        code += batch.codes[k] if rows is None else batch.codes[k][rows]
    return code


def adaptive_gaps(info: dict[str, InstrumentInfo], params: dict[str, Any]) -> dict[str, int]:
    """Gap per instrument: ``gap_events`` × the mean time between its market events, clamped to
    [``gap_seconds``, ``max_gap_seconds``]; a fixed ``gap_seconds`` when ``gap_events`` is 0 or
    the instrument's activity is unknown."""
    lo = params.get("gap_seconds", 5.0) * 1e9
    hi = max(params.get("max_gap_seconds", 60.0) * 1e9, lo)
    k = params.get("gap_events", 0)
    out = {}
    for name, inf in info.items():
        g = k * inf.mean_gap_ns if k and np.isfinite(inf.mean_gap_ns) else lo
        out[name] = int(min(max(g, lo), hi))
    return out


def gap_grouping(batch: Batch, keys: tuple[str, ...], gaps: dict[str, int],
                 default_gap_ns: int, rows: np.ndarray | None = None) -> Grouping:
    """Sort ``rows`` (default: all) by (key, ts, input order); a new cluster starts at a key
    change or a pause longer than the gap of the row's instrument."""
    n = batch.ts.shape[0] if rows is None else rows.shape[0]
    if n == 0:
        return Grouping.empty()
    order = batch.key_order(keys)
    if rows is not None:
        keep = np.zeros(batch.ts.shape[0], bool)
        keep[rows] = True
        order = order[keep[order]]
    inst_gap = np.array([gaps.get(name, default_gap_ns) for name in batch.names["instrument"]],
                        dtype=np.int64)
    starts = _gap_starts(order, *key_columns(batch, keys), batch.ts,
                         batch.codes["instrument"], inst_gap)
    # the cached key order itself (not a copy): every grouping of these keys shares it
    order = order.astype(np.int64, copy=False)
    return Grouping(order, starts, order[starts[:-1]])


@njit(cache=True)
def _gap_starts(order, k1, k2, w2, ts, inst, inst_gap):  # pragma: no cover - numba
    """Cluster starts along ``order`` (and the end): a key change (``key_columns``), or a
    pause longer than the gap of the row's instrument. One pass, without a gathered copy of
    each column."""
    n = order.shape[0]
    starts = np.empty(n + 1, np.int64)
    k = 0
    for j in range(n):
        r = order[j]
        p = order[j - 1] if j else r
        if j == 0 or k1[r] != k1[p] or (w2 > 1 and k2[r] != k2[p]) or \
                ts[r] - ts[p] > inst_gap[inst[r]]:
            starts[k] = j
            k += 1
    starts[k] = n
    return starts[:k + 1].copy()


def identity_grouping(clusters: Clusters) -> Grouping:
    """The clusters of an already clustered table (rows in order)."""
    idx = np.arange(clusters.events.num_rows, dtype=np.int64)
    return Grouping(idx, clusters.starts.astype(np.int64), clusters.starts[:-1].astype(np.int64))


@njit(cache=True)
def nz(x):  # pragma: no cover - numba
    return 0.0 if np.isnan(x) else x


@njit(cache=True)
def ratio(a, b):  # pragma: no cover - numba
    return a / b if b > 0 else np.nan


class RulesDetector(ABC):
    """Scaffolding for a detector with a transparent rules score: subclasses define ``features``,
    ``group``, ``kernel``, ``rules`` (fired mask, log2-odds weight) and ``reasons`` (one text per
    rule, in the same order). Score = ``base_log2_odds`` + the weights of the rules that fired,
    mapped to 200–800; the explanation is the text of every rule that fired."""

    name: ClassVar[str]
    model_version: ClassVar[str]
    description: ClassVar[str]
    #: rows with equal values of these columns always land in one partition
    partition_keys: ClassVar[tuple[str, ...]] = ("trader", "instrument")
    cluster_keys: ClassVar[tuple[str, ...]] = ("trader", "instrument")
    features: ClassVar[tuple[Feature, ...]]
    base_log2_odds: ClassVar[float] = -6.0
    #: the cluster spans several traders (owner or instrument keys): name them all
    multi_trader: ClassVar[bool] = False
    #: the market context columns the kernel reads: a scoring task joins only those of its
    #: detectors (each is 8 B per row of the partition)
    context_columns: ClassVar[tuple[str, ...]] = CONTEXT_COLUMNS
    #: the ``RELEASABLE`` batch arrays its grouping and kernel read (the rest are dropped
    #: once no detector still to run on the partition reads them)
    batch_fields: ClassVar[tuple[str, ...]] = RELEASABLE
    #: the ``CODE_COLUMNS`` its grouping and kernel read (its cluster keys among them)
    code_columns: ClassVar[tuple[str, ...]] = CODE_COLUMNS

    def group(self, batch: Batch, info: dict[str, InstrumentInfo],
              params: dict[str, Any]) -> Grouping:
        gaps = adaptive_gaps(info, params)
        return gap_grouping(batch, self.cluster_keys, gaps,
                            int(params.get("gap_seconds", 5.0) * 1e9))

    @abstractmethod
    def kernel(self, batch: Batch, g: Grouping, params: dict[str, Any]) -> np.ndarray:
        """The ``(n_clusters, len(features))`` feature matrix (a numba kernel's output)."""

    @abstractmethod
    def rules(self, m: np.ndarray) -> list[tuple[np.ndarray, float]]:
        """``(fired mask, log2-odds weight)`` per rule, in explanation order."""

    @abstractmethod
    def reasons(self, v: dict[str, float]) -> list[str]:
        """One plain-language sentence per rule, same order, for a cluster's feature values."""

    # -- the Detector protocol
    def compute(self, clusters: Clusters, inputs=None, params: dict[str, Any] | None = None):
        """Features of already clustered events (tests, re-scoring)."""
        batch = Batch.build(clusters.events)
        return self.kernel(batch, identity_grouping(clusters), params or {})

    def score(self, matrix: np.ndarray) -> Scores:
        log2_odds = np.full(matrix.shape[0], float(self.base_log2_odds))
        for fired, weight in self.rules(matrix):
            log2_odds += np.where(fired, weight, 0.0)
        return Scores(score_from_log2_odds(log2_odds), probability_from_log2_odds(log2_odds),
                      log2_odds)

    def explain(self, row: np.ndarray) -> list[str]:
        return self.explain_rows(row[None, :])[0]

    def explain_rows(self, m: np.ndarray) -> list[list[str]]:
        """``explain`` of each row of ``m``, the rules evaluated once for all of them (they
        are row by row)."""
        fired = [np.asarray(mask, bool) for mask, _ in self.rules(m)]
        names = [f.name for f in self.features]
        out = []
        for i, row in enumerate(m.tolist()):
            texts = self.reasons(dict(zip(names, row, strict=True)))
            out.append([t for t, f in zip(texts, fired, strict=True) if f[i]] or [
                f"no {self.name.replace('_', ' ')} rule fired: cluster scored at the floor"])
        return out


def col(m: np.ndarray, features: tuple[Feature, ...], name: str, nan: float = 0.0) -> np.ndarray:
    """A feature column by name, NaN replaced by ``nan``."""
    i = [f.name for f in features].index(name)
    return np.nan_to_num(m[:, i], nan=nan)
