"""The scoring run: ingested events → clusters → features → scores → alerts, fanned out with Ray.

``surveil run`` scores every trade date that has order files not yet covered by a run. A date is
always scored whole (all of its files), so the alerts of the newest run covering a date are that
date's current alerts; older runs' rows stay in the store untouched for audit.

Partitions are formed by a stable hash of the cluster key, so each cluster is whole inside one
task and the results do not depend on how many partitions or workers there are. Small days run
in-process (no Ray start-up cost); larger ones run as Ray tasks (``[pipeline] mode``).
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import shutil
import sys
import uuid
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import apsw
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from appliance import context, store
from appliance.clean import etl_version
from appliance.config import Config
from appliance.context import InstrumentInfo
from appliance.detectors import REGISTRY
from appliance.detectors.common import Batch
from appliance.schema import EVENTS, SIDES
from appliance.timefmt import iso_ns, now_iso
from appliance.version import code_version

PARTITION_KEYS = ("trader", "instrument")
Progress = Callable[[str, dict[str, Any]], None]


@dataclass
class RunSummary:
    """Counts per stage (what ``surveil run --json`` prints)."""

    run_id: str | None
    mode: str
    trade_dates: list[str] = field(default_factory=list)
    input_files: int = 0
    events: int = 0
    partitions: int = 0
    clusters: dict[str, int] = field(default_factory=dict)
    alerts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def enabled_detectors(cfg: Config) -> list[str]:
    """Detectors switched on in the config, in registry order."""
    return [n for n in REGISTRY if cfg.values.get(f"detectors.{n}.enabled", True)]


def _floor(cfg: Config, name: str) -> int:
    return int(cfg.values.get(f"detectors.{name}.alert_floor", 500))


def detector_params(cfg: Config, name: str) -> dict[str, Any]:
    """A detector's config section as a plain dict, plus the global base gap."""
    prefix = f"detectors.{name}."
    params = {k[len(prefix):]: v for k, v in cfg.values.items() if k.startswith(prefix)}
    params["gap_seconds"] = float(cfg.get("cluster.gap_seconds"))
    return params


def partition_groups(detectors: list[str]) -> dict[tuple[str, ...], list[str]]:
    """Detectors grouped by the columns their clusters are whole in (their partition key)."""
    groups: dict[tuple[str, ...], list[str]] = {}
    for name in detectors:
        groups.setdefault(tuple(REGISTRY[name].partition_keys), []).append(name)
    return groups


# --------------------------------------------------------------------------- partition work


def _breadcrumbs(batch: Batch, rows: np.ndarray) -> list[dict[str, Any]]:
    source = batch.codes["source"][rows]
    line, offset = batch.line[rows], batch.offset[rows]
    crumbs = []
    for name, code in sorted((batch.names["source"][c], c) for c in np.unique(source)):
        sel = source == code
        crumbs.append({
            "source": str(name), "events": int(sel.sum()),
            "lines": [int(line[sel].min()), int(line[sel].max())],
            "offsets": [int(offset[sel].min()), int(offset[sel].max())],
        })  # fmt: skip
    return crumbs


def _names(batch: Batch, column: str, rows: np.ndarray) -> list[str | None]:
    values = batch.names[column]
    return [values[c] or None for c in batch.codes[column][rows].tolist()]


def _joined(batch: Batch, column: str, rows: np.ndarray) -> str | None:
    values = batch.names[column]
    found = sorted({values[int(c)] for c in np.unique(batch.codes[column][rows])} - {""})
    return ";".join(found) or None


@dataclass
class DayShared:
    """What every partition of a day needs besides its own rows (small, shipped once per day):
    the market tapes and day-level ticks, the per-instrument facts, and the day-level names of
    the spooled string codes."""

    market: context.DayMarket
    info: dict[str, InstrumentInfo]
    names: dict[str, list[str]]


def read_partition(part: pa.Table | str | Path) -> pa.Table:
    """A spooled partition: an Arrow IPC file (memory-mapped, zero-copy) or a table."""
    if isinstance(part, pa.Table):
        return part
    with pa.memory_map(str(part)) as source:
        return pa.ipc.open_file(source).read_all()


