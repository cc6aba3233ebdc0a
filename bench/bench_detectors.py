"""Detector throughput: cleaned events (Parquet) → market context → features + scores.

    .venv/bin/python bench/bench_detectors.py [SIM_DIR] [--copies K] [--partitions N]
                                              [--repeat R] [--batch-rows B]

SIM_DIR is a simulator output (orders.csv, market.csv, reference/accounts.csv); without it the
demo preset is simulated into /tmp/surveil-bench-sim. ``--copies K`` makes a K× larger day from
it: copy k renames every trader, account, owner and order id (suffix ``~k``) and keeps the
instruments and the market tape, i.e. a firm K times as busy on the same market. The events
are parsed and written to Parquet once (not timed: they stand for the ingested, cleaned day).

Timed, each the median of ``--repeat`` runs (CPU seconds of the one process doing the work, and
wall seconds):

* **1 core, end to end**: ``pipeline.spool_day`` (stream the Parquet day: dictionary-encode,
  day-level facts, split into partition files) + ``score_partition`` for every task, one
  process, 1 Arrow thread.
* **parallel efficiency**: the run's Ray path on a private Ray of 1 and of 2 CPUs (workers
  started and kernels loaded by a first, untimed run): the spool's map tasks as Ray tasks (one
  per CPU; the driver builds the market tapes meanwhile), the merge, then every scoring task.
  Efficiency = T(1 CPU) ÷ (2 × T(2 CPUs)), for the scoring alone and end to end.
* **memory**: each Ray worker's peak RSS per scoring task above its RSS before the task
  (``VmHWM`` reset via ``/proc/self/clear_refs``), against the task's partition size in Arrow
  (the spooled, dictionary-encoded partition, and the same rows as canonical events); the
  driver's peak while spooling the day in one process.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from appliance import config, pipeline, spool  # noqa: E402
from appliance.detectors import REGISTRY  # noqa: E402
from connectors import get_connector  # noqa: E402

CACHE = Path("/tmp/surveil-bench-cache")
ROW_GROUP = 1 << 16  # rows per Parquet row group of the day (the spool's unit of map work)


def _load(sim: Path):
    events = get_connector("csv").read(sim / "orders.csv", "bench").events
    market = get_connector("md-csv").read(sim / "market.csv", "bench").events
    accounts = pcsv.read_csv(sim / "reference" / "accounts.csv")
    return events, market, accounts


def _renamed(table: pa.Table, columns: tuple[str, ...], k: int) -> pa.Table:
    for c in columns:
        if c in table.column_names:
            col = pc.binary_join_element_wise(table.column(c), pa.scalar(f"~{k}"), "")
            table = table.set_column(table.column_names.index(c), c, col)
    return table


def day_files(sim: Path, copies: int) -> tuple[list[Path], pa.Table, pa.Table, int]:
    """The (possibly K× replicated) day as Parquet, its market and accounts tables."""
    events, market, accounts = _load(sim)
    out = CACHE / f"{sim.name}-x{copies}-rg{ROW_GROUP}"
    path = out / "orders.parquet"
    refs = [accounts] + [_renamed(accounts, ("account", "owner"), k) for k in range(1, copies)]
    if not path.exists():
        out.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with pq.ParquetWriter(tmp, events.schema) as w:
            for k in range(copies):
                t = events if k == 0 else _renamed(events, ("trader", "account", "order_id"), k)
                w.write_table(t.cast(events.schema), row_group_size=ROW_GROUP)
        tmp.rename(path)
    return [path], market, pa.concat_tables(refs), events.num_rows * copies


def params():
    cfg = config.parse(config.example_text(), "bench")
    names = list(REGISTRY)
    det = {n: pipeline.detector_params(cfg, n) for n in names}
    market = {k.split(".")[-1]: v for k, v in cfg.values.items()
              if k.startswith("detectors.market.")}
    return names, det, market, {n: 500 for n in names}


# ----------------------------------------------------------------------- measurement helpers


def _status(field: str) -> int:
    """A ``/proc/self/status`` memory field in bytes."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


def _measured_task(part, names: list[str], shared, det, floors) -> tuple[float, float, int]:
    """A scoring task in a Ray worker: its CPU and wall seconds and its peak RSS above the
    worker's RSS before it."""
    pa.set_cpu_count(1)
    _reset_peak()
    before = _status("VmRSS")
    c0, w0 = time.process_time(), time.perf_counter()
    pipeline.score_partition(part, names, shared, det, floors)
    return time.process_time() - c0, time.perf_counter() - w0, _status("VmHWM") - before


def _ray_day(ray, files, market, accounts, n: int, spool_dir: Path, workers: int, batch_rows):
    """The run's Ray path: spool maps as Ray tasks (tapes built in the driver meanwhile),
    merge, then every scoring task at once. Returns (spool wall, scoring wall, task results,
    tasks)."""
    names, det, mparams, floors = params()
    groups = pipeline.partition_groups(names)
    t0 = time.perf_counter()
    sd = pipeline.spool_day(files, market, accounts, mparams, groups, n, spool_dir,
                            batch_rows=batch_rows, maps=workers,
                            runner=pipeline._ray_map_runner(ray))
    t1 = time.perf_counter()
    remote = ray.remote(_measured_task)
    shared = ray.put(sd.shared)
    res = ray.get([remote.remote(part, ns, shared, det, floors) for part, ns, _ in sd.tasks])
    return t1 - t0, time.perf_counter() - t1, res, sd.tasks


