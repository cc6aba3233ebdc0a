"""Parse + clean throughput of the FIX tag=value connector on the simulator's data, one core.

    .venv/bin/python -m bench.bench_ingest_fix [--minutes M] [--seed S] [--profile]

The simulator renders its demo day (``SimConfig.demo``, 30 simulated minutes: ~300k FIX 4.4
ExecutionReports, SOH, QuickFIX file-log lines) once; the day is cached under /tmp (the render is
per-row Python and takes ~20 s) with its reference data (trader aliases, symbology) and the same
events as canonical CSV (``clean/orders.csv``, used by ``bench_ingest_csv --sim``). Times
``connectors.fix`` and ``appliance.clean.apply_steps`` (with the day's reference data) in CPU
seconds of this process, with the load average; one JSON line per result. ``--profile`` prints
where the parse time goes (cProfile on CPU time, by own time, with the load average: the machine
is shared, and wall time under load says little).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv

from bench.common import cpu_timed, load_average, one_core, report

CACHE = Path(os.environ.get("SURVEIL_BENCH_CACHE", "/tmp/surveil-bench"))


def sim_day(minutes: float = 30.0, seed: int = 7, fmt: str = "fix") -> Path:
    """Directory of the cached simulated day (rendered on first use)."""
    out = CACHE / f"sim-{fmt}44-seed{seed}-{minutes:g}min"
    done = out / ".complete"
    if not done.exists():
        from appliance.sim.config import SimConfig
        from appliance.sim.driver import simulate

        print(f"# rendering the simulated day into {out} (once)", file=sys.stderr, flush=True)
        simulate(SimConfig.demo(seed=seed, minutes=minutes, fmt=fmt, fix_version="4.4"), out)
        done.write_text("ok\n")
    return out


def sim_reference(day: Path) -> tuple[pa.Table, pa.Table]:
    """The day's trader aliases and symbology as the reference store returns them (all text,
    an empty ``valid_to`` is null)."""
    def read(name: str, cols: list[str]) -> pa.Table:
        return pacsv.read_csv(day / "reference" / name, convert_options=pacsv.ConvertOptions(
            column_types={c: pa.string() for c in cols}, strings_can_be_null=True,
            null_values=[""]))
    return (read("traders.csv", ["alias", "trader"]),
            read("symbology.csv", ["symbol", "instrument", "valid_from", "valid_to"]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="print the parse profile")
    args = parser.parse_args()
    one_core()
    from appliance.clean import CleanContext, apply_steps
    from connectors import get_connector

    day = sim_day(args.minutes, args.seed)
    path = day / "orders.fix.log"
    size = path.stat().st_size
    traders, symbology = sim_reference(day)
    ctx = CleanContext(traders=traders, symbology=symbology)
    conn = get_connector("fix")
    result = conn.read(path, "warm")  # compile the numba kernels outside the timing
    apply_steps(result.events, "orders", ctx)
    print(f"# {path} ({size / 2**20:.0f} MiB, {result.rows:,} messages), "
          f"load average {load_average()}", flush=True)
    cpu, wall, result = cpu_timed(lambda: conn.read(path, "bench"), args.repeat)
    report("fix parse", result.rows, cpu, wall_s=round(wall, 4), bytes=size,
           accepted=result.accepted, quarantined=result.quarantined, ignored=result.ignored)
    clean_cpu, clean_wall, (kept, _) = cpu_timed(
        lambda: apply_steps(result.events, "orders", ctx), args.repeat)
    report("fix clean (with reference data)", result.rows, clean_cpu,
           wall_s=round(clean_wall, 4), kept=kept.num_rows)
    report("fix parse + clean", result.rows, cpu + clean_cpu, wall_s=round(wall + clean_wall, 4),
           kept=kept.num_rows)
    if args.profile:
        prof = cProfile.Profile(time.process_time)
        prof.enable()
        conn.read(path, "profile")
        prof.disable()
        text = io.StringIO()
        pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(20)
        print(f"# parse profile (CPU seconds), load average {load_average()}", file=sys.stderr)
        print(text.getvalue(), file=sys.stderr)


if __name__ == "__main__":
    main()
