"""Detector throughput: cleaned events → market context → features + scores for every detector.

    .venv/bin/python bench/bench_detectors.py [SIM_DIR] [--partitions N]

SIM_DIR is a simulator output (orders.csv, market.csv, reference/accounts.csv); without it the
demo preset is simulated into /tmp/surveil-bench-sim. Prints events/s on one core, events/s with
2 worker processes (parallel efficiency) and each worker's peak RSS against its partition's
Arrow size. Connector parsing is not timed (it has its own benchmark).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pcsv

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from appliance import config, pipeline  # noqa: E402
from appliance.detectors import REGISTRY  # noqa: E402
from connectors import get_connector  # noqa: E402

_STATE: dict = {}


def _load(sim: Path):
    events = get_connector("csv").read(sim / "orders.csv", "bench").events
    market = get_connector("md-csv").read(sim / "market.csv", "bench").events
    accounts = pcsv.read_csv(sim / "reference" / "accounts.csv")
    return events, market, accounts


def _params():
    cfg = config.parse(config.example_text(), "bench")
    names = list(REGISTRY)
    params = {n: pipeline.detector_params(cfg, n) for n in names}
    market = {k.split(".")[-1]: v for k, v in cfg.values.items()
              if k.startswith("detectors.market.")}
    return names, params, market, {n: 500 for n in names}


def _tasks(events, market, accounts, n):
    names, params, mparams, floors = _params()
    day, info = pipeline.prepare_day(events, market, accounts, mparams)
    tasks = [(p, ns) for keys, ns in pipeline.partition_groups(names).items()
             for p in pipeline.partition(day, n, keys)]
    return tasks, info, params, floors


def _work(k: int):
    tasks, info, params, floors = _STATE["tasks"]
    part, names = tasks[k]
    t = time.perf_counter()
    pipeline.score_partition(part, names, info, params, floors)
    return k, time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("sim", nargs="?")
    ap.add_argument("--partitions", type=int, default=8)
    a = ap.parse_args()
    pa.set_cpu_count(1)
    sim = Path(a.sim) if a.sim else Path("/tmp/surveil-bench-sim")
    if not (sim / "orders.csv").exists():
        from appliance.sim import SimConfig, simulate

        simulate(SimConfig.demo(), sim)
    events, market, accounts = _load(sim)
    n = events.num_rows
    _tasks(events.slice(0, 20000), market, accounts, 1)  # compile / warm every kernel
    for t, names in _tasks(events.slice(0, 20000), market, accounts, 1)[0]:
        pipeline.score_partition(t, names, *_tasks(events.slice(0, 1), market, accounts, 1)[1:])
    t0 = time.perf_counter()
    tasks, info, params, floors = _tasks(events, market, accounts, a.partitions)
    t_prep = time.perf_counter() - t0
    t1 = time.perf_counter()
    for part, names in tasks:
        pipeline.score_partition(part, names, info, params, floors)
    t_score = time.perf_counter() - t1
    one = n / (t_prep + t_score)
    print(f"events {n:,}  market rows {market.num_rows:,}  tasks {len(tasks)}")
    print(f"1 core : prepare (as-of join, reference, info) {t_prep:.2f} s, "
          f"features+scores {t_score:.2f} s → {one:,.0f} events/s per core")
    _STATE["tasks"] = (tasks, info, params, floors)
    with ProcessPoolExecutor(2) as pool:
        list(pool.map(_work, range(min(2, len(tasks)))))  # fork + warm
        t2 = time.perf_counter()
        res = list(pool.map(_work, range(len(tasks))))
        wall = time.perf_counter() - t2
    eff = t_score / (2 * wall)
    print(f"2 cores: features+scores {wall:.2f} s → {n / wall / 2:,.0f} events/s per core, "
          f"parallel efficiency {100 * eff:.0f}% (scoring stage; prepare runs once per day)")
    biggest = max(t[0].nbytes for t in tasks)
    rss = max(r[2] for r in res) / 1024
    print(f"largest partition {biggest / 2**20:.1f} MiB Arrow; worker peak RSS {rss:.0f} MiB "
          f"(includes the interpreter, numba and pyarrow: ~{rss - biggest / 2**20:.0f} MiB)")
    print(f"pid {os.getpid()} done")


if __name__ == "__main__":
    main()
