"""Detector throughput: cleaned events (Parquet) → market context → features + scores.

    .venv/bin/python bench/bench_detectors.py [SIM_DIR] [--copies K] [--partitions N]
                                              [--repeat R] [--batch-rows B]

SIM_DIR is a simulator output (orders.csv, market.csv, reference/accounts.csv); without it the
demo preset is simulated into /tmp/surveil-bench-sim. ``--copies K`` makes a K× larger day from
it: copy k renames every trader, account, owner and order id (suffix ``~k``) and keeps the
instruments and the market tape, i.e. a firm K times as busy on the same market. The events
and the market data are parsed and written to Parquet once (not timed: they stand for the
ingested, cleaned day; the market in row groups of ``ingest.ROW_GROUP_ROWS`` as ingest writes
it).

Timed, each the median of ``--repeat`` runs (CPU seconds of the one process doing the work, and
wall seconds):

* **1 core, end to end**: ``pipeline.spool_day`` (stream the Parquet day: dictionary-encode,
  day-level facts, split into partition files) + ``score_partition`` for every task, one
  process, 1 Arrow thread.
* **parallel efficiency**: the run's Ray path on a private Ray of 1 and of 2 CPUs (workers
  started and kernels loaded by a first, untimed run): the spool's map tasks and the market's
  map tasks as Ray tasks (one each per CPU), one tape task per symbol, the merge, then every
  scoring task. Efficiency = T(1 CPU) ÷ (2 × T(2 CPUs)), for the scoring alone and end to end.
* **memory**: each Ray worker's peak RSS per scoring task above its RSS before the task
  (``VmHWM`` reset via ``/proc/self/clear_refs``), against the task's partition size in Arrow
  (the spooled, dictionary-encoded partition, and the same rows as canonical events); the same
  for the market side's tasks (a market map against its range of the market data, a tape task
  against its symbol's rows, both in Arrow); the driver's peak over the Ray run (spool, merge
  and scoring) and while spooling the day in one process (which builds every tape itself).
"""

from __future__ import annotations

import argparse
import json
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

from appliance import config, ingest, pipeline, spool  # noqa: E402
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