def score_partition(events: pa.Table | str | Path, detectors: list[str],
                    info: dict[str, InstrumentInfo] | DayShared,
                    params: dict[str, dict[str, Any]], floors: dict[str, int]
                    ) -> dict[str, pa.Table]:
    """Prepare one partition once, then cluster, compute features and score it for each
    detector. ``events`` is a spooled partition (path or table, with ``info`` the day's
    ``DayShared``) or prepared canonical events (with ``info`` the instrument facts). Returns
    one table per detector with a row per cluster: identity, span, score, features and, for
    clusters at or above the floor, the explanation and breadcrumbs as JSON.
    """
    if isinstance(info, DayShared):
        batch = Batch.build(read_partition(events), info.market, info.names)
        info = info.info
    else:
        batch = Batch.build(events)
    batch.line = _column(batch.table, "line")
    batch.offset = _column(batch.table, "offset")
    out: dict[str, pa.Table] = {}
    for name in detectors:
        det = REGISTRY[name]
        g = det.group(batch, info, params[name])
        matrix = det.kernel(batch, g, params[name])
        scores = det.score(matrix)
        n = g.count
        first = g.idx[g.starts[:-1]] if n else np.zeros(0, np.int64)
        last = g.idx[g.starts[1:] - 1] if n else np.zeros(0, np.int64)
        explanation: list[str | None] = [None] * n
        crumbs: list[str | None] = [None] * n
        accounts: list[str | None] = [None] * n
        traders = _names(batch, "trader", g.name_row)
        flagged = np.flatnonzero(scores.score >= floors[name]).tolist()
        for c in range(n) if det.multi_trader else flagged:
            rows = g.idx[g.starts[c]:g.starts[c + 1]]
            if det.multi_trader:
                traders[c] = _joined(batch, "trader", rows)
            if scores.score[c] >= floors[name]:
                explanation[c] = json.dumps(det.explain(matrix[c]))
                crumbs[c] = json.dumps(_breadcrumbs(batch, rows))
                accounts[c] = _joined(batch, "account", rows)
        parts = [[v or "" for v in _names(batch, k, g.name_row)] for k in det.cluster_keys]
        key = ["\x1f".join(vs) for vs in zip(*parts, strict=True)] if parts else [""] * n
        cols: dict[str, Any] = {
            "key": pa.array(key, pa.string()),
            "trader": pa.array(traders, pa.string()),
            "instrument": pa.array(_names(batch, "instrument", g.name_row), pa.string()),
            "symbol": pa.array(_names(batch, "symbol", g.name_row), pa.string()),
            "account": pa.array(accounts, pa.string()),
            "start_ns": pa.array(batch.ts[first], pa.int64()),
            "end_ns": pa.array(batch.ts[last], pa.int64()),
            "n_events": pa.array(np.diff(g.starts), pa.int64()),
            "score": pa.array(scores.score, pa.int64()),
            "confidence": pa.array(scores.confidence, pa.float64()),
        }
        for i, feat in enumerate(det.features):
            cols[f"f_{feat.name}"] = pa.array(matrix[:, i], pa.float64())
        cols["explanation"] = pa.array(explanation, pa.string())
        cols["breadcrumbs"] = pa.array(crumbs, pa.string())
        out[name] = pa.table(cols)
    return out


def _column(table: pa.Table, name: str) -> np.ndarray:
    if name not in table.column_names:
        return np.zeros(table.num_rows, np.int64)
    return np.asarray(table.column(name).to_numpy(), dtype=np.int64)


def _bucket(key: str, n: int) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little") % n


def partition(events: pa.Table, n: int, keys: tuple[str, ...] = PARTITION_KEYS
              ) -> list[pa.Table]:
    """Split by a stable hash of ``keys``: a key never straddles two partitions."""
    if n <= 1 or events.num_rows == 0:
        return [events]
    joined = pc.binary_join_element_wise(
        *[pc.fill_null(events.column(k), "") for k in keys], "\x1f"
    ) if len(keys) > 1 else pc.fill_null(events.column(keys[0]), "")
    encoded = pc.dictionary_encode(joined).combine_chunks()
    bucket_of_key = np.array([_bucket(k, n) for k in encoded.dictionary.to_pylist()],
                             dtype=np.int64)
    bucket = bucket_of_key[encoded.indices.to_numpy()]
    return [events.filter(pa.array(bucket == p)) for p in range(n) if (bucket == p).any()]


