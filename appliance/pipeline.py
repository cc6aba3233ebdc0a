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
from appliance.allocator import keep_freed_memory
from appliance.arrays import distinct
from appliance.clean import etl_version
from appliance.config import Config
from appliance.context import InstrumentInfo
from appliance.detectors import REGISTRY
from appliance.detectors.base import Scores
from appliance.detectors.common import (
    CODE_COLUMNS,
    RELEASABLE,
    Batch,
    Grouping,
    LazyColumns,
)
from appliance.spool import (
    SPOOLED_SCHEMA,
    BuiltTapes,
    DayShared,
    MapOutput,
    PartitionRef,
    SpooledDay,
    bucket,
    build_tape,
    local_runner,
    partition_rows,
    read_column,
    read_partition,
    spool_day,
    spool_map,
    spool_market_map,
    tape_jobs,
    with_reference,
    with_tapes,
)
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
    line, offset = (x[rows] for x in batch.provenance())
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


def _joined_all(batch: Batch, column: str, g: Grouping) -> list[str | None]:
    """``_joined`` of every cluster of ``g``, from one sort of (cluster, code) pairs."""
    values = batch.names[column]
    width = len(values) + 1  # codes shifted by one: a -1 stays in its cluster
    cluster = np.repeat(np.arange(g.count, dtype=np.int64), g.sizes())
    pairs = distinct(cluster * width + batch.codes[column][g.idx] + 1)
    found: list[set[str]] = [set() for _ in range(g.count)]
    for c, code in zip((pairs // width).tolist(), (pairs % width - 1).tolist(), strict=True):
        found[c].add(values[code])
    return [";".join(sorted(names - {""})) or None for names in found]


def _joined(batch: Batch, column: str, rows: np.ndarray) -> str | None:
    values = batch.names[column]
    found = sorted({values[int(c)] for c in np.unique(batch.codes[column][rows])} - {""})
    return ";".join(found) or None


def score_partition(events: pa.Table | str | Path | PartitionRef, detectors: list[str],
                    info: dict[str, InstrumentInfo] | DayShared,
                    params: dict[str, dict[str, Any]], floors: dict[str, int]
                    ) -> dict[str, pa.Table]:
    """Prepare one partition once, then cluster, compute features and score it for each
    detector. ``events`` is a spooled partition (its pieces, a file or a table, with ``info``
    the day's ``DayShared``) or prepared canonical events (with ``info`` the instrument
    facts). Returns one table per detector with a row per cluster: identity, span, score,
    features and, for clusters at or above the floor, the explanation and breadcrumbs as JSON.
    """
    keep_freed_memory()
    # only the arrays, codes and market context the detectors read (8 B per row a column)
    dets = [REGISTRY[name] for name in detectors]
    ctx, fields, code_columns = (tuple(dict.fromkeys(c for d in dets for c in getattr(
        d, attr, every))) for attr, every in (("context_columns", context.CONTEXT_COLUMNS),
                                              ("batch_fields", RELEASABLE),
                                              ("code_columns", CODE_COLUMNS)))
    if isinstance(info, DayShared):
        # a column at a time, a piece at a time: the mapped pages of one piece of one column,
        # never the whole partition, are held next to the batch built from it
        if isinstance(events, PartitionRef):
            ref, remaps = events, info.remaps
            columns = LazyColumns(lambda c: read_column(ref, remaps, c), SPOOLED_SCHEMA,
                                  partition_rows(ref))
        else:
            table = read_partition(events, info.remaps)
            columns = LazyColumns(lambda c: table.column(c).chunks, table.schema,
                                  table.num_rows)
        batch = Batch.build(columns, info.market, info.names, ctx, fields, code_columns)
        info = info.info
    else:
        batch = Batch.build(events, ctx_columns=ctx, fields=fields)
    # features and scores of every detector first, dropping after each the arrays that no
    # detector still to run reads; the explanations (which read the partition's provenance)
    # come after, when only the codes, times and groupings are left
    found = []
    _release(batch, dets)
    for k, det in enumerate(dets):
        g = det.group(batch, info, params[detectors[k]])
        _release(batch, dets[k:], grouped=True)  # e.g. the time order, once keyed
        matrix = det.kernel(batch, g, params[detectors[k]])
        found.append((g, matrix, det.score(matrix)))
        _release(batch, dets[k + 1:])
    batch.ensure_codes(("trader", "instrument", "symbol", "account", "source",
                        *(k for d in dets for k in d.cluster_keys)))
    return {name: _clusters_table(REGISTRY[name], batch, g, matrix, scores, floors[name])
            for name, (g, matrix, scores) in zip(detectors, found, strict=True)}


def _release(batch: Batch, dets: list, grouped: bool = False) -> None:
    """Drop the batch's arrays that none of ``dets`` (the detectors still to run; with
    ``grouped``, the first of them has its grouping and needs only its kernel's) reads."""
    later = dets[1:] if grouped else dets
    fields = {f for d in later for f in getattr(d, "batch_fields", RELEASABLE)}
    if grouped:
        fields |= set(getattr(dets[0], "batch_fields", RELEASABLE))
    batch.release(fields, {c for d in dets for c in getattr(d, "context_columns",
                                                             context.CONTEXT_COLUMNS)})


def _clusters_table(det, batch: Batch, g: Grouping, matrix: np.ndarray, scores: Scores,
                    floor: int) -> pa.Table:
    """One detector's clusters of a partition: identity, span, score, features and, for
    clusters at or above ``floor``, the explanation and breadcrumbs as JSON."""
    n = g.count
    first, last = g.first_rows(), g.last_rows()
    explanation: list[str | None] = [None] * n
    crumbs: list[str | None] = [None] * n
    accounts: list[str | None] = [None] * n
    traders = _joined_all(batch, "trader", g) if det.multi_trader else \
        _names(batch, "trader", g.name_row)
    flagged = np.flatnonzero(scores.score >= floor)
    reasons = (det.explain_rows(matrix[flagged]) if hasattr(det, "explain_rows")
               else [det.explain(matrix[c]) for c in flagged])
    for c, why in zip(flagged.tolist(), reasons, strict=True):
        rows = g.rows(c)
        explanation[c] = json.dumps(why)
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
        "n_events": pa.array(g.sizes(), pa.int64()),
        "score": pa.array(scores.score, pa.int64()),
        "confidence": pa.array(scores.confidence, pa.float64()),
    }
    for i, feat in enumerate(det.features):
        cols[f"f_{feat.name}"] = pa.array(matrix[:, i], pa.float64())
    cols["explanation"] = pa.array(explanation, pa.string())
    cols["breadcrumbs"] = pa.array(crumbs, pa.string())
    return pa.table(cols)


def partition(events: pa.Table, n: int, keys: tuple[str, ...] = PARTITION_KEYS
              ) -> list[pa.Table]:
    """Split by a stable hash of ``keys``: a key never straddles two partitions."""
    if n <= 1 or events.num_rows == 0:
        return [events]
    joined = pc.binary_join_element_wise(
        *[pc.fill_null(events.column(k), "") for k in keys], "\x1f"
    ) if len(keys) > 1 else pc.fill_null(events.column(keys[0]), "")
    encoded = pc.dictionary_encode(joined).combine_chunks()
    bucket_of_key = np.array([bucket(k, n) for k in encoded.dictionary.to_pylist()],
                             dtype=np.int64)
    bucket = bucket_of_key[encoded.indices.to_numpy()]
    return [events.filter(pa.array(bucket == p)) for p in range(n) if (bucket == p).any()]


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


class RayDay:
    """The day's shared part in Ray's object store: the facts and names once, and each
    symbol's market tape once (the tape tasks' results as they are, a tape built here put on
    first use), so that a task maps only the tapes of its own symbols."""

    def __init__(self, ray, day: SpooledDay) -> None:
        self.ray = ray
        self.tapes = day.tapes
        self.reference = day.shared.market.reference_symbol
        self.base = ray.put(with_tapes(day.shared, (), ()))
        self.refs: dict[str, Any] = {}

    def args(self, part: PartitionRef) -> tuple:
        """``(shared, symbols, *tapes)`` for a task on ``part``."""
        wanted = list(part.symbols) + [self.reference]
        symbols = tuple(dict.fromkeys(s for s in wanted if s in self.tapes))
        for s in symbols:
            if s not in self.refs:
                tape = self.tapes[s]
                self.refs[s] = tape if isinstance(tape, self.ray.ObjectRef) else self.ray.put(tape)
        return (self.base, symbols, *(self.refs[s] for s in symbols))


def score_with_tapes(part, names: list[str], params, floors, shared: DayShared,
                     symbols: tuple[str, ...], *tapes) -> dict[str, pa.Table]:
    """``score_partition`` for a Ray task given its share of the day's tapes."""
    return score_partition(part, names, with_tapes(shared, symbols, tapes), params, floors)


def _score_in_ray(ray, tasks: list[tuple[Any, list[str]]], sd: SpooledDay, params, floors,
                  max_in_flight: int, by_value: bool) -> list[dict]:
    """One Ray task per (partition, detector group), largest first; the day's shared part is
    put once and each symbol's tape stored once (``RayDay``). A task reads its own partition file
    (``by_value``: the driver sends the rows, for workers on other machines); at most
    ``max_in_flight`` tasks are pending, so memory stays bounded whatever the day size. Results
    come back in submission order."""
    remote = ray.remote(score_with_tapes)
    day = RayDay(ray, sd)
    results: list[Any] = [None] * len(tasks)
    pending: dict[Any, int] = {}
    for k, (part, names) in enumerate(tasks):
        if len(pending) >= max_in_flight:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                results[pending.pop(ref)] = ray.get(ref)
        arg = ray.put(read_partition(part, sd.shared.remaps)) if by_value else part
        pending[remote.remote(arg, names, params, floors, *day.args(part))] = k
    for ref, k in pending.items():
        results[k] = ray.get(ref)
    return results


def _ray_map_runner(ray, wrap: Callable[[Callable], Callable] = lambda fn: fn):
    """Run the spool's map tasks, the market's map tasks and one tape task per symbol as Ray
    tasks (the accounts table is put once): all of the day's heavy work runs on Ray's CPUs,
    and no process holds more market data than one map's batch or one symbol's tape. A tape
    stays in the object store (a tape task's first result); the driver gets its summary only.
    ``wrap`` wraps each task function (the benchmark measures them)."""
    remote = ray.remote(wrap(spool_map))
    market_map = ray.remote(wrap(spool_market_map))
    tape = ray.remote(num_returns=2)(wrap(build_tape))

    def submit(jobs: list[tuple], market_jobs: list[tuple]):
        accounts = jobs[0][1] if jobs else None
        shared = ray.put(accounts) if accounts is not None else None
        market_refs = [market_map.remote(*job) for job in market_jobs]  # first: tapes need them
        refs = [remote.remote(src, shared, *rest) for src, _, *rest in jobs]

        def collect() -> tuple[list[MapOutput], BuiltTapes]:
            # the tape tasks queue behind the order maps and fill the CPUs as those end
            built = {name: tape.remote(pieces)
                     for name, pieces in tape_jobs(ray.get(market_refs)).items()}
            outputs = ray.get(refs)
            summaries = ray.get([summary for _, summary in built.values()])
            return outputs, {name: (ref, summary) for (name, (ref, _)), summary
                             in zip(built.items(), summaries, strict=True)}

        return collect

    return submit


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


def _num_partitions(cfg: Config, ray_module, events: int) -> int:
    """Partitions per detector group: as configured, else 2 per Ray CPU, or more where the day
    is large, so a partition stays near ``pipeline.partition_rows`` events."""
    if cfg.get("pipeline.partitions"):
        return int(cfg.get("pipeline.partitions"))
    cpus = int(ray_module.cluster_resources().get("CPU", 1)) if ray_module else 1
    return max(1, 2 * cpus, -(-events // int(cfg.get("pipeline.partition_rows"))))


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
    files = {day: [f for r in inputs[day] for f in store.parquet_files(cfg.data_dir, r["parquet"])]
             for day in days}
    sizes = {day: sum(pq.ParquetFile(f).metadata.num_rows for f in fs)
             for day, fs in files.items()}
    total = sum(sizes.values())
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

    def spooled(day: str, n: int, maps: int = 1, runner=None) -> SpooledDay:
        return spool_day(files[day], _market_files(cfg, con, day), accounts, market_params,
                         groups, n, spool_root / day, maps=maps, runner=runner)

    results: dict[str, dict[str, pa.Table]] = {}
    try:
        if chosen == "ray":
            with ray_session(cfg) as ray:
                cpus = int(ray.cluster_resources().get("CPU", 1))
                remote_nodes = bool(cfg.get("ray.address"))
                for day in days:
                    n = _num_partitions(cfg, ray, sizes[day])
                    # on a cluster the spool stays in the driver (its files are local to it),
                    # which puts each symbol's tape as it is built: one tape at a time here
                    sd = (spooled(day, n, runner=local_runner(keep=ray.put)) if remote_nodes
                          else spooled(day, n, cpus, _ray_map_runner(ray)))
                    summary.partitions += len(sd.tasks)
                    say("scoring", {"date": day, "partitions": len(sd.tasks)})
                    tasks = [(part, names) for part, names, _ in sd.tasks]
                    results[day] = _merge(_score_in_ray(
                        ray, tasks, sd, params, floors, max(2, 2 * cpus),
                        by_value=remote_nodes), detectors)
                    shutil.rmtree(spool_root / day, ignore_errors=True)
        else:
            n = cfg.get("pipeline.partitions") or 1
            for day in days:
                sd = spooled(day, n)
                summary.partitions += len(sd.tasks)
                say("scoring", {"date": day, "partitions": len(sd.tasks)})
                results[day] = _merge([score_partition(part, names, sd.shared, params, floors)
                                       for part, names, _ in sd.tasks], detectors)
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


def _market_files(cfg: Config, con: apsw.Connection, day: str) -> list[Path]:
    """The day's ingested market data files (files.kind = 'market'): never read whole here,
    the spool's market maps split them by symbol."""
    sql = """SELECT fd.parquet FROM file_dates fd JOIN files f USING (file_id)
             WHERE f.kind = 'market' AND fd.trade_date = ? ORDER BY fd.file_id"""
    return [f for r in store.rows(con, sql, (day,))
            for f in store.parquet_files(cfg.data_dir, r["parquet"])]


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
