"""Market context: an as-of join of every order event to the prevailing top of book and the tape,
plus per-instrument facts (tick size, activity, session close) the clustering rules need.

Every order event gets, from the market data of its symbol *strictly before* its timestamp (the
book the trader saw when sending it):

==================  ==========================================================================
``ctx_bid/ask``     prevailing best bid / ask (NaN before the first quote)
``ctx_bid_size``    size at the best bid / ask (visible top-of-book depth)
``ctx_last``        last trade price
``ctx_mkt_vol``     cumulative tape volume of the symbol so far (volume over a span = difference)
``ctx_mkt_buy``     cumulative buyer-initiated tape volume (trade at/above the prevailing ask, or
                    above the mid); seller-initiated = ``ctx_mkt_vol − ctx_mkt_buy`` + unsigned
``ctx_mid_after``   mid ``after_ns`` after the event (post-cancel reversal, impact)
``ctx_ref_mid``     mid of the configured reference instrument (market-wide move)
``ctx_tick``        the symbol's tick size (smallest price step seen in its quotes/orders)
==================  ==========================================================================

The result does not depend on how the events are partitioned. ``attach`` joins a whole table
(vectorised ``searchsorted`` per symbol); the run instead streams the day once through
``DayFacts`` (the day-level facts: tick per symbol, instrument spans), builds each symbol's tape
on its own (``symbol_tape``: a task per symbol) and computes the day-level facts from the
tapes' small summaries (``TapeSummary``), ships those facts to the workers once
(``DayMarket``) and each task only its own symbols' tapes, and each partition joins its own
rows with ``attach_arrays`` (a linear numba merge per symbol, same values).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numba import njit

from appliance.arrays import distinct, stable_order

CONTEXT_COLUMNS = ("ctx_bid", "ctx_ask", "ctx_bid_size", "ctx_ask_size", "ctx_last",
                   "ctx_mkt_vol", "ctx_mkt_buy", "ctx_mid_after", "ctx_ref_mid", "ctx_tick")


@dataclass(frozen=True)
class InstrumentInfo:
    """Day-level facts about one instrument, computed from the whole day (never a partition)."""

    tick: float
    mean_gap_ns: float  # mean time between market events (activity); inf if no tape
    first_ns: int
    close_ns: int  # last market event (or firm event) of the day
    day_volume: float  # tape volume of the day
    #: cumulative tape volume sampled once a second from ``first_ns`` (coarse volume lookups)
    vol_cum: np.ndarray | None = None

    def volume_between(self, t0: int, t1: int) -> float:
        """Tape volume between two times, at one-second resolution (0 without market data)."""
        if self.vol_cum is None or self.vol_cum.size == 0:
            return 0.0
        i0, i1 = ((np.array([t0, t1]) - self.first_ns) // 1_000_000_000).clip(
            0, self.vol_cum.size - 1)
        return float(self.vol_cum[i1] - self.vol_cum[i0])


def _i64(col) -> np.ndarray:
    return np.asarray(col.cast(pa.int64()).to_numpy(), dtype=np.int64)


def _f64(col) -> np.ndarray:
    return np.asarray(pc.fill_null(col.cast(pa.float64()), np.nan).to_numpy(), dtype=np.float64)


@njit(cache=True)
def _ffill(x: np.ndarray) -> np.ndarray:  # pragma: no cover - numba
    """Each NaN replaced by the last value before it (NaN before the first value)."""
    out = np.empty_like(x)
    prev = np.nan
    for i in range(x.shape[0]):
        if not np.isnan(x[i]):
            prev = x[i]
        out[i] = prev
    return out


@njit(cache=True)
def _volumes(bid, ask, last, size):  # pragma: no cover - numba
    """Cumulative traded volume and buyer-initiated volume per tape row (``bid``/``ask``
    forward-filled; a trade is a row with a ``last``; its aggressor is judged against the quote
    before it: at or through the ask, or above the mid and not at or through the bid, is a
    buy). ``size`` as ``np.nan_to_num`` makes it; the sums run in row order, as ``np.cumsum``."""
    n = last.shape[0]
    cum_vol = np.empty(n)
    cum_buy = np.empty(n)
    vol = 0.0
    buy = 0.0
    for i in range(n):
        price = last[i]
        s = 0.0
        if not np.isnan(price):
            s = size[i]
            if np.isnan(s):
                s = 0.0
            elif np.isinf(s):
                s = 1.7976931348623157e308 if s > 0 else -1.7976931348623157e308
            pb = bid[i - 1] if i > 0 else np.nan
            pa = ask[i - 1] if i > 0 else np.nan
            if price >= pa or (not (price <= pb) and price > (pb + pa) / 2):
                buy += s
            else:
                buy += 0.0
        else:
            buy += 0.0
        vol += s
        cum_vol[i] = vol
        cum_buy[i] = buy
    return cum_vol, cum_buy


def tick_size(prices: np.ndarray) -> float:
    """Smallest positive step between distinct prices (rounded to 1e-9), NaN if unknown."""
    # the distinct raw prices first (a hash pass; a tape holds few): rounding them gives the
    # same distinct rounded prices as rounding every row, without sorting every row
    raw = pc.unique(pa.array(np.asarray(prices, np.float64))).to_numpy(zero_copy_only=False)
    p = np.unique(np.round(raw[np.isfinite(raw)], 9))
    if p.size < 2:
        return float("nan")
    d = np.round(np.diff(p), 9)
    d = d[d > 0]
    return float(d.min()) if d.size else float("nan")


#: the market data columns a tape is built from (besides ``symbol``)
MARKET_COLUMNS = ("ts", "bid", "ask", "bid_size", "ask_size", "last", "last_size")


@dataclass(frozen=True)
class TapeSummary:
    """What the day-level facts need of one symbol's tape (``DayFacts.day_market`` and
    ``instrument_info``): a few numbers and the per-second volume, so that the driver never
    holds the tapes themselves."""

    tick: float
    first_ns: int
    close_ns: int
    rows: int
    day_volume: float
    #: cumulative tape volume once a second from ``first_ns`` to ``close_ns`` (+1 s)
    vol_cum: np.ndarray


class _Tape:
    """One symbol's quotes and trades, as sorted NumPy arrays."""

    def __init__(self, market: pa.Table):
        ts = _i64(market.column("ts"))
        # rows in time order (arrival order among equal times); usually already so: no gather
        order = None if ts.size < 2 or (ts[1:] >= ts[:-1]).all() else \
            np.argsort(ts, kind="stable")

        def column(name: str) -> np.ndarray:
            values = _f64(market.column(name))
            return values if order is None else values[order]

        # (a copy, not a view: the tape must not keep the market rows' buffers alive)
        self.ts = (ts if ts.flags.owndata else ts.copy()) if order is None else ts[order]
        bid, ask = column("bid"), column("ask")
        self.bid, self.ask = _ffill(bid), _ffill(ask)
        self.bid_size = _ffill(column("bid_size"))
        self.ask_size = _ffill(column("ask_size"))
        last = column("last")
        # aggressor of each trade: against the quote prevailing before it
        self.cum_vol, self.cum_buy = _volumes(self.bid, self.ask, last, column("last_size"))
        self.last = _ffill(last)
        self.tick = tick_size(np.concatenate((bid, ask)))

    @property
    def mid(self) -> np.ndarray:
        """Mid quote per row, computed when asked (the joins compute it per row: a tape keeps
        8 arrays, not 9)."""
        return (self.bid + self.ask) / 2

    def before(self, t: np.ndarray) -> np.ndarray:
        """Index of the last market row strictly before each t (-1: none)."""
        return np.searchsorted(self.ts, t, side="left") - 1

    def at_or_before(self, t: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.ts, t, side="right") - 1

    def summary(self) -> TapeSummary:
        """The tape's day-level facts (small), as ``DayFacts`` uses them."""
        if self.ts.size == 0:  # pragma: no cover - a tape always has rows
            return TapeSummary(self.tick, 0, 0, 0, 0.0, np.zeros(0))
        t0, t1 = int(self.ts[0]), int(self.ts[-1])
        return TapeSummary(self.tick, t0, t1, int(self.ts.size), float(self.cum_vol[-1]),
                           _per_second(self, t0, t1))


