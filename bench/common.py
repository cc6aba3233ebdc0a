"""Shared helpers for the benchmarks: one-core setup, timing (wall and CPU), peak memory, the load
average, and a report line. The build machine is shared: CPU seconds of this process are the
figure to quote, with the load average printed next to them."""

from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any


def one_core() -> None:
    """Pin Arrow's thread pools to one thread so figures are per core."""
    import pyarrow as pa

    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)
    os.environ["NUMBA_NUM_THREADS"] = "1"


def peak_rss_mb() -> float:
    """Peak resident memory of this process (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn: Callable[[], Any], repeat: int = 3) -> tuple[float, Any]:
    """Median wall time of ``repeat`` calls, and the last result."""
    times, result = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2], result


def cpu_timed(fn: Callable[[], Any], repeat: int = 3) -> tuple[float, float, Any]:
    """Median CPU seconds (``time.process_time``: this process, all its threads) and median wall
    seconds of ``repeat`` calls, and the last result."""
    cpu, wall, result = [], [], None
    for _ in range(repeat):
        c0, t0 = time.process_time(), time.perf_counter()
        result = fn()
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - t0)
    return statistics.median(cpu), statistics.median(wall), result


def load_average() -> float:
    """One-minute load average (other jobs on the shared machine)."""
    return round(os.getloadavg()[0], 2)


def report(name: str, rows: int, seconds: float, **extra: Any) -> dict[str, Any]:
    """Print one result line (human) and return it (for JSON)."""
    line = {"bench": name, "rows": rows, "seconds": round(seconds, 4),
            "rows_per_s_per_core": round(rows / seconds), "peak_rss_mb": round(peak_rss_mb(), 1),
            "load1": load_average(), **extra}
    print(f"{name:<40} {rows:>12,} rows  {line['rows_per_s_per_core']:>12,} rows/s/core  "
          f"peak {line['peak_rss_mb']:>8,.1f} MiB  load {line['load1']:.2f}", file=sys.stderr)
    print(json.dumps(line))
    return line
