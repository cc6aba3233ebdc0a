"""The day → partitions shuffle: stream the day's cleaned events once and split them into one
partition per (detector group, stable hash of the group's key), so every cluster is whole in one
task.

It runs as a map stage: the day's Parquet row groups are cut into ``maps`` contiguous ranges and
each range is spooled by one task (``spool_map``, in parallel under Ray), which

* dictionary-encodes the string columns (trader, account, owner, symbol, instrument, source)
  against its own dictionaries and the small token columns (side, event, account type) to int8,
* accumulates the day-level facts of its rows (``context.DayFacts``: symbol → instrument, spans,
  distinct prices),
* writes one Arrow IPC file per detector group whose record batches are partition pieces.

The market data is split the same way: ranges of its row groups are *market maps*
(``spool_market_map``) that write each symbol's rows, a batch at a time, as record batches of
one IPC file; then a task per symbol (``build_tape``) builds that symbol's tape from its pieces
in map order (the rows in arrival order, as the whole table would give them) and returns it
with its ``TapeSummary``. No process reads the whole day's market data.

The driver then merges the small per-map outputs (``merge_maps``): the day dictionaries in map
order (so a code is exactly what one serial pass over the day gives), a code remap per map, the
day facts (with the tapes' summaries: ticks, instrument spans, activity, volume), and per
partition the list of pieces. A scoring task reads only its own pieces (memory-mapped), remaps
their codes to the day's and concatenates them in map order: the same rows in the same order
whatever the number of maps, so results do not depend on it.
"""

from __future__ import annotations

import hashlib
import heapq
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from appliance import context
from appliance.allocator import keep_freed_memory
from appliance.arrays import distinct, stable_order
from appliance.context import InstrumentInfo
from appliance.schema import EVENTS, SIDES

#: string columns spooled as int32 codes (the day's names in ``DayShared.names``)
CODED = ("trader", "account", "owner", "symbol", "instrument", "source")
#: the canonical columns the detectors read
NEEDED = ("ts", "trader", "account", "symbol", "instrument", "side", "event", "order_id",
          "price", "qty", "leaves_qty", "exec_qty", "exec_price", "source", "offset", "line")
#: read from Parquet as dictionary arrays
DICTIONARY_READ = ("trader", "account", "symbol", "instrument", "side", "event", "source")
_KEY_BITS = 21  # per key column in the composite key code (≤ 2M distinct values per map)

_EMPTY = pa.table({
    "ts": pa.array([], pa.int64()), **{c: pa.array([], pa.int32()) for c in CODED},
    "account_type": pa.array([], pa.int8()), "side": pa.array([], pa.int8()),
    "event": pa.array([], pa.int8()), "order_id": pa.array([], pa.string()),
    **{c: pa.array([], pa.float64()) for c in ("price", "qty", "leaves_qty", "exec_qty",
                                               "exec_price")},
    "offset": pa.array([], pa.int64()), "line": pa.array([], pa.int64()),
})  # fmt: skip
#: the columns of a spooled partition (what ``read_partition`` reads from its pieces)
SPOOLED_SCHEMA = _EMPTY.schema


def bucket(key: str, n: int) -> int:
    """Stable partition of a cluster key string (same on every machine and Python run)."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little") % n


def _per_value(col, fn):
    """``fn`` of a column: on a dictionary column, of its dictionary only (the result stays
    dictionary-encoded with the same indices)."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if pa.types.is_dictionary(arr.type):
        return pa.DictionaryArray.from_arrays(arr.indices, fn(arr.dictionary))
    return fn(arr)