#: the public name of a symbol's tape (built and shipped by the run's tasks)
Tape = _Tape


def symbol_tape(market: pa.Table) -> _Tape:
    """One symbol's tape from its market rows (``MARKET_COLUMNS``, in arrival order)."""
    return _Tape(market)


def _take(x: np.ndarray, i: np.ndarray, fill: float = np.nan) -> np.ndarray:
    out = x[np.maximum(i, 0)] if x.size else np.full(i.size, fill)
    return np.where(i >= 0, out, fill)


def instrument_of_symbol(events: pa.Table) -> dict[str, str]:
    pairs = pa.table({"s": events.column("symbol"), "i": events.column("instrument")})
    pairs = pairs.group_by(["s", "i"]).aggregate([])
    return dict(zip(pairs.column("s").to_pylist(), pairs.column("i").to_pylist(), strict=True))


Tapes = dict[str, _Tape]
#: per symbol, its tape or just the tape's summary (all the day-level facts need)
Summaries = Mapping[str, _Tape | TapeSummary]


def _summary(tape: _Tape | TapeSummary | None) -> TapeSummary | None:
    return tape.summary() if isinstance(tape, _Tape) else tape


def attach(events: pa.Table, market: Tapes, *, after_ns: int = 1_000_000_000,
           reference_symbol: str = "") -> pa.Table:
    """Return ``events`` with the ``ctx_*`` columns appended (NaN where there is no market)."""
    n = events.num_rows
    cols = {c: np.full(n, np.nan) for c in CONTEXT_COLUMNS}
    if n:
        ts = _i64(events.column("ts"))
        sym = pc.dictionary_encode(events.column("symbol")).combine_chunks()
        codes = sym.indices.to_numpy()
        prices = _f64(events.column("price"))
        for k, name in enumerate(sym.dictionary.to_pylist()):
            rows = np.flatnonzero(codes == k)
            t = ts[rows]
            tape = market.get(name)
            if tape is None:
                cols["ctx_tick"][rows] = tick_size(prices[rows])
                continue
            i = tape.before(t)
            cols["ctx_bid"][rows] = _take(tape.bid, i)
            cols["ctx_ask"][rows] = _take(tape.ask, i)
            cols["ctx_bid_size"][rows] = _take(tape.bid_size, i)
            cols["ctx_ask_size"][rows] = _take(tape.ask_size, i)
            cols["ctx_last"][rows] = _take(tape.last, i)
            cols["ctx_mkt_vol"][rows] = _take(tape.cum_vol, i, 0.0)
            cols["ctx_mkt_buy"][rows] = _take(tape.cum_buy, i, 0.0)
            cols["ctx_mid_after"][rows] = _take(tape.mid, tape.at_or_before(t + after_ns))
            tick = tape.tick if np.isfinite(tape.tick) else tick_size(prices[rows])
            cols["ctx_tick"][rows] = tick
        ref = market.get(reference_symbol) if reference_symbol else None
        if ref is not None:
            cols["ctx_ref_mid"] = _take(ref.mid, ref.before(ts))
    out = events
    for c in CONTEXT_COLUMNS:
        arr = pa.array(cols[c], pa.float64())
        if c in out.column_names:
            out = out.set_column(out.column_names.index(c), c, arr)
        else:
            out = out.append_column(c, arr)
    return out


