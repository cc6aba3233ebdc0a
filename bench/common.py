"""Shared helpers for the benchmarks: one-core setup, timing, peak memory, and a report line."""

from __future__ import annotations

import json
import os
import resource
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


def report(name: str, rows: int, seconds: float, **extra: Any) -> dict[str, Any]:
    """Print one result line (human) and return it (for JSON)."""
    line = {"bench": name, "rows": rows, "seconds": round(seconds, 4),
            "rows_per_s_per_core": round(rows / seconds), "peak_rss_mb": round(peak_rss_mb(), 1),
            **extra}
    print(f"{name:<40} {rows:>12,} rows  {line['rows_per_s_per_core']:>12,} rows/s/core  "
          f"peak {line['peak_rss_mb']:>8,.1f} MiB", file=sys.stderr)
    print(json.dumps(line))
    return line