def with_reference(events: pa.Table, accounts: pa.Table | None) -> pa.Table:
    """Add ``owner`` and ``account_type`` from the accounts reference table (account → owner,
    type). Without it (or for unknown accounts) the owner is the account and the type null."""
    account = events.column("account")
    if accounts is not None and accounts.num_rows:
        pos = pc.index_in(account, value_set=accounts.column("account"))
        owner = pc.coalesce(pc.take(accounts.column("owner"), pos), account)
        kind = pc.take(accounts.column("type"), pos)
    else:
        owner, kind = account, pa.nulls(events.num_rows, pa.string())
    for name, arr in (("owner", owner), ("account_type", kind)):
        if name in events.column_names:
            events = events.drop_columns([name])
        events = events.append_column(name, arr)
    return events


def prepare_day(orders: pa.Table, market: pa.Table | None, accounts: pa.Table | None,
                market_params: dict[str, Any]) -> tuple[pa.Table, dict[str, InstrumentInfo]]:
    """The whole day in memory (market context, reference data, per-instrument facts): kept
    for tools and tests; the run streams the day through ``spool_day`` instead."""
    tapes = context.tapes(market)
    events = context.attach(
        orders, tapes, after_ns=int(market_params.get("after_seconds", 1.0) * 1e9),
        reference_symbol=market_params.get("reference_symbol", ""),
    )
    events = with_reference(events, accounts)
    return events, context.instrument_info(orders, tapes)


# ------------------------------------------------------------------ streaming day → partitions

#: string columns spooled as day-level int32 codes (names in ``DayShared.names``)
CODED = ("trader", "account", "owner", "symbol", "instrument", "source")
#: the canonical columns the detectors read
NEEDED = ("ts", "trader", "account", "symbol", "instrument", "side", "event", "order_id",
          "price", "qty", "leaves_qty", "exec_qty", "exec_price", "source", "offset", "line")
_KEY_BITS = 21  # per key column in the composite key code (≤ 2M distinct values per day)


class _Encoder:
    """Day-level dictionary of one string column, grown batch by batch (nulls → '')."""

    def __init__(self) -> None:
        self.values: list[str] = []
        self.index: dict[str, int] = {}

    def encode(self, col) -> np.ndarray:
        enc = pc.dictionary_encode(pc.fill_null(col, "")).combine_chunks()
        local = np.array([self.index.setdefault(v, len(self.index))
                          for v in enc.dictionary.to_pylist()], dtype=np.int32)
        self.values.extend(list(self.index)[len(self.values):])
        return local[enc.indices.to_numpy()] if local.size else np.zeros(len(enc), np.int32)


@dataclass
class SpooledDay:
    """A day split into partition files: ``tasks`` (path, detector names, rows), largest
    first, and what the partitions share."""

    tasks: list[tuple[Path, list[str], int]]
    shared: DayShared
    events: int


def _batches(orders, batch_rows: int):
    if isinstance(orders, pa.Table):
        yield from orders.select(list(NEEDED)).to_batches(max_chunksize=batch_rows)
        return
    for path in orders:
        yield from pq.ParquetFile(path).iter_batches(batch_size=batch_rows, columns=list(NEEDED))