def tapes(market: pa.Table | None) -> Tapes:
    """Split a day's market data by symbol into sorted arrays (build once per day)."""
    if market is None or market.num_rows == 0:
        return {}
    sym = pc.dictionary_encode(market.column("symbol")).combine_chunks()
    codes = sym.indices.to_numpy()
    by_symbol = stable_order(codes)  # one pass, not a scan per symbol
    bounds = np.searchsorted(codes[by_symbol], np.arange(len(sym.dictionary) + 1))
    ordered = market.take(pa.array(by_symbol))
    return {name: _Tape(ordered.slice(bounds[k], bounds[k + 1] - bounds[k]))
            for k, name in enumerate(sym.dictionary.to_pylist())}


def instrument_info(events: pa.Table, market: Tapes) -> dict[str, InstrumentInfo]:
    """Per instrument: tick, activity (mean gap between market events), session span, volume."""
    info: dict[str, InstrumentInfo] = {}
    if events.num_rows == 0:
        return info
    ts = _i64(events.column("ts"))
    prices = _f64(events.column("price"))
    sym_of = instrument_of_symbol(events)
    inst = pc.dictionary_encode(events.column("instrument")).combine_chunks()
    codes = inst.indices.to_numpy()
    for k, name in enumerate(inst.dictionary.to_pylist()):
        rows = codes == k
        symbols = [s for s, i in sym_of.items() if i == name]
        tape = next((market[s] for s in symbols if s in market), None)
        t = tape.ts if tape is not None and tape.ts.size else np.sort(ts[rows])
        span = float(t[-1] - t[0]) if t.size > 1 else 0.0
        # activity is the tape's; without market data it is unknown (fixed gap)
        gap = span / (t.size - 1) if tape is not None and t.size > 1 else float("inf")
        tick = tape.tick if tape is not None and np.isfinite(tape.tick) else tick_size(prices[rows])
        info[name] = InstrumentInfo(
            tick=tick, mean_gap_ns=gap, first_ns=int(t[0]), close_ns=int(t[-1]),
            day_volume=float(tape.cum_vol[-1]) if tape is not None and tape.cum_vol.size else 0.0,
            vol_cum=_per_second(tape, int(t[0]), int(t[-1])) if tape is not None else None,
        )  # fmt: skip
    return info