def day_files(sim: Path, copies: int, per_instrument: int = 1
              ) -> tuple[list[Path], list[Path], pa.Table, int]:
    """The (possibly K× replicated) day and its market data as Parquet, and the accounts
    table. Copy k renames traders, accounts and order ids; every ``per_instrument`` copies
    share renamed instruments and symbols with a renamed copy of the market tape (family ``k //
    per_instrument``), so the firm trades more instruments as well as more often."""
    events, market, accounts = _load(sim)
    families = -(-copies // per_instrument)
    out = CACHE / f"{sim.name}-x{copies}-f{families}-rg{ROW_GROUP}"
    path = out / "orders.parquet"
    refs = [accounts] + [_renamed(accounts, ("account", "owner"), k) for k in range(1, copies)]
    if not path.exists():
        out.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with pq.ParquetWriter(tmp, events.schema) as w:
            for k in range(copies):
                t = events if k == 0 else _renamed(events, ("trader", "account", "order_id"), k)
                f = k // per_instrument
                t = t if f == 0 else _renamed(t, ("symbol", "instrument"), f)
                w.write_table(t.cast(events.schema), row_group_size=ROW_GROUP)
        tmp.rename(path)
    market_path = out / "market.parquet"
    if not market_path.exists():  # the run reads the market as ingested: Parquet, never whole
        tmp = market_path.with_suffix(".tmp")
        with pq.ParquetWriter(tmp, market.schema) as w:
            for f in range(families):
                t = market if f == 0 else _renamed(market, ("symbol",), f).cast(market.schema)
                w.write_table(t, row_group_size=ingest.ROW_GROUP_ROWS)
        tmp.rename(market_path)
    return [path], [market_path], pa.concat_tables(refs), events.num_rows * copies


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


_FRESH: list[int] = []  # the worker's RSS and RssAnon before its first task (imports only)


def _measured_task(part, names: list[str], det, floors, shared, symbols, *tapes
                   ) -> tuple[float, float, int, int, int, int]:
    """A scoring task in a Ray worker: its CPU and wall seconds, its peak RSS above the
    worker's RSS before it, the growth of its shared-memory RSS (pages of Ray's object store it
    touched: the market tapes of its symbols, shared by every worker of the node), and its
    peak RSS above the worker's fresh RSS (freed heap is kept by the worker, so this bounds
    what the worker holds after all its tasks so far), and its private heap (``RssAnon``, no
    tape or file pages) above the worker's fresh one after the task (the heap it keeps)."""
    pa.set_cpu_count(1)
    if not _FRESH:
        _FRESH.extend((_status("VmRSS"), _status("RssAnon")))
    _reset_peak()
    before, shm = _status("VmRSS"), _status("RssShmem")
    c0, w0 = time.process_time(), time.perf_counter()
    pipeline.score_with_tapes(part, names, det, floors, shared, symbols, *tapes)
    peak = _status("VmHWM")
    return (time.process_time() - c0, time.perf_counter() - w0, peak - before,
            _status("RssShmem") - shm, peak - _FRESH[0], _status("RssAnon") - _FRESH[1])


#: one line per map or tape task, from the Ray workers (per bench process: runs may overlap)
STATS = CACHE / f"map-task-stats-{os.getpid()}.jsonl"


def _measured_map(fn):
    """``fn`` (a map or tape task function) recording, from its Ray worker, its peak RSS above
    the worker's RSS before it, its CPU seconds, and the rows and Arrow bytes of its input."""

    def run(*args):
        _reset_peak()
        before = _status("VmRSS")
        c0 = time.process_time()
        out = fn(*args)
        peak, cpu = _status("VmHWM") - before, time.process_time() - c0
        rows = size = 0
        if isinstance(out, spool.MarketMapOutput):  # its range of the market data
            rows, size = sum(out.rows.values()), sum(out.nbytes.values())
        elif isinstance(out, tuple):  # a tape: its symbol's pieces
            rows = out[1].rows
            for path, numbers in args[0]:
                with pa.memory_map(path) as src:
                    reader = pa.ipc.open_file(src)
                    size += sum(reader.get_batch(k).nbytes for k in numbers)
        else:  # an order map
            rows = out.total
        with open(STATS, "a") as fh:
            fh.write(json.dumps({"kind": fn.__name__, "peak": peak, "cpu": cpu, "rows": rows,
                                 "size": size}) + "\n")
        return out

    return run


def _ray_day(ray, files, market, accounts, n: int, spool_dir: Path, workers: int, batch_rows):
    """The run's Ray path: spool and market maps and the tape tasks as Ray tasks (each
    measured into ``STATS``), merge, then every scoring task at once. Returns (spool wall,
    scoring wall, task results, tasks)."""
    names, det, mparams, floors = params()
    groups = pipeline.partition_groups(names)
    t0 = time.perf_counter()
    sd = pipeline.spool_day(files, market, accounts, mparams, groups, n, spool_dir,
                            batch_rows=batch_rows, maps=workers,
                            runner=pipeline._ray_map_runner(ray, wrap=_measured_map))
    t1 = time.perf_counter()
    remote = ray.remote(_measured_task)
    day = pipeline.RayDay(ray, sd)  # facts once, each symbol's tape once (the tape tasks')
    res = ray.get([remote.remote(part, ns, det, floors, *day.args(part))
                   for part, ns, _ in sd.tasks])
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
    ap.add_argument("--per-instrument", type=int, default=1,
                    help="copies that share instruments (default: each copy its own)")
    ap.add_argument("--partition-rows", type=int, default=2_000_000,
                    help="more partitions than --partitions where the day is large, as the run")
    ap.add_argument("--workers", default="1,2", help="Ray CPU counts to compare")
    ap.add_argument("--skip-one-core", action="store_true",
                    help="skip the in-process 1-core run (large days)")
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
    files, market, accounts, n_events = day_files(sim, a.copies, a.per_instrument)
    small = day_files(sim, 1)
    n = max(a.partitions, -(-n_events // a.partition_rows))
    sample = pq.ParquetFile(files[0]).read_row_group(0)
    canon_row = sample.nbytes / max(sample.num_rows, 1)
    market_rows = sum(pq.ParquetFile(f).metadata.num_rows for f in market)
    print(f"events {n_events:,}  market rows {market_rows:,}  "
          f"partitions {n} per detector group  load {_load_avg()}")

    if not a.skip_one_core:
        one_core(*small[:3], n, a.batch_rows)  # warm caches/kernels
        runs = [one_core(files, market, accounts, n, a.batch_rows) for _ in range(a.repeat)]
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        print(f"1 core : spool (stream + encode + facts + split) {med['spool_cpu']:.2f} s CPU, "
              f"features+scores {med['score_cpu']:.2f} s CPU → "
              f"{n_events / med['cpu']:,.0f} events/s per core (CPU); wall {med['wall']:.2f} s "
              f"→ {n_events / med['wall']:,.0f} events/s; {med['tasks']:.0f} tasks")
        print(f"         driver peak RSS while spooling +{med['driver_peak'] / 2**20:.0f} MiB "
              f"(batch {a.batch_rows:,} rows)")

    import ray

    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # loopback only, as the run does
    walls: dict[int, list[tuple[float, float, int]]] = {}
    mem: list[tuple[int, int, int, int]] = []
    maps: list[dict] = []  # the map and tape tasks' records
    worker_peak = worker_anon = 0
    counts = [int(w) for w in a.workers.split(",")]
    for workers in counts:
        ray.init(num_cpus=workers, include_dashboard=False, logging_level="ERROR",
                 log_to_driver=False, _node_ip_address="127.0.0.1",
                 _temp_dir=str(CACHE / "ray"))
        try:
            with tempfile.TemporaryDirectory(dir=CACHE) as d:  # start + warm every worker
                _ray_day(ray, *small[:3], n, Path(d), workers, a.batch_rows)
            for _ in range(a.repeat):
                with tempfile.TemporaryDirectory(dir=CACHE) as d:
                    STATS.unlink(missing_ok=True)
                    _reset_peak()
                    base = _status("VmRSS")
                    t_spool, t_score, res, tasks = _ray_day(
                        ray, files, market, accounts, n, Path(d), workers, a.batch_rows)
                    walls.setdefault(workers, []).append(
                        (t_spool, t_score, _status("VmHWM") - base))
                    mem += [(r[2], rows, spool.read_partition(part).nbytes, r[2] - r[3])
                            for r, (part, _, rows) in zip(res, tasks, strict=True)]
                    worker_peak = max([worker_peak] + [r[4] for r in res])
                    worker_anon = max([worker_anon] + [r[5] for r in res])
                    maps += [json.loads(x) for x in STATS.read_text().splitlines()]
                    STATS.unlink()
        finally:
            ray.shutdown()
    med_w = {w: tuple(statistics.median(x[i] for x in walls[w]) for i in range(3))
             for w in counts}
    for w in counts:
        sp, sc, drv = med_w[w]
        print(f"Ray, {w} CPU(s) (wall): spool maps {sp:.2f} s + scoring {sc:.2f} s = "
              f"{sp + sc:.2f} s → {n_events / (sp + sc) / w:,.0f} events/s per core; driver "
              f"peak +{drv / 2**20:.0f} MiB; {len(tasks)} tasks")
    if len(counts) > 1:
        (s1, c1, _), (s2, c2, _) = med_w[counts[0]], med_w[counts[-1]]
        k = counts[-1] / counts[0]
        print(f"parallel efficiency {counts[0]} → {counts[-1]} CPUs: scoring "
              f"{100 * c1 / (k * c2):.0f}%, end to end {100 * (s1 + c1) / (k * (s2 + c2)):.0f}%")
    peak, rows, size, private = max(mem)
    big = [m for m in mem if m[1] > 100_000]
    ratio = max(m[0] / max(m[2], 1) for m in big) if big else float("nan")
    pratio = max(m[3] / max(m[2], 1) for m in big) if big else float("nan")
    largest = max(mem, key=lambda m: m[1])
    print(f"memory: largest partition {largest[1]:,} rows ({largest[2] / 2**20:.1f} MiB spooled); "
          f"worst task peak RSS above the worker's resting RSS +{peak / 2**20:.0f} MiB "
          f"({rows:,} rows; {peak / max(size, 1):.2f}× its partition's spooled Arrow size of "
          f"{size / 2**20:.1f} MiB, {peak / max(rows * canon_row, 1):.2f}× the same rows as "
          f"canonical events), of which +{(peak - private) / 2**20:.0f} MiB are pages of its "
          f"symbols' market tapes in Ray's shared object store; without them "
          f"+{private / 2**20:.0f} MiB = {private / max(size, 1):.2f}× spooled. Max ratio over "
          f"tasks ≥ 100k rows: {ratio:.2f}× with, {pratio:.2f}× without the shared tapes. "
          f"Largest worker RSS above its fresh RSS over the whole run: "
          f"+{worker_peak / 2**20:.0f} MiB = {worker_peak / max(largest[2], 1):.2f}× the largest "
          f"partition (spooled), of which private heap (RssAnon, no tape pages) "
          f"+{worker_anon / 2**20:.0f} MiB = {worker_anon / max(largest[2], 1):.2f}×")
    what = {"spool_map": "order map", "spool_market_map": "market map", "build_tape": "tape"}
    for kind, label in what.items():
        recs = [r for r in maps if r["kind"] == kind]
        if not recs:
            continue
        worst = max(recs, key=lambda r: r["peak"])
        size = (f", {worst['peak'] / worst['size']:.2f}× its input of {worst['size'] / 2**20:.1f}"
                f" MiB Arrow" if worst["size"] else "")
        print(f"{label} tasks ({len(recs)}): worst peak RSS above the worker's RSS before it "
              f"+{worst['peak'] / 2**20:.0f} MiB ({worst['rows']:,} rows{size}); max "
              f"{max(r['cpu'] for r in recs):.2f} s CPU")


def _load_avg() -> str:
    with open("/proc/loadavg") as fh:
        return " ".join(fh.read().split()[:3])


if __name__ == "__main__":
    main()
