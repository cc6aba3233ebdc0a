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
    idx = pc.index_in(col, value_set=pa.array(values))
    return np.asarray(pc.fill_null(idx, -1).to_numpy(), dtype=np.int8)


def _floats(col) -> np.ndarray:
    """A numeric column as float64 with NaN for nulls."""
    col = col.cast(pa.float64())
    values = col.to_numpy() if isinstance(col, pa.ChunkedArray) else col.to_numpy(
        zero_copy_only=False)
    return np.asarray(values, dtype=np.float64)


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


@dataclass
class Batch:
    """One partition, prepared once for every detector: columns as NumPy arrays (row order of
    the partition), context columns (NaN when absent) and the order walk. The partition's
    table itself is not kept, so its memory is released once the batch is built."""

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
    line: np.ndarray  # provenance (breadcrumbs)
    offset: np.ndarray
    #: rows ordered by (key code, ts, row) per key tuple, computed once for every detector
    _key_orders: dict[tuple[str, ...], np.ndarray] = field(default_factory=dict, repr=False)

    def key_order(self, keys: tuple[str, ...]) -> np.ndarray:
        """Row indices sorted by (``composite(keys)``, ts, row): a stable sort of the time order
        by key code (linear for integer keys), cached per key tuple."""
        found = self._key_orders.get(keys)
        if found is None:
            code = composite(self, keys)
            found = self.tord[np.argsort(code[self.tord], kind="stable")]
            self._key_orders[keys] = found
        return found

    @property
    def mid(self) -> np.ndarray:
        return (self.ctx["ctx_bid"] + self.ctx["ctx_ask"]) / 2

    @classmethod
    def build(cls, table: pa.Table, day: DayMarket | None = None,
              day_names: dict[str, list[str]] | None = None) -> Batch:
        """Prepare a partition. ``table`` is either canonical events (string columns, ``ctx_*``
        columns if joined already) or a spooled partition (``appliance.spool``: string
        columns as int32 codes into ``day_names``, without ``ctx_*``; then ``day`` joins the
        market context here, per partition)."""
        n = table.num_rows
        cols = table.column_names
        codes, names = {}, {}
        for c in ("trader", "instrument", "symbol", "account", "owner", "source"):
            if c not in cols:
                continue
            if day_names is not None and pa.types.is_integer(table.schema.field(c).type):
                codes[c], names[c] = dense_codes(_ints(table.column(c)), day_names[c])
            else:
                codes[c], names[c] = dict_codes(table.column(c))
        if "owner" not in codes:  # no reference data: an account is its own beneficial owner
            codes["owner"], names["owner"] = codes["account"], names["account"]
        ts = _ints(table.column("ts"))
        tord = np.argsort(ts, kind="stable").astype(np.int64)  # ties: input order
        oid, oid_names = dict_codes(table.column("order_id"))
        order, n_orders = order_codes(oid, len(oid_names), codes["instrument"],
                                      len(names["instrument"]))
        if day is not None:
            ctx = attach_arrays(ts, tord, codes["symbol"], names["symbol"], day)
        else:
            ctx = {c: (_floats(table.column(c)) if c in cols else np.full(n, np.nan))
                   for c in CONTEXT_COLUMNS}  # fmt: skip
        if "account_type" not in cols:
            acct_type = np.full(n, -1, np.int8)
        elif pa.types.is_integer(table.schema.field("account_type").type):
            acct_type = _ints(table.column("account_type"), np.int8)
        else:
            acct_type = _codes(table.column("account_type"), ("house", "client"))
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
        return cls(ts, tord, side, event, order, n_orders, price, qty, leaves, exq,
                   _floats(table.column("exec_price")), ctx,
                   codes, names, acct_type, *w, _provenance(table, "line"),
                   _provenance(table, "offset"))


def _provenance(table: pa.Table, name: str) -> np.ndarray:
    if name not in table.column_names:
        return np.zeros(table.num_rows, np.int64)
    return np.asarray(table.column(name).to_numpy(), dtype=np.int64)


def _ints(col, dtype=np.int64) -> np.ndarray:
    if pa.types.is_timestamp(col.type):
        col = col.cast(pa.int64())
    return np.asarray(col.to_numpy(), dtype=dtype)


@njit(cache=True)
def _dense(day_codes, n_day):  # pragma: no cover - numba
    remap = np.full(n_day, -1, np.int64)
    out = np.empty(day_codes.shape[0], np.int64)
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
    _, order = np.unique(oid * n_inst + inst, return_inverse=True)
    order = order.astype(np.int64)
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


def composite(batch: Batch, keys: tuple[str, ...]) -> np.ndarray:
    """One int64 code per row for a tuple of key columns."""
    code = np.zeros(batch.ts.shape[0], np.int64)
    for k in keys:
        code = code * (len(batch.names[k]) + 1) + batch.codes[k]
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
    code = composite(batch, keys)
    order = batch.key_order(keys)
    if rows is not None:
        keep = np.zeros(batch.ts.shape[0], bool)
        keep[rows] = True
        order = order[keep[order]]
    inst_gap = np.array([gaps.get(name, default_gap_ns) for name in batch.names["instrument"]],
                        dtype=np.int64)
    gap = inst_gap[batch.codes["instrument"][order]]
    c, t = code[order], batch.ts[order]
    boundary = np.empty(n, bool)
    boundary[0] = True
    boundary[1:] = (c[1:] != c[:-1]) | (np.diff(t) > gap[1:])
    starts = np.append(np.flatnonzero(boundary), n).astype(np.int64)
    return Grouping(order.astype(np.int64), starts, order[starts[:-1]])


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
        v = {f.name: float(row[i]) for i, f in enumerate(self.features)}
        fired = [bool(mask[0]) for mask, _ in self.rules(row[None, :])]
        texts = self.reasons(v)
        return [t for t, f in zip(texts, fired, strict=True) if f] or [
            f"no {self.name.replace('_', ' ')} rule fired: cluster scored at the floor"
        ]


def col(m: np.ndarray, features: tuple[Feature, ...], name: str, nan: float = 0.0) -> np.ndarray:
    """A feature column by name, NaN replaced by ``nan``."""
    i = [f.name for f in features].index(name)
    return np.nan_to_num(m[:, i], nan=nan)