def _per_second(tape: _Tape, t0: int, t1: int) -> np.ndarray:
    grid = np.arange(t0, t1 + 2_000_000_000, 1_000_000_000, dtype=np.int64)
    i = tape.at_or_before(grid)
    return _take(tape.cum_vol, i, 0.0)


def tape_volume_at(market: Tapes, symbol: str, t: int) -> float:
    """Cumulative tape volume of ``symbol`` strictly before ``t`` (0 without market data)."""
    tape = market.get(symbol)
    if tape is None or tape.ts.size == 0:
        return 0.0
    i = int(tape.before(np.array([t]))[0])
    return float(tape.cum_vol[i]) if i >= 0 else 0.0


# --------------------------------------------------------------------------- per-partition join


@njit(cache=True)
def _asof_fill(rows, ts, tape_ts, bid, ask, bid_size, ask_size, last, cum_vol, cum_buy,
               after_ns, o_bid, o_ask, o_bid_size, o_ask_size, o_last, o_vol, o_buy,
               o_after):  # pragma: no cover - numba
    """As-of join of ``rows`` (time order) to one symbol's tape as a linear merge: the last tape
    row strictly before each event, and the last at or before ``t + after_ns``. Same result as
    ``_Tape.before`` / ``at_or_before`` + ``_take``. An empty output array is a column not
    asked for (not filled: a task holds only the columns its detectors read)."""
    m = tape_ts.shape[0]
    i = 0  # tape rows strictly before t
    j = 0  # tape rows at or before t + after_ns
    for r in range(rows.shape[0]):
        k = rows[r]
        t = ts[k]
        while i < m and tape_ts[i] < t:
            i += 1
        if o_after.size:
            while j < m and tape_ts[j] <= t + after_ns:
                j += 1
            if j > 0:
                o_after[k] = (bid[j - 1] + ask[j - 1]) / 2  # the mid
        if i > 0:
            p = i - 1
            if o_bid.size:
                o_bid[k] = bid[p]
            if o_ask.size:
                o_ask[k] = ask[p]
            if o_bid_size.size:
                o_bid_size[k] = bid_size[p]
            if o_ask_size.size:
                o_ask_size[k] = ask_size[p]
            if o_last.size:
                o_last[k] = last[p]
            if o_vol.size:
                o_vol[k] = cum_vol[p]
            if o_buy.size:
                o_buy[k] = cum_buy[p]
        else:
            if o_vol.size:
                o_vol[k] = 0.0
            if o_buy.size:
                o_buy[k] = 0.0