def with_reference(events: pa.Table, accounts: pa.Table | None) -> pa.Table:
    """Add ``owner`` and ``account_type`` from the accounts reference table (account → owner,
    type). Without it (or for unknown accounts) the owner is the account and the type null.
    A dictionary-encoded account column gives dictionary-encoded results."""
    account = events.column("account")
    if accounts is not None and accounts.num_rows:
        def owner_of(values):
            pos = pc.index_in(values, value_set=accounts.column("account"))
            return pc.coalesce(pc.take(accounts.column("owner"), pos), values)

        def type_of(values):
            pos = pc.index_in(values, value_set=accounts.column("account"))
            return pc.take(accounts.column("type"), pos)

        owner, kind = _per_value(account, owner_of), _per_value(account, type_of)
    else:
        owner, kind = account, pa.nulls(events.num_rows, pa.string())
    for name, arr in (("owner", owner), ("account_type", kind)):
        if name in events.column_names:
            events = events.drop_columns([name])
        events = events.append_column(name, arr)
    return events


class _Encoder:
    """A growing dictionary of one string column (nulls → ''), batch by batch."""

    def __init__(self) -> None:
        self.values: list[str] = []
        self.index: dict[str, int] = {}

    def encode(self, col) -> np.ndarray:
        """Codes of a (possibly dictionary-encoded) string column; new values get the next
        codes in order of first appearance."""
        arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
        if not pa.types.is_dictionary(arr.type):
            arr = pc.dictionary_encode(arr)
        values = arr.dictionary.to_pylist()
        idx = arr.indices
        if idx.null_count:
            idx = pc.fill_null(idx, len(values))
            values.append("")
        local = np.zeros(max(len(values), 1), np.int32)
        for k in pc.unique(idx).to_numpy().tolist():  # first appearance order
            local[k] = self.index.setdefault(values[k] or "", len(self.index))
        self.values.extend(list(self.index)[len(self.values):])
        return local[idx.to_numpy()]


# ------------------------------------------------------------------------------ the plan


@dataclass(frozen=True)
class GroupPlan:
    """Where a detector group's rows go: each instrument's rows to one partition, or — for an
    instrument heavier than a partition, in a group keyed by more than the instrument — to
    ``len(slots[instrument])`` partitions by a stable hash of the rest of the key. A partition
    thus holds few instruments (and needs only their market tapes) yet stays near its target
    size however the day's activity is spread."""

    keys: tuple[str, ...]
    n: int
    slots: dict[str, tuple[int, ...]]

    def slot(self, values: dict[str, str]) -> int:
        if "instrument" not in self.keys:
            return bucket("\x1f".join(values[k] for k in self.keys), self.n)
        subs = self.slots.get(values["instrument"])
        if subs is None:
            return bucket(values["instrument"], self.n)
        if len(subs) == 1:
            return subs[0]
        rest = "\x1f".join(values[k] for k in self.keys if k != "instrument")
        return subs[bucket(rest, len(subs))]


def instrument_rows(orders: pa.Table | list[Path]) -> dict[str, int]:
    """Events per instrument of the day: a pre-pass over the dictionary-encoded column."""
    counts: Counter[str] = Counter()
    if isinstance(orders, pa.Table):
        arrays = orders.column("instrument").chunks
    else:
        arrays = (rb.column(0) for path in orders
                  for rb in pq.ParquetFile(path, read_dictionary=["instrument"]).iter_batches(
                      batch_size=1 << 20, columns=["instrument"]))
    for arr in arrays:
        if not pa.types.is_dictionary(arr.type):
            arr = pc.dictionary_encode(arr)
        values = arr.dictionary.to_pylist() + [""]
        idx = pc.fill_null(arr.indices, len(values) - 1).to_numpy()
        for k, rows in enumerate(np.bincount(idx, minlength=len(values)).tolist()):
            if rows:
                counts[values[k] or ""] += rows
    return dict(counts)