def spool_once(files, market, accounts, n: int, spool_dir: Path, batch_rows: int):
    names, det, mparams, floors = params()
    groups = pipeline.partition_groups(names)
    return pipeline.spool_day(files, market, accounts, mparams, groups, n, spool_dir,
                              batch_rows=batch_rows)


def one_core(files, market, accounts, n: int, batch_rows: int) -> dict:
    names, det, mparams, floors = params()
    with tempfile.TemporaryDirectory(dir=CACHE) as d:
        _reset_peak()
        base = _status("VmRSS")
        c0, w0 = time.process_time(), time.perf_counter()
        sd = spool_once(files, market, accounts, n, Path(d), batch_rows)
        c1, w1 = time.process_time(), time.perf_counter()
        driver_peak = _status("VmHWM") - base
        for path, ns, _ in sd.tasks:
            pipeline.score_partition(path, ns, sd.shared, det, floors)
        c2, w2 = time.process_time(), time.perf_counter()
    return {"spool_cpu": c1 - c0, "score_cpu": c2 - c1, "cpu": c2 - c0, "wall": w2 - w0,
            "spool_wall": w1 - w0, "driver_peak": driver_peak, "tasks": len(sd.tasks)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("sim", nargs="?")
    ap.add_argument("--copies", type=int, default=1)
    ap.add_argument("--partitions", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--batch-rows", type=int, default=1 << 20)
    a = ap.parse_args()
    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)
    CACHE.mkdir(parents=True, exist_ok=True)
    sim = Path(a.sim) if a.sim else Path("/tmp/surveil-bench-sim")
    if not (sim / "orders.csv").exists():
        from appliance.sim import SimConfig, simulate

        simulate(SimConfig.demo(), sim)
    files, market, accounts, n_events = day_files(sim, a.copies)
    sample = pq.ParquetFile(files[0]).read_row_group(0)
    canon_row = sample.nbytes / max(sample.num_rows, 1)
    print(f"events {n_events:,}  market rows {market.num_rows:,}  "
          f"partitions {a.partitions} per detector group  load {_load_avg()}")

    one_core(files[:1], market, accounts, a.partitions, a.batch_rows)  # warm caches/kernels
    runs = [one_core(files, market, accounts, a.partitions, a.batch_rows)
            for _ in range(a.repeat)]
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    print(f"1 core : spool (stream + encode + facts + split) {med['spool_cpu']:.2f} s CPU, "
          f"features+scores {med['score_cpu']:.2f} s CPU → "
          f"{n_events / med['cpu']:,.0f} events/s per core (CPU); wall {med['wall']:.2f} s → "
          f"{n_events / med['wall']:,.0f} events/s; {med['tasks']:.0f} tasks")
    print(f"         driver peak RSS while spooling +{med['driver_peak'] / 2**20:.0f} MiB "
          f"(batch {a.batch_rows:,} rows)")

    import ray

    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # loopback only, as the run does
    walls: dict[int, list[tuple[float, float]]] = {}
    mem: list[tuple[int, int, int]] = []
    for workers in (1, 2):
        ray.init(num_cpus=workers, include_dashboard=False, logging_level="ERROR",
                 log_to_driver=False, _node_ip_address="127.0.0.1",
                 _temp_dir=str(CACHE / "ray"))
        try:
            for rep in range(a.repeat + 1):  # the first run starts and warms every worker
                with tempfile.TemporaryDirectory(dir=CACHE) as d:
                    t_spool, t_score, res, tasks = _ray_day(
                        ray, files, market, accounts, a.partitions, Path(d), workers,
                        a.batch_rows)
                    if rep:
                        walls.setdefault(workers, []).append((t_spool, t_score))
                        mem += [(r[2], rows, spool.read_partition(part).nbytes)
                                for r, (part, _, rows) in zip(res, tasks, strict=True)]
        finally:
            ray.shutdown()
    (s1, c1), (s2, c2) = ((statistics.median(x[0] for x in walls[w]),
                           statistics.median(x[1] for x in walls[w])) for w in (1, 2))
    print(f"Ray, 1 vs 2 workers (wall): spool maps {s1:.2f} s vs {s2:.2f} s, scoring "
          f"{c1:.2f} s vs {c2:.2f} s → parallel efficiency: scoring "
          f"{100 * c1 / (2 * c2):.0f}%, end to end {100 * (s1 + c1) / (2 * (s2 + c2)):.0f}% "
          f"({n_events / (s2 + c2) / 2:,.0f} events/s per core at 2 workers)")
    peak, rows, size = max(mem)
    ratio = max(m[0] / max(m[2], 1) for m in mem if m[1] > 100_000) if any(
        m[1] > 100_000 for m in mem) else float("nan")
    print(f"memory: worst task peak RSS above the worker's resting RSS +{peak / 2**20:.0f} MiB "
          f"({rows:,} rows; {peak / max(size, 1):.2f}× its partition's spooled Arrow size of "
          f"{size / 2**20:.1f} MiB, {peak / max(rows * canon_row, 1):.2f}× the same rows as "
          f"canonical events); max ratio to the spooled size over tasks ≥ 100k rows {ratio:.2f}×")


def _load_avg() -> str:
    with open("/proc/loadavg") as fh:
        return " ".join(fh.read().split()[:3])


if __name__ == "__main__":
    main()