def spool_day(orders: pa.Table | list[Path], market: pa.Table | None,
              accounts: pa.Table | None, market_params: dict[str, Any],
              groups: dict[tuple[str, ...], list[str]], n: int, spool: Path,
              batch_rows: int = 1 << 20) -> SpooledDay:
    """Stream the day's events once (Parquet files or a table, ``batch_rows`` at a time):
    dictionary-encode the string columns against day-level dictionaries, accumulate the
    day-level facts, and append each row to one partition file per detector group (stable hash
    of the group's key, as ``partition``). Memory is bounded by one batch, not by the day; each
    task later reads only its own partition."""
    spool.mkdir(parents=True, exist_ok=True)
    enc = {c: _Encoder() for c in CODED}
    facts = context.DayFacts()
    bucket_of: list[dict[int, int]] = [{} for _ in groups]
    writers: dict[tuple[int, int], Any] = {}
    rows: dict[tuple[int, int], int] = {}
    total = 0
    for rb in _batches(orders, batch_rows):
        b = with_reference(pa.Table.from_batches([rb]), accounts)
        codes = {c: enc[c].encode(b.column(c)) for c in CODED}
        ts = np.asarray(b.column("ts").cast(pa.int64()).to_numpy(), dtype=np.int64)
        price = np.asarray(pc.fill_null(b.column("price"), np.nan).to_numpy(), dtype=np.float64)
        facts.add(ts, codes["symbol"], codes["instrument"], price, enc["symbol"].values,
                  enc["instrument"].values)
        kind = pc.fill_null(pc.index_in(b.column("account_type"),
                                        value_set=pa.array(["house", "client"])), -1)
        compact = pa.table({
            "ts": ts, **{c: codes[c] for c in CODED},
            "account_type": pc.cast(kind, pa.int8()),
            "side": _small_codes(b.column("side"), SIDES),
            "event": _small_codes(b.column("event"), EVENTS),
            "order_id": b.column("order_id"),
            **{c: b.column(c) for c in ("price", "qty", "leaves_qty", "exec_qty", "exec_price",
                                         "offset", "line")},
        })  # fmt: skip
        total += compact.num_rows
        for gi, keys in enumerate(groups):
            bucket = _buckets(codes, keys, enc, bucket_of[gi], n)
            perm = np.argsort(bucket, kind="stable")
            counts = np.bincount(bucket, minlength=n)
            ordered = compact.take(pa.array(perm)) if n > 1 else compact
            at = 0
            for p in np.flatnonzero(counts).tolist():
                part = ordered.slice(at, int(counts[p]))
                at += int(counts[p])
                if (gi, p) not in writers:
                    writers[gi, p] = pa.ipc.new_file(str(spool / f"g{gi}-p{p}.arrow"),
                                                     compact.schema)
                    rows[gi, p] = 0
                writers[gi, p].write_table(part)
                rows[gi, p] += part.num_rows
    if total == 0:  # an empty day still gives every group one (empty) task
        for gi in range(len(groups)):
            writers[gi, 0] = pa.ipc.new_file(str(spool / f"g{gi}-p0.arrow"), _EMPTY.schema)
            writers[gi, 0].write_table(_EMPTY)
            rows[gi, 0] = 0
    for w in writers.values():
        w.close()
    tapes = context.tapes(market)
    shared = DayShared(
        facts.day_market(tapes, after_ns=int(market_params.get("after_seconds", 1.0) * 1e9),
                         reference_symbol=market_params.get("reference_symbol", "")),
        facts.instrument_info(tapes), {c: enc[c].values for c in CODED})
    names = list(groups.values())
    tasks = sorted(((spool / f"g{gi}-p{p}.arrow", names[gi], r) for (gi, p), r in rows.items()),
                   key=lambda t: -t[2])
    return SpooledDay(tasks, shared, total)


_EMPTY = pa.table({
    "ts": pa.array([], pa.int64()), **{c: pa.array([], pa.int32()) for c in CODED},
    "account_type": pa.array([], pa.int8()), "side": pa.array([], pa.int8()),
    "event": pa.array([], pa.int8()), "order_id": pa.array([], pa.string()),
    **{c: pa.array([], pa.float64()) for c in ("price", "qty", "leaves_qty", "exec_qty",
                                               "exec_price")},
    "offset": pa.array([], pa.int64()), "line": pa.array([], pa.int64()),
})  # fmt: skip


def _small_codes(col, values) -> pa.Array:
    idx = pc.fill_null(pc.index_in(col, value_set=pa.array(values)), -1)
    return pc.cast(idx, pa.int8())


def _buckets(codes: dict[str, np.ndarray], keys: tuple[str, ...], enc: dict[str, _Encoder],
             cache: dict[int, int], n: int) -> np.ndarray:
    """Partition of each row: stable hash of its key string (same as ``partition``)."""
    size = codes[keys[0]].shape[0]
    if n <= 1:
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
            parts = [enc[k].values[(u >> (_KEY_BITS * (len(keys) - 1 - m))) & mask]
                     for m, k in enumerate(keys)]
            b = cache[u] = _bucket("\x1f".join(parts), n)
        out[j] = b
    return out[inv]


# --------------------------------------------------------------------------- Ray


def ray_temp_dir(data_dir: Path) -> Path:
    """Ray's session files go under the data dir, unless that path is too long for the unix
    sockets Ray creates inside it (107 bytes); then a private per-user directory is used."""
    candidate = data_dir / "ray"
    if len(str(candidate)) <= 40:
        return candidate
    return Path(f"/tmp/surveil-ray-{os.getuid()}")