def plan_partitions(counts: dict[str, int], n: int, group_keys: list[tuple[str, ...]]
                    ) -> list[GroupPlan]:
    """Pack instruments (or, when one is heavier than a partition, its hash-split parts) into
    ``n`` partitions per group, largest first into the least loaded (deterministic)."""
    target = max(sum(counts.values()) / max(n, 1), 1.0)
    plans = []
    for keys in group_keys:
        splittable = "instrument" in keys and len(keys) > 1
        items = []
        for inst, rows in counts.items():
            k = min(n, max(1, -(-rows // int(target)))) if splittable else 1
            items += [(rows / k, inst, j) for j in range(k)]
        items.sort(key=lambda it: (-it[0], it[1], it[2]))
        load = [(0.0, p) for p in range(n)]
        slots: dict[str, list[int]] = {}
        for weight, inst, _ in items:
            used, p = heapq.heappop(load)
            slots.setdefault(inst, []).append(p)
            heapq.heappush(load, (used + weight, p))
        plans.append(GroupPlan(keys, n, {i: tuple(v) for i, v in slots.items()}))
    return plans


def _by_instrument(plan: GroupPlan) -> bool:
    """Whether the plan places a row by its instrument alone (every row of an instrument in one
    partition): one partition, or keyed by the instrument with none split."""
    return plan.n <= 1 or ("instrument" in plan.keys
                           and all(len(s) == 1 for s in plan.slots.values()))


def same_placement(groups: dict[tuple[str, ...], list[str]], plans: list[GroupPlan]
                   ) -> tuple[dict[tuple[str, ...], list[str]], list[GroupPlan]]:
    """Detector groups whose plans put every row in the same partition, merged: their
    partitions are spooled once and scored by one task, which prepares the rows once for all
    their detectors (a day whose instruments each fit in a partition, the usual case, is
    spooled and prepared once instead of once per group). The first group's keys name the
    merged group."""
    merged: list[tuple[GroupPlan, list[str]]] = []
    for plan, names in zip(plans, groups.values(), strict=True):
        for other, others in merged:
            if (_by_instrument(plan) and _by_instrument(other) and plan.n == other.n
                    and plan.slots == other.slots):
                others.extend(names)
                break
        else:
            merged.append((plan, list(names)))
    return {p.keys: names for p, names in merged}, [p for p, _ in merged]


# ------------------------------------------------------------------------------ map stage

#: one unit of map input: (Parquet path, row group) — or the whole in-memory table
Unit = tuple[str, int]


@dataclass
class MapOutput:
    """What one map task returns to the driver (small: dictionaries, facts, piece index)."""

    names: dict[str, list[str]]
    facts: context.DayFacts
    files: list[str]  # one IPC file per detector group
    pieces: dict[tuple[int, int], list[int]] = field(default_factory=dict)  # (g, p) → batches
    rows: dict[tuple[int, int], int] = field(default_factory=dict)
    symbols: dict[tuple[int, int], set[str]] = field(default_factory=dict)
    total: int = 0


def _small_codes(col, values) -> pa.Array:
    """int8 position of each value in ``values`` (-1: null or not listed)."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if pa.types.is_dictionary(arr.type):
        per_value = _small_codes(arr.dictionary, values)
        return pc.fill_null(pc.take(per_value, arr.indices), -1)
    idx = pc.fill_null(pc.index_in(arr, value_set=pa.array(values, pa.string())), -1)
    return pc.cast(idx, pa.int8())


def _buckets(codes: dict[str, np.ndarray], plan: GroupPlan, enc: dict[str, _Encoder],
             cache: dict[int, int]) -> np.ndarray:
    """Partition of each row by the group's plan (one decision per distinct key)."""
    keys = plan.keys
    size = codes[keys[0]].shape[0]
    if plan.n <= 1:
        return np.zeros(size, np.int64)
    comp = np.zeros(size, np.int64)
    for k in keys:
        comp = (comp << _KEY_BITS) | codes[k].astype(np.int64)
    uniq, inv = np.unique(comp, return_inverse=True)
    out = np.empty(uniq.size, np.int64)
    mask = (1 << _KEY_BITS) - 1
    for j, u in enumerate(uniq.tolist()):
        b = cache.get(u)
        if b is None:
            values = {k: enc[k].values[(u >> (_KEY_BITS * (len(keys) - 1 - m))) & mask]
                      for m, k in enumerate(keys)}
            b = cache[u] = plan.slot(values)
        out[j] = b
    return out[inv]


def _row_group_batches(units: Sequence[Unit], batch_rows: int, columns: list[str],
                       dictionary: list[str]):
    """Record batches of Parquet row groups in order, at most ``batch_rows`` rows each."""
    by_file: dict[str, list[int]] = {}
    for path, group in units:
        by_file.setdefault(path, []).append(group)
    for path, groups in by_file.items():
        reader = pq.ParquetFile(path, read_dictionary=dictionary)
        for group in groups:
            # one call per row group: one call over many row groups keeps Arrow memory growing
            # with the range (≈ 250 MiB live over 160 row groups, 11 MiB this way)
            yield from reader.iter_batches(batch_size=batch_rows, row_groups=[group],
                                           columns=columns)


def _batches(source: pa.Table | Sequence[Unit], batch_rows: int):
    if isinstance(source, pa.Table):
        yield from source.select(list(NEEDED)).to_batches(max_chunksize=batch_rows)
        return
    # low-cardinality strings stay dictionary-encoded: no per-row string decoding
    yield from _row_group_batches(source, batch_rows, list(NEEDED), list(DICTIONARY_READ))


def _compact(b: pa.Table, codes: dict[str, np.ndarray], ts: np.ndarray) -> pa.Table:
    return pa.table({
        "ts": ts, **{c: codes[c] for c in CODED},
        "account_type": _small_codes(b.column("account_type"), ("house", "client")),
        "side": _small_codes(b.column("side"), SIDES),
        "event": _small_codes(b.column("event"), EVENTS),
        "order_id": b.column("order_id"),
        **{c: b.column(c) for c in ("price", "qty", "leaves_qty", "exec_qty", "exec_price",
                                     "offset", "line")},
    })  # fmt: skip


def spool_map(source: pa.Table | Sequence[Unit], accounts: pa.Table | None,
              plans: list[GroupPlan], out_dir: str, index: int,
              batch_rows: int = 1 << 20) -> MapOutput:
    """Spool one contiguous range of the day (``source``: row groups in day order, or a table),
    ``batch_rows`` at a time: memory is bounded by one batch."""
    keep_freed_memory()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    enc = {c: _Encoder() for c in CODED}
    facts = context.DayFacts()
    bucket_of: list[dict[int, int]] = [{} for _ in plans]
    files = [str(out / f"g{gi}-m{index}.arrow") for gi in range(len(plans))]
    writers: dict[int, Any] = {}
    result = MapOutput({}, facts, files)
    batch_no = [0] * len(plans)
    for rb in _batches(source, batch_rows):
        b = with_reference(pa.Table.from_batches([rb]), accounts)
        codes = {c: enc[c].encode(b.column(c)) for c in CODED}
        ts = np.asarray(b.column("ts").cast(pa.int64()).to_numpy(), dtype=np.int64)
        price = np.asarray(pc.fill_null(b.column("price"), np.nan).to_numpy(), dtype=np.float64)
        facts.add(ts, codes["symbol"], codes["instrument"], price, enc["symbol"].values,
                  enc["instrument"].values)
        compact = _compact(b, codes, ts)
        result.total += compact.num_rows
        for gi, plan in enumerate(plans):
            n = plan.n
            buckets = _buckets(codes, plan, enc, bucket_of[gi])
            counts = np.bincount(buckets, minlength=n)
            ordered = compact.take(pa.array(_stable_order(buckets, n))) if n > 1 \
                else compact
            _note_symbols(result.symbols, gi, buckets, codes["symbol"], enc["symbol"].values)
            if gi not in writers:
                writers[gi] = pa.ipc.new_file(files[gi], compact.schema)
            at = 0
            for p in np.flatnonzero(counts).tolist():
                piece = ordered.slice(at, int(counts[p]))
                at += int(counts[p])
                for rec in piece.to_batches():
                    writers[gi].write_batch(rec)
                    result.pieces.setdefault((gi, p), []).append(batch_no[gi])
                    batch_no[gi] += 1
                result.rows[gi, p] = result.rows.get((gi, p), 0) + piece.num_rows
    for w in writers.values():
        w.close()
    result.names = {c: enc[c].values for c in CODED}
    return result


def _note_symbols(found: dict[tuple[int, int], set[str]], gi: int, buckets: np.ndarray,
                  sym: np.ndarray, names: list[str]) -> None:
    width = max(len(names), 1)
    pairs = buckets * width + sym
    span = (int(buckets.max()) + 1) * width if pairs.size else 0
    # a count per (partition, symbol) is linear; sorting is only for a huge symbol range
    present = (np.flatnonzero(np.bincount(pairs, minlength=span)) if span <= 4 * pairs.size
               else distinct(pairs))
    for pair in present.tolist():
        found.setdefault((gi, pair // width), set()).add(names[pair % width])


def _stable_order(buckets: np.ndarray, n: int) -> np.ndarray:
    """Rows grouped by partition, input order within each: NumPy's stable sort is a radix sort
    for 16-bit integers (half the time of the 64-bit merge sort, same permutation)."""
    return np.argsort(buckets.astype(np.int16) if n <= 1 << 15 else buckets, kind="stable")


def map_ranges(orders: pa.Table | list[Path], maps: int) -> list[pa.Table | list[Unit]]:
    """Cut the day into at most ``maps`` contiguous ranges of Parquet row groups of about equal
    rows (a table is one range)."""
    if isinstance(orders, pa.Table):
        return [orders]
    units: list[tuple[Unit, int]] = []
    for path in orders:
        meta = pq.ParquetFile(path).metadata
        units += [((str(path), g), meta.row_group(g).num_rows) for g in range(meta.num_row_groups)]
    total = sum(r for _, r in units)
    if not units:
        return [[]]
    ranges: list[list[Unit]] = [[]]
    done = 0
    for unit, rows in units:
        target = total * len(ranges) / max(1, maps)
        if ranges[-1] and done >= target and len(ranges) < maps:
            ranges.append([])
        ranges[-1].append(unit)
        done += rows
    return list(ranges)


# ------------------------------------------------------------------------------ market side


@dataclass
class MarketMapOutput:
    """What one market map task returns: its IPC file and, per symbol, the record batches of
    that file holding the symbol's rows (in arrival order), their rows and Arrow bytes."""

    file: str
    pieces: dict[str, list[int]] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)
    nbytes: dict[str, int] = field(default_factory=dict)


def market_ranges(market: pa.Table | Sequence[Path] | None, maps: int
                  ) -> list[pa.Table | list[Unit]]:
    """The market data cut like the orders (``map_ranges``); none for no market data."""
    if market is None:
        return []
    if isinstance(market, pa.Table):
        return [market] if market.num_rows else []
    return [r for r in map_ranges(list(market), maps) if r]


def _market_batches(source: pa.Table | Sequence[Unit], batch_rows: int):
    columns = ["symbol", *context.MARKET_COLUMNS]
    if isinstance(source, pa.Table):
        yield from source.select(columns).to_batches(max_chunksize=batch_rows)
        return
    yield from _row_group_batches(source, batch_rows, columns, ["symbol"])  # no per-row strings


def spool_market_map(source: pa.Table | Sequence[Unit], out_dir: str, index: int,
                     batch_rows: int = 1 << 20) -> MarketMapOutput:
    """Split one contiguous range of the day's market data by symbol, ``batch_rows`` at a
    time, into one Arrow IPC file whose record batches each hold one symbol's rows (in their
    arrival order, which the tape's stable sort by time keeps): memory is bounded by a batch."""
    keep_freed_memory()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result = MarketMapOutput(str(out / f"market-m{index}.arrow"))
    writer = None
    batch_no = 0
    for rb in _market_batches(source, batch_rows):
        sym = rb.column(0)
        if not pa.types.is_dictionary(sym.type):
            sym = pc.dictionary_encode(sym)
        names = sym.dictionary.to_pylist()
        codes = pc.fill_null(sym.indices, len(names)).to_numpy()  # null symbol: dropped
        counts = np.bincount(codes, minlength=len(names) + 1)
        # without schema metadata: one map's files may differ in it, its IPC file may not
        rows = pa.Table.from_batches([rb]).drop_columns(["symbol"]).replace_schema_metadata()
        ordered = rows.take(pa.array(stable_order(codes)))
        if writer is None:
            writer = pa.ipc.new_file(result.file, ordered.schema)
        at = 0
        for k in np.flatnonzero(counts[:len(names)]).tolist():
            piece = ordered.slice(at, int(counts[k]))
            at += int(counts[k])
            name = names[k]
            for rec in piece.to_batches():
                writer.write_batch(rec)
                result.pieces.setdefault(name, []).append(batch_no)
                batch_no += 1
            result.rows[name] = result.rows.get(name, 0) + piece.num_rows
            result.nbytes[name] = result.nbytes.get(name, 0) + piece.nbytes
    if writer is not None:
        writer.close()
    return result


#: one symbol's market rows: (IPC file, record batches) per market map, in map order
TapeJob = list[tuple[str, tuple[int, ...]]]


def tape_jobs(outputs: list[MarketMapOutput]) -> dict[str, TapeJob]:
    """Per symbol, the pieces its tape is built from, largest symbol first (so that the
    longest tape tasks start first)."""
    jobs: dict[str, TapeJob] = {}
    rows: Counter[str] = Counter()
    for out in outputs:
        for name, numbers in out.pieces.items():
            jobs.setdefault(name, []).append((out.file, tuple(numbers)))
            rows[name] += out.rows[name]
    return {name: jobs[name] for name in sorted(jobs, key=lambda s: -rows[s])}


def build_tape(pieces: TapeJob) -> tuple[context.Tape, context.TapeSummary]:
    """One symbol's tape from its pieces (memory-mapped), and its summary for the driver."""
    keep_freed_memory()
    batches = []
    for path, numbers in pieces:
        with pa.memory_map(path) as source:
            reader = pa.ipc.open_file(source)
            batches += [reader.get_batch(k) for k in numbers]
    tape = context.symbol_tape(pa.Table.from_batches(batches))
    return tape, tape.summary()


# ------------------------------------------------------------------------------ the merge


@dataclass
class DayShared:
    """What every partition of a day needs besides its own rows (small, shipped once per day):
    the day-level ticks and join parameters (with, in one process, the market tapes; a Ray
    task is given its own symbols' tapes: ``with_tapes``), the per-instrument facts, the day's
    names of the spooled string codes, and per map the remap of its codes to the day's."""

    market: context.DayMarket
    info: dict[str, InstrumentInfo]
    names: dict[str, list[str]]
    remaps: list[dict[str, np.ndarray] | None] = field(default_factory=list)


def with_tapes(shared: DayShared, symbols: Sequence[str], tapes: Sequence[Any]) -> DayShared:
    """``shared`` with just these symbols' market tapes (a task's share of the day)."""
    return replace(shared, market=replace(shared.market, tapes=dict(zip(symbols, tapes,
                                                                         strict=True))))


@dataclass(frozen=True)
class PartitionRef:
    """One scoring task's rows: record batches ``batches`` of the map ``index``'s IPC file
    ``path``, for each map in order; ``symbols``: the symbols of its rows (the market tapes it
    needs)."""

    pieces: tuple[tuple[str, tuple[int, ...], int], ...]
    symbols: tuple[str, ...] = ()


@dataclass
class SpooledDay:
    """A day split into partitions: ``tasks`` (partition, detector names, rows), largest
    first, what the partitions share, and per symbol the day needs (those of its events and
    the reference symbol) its market tape: the tape itself, or a handle to it where the runner
    keeps tapes elsewhere (a Ray object reference)."""

    tasks: list[tuple[PartitionRef, list[str], int]]
    shared: DayShared
    events: int
    tapes: dict[str, Any] = field(default_factory=dict)


#: per market symbol: its tape (or a handle to it) and its summary
BuiltTapes = dict[str, tuple[Any, context.TapeSummary]]


def merge_maps(outputs: list[MapOutput], tapes: BuiltTapes, market_params: dict[str, Any],
               groups: dict[tuple[str, ...], list[str]]) -> SpooledDay:
    """The day from its maps' outputs and the tapes' summaries: day dictionaries in map
    order, remaps, facts, tasks. Only the tapes of the day's symbols are kept."""
    index: dict[str, dict[str, int]] = {c: {} for c in CODED}
    remaps = []
    facts = context.DayFacts()
    for out in outputs:
        remap = {c: np.array([index[c].setdefault(v, len(index[c])) for v in out.names[c]],
                             dtype=np.int32) for c in CODED}
        identity = all(np.array_equal(r, np.arange(r.size)) for r in remap.values())
        remaps.append(None if identity else remap)
        facts.merge(out.facts)
    reference = market_params.get("reference_symbol", "")
    summaries = {name: summary for name, (_, summary) in tapes.items()}
    handles = {name: h for name, (h, _) in tapes.items() if name in facts.sym_of or
               name == reference}
    local = {name: h for name, h in handles.items() if isinstance(h, context.Tape)}
    shared = DayShared(
        facts.day_market(summaries, after_ns=int(market_params.get("after_seconds", 1.0) * 1e9),
                         reference_symbol=reference, tapes=local),
        facts.instrument_info(summaries), {c: list(index[c]) for c in CODED}, remaps)
    names = list(groups.values())
    keys = sorted({k for out in outputs for k in out.rows})
    tasks = []
    for gi, p in keys:
        pieces = tuple((out.files[gi], tuple(out.pieces[gi, p]), m)
                       for m, out in enumerate(outputs) if (gi, p) in out.pieces)
        symbols = sorted(set().union(*(out.symbols.get((gi, p), set()) for out in outputs)))
        tasks.append((PartitionRef(pieces, tuple(symbols)), names[gi],
                      sum(out.rows.get((gi, p), 0) for out in outputs)))
    if not tasks:  # an empty day still gives every group one (empty) task
        tasks = [(PartitionRef(()), ns, 0) for ns in names]
    tasks.sort(key=lambda t: -t[2])
    return SpooledDay(tasks, shared, sum(out.total for out in outputs), handles)


def read_partition(part: pa.Table | str | Path | PartitionRef,
                   remaps: list[dict[str, np.ndarray] | None] | None = None) -> pa.Table:
    """A partition's rows: its pieces (memory-mapped, codes remapped to the day's), a whole
    Arrow IPC file, or a table (a scoring task reads its pieces a column at a time instead:
    ``read_column``)."""
    if isinstance(part, pa.Table):
        return part
    if not isinstance(part, PartitionRef):
        with pa.memory_map(str(part)) as source:
            return pa.ipc.open_file(source).read_all()
    batches = []
    for path, numbers, m in part.pieces:
        with pa.memory_map(path) as source:
            reader = pa.ipc.open_file(source)
            for k in numbers:
                batches.append(_remapped(reader.get_batch(k), remaps[m] if remaps else None))
    return pa.Table.from_batches(batches, _EMPTY.schema) if batches else _EMPTY


def partition_rows(part: PartitionRef) -> int:
    """A spooled partition's row count, from its pieces' metadata (no column is read)."""
    rows = 0
    for path, numbers, _ in part.pieces:
        with pa.memory_map(path) as source:
            reader = pa.ipc.open_file(source)
            rows += sum(reader.get_batch(k).num_rows for k in numbers)
    return rows


def read_column(part: PartitionRef, remaps: list[dict[str, np.ndarray] | None] | None,
                column: str) -> Iterator[pa.Array]:
    """One column of a spooled partition, a piece at a time (codes remapped to the day's),
    each piece memory-mapped on its own: the mapping goes when the caller drops the piece, so
    converting a column holds the pages of one piece, not of the whole column."""
    for path, numbers, m in part.pieces:
        remap = remaps[m] if remaps else None
        for k in numbers:
            with pa.memory_map(path) as source:
                values = pa.ipc.open_file(source).get_batch(k).column(column)
            if remap is not None and column in CODED:
                values = pa.array(remap[column][values.to_numpy()], pa.int32())
            yield values


def _remapped(rec: pa.RecordBatch, remap: dict[str, np.ndarray] | None) -> pa.RecordBatch:
    if remap is None:
        return rec
    arrays = list(rec.columns)
    for c in CODED:
        i = rec.schema.get_field_index(c)
        arrays[i] = pa.array(remap[c][arrays[i].to_numpy()], pa.int32())
    return pa.RecordBatch.from_arrays(arrays, schema=rec.schema)


#: submits the ``spool_map`` jobs and the ``spool_market_map`` jobs (argument tuples) and
#: returns a function collecting the maps' outputs and the tapes built from the market maps'
#: pieces (``build_tape``), with their summaries
MapRunner = Callable[[list[tuple], list[tuple]],
                     Callable[[], tuple[list[MapOutput], BuiltTapes]]]


def local_runner(keep: Callable[[context.Tape], Any] | None = None) -> MapRunner:
    """Run the maps one after the other in this process, then build each symbol's tape;
    ``keep`` stores a tape elsewhere and returns its handle (e.g. ``ray.put``), so that this
    process holds one tape at a time."""

    def submit(jobs: list[tuple], market_jobs: list[tuple]):
        def collect() -> tuple[list[MapOutput], BuiltTapes]:
            outputs = [spool_map(*job) for job in jobs]
            built: BuiltTapes = {}
            for name, pieces in tape_jobs([spool_market_map(*j) for j in market_jobs]).items():
                tape, summary = build_tape(pieces)
                built[name] = (keep(tape) if keep else tape, summary)
            return outputs, built

        return collect

    return submit


def spool_day(orders: pa.Table | list[Path], market: pa.Table | Sequence[Path] | None,
              accounts: pa.Table | None, market_params: dict[str, Any],
              groups: dict[tuple[str, ...], list[str]], n: int, spool: Path,
              batch_rows: int = 1 << 20, maps: int = 1,
              runner: MapRunner | None = None) -> SpooledDay:
    """Spool the day into ``n`` partitions per detector group with ``maps`` map tasks, split
    the market data (a table or its Parquet files) by symbol with up to ``maps`` more, and
    build each symbol's tape from its pieces, run by ``runner`` (default: ``local_runner``)."""
    plans = plan_partitions(instrument_rows(orders), n, list(groups)) if n > 1 else [
        GroupPlan(keys, 1, {}) for keys in groups]
    groups, plans = same_placement(groups, plans)
    jobs = [(src, accounts, plans, str(spool), m, batch_rows)
            for m, src in enumerate(map_ranges(orders, maps))]
    market_jobs = [(src, str(spool), m, batch_rows)
                   for m, src in enumerate(market_ranges(market, maps))]
    outputs, tapes = (runner or local_runner())(jobs, market_jobs)()
    return merge_maps(outputs, tapes, market_params, groups)
