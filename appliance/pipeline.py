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

from appliance import store
from appliance.clean import etl_version
from appliance.cluster import gap_clusters
from appliance.config import Config
from appliance.detectors import REGISTRY, KernelInputs
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


# --------------------------------------------------------------------------- partition work


def _breadcrumbs(events: pa.Table, a: int, b: int) -> list[dict[str, Any]]:
    part = events.slice(a, b - a)
    source = part.column("source").to_numpy(zero_copy_only=False)
    line = part.column("line").to_numpy()
    offset = part.column("offset").to_numpy()
    crumbs = []
    for sid in sorted(set(source)):
        sel = source == sid
        crumbs.append({
            "source": str(sid), "events": int(sel.sum()),
            "lines": [int(line[sel].min()), int(line[sel].max())],
            "offsets": [int(offset[sel].min()), int(offset[sel].max())],
        })  # fmt: skip
    return crumbs


def _accounts(events: pa.Table, a: int, b: int) -> str | None:
    values = pc.unique(events.column("account").slice(a, b - a)).drop_null().to_pylist()
    return ";".join(sorted(values)) or None


def score_partition(events: pa.Table, detectors: list[str], gap_ns: int,
                    floors: dict[str, int]) -> dict[str, pa.Table]:
    """Cluster, compute features and score one partition for each detector.

    Returns one table per detector with a row per cluster: identity, span, score, features and,
    for clusters at or above the floor, the explanation and breadcrumbs as JSON.
    """
    out: dict[str, pa.Table] = {}
    for name in detectors:
        det = REGISTRY[name]
        clusters = gap_clusters(events, det.cluster_keys, gap_ns)
        inputs = KernelInputs.build(clusters, det.cluster_keys)
        matrix = det.compute(clusters, inputs)
        scores = det.score(matrix)
        ev, starts = clusters.events, clusters.starts
        first, last = starts[:-1], starts[1:] - 1
        explanation: list[str | None] = [None] * clusters.count
        crumbs: list[str | None] = [None] * clusters.count
        accounts: list[str | None] = [None] * clusters.count
        for c in np.flatnonzero(scores.score >= floors[name]):
            explanation[c] = json.dumps(det.explain(matrix[c]))
            crumbs[c] = json.dumps(_breadcrumbs(ev, int(starts[c]), int(starts[c + 1])))
            accounts[c] = _accounts(ev, int(starts[c]), int(starts[c + 1]))
        ts = inputs.ts
        cols: dict[str, Any] = {
            "trader": ev.column("trader").take(pa.array(first)),
            "instrument": ev.column("instrument").take(pa.array(first)),
            "symbol": ev.column("symbol").take(pa.array(first)),
            "account": pa.array(accounts, pa.string()),
            "start_ns": pa.array(ts[first] if clusters.count else [], pa.int64()),
            "end_ns": pa.array(ts[last] if clusters.count else [], pa.int64()),
            "n_events": pa.array(np.diff(starts), pa.int64()),
            "score": pa.array(scores.score, pa.int64()),
            "confidence": pa.array(scores.confidence, pa.float64()),
        }
        for i, feat in enumerate(det.features):
            cols[f"f_{feat.name}"] = pa.array(matrix[:, i], pa.float64())
        cols["explanation"] = pa.array(explanation, pa.string())
        cols["breadcrumbs"] = pa.array(crumbs, pa.string())
        out[name] = pa.table(cols)
    return out


def partition(events: pa.Table, n: int) -> list[pa.Table]:
    """Split by a stable hash of (trader, instrument): a key never straddles two partitions."""
    if n <= 1 or events.num_rows == 0:
        return [events]
    joined = pc.binary_join_element_wise(
        *[pc.fill_null(events.column(k), "") for k in PARTITION_KEYS], "\x1f"
    )
    encoded = pc.dictionary_encode(joined).combine_chunks()
    bucket_of_key = np.array(
        [int.from_bytes(hashlib.blake2b(k.encode(), digest_size=8).digest(), "little") % n
         for k in encoded.dictionary.to_pylist()], dtype=np.int64,
    )  # fmt: skip
    bucket = bucket_of_key[encoded.indices.to_numpy()]
    return [events.filter(pa.array(bucket == p)) for p in range(n) if (bucket == p).any()]


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
        kwargs.update(_node_ip_address="127.0.0.1", _temp_dir=str(tmp))
        if cfg.get("ray.num_cpus"):
            kwargs["num_cpus"] = cfg.get("ray.num_cpus")
        if cfg.get("ray.object_store_mb"):
            kwargs["object_store_memory"] = cfg.get("ray.object_store_mb") << 20
    ray.init(address=address, **kwargs)
    try:
        yield ray
    finally:
        ray.shutdown()


def _score_in_ray(ray, parts: list[pa.Table], detectors, gap_ns, floors) -> list[dict]:
    remote = ray.remote(score_partition)
    refs = [remote.remote(p, detectors, gap_ns, floors) for p in parts]
    return ray.get(refs)


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
        mode: str | None = None, progress: Progress | None = None) -> RunSummary:
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
    tables = {day: pq.read_table([cfg.data_dir / r["parquet"] for r in inputs[day]])
              for day in days}  # fmt: skip
    total = sum(t.num_rows for t in tables.values())
    chosen = _mode(cfg, total, mode)
    run_id = f"{started[:19].replace('-', '').replace(':', '')}-{uuid.uuid4().hex[:6]}"
    summary = RunSummary(run_id, chosen, days, events=total)
    detectors = enabled_detectors(cfg)
    floors = {d: _floor(cfg, d) for d in detectors}
    gap_ns = int(cfg.get("cluster.gap_seconds") * 1e9)
    say("run_started", {"run_id": run_id, "mode": chosen, "dates": days, "events": total})

    results: dict[str, dict[str, pa.Table]] = {}
    if chosen == "ray":
        with ray_session(cfg) as ray:
            n = _num_partitions(cfg, ray)
            for day in days:
                parts = partition(tables[day], n)
                summary.partitions += len(parts)
                say("scoring", {"date": day, "partitions": len(parts)})
                results[day] = _merge(_score_in_ray(ray, parts, detectors, gap_ns, floors))
    else:
        n = cfg.get("pipeline.partitions") or 1
        for day in days:
            parts = partition(tables[day], n)
            summary.partitions += len(parts)
            say("scoring", {"date": day, "partitions": len(parts)})
            results[day] = _merge([score_partition(p, detectors, gap_ns, floors) for p in parts])

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


def _merge(per_partition: list[dict[str, pa.Table]]) -> dict[str, pa.Table]:
    """Concatenate partition results in a canonical order (independent of partitioning)."""
    merged = {}
    for name in per_partition[0]:
        table = pa.concat_tables([r[name] for r in per_partition])
        merged[name] = table.sort_by([("trader", "ascending"), ("instrument", "ascending"),
                                      ("start_ns", "ascending")])
    return merged


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


def _append_run(con, summary: RunSummary, started: str, cfg: Config, user: str,
                inputs: dict[str, list[dict]], alerts: list[tuple]) -> None:
    etl = etl_version()
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