def _loopback_only() -> None:
    """Make a private Ray use 127.0.0.1 as its node address, so that every Ray server (GCS,
    raylet, object manager, workers) binds to loopback only. On Linux Ray otherwise picks the
    host's routable address and listens there; this switch (read by Ray when it is imported,
    and inherited by its workers) is the one Ray uses for single-machine operation."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None:  # ray was imported earlier in this process
        constants.ENABLE_RAY_CLUSTER = False


@contextmanager
def ray_session(cfg: Config):
    """Start (or join) Ray for the duration of a run. Private Ray binds to 127.0.0.1 only, has no
    dashboard, and sends no usage statistics."""
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    address = cfg.get("ray.address") or None
    if address is None:
        _loopback_only()
    import ray

    if ray.is_initialized():
        yield ray
        return
    kwargs: dict[str, Any] = {
        "include_dashboard": False,
        "logging_level": "ERROR",
        "log_to_driver": False,
        "configure_logging": True,
    }
    if address is None:
        tmp = ray_temp_dir(cfg.data_dir)
        tmp.mkdir(parents=True, exist_ok=True, mode=0o700)
        spill = cfg.data_dir / "ray-spill"
        spill.mkdir(parents=True, exist_ok=True, mode=0o700)
        kwargs.update(_node_ip_address="127.0.0.1", _temp_dir=str(tmp), _system_config={
            "object_spilling_config": json.dumps(
                {"type": "filesystem", "params": {"directory_path": str(spill)}}),
        })
        if cfg.get("ray.num_cpus"):
            kwargs["num_cpus"] = cfg.get("ray.num_cpus")
        if cfg.get("ray.object_store_mb"):
            kwargs["object_store_memory"] = cfg.get("ray.object_store_mb") << 20
    ray.init(address=address, **kwargs)
    try:
        yield ray
    finally:
        ray.shutdown()


def _score_in_ray(ray, tasks: list[tuple[Any, list[str]]], shared: DayShared, params, floors,
                  max_in_flight: int, by_value: bool) -> list[dict]:
    """One Ray task per (partition, detector group), largest first; the day's shared part is
    put once. A task reads its own partition file (``by_value``: the driver sends the rows,
    for workers on other machines); at most ``max_in_flight`` tasks are pending, so memory
    stays bounded whatever the day size. Results come back in submission order."""
    remote = ray.remote(score_partition)
    shared_ref = ray.put(shared)
    results: list[Any] = [None] * len(tasks)
    pending: dict[Any, int] = {}
    for k, (part, names) in enumerate(tasks):
        if len(pending) >= max_in_flight:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                results[pending.pop(ref)] = ray.get(ref)
        arg = ray.put(read_partition(part)) if by_value else str(part)
        pending[remote.remote(arg, names, shared_ref, params, floors)] = k
    for ref, k in pending.items():
        results[k] = ray.get(ref)
    return results


# --------------------------------------------------------------------------- the run


def _pending_dates(con: apsw.Connection) -> list[str]:
    sql = """SELECT DISTINCT fd.trade_date FROM file_dates fd JOIN files f USING (file_id)
             WHERE f.kind = 'orders'
               AND fd.file_id NOT IN (SELECT file_id FROM run_inputs)
             ORDER BY fd.trade_date"""
    return [r["trade_date"] for r in store.rows(con, sql)]


def _date_inputs(con: apsw.Connection, day: str) -> list[dict[str, Any]]:
    sql = """SELECT fd.file_id, fd.parquet, f.sha256, f.path FROM file_dates fd
             JOIN files f USING (file_id) WHERE f.kind = 'orders' AND fd.trade_date = ?
             ORDER BY fd.file_id"""
    return list(store.rows(con, sql, (day,)))


def _mode(cfg: Config, rows: int, forced: str | None) -> str:
    mode = forced or cfg.get("pipeline.mode")
    if mode == "auto":
        return "inprocess" if rows <= cfg.get("pipeline.inprocess_max_rows") else "ray"
    return mode


def _num_partitions(cfg: Config, ray_module) -> int:
    if cfg.get("pipeline.partitions"):
        return int(cfg.get("pipeline.partitions"))
    cpus = int(ray_module.cluster_resources().get("CPU", 1)) if ray_module else 1
    return max(1, 2 * cpus)


def run(cfg: Config, con: apsw.Connection, *, user: str | None = None,
        mode: str | None = None, progress: Progress | None = None,
        accounts: pa.Table | None = None) -> RunSummary:
    """Score every trade date with unscored order files and append the results."""
    import time

    say = progress or (lambda _event, _fields: None)
    user = user or getpass.getuser()
    started, t0 = now_iso(), time.perf_counter()
    days = _pending_dates(con)
    if not days:
        say("nothing_to_do", {})
        return RunSummary(None, "none")
    inputs = {day: _date_inputs(con, day) for day in days}
    files = {day: [cfg.data_dir / r["parquet"] for r in inputs[day]] for day in days}
    total = sum(pq.ParquetFile(f).metadata.num_rows for fs in files.values() for f in fs)
    chosen = _mode(cfg, total, mode)
    run_id = f"{started[:19].replace('-', '').replace(':', '')}-{uuid.uuid4().hex[:6]}"
    summary = RunSummary(run_id, chosen, days, events=total)
    detectors = enabled_detectors(cfg)
    floors = {d: _floor(cfg, d) for d in detectors}
    say("run_started", {"run_id": run_id, "mode": chosen, "dates": days, "events": total})

    params = {d: detector_params(cfg, d) for d in detectors}
    market_params = {k.split(".")[-1]: v for k, v in cfg.values.items()
                     if k.startswith("detectors.market.")}
    if accounts is None:
        accounts = _reference_accounts(con)
    groups = partition_groups(detectors)

    spool_root = cfg.data_dir / "spool" / run_id

    def spooled(day: str, n: int) -> SpooledDay:
        return spool_day(files[day], _market_table(cfg, con, day), accounts, market_params,
                         groups, n, spool_root / day)

    results: dict[str, dict[str, pa.Table]] = {}
    try:
        if chosen == "ray":
            with ray_session(cfg) as ray:
                n = _num_partitions(cfg, ray)
                cpus = int(ray.cluster_resources().get("CPU", 1))
                for day in days:
                    sd = spooled(day, n)
                    summary.partitions += len(sd.tasks)
                    say("scoring", {"date": day, "partitions": len(sd.tasks)})
                    tasks = [(path, names) for path, names, _ in sd.tasks]
                    results[day] = _merge(_score_in_ray(
                        ray, tasks, sd.shared, params, floors, max(2, 2 * cpus),
                        by_value=bool(cfg.get("ray.address"))), detectors)
                    shutil.rmtree(spool_root / day, ignore_errors=True)
        else:
            n = cfg.get("pipeline.partitions") or 1
            for day in days:
                sd = spooled(day, n)
                summary.partitions += len(sd.tasks)
                say("scoring", {"date": day, "partitions": len(sd.tasks)})
                results[day] = _merge([score_partition(path, names, sd.shared, params, floors)
                                       for path, names, _ in sd.tasks], detectors)
                shutil.rmtree(spool_root / day, ignore_errors=True)
    finally:
        shutil.rmtree(spool_root, ignore_errors=True)

    for name in detectors:
        summary.clusters[name] = sum(results[d][name].num_rows for d in days)
    _write_clusters(cfg, run_id, results)
    file_paths = {r["file_id"]: r["path"] for rows in inputs.values() for r in rows}
    summary.input_files = len(file_paths)
    summary.seconds = round(time.perf_counter() - t0, 3)
    alerts = _alert_rows(run_id, results, floors, file_paths)
    for name in detectors:
        summary.alerts[name] = sum(1 for a in alerts if a[2] == name)
    _append_run(con, summary, started, cfg, user, inputs, alerts)
    say("run_finished", summary.to_json())
    return summary


def _merge(per_partition: list[dict[str, pa.Table]], detectors: list[str]
           ) -> dict[str, pa.Table]:
    """Concatenate partition results in a canonical order (independent of partitioning)."""
    merged = {}
    for name in detectors:
        table = pa.concat_tables([r[name] for r in per_partition if name in r])
        merged[name] = table.sort_by([("key", "ascending"), ("start_ns", "ascending"),
                                      ("end_ns", "ascending"), ("trader", "ascending")])
    return merged


def _market_table(cfg: Config, con: apsw.Connection, day: str) -> pa.Table | None:
    """The day's ingested market data (files.kind = 'market'), or None."""
    sql = """SELECT fd.parquet FROM file_dates fd JOIN files f USING (file_id)
             WHERE f.kind = 'market' AND fd.trade_date = ? ORDER BY fd.file_id"""
    paths = [cfg.data_dir / r["parquet"] for r in store.rows(con, sql, (day,))]
    return pq.read_table(paths) if paths else None