@njit(cache=True)
def _asof_mid(rows, ts, tape_ts, bid, ask, out):  # pragma: no cover - numba
    m = tape_ts.shape[0]
    i = 0
    for r in range(rows.shape[0]):
        k = rows[r]
        while i < m and tape_ts[i] < ts[k]:
            i += 1
        if i > 0:
            out[k] = (bid[i - 1] + ask[i - 1]) / 2


@dataclass
class DayMarket:
    """What a partition needs from the whole day to join its own rows: the tapes, the day-level
    tick per symbol (tape tick, else the smallest step of the day's order prices) and the
    join parameters. Built once per day by the driver and shipped to every worker."""

    tapes: Tapes
    tick: dict[str, float]
    after_ns: int = 1_000_000_000
    reference_symbol: str = ""


def attach_arrays(ts: np.ndarray, tord: np.ndarray, sym: np.ndarray, sym_names: list[str],
                  day: DayMarket, columns: tuple[str, ...] = CONTEXT_COLUMNS
                  ) -> dict[str, np.ndarray]:
    """``attach`` for one partition's NumPy columns (``sym``: dense codes into ``sym_names``,
    ``tord``: rows in time order): the same ``ctx_*`` values, by a linear merge per symbol.
    Only ``columns`` are built (8 B per row each: a task joins what its detectors read)."""
    n = ts.shape[0]
    cols = {c: np.full(n, np.nan) for c in CONTEXT_COLUMNS if c in columns}
    if n == 0:
        return cols
    # the columns not asked for: empty (not filled) in the merge
    out = {c: cols.get(c, np.zeros(0)) for c in CONTEXT_COLUMNS}
    if "ctx_tick" in cols or any(c in cols for c in CONTEXT_COLUMNS[:-2]):
        # rows grouped by symbol, time order kept (int32 positions: half the memory)
        ordered_sym = sym[tord]
        by_sym = stable_order(ordered_sym).astype(np.int32)
        bounds = np.searchsorted(ordered_sym[by_sym], np.arange(len(sym_names) + 1))
        del ordered_sym
        for k, name in enumerate(sym_names):
            rows = tord[by_sym[bounds[k]:bounds[k + 1]]]
            tape = day.tapes.get(name)
            if "ctx_tick" in cols:
                cols["ctx_tick"][rows] = day.tick.get(name, np.nan)
            if tape is None:
                continue
            if tape.ts.size == 0:  # pragma: no cover - a tape always has rows
                for c in ("ctx_mkt_vol", "ctx_mkt_buy"):
                    if c in cols:
                        cols[c][rows] = 0.0
                continue
            _asof_fill(rows, ts, tape.ts, tape.bid, tape.ask, tape.bid_size, tape.ask_size,
                       tape.last, tape.cum_vol, tape.cum_buy, day.after_ns,
                       out["ctx_bid"], out["ctx_ask"], out["ctx_bid_size"], out["ctx_ask_size"],
                       out["ctx_last"], out["ctx_mkt_vol"], out["ctx_mkt_buy"],
                       out["ctx_mid_after"])
    ref = day.tapes.get(day.reference_symbol) if day.reference_symbol else None
    if ref is not None and ref.ts.size and "ctx_ref_mid" in cols:
        _asof_mid(tord, ts, ref.ts, ref.bid, ref.ask, cols["ctx_ref_mid"])
    return cols


