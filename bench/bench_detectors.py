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
* **parallel efficiency**: the same tasks on a warm pool of 1 and of 2 worker processes
  (``spawn``, kernels compiled and loaded before timing), compute only (the spooled partitions)
  and end to end (spool + pool). Efficiency = T(1 worker) ÷ (2 × T(2 workers)).
* **memory**: each worker's peak RSS per task above its RSS before the task (``VmHWM`` reset
  via ``/proc/self/clear_refs``), against the task's partition size in Arrow (the spooled,
  dictionary-encoded partition, and the same rows as canonical events); the driver's peak
  while spooling the day.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from appliance import config, pipeline  # noqa: E402
from appliance.detectors import REGISTRY  # noqa: E402
from connectors import get_connector  # noqa: E402

CACHE = Path("/tmp/surveil-bench-cache")


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
    out = CACHE / f"{sim.name}-x{copies}"
    path = out / "orders.parquet"
    refs = [accounts] + [_renamed(accounts, ("account", "owner"), k) for k in range(1, copies)]
    if not path.exists():
        out.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with pq.ParquetWriter(tmp, events.schema) as w:
            for k in range(copies):
                t = events if k == 0 else _renamed(events, ("trader", "account", "order_id"), k)
                w.write_table(t.cast(events.schema), row_group_size=1 << 20)
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


_W: dict = {}


def _worker_init(day: tuple) -> None:
    pa.set_cpu_count(1)
    _W["day"] = day


def _worker_task(path: str, names: list[str]) -> tuple[float, float, int, int]:
    shared, det, floors = _W["day"]
    _reset_peak()
    before = _status("VmRSS")
    c0, w0 = time.process_time(), time.perf_counter()
    pipeline.score_partition(path, names, shared, det, floors)
    return (time.process_time() - c0, time.perf_counter() - w0, before,
            _status("VmHWM") - before)


def _pool_run(pool, tasks) -> tuple[float, list]:
    t0 = time.perf_counter()
    futs = [pool.submit(_worker_task, str(p), ns) for p, ns, _ in tasks]  # largest first
    res = [f.result() for f in futs]
    return time.perf_counter() - t0, res


def spool(files, market, accounts, n: int, spool_dir: Path, batch_rows: int):
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
        sd = spool(files, market, accounts, n, Path(d), batch_rows)
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

    names, det, mparams, floors = params()
    with tempfile.TemporaryDirectory(dir=CACHE) as d:
        sd = spool(files, market, accounts, a.partitions, Path(d), a.batch_rows)
        t_spool = statistics.median(r["spool_wall"] for r in runs)
        ctx = multiprocessing.get_context("spawn")
        walls: dict[int, list[float]] = {}
        mem: list[tuple[int, int, int]] = []
        for workers in (1, 2):
            with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init,
                                     initargs=((sd.shared, det, floors),)) as pool:
                _pool_run(pool, sd.tasks[-workers:] * 2)  # start + warm every worker
                for _ in range(a.repeat):
                    wall, res = _pool_run(pool, sd.tasks)
                    walls.setdefault(workers, []).append(wall)
                    mem += [(r[3], sd.tasks[k][2], Path(sd.tasks[k][0]).stat().st_size)
                            for k, r in enumerate(res)]
        t1, t2 = statistics.median(walls[1]), statistics.median(walls[2])
        print(f"compute only (spooled partitions → features+scores), wall: 1 worker {t1:.2f} s, "
              f"2 workers {t2:.2f} s → parallel efficiency {100 * t1 / (2 * t2):.0f}%")
        e1, e2 = t_spool + t1, t_spool + t2
        print(f"end to end (spool in the driver + pool), wall: 1 worker {e1:.2f} s, 2 workers "
              f"{e2:.2f} s → parallel efficiency {100 * e1 / (2 * e2):.0f}%, "
              f"{n_events / e2 / 2:,.0f} events/s per core")
        peak, rows, size = max(mem)
        biggest = max(sd.tasks, key=lambda t: t[2])
        big_size = Path(biggest[0]).stat().st_size
        ratio = max(m[0] / max(m[2], 1) for m in mem if m[1] > 100_000) if any(
            m[1] > 100_000 for m in mem) else float("nan")
        print(f"memory: largest partition {biggest[2]:,} rows = {big_size / 2**20:.1f} MiB "
              f"spooled Arrow ({biggest[2] * canon_row / 2**20:.1f} MiB as canonical events); "
              f"worst task peak RSS above the worker's resting RSS +{peak / 2**20:.0f} MiB "
              f"({rows:,} rows, {peak / max(size, 1):.2f}× its spooled partition, "
              f"{peak / max(rows * canon_row, 1):.2f}× canonical); max ratio over tasks ≥ 100k "
              f"rows {ratio:.2f}×")


def _load_avg() -> str:
    with open("/proc/loadavg") as fh:
        return " ".join(fh.read().split()[:3])


if __name__ == "__main__":
    main()