def _reference_accounts(con: apsw.Connection) -> pa.Table | None:
    """The accounts reference table (account, owner, type) once ``appliance.reference`` exists."""
    try:
        from appliance import reference  # type: ignore[attr-defined]
    except ImportError:
        return None
    try:
        table = reference.current(con, "accounts")
    except Exception:  # noqa: BLE001 - no accounts loaded yet
        return None
    return table if table is not None and table.num_rows else None


def _write_clusters(cfg: Config, run_id: str, results: dict[str, dict[str, pa.Table]]) -> None:
    """Every scored cluster with its features, per run, for back-tests and re-scoring."""
    for day, per_detector in results.items():
        for name, table in per_detector.items():
            dest = cfg.data_dir / "runs" / run_id / name / f"trade_date={day}.parquet"
            dest.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, dest, compression="zstd")


def _alert_rows(run_id, results, floors, file_paths) -> list[tuple]:
    rows = []
    for day, per_detector in results.items():
        for name, table in per_detector.items():
            det = REGISTRY[name]
            hits = table.filter(pc.greater_equal(table.column("score"), floors[name]))
            feature_cols = [f"f_{f.name}" for f in det.features]
            for rec in hits.to_pylist():
                features = {c[2:]: _json_number(rec[c]) for c in feature_cols}
                crumbs = json.loads(rec["breadcrumbs"])
                for crumb in crumbs:
                    crumb["path"] = file_paths.get(crumb["source"])
                breadcrumbs = {
                    "files": crumbs,
                    "filter": {"trader": rec["trader"], "instrument": rec["instrument"],
                               "ts_from": iso_ns(rec["start_ns"]), "ts_to": iso_ns(rec["end_ns"])},
                }  # fmt: skip
                rows.append((
                    run_id, day, name, det.model_version, None, int(rec["score"]),
                    float(rec["confidence"]), rec["trader"], rec["account"], rec["symbol"],
                    rec["instrument"], int(rec["start_ns"]), int(rec["end_ns"]),
                    int(rec["n_events"]), json.dumps(features), rec["explanation"],
                    json.dumps(breadcrumbs),
                ))  # fmt: skip
    rows.sort(key=lambda r: (r[1], -r[5], r[2], r[7], r[10], r[11]))
    return rows