class DayFacts:
    """Streaming accumulation of what ``attach`` and ``instrument_info`` need from the whole
    day's events (symbol → instrument, each instrument's first/last event, the distinct prices
    per symbol and instrument), one batch at a time, so the day is never held in memory."""

    def __init__(self) -> None:
        self.sym_of: dict[str, str] = {}
        self.span: dict[str, list[int]] = {}
        self.sym_prices: dict[str, set[float]] = {}
        self.inst_prices: dict[str, set[float]] = {}

    def add(self, ts: np.ndarray, sym: np.ndarray, inst: np.ndarray, prices: np.ndarray,
            sym_names: list[str], inst_names: list[str]) -> None:
        """One batch: ``sym``/``inst`` are codes into the (day-level) name lists."""
        if ts.size == 0:
            return
        width = len(inst_names) + 1
        pair = sym.astype(np.int64) * width + inst
        for p in distinct(pair):
            self.sym_of[sym_names[p // width]] = inst_names[p % width]
        lo, hi = _span_by_code(ts, inst, len(inst_names))
        for k in np.flatnonzero(hi >= lo):
            name = inst_names[k]
            old = self.span.setdefault(name, [int(lo[k]), int(hi[k])])
            old[0], old[1] = min(old[0], int(lo[k])), max(old[1], int(hi[k]))
        ok = np.isfinite(prices)  # distinct raw prices: tick_size() of them == of all rows
        triples = pa.table({"s": sym[ok], "i": inst[ok], "p": prices[ok]}).group_by(
            ["s", "i", "p"]).aggregate([])
        s, i, p = (triples.column(c).to_numpy() for c in ("s", "i", "p"))
        for code in distinct(s):
            self.sym_prices.setdefault(sym_names[code], set()).update(p[s == code].tolist())
        for code in distinct(i):
            self.inst_prices.setdefault(inst_names[code], set()).update(p[i == code].tolist())

    def merge(self, other: DayFacts) -> None:
        """Fold in the facts of the rows that come after this one's (a later map)."""
        self.sym_of.update(other.sym_of)
        for name, (lo, hi) in other.span.items():
            old = self.span.setdefault(name, [lo, hi])
            old[0], old[1] = min(old[0], lo), max(old[1], hi)
        for mine, theirs in ((self.sym_prices, other.sym_prices),
                             (self.inst_prices, other.inst_prices)):
            for name, prices in theirs.items():
                mine.setdefault(name, set()).update(prices)

    def day_market(self, market: Summaries, *, after_ns: int, reference_symbol: str,
                   tapes: Tapes | None = None) -> DayMarket:
        """The join's day-level part: tick per symbol from the tapes' summaries (``market``),
        with ``tapes`` (default: those of ``market`` that are tapes) for an in-process join."""
        tick = {}
        for name in self.sym_of:
            tape = market.get(name)
            if tape is not None and np.isfinite(tape.tick):
                tick[name] = tape.tick
            else:
                tick[name] = tick_size(np.fromiter(self.sym_prices.get(name, ()), float))
        if tapes is None:
            tapes = {s: t for s, t in market.items() if isinstance(t, _Tape)}
        return DayMarket(tapes, tick, after_ns, reference_symbol)

    def instrument_info(self, market: Summaries) -> dict[str, InstrumentInfo]:
        """Same facts as ``instrument_info(events, market)``, from the accumulated day and the
        tapes' summaries (or the tapes)."""
        info: dict[str, InstrumentInfo] = {}
        for name, (first, last) in self.span.items():
            symbols = [s for s, i in self.sym_of.items() if i == name]
            tape = _summary(next((market[s] for s in symbols if s in market), None))
            prices = np.fromiter(self.inst_prices.get(name, ()), float)
            if tape is not None and tape.rows:
                t0, t1, size = tape.first_ns, tape.close_ns, tape.rows
                vol_cum = tape.vol_cum
            else:
                t0, t1, size = first, last, 2 if last > first else 1
                vol_cum = None if tape is None else np.zeros(  # pragma: no cover - no rows
                    len(range(t0, t1 + 2_000_000_000, 1_000_000_000)))
            span = float(t1 - t0) if size > 1 else 0.0
            gap = span / (size - 1) if tape is not None and size > 1 else float("inf")
            tick = tape.tick if tape is not None and np.isfinite(tape.tick) else tick_size(prices)
            info[name] = InstrumentInfo(
                tick=tick, mean_gap_ns=gap, first_ns=t0, close_ns=t1,
                day_volume=tape.day_volume if tape is not None else 0.0, vol_cum=vol_cum,
            )  # fmt: skip
        return info


@njit(cache=True)
def _span_by_code(ts, code, n):  # pragma: no cover - numba
    lo = np.full(n, np.iinfo(np.int64).max, np.int64)
    hi = np.full(n, np.iinfo(np.int64).min, np.int64)
    for r in range(ts.shape[0]):
        c = code[r]
        if ts[r] < lo[c]:
            lo[c] = ts[r]
        if ts[r] > hi[c]:
            hi[c] = ts[r]
    return lo, hi
