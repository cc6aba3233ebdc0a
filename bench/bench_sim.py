"""Simulator throughput: events/s per core and peak memory.

    python bench/bench_sim.py [--minutes 60] [--instruments 4] [--bg-rate 250]

Warms the numba cache with a tiny run first, then times one generation (one process, one core).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from appliance.sim import SimConfig, simulate  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--instruments", type=int, default=2)
    p.add_argument("--traders", type=int, default=20)
    p.add_argument("--bg-rate", type=float, default=250.0)
    p.add_argument("--format", default="canonical")
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        simulate(SimConfig(seed=1, minutes=0.2, instruments=1, traders=20), Path(d) / "warm")
        warm = time.perf_counter() - t
        cpu0 = time.process_time()
        t = time.perf_counter()
        r = simulate(SimConfig(seed=7, minutes=a.minutes, instruments=a.instruments,
                               traders=a.traders, bg_rate=a.bg_rate, fmt=a.format),
                     Path(d) / "run")
        wall = time.perf_counter() - t
        cpu = time.process_time() - cpu0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"bench": "sim", "events": r.n_events, "order_events": r.n_order_events,
                      "market_events": r.n_market_events, "wall_s": round(wall, 3),
                      "cpu_s": round(cpu, 3), "events_per_s_per_core": int(r.n_events / cpu),
                      "events_per_s_wall": int(r.n_events / wall), "peak_rss_mib": round(peak),
                      "warmup_s": round(warm, 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