def _json_number(x: float | None) -> float | None:
    if x is None or not np.isfinite(x):
        return None
    return float(x)


def _inputs_etl_version(con, inputs: dict[str, list[dict]]) -> str:
    """The ETL version of the run's inputs (several, joined with '+', if they differ)."""
    ids = sorted({r["file_id"] for rows in inputs.values() for r in rows})
    marks = ",".join("?" * len(ids))
    found = sorted({r["etl_version"] for r in store.rows(
        con, f"SELECT etl_version FROM files WHERE file_id IN ({marks})", ids)})
    return "+".join(found) or etl_version()


def _append_run(con, summary: RunSummary, started: str, cfg: Config, user: str,
                inputs: dict[str, list[dict]], alerts: list[tuple]) -> None:
    etl = _inputs_etl_version(con, inputs)
    models = {n: REGISTRY[n].model_version for n in summary.clusters}
    with con:
        con.execute(
            "INSERT INTO runs VALUES (?,?,?,?,?,?,?,?,?,?)",
            (summary.run_id, started, now_iso(), code_version(), cfg.digest, etl,
             json.dumps(models, sort_keys=True), summary.mode,
             json.dumps(summary.to_json(), sort_keys=True), user),
        )  # fmt: skip
        seen = set()
        for rows in inputs.values():
            for r in rows:
                if r["file_id"] not in seen:
                    seen.add(r["file_id"])
                    con.execute("INSERT INTO run_inputs VALUES (?,?,?)",
                                (summary.run_id, r["file_id"], r["sha256"]))
        for day in summary.trade_dates:
            con.execute("INSERT INTO run_dates VALUES (?,?)", (summary.run_id, day))
        con.executemany(
            "INSERT INTO alerts(run_id, trade_date, detector, model_version, etl_version, score,"
            " confidence, trader, account, symbol, instrument, start_ns, end_ns, n_events,"
            " features, explanation, breadcrumbs) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            [(*a[:4], etl, *a[5:]) for a in alerts],
        )
        store.audit(con, now_iso(), user, "run", summary.run_id,
                    {"alerts": summary.alerts, "dates": summary.trade_dates})
