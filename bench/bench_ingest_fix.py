"""Parse + clean throughput of the FIX tag=value connector on the simulator's data, one core.

    .venv/bin/python -m bench.bench_ingest_fix [--minutes M] [--seed S] [--profile]
                                               [--chunk-mb MB]

The simulator renders its demo day (``SimConfig.demo``, 30 simulated minutes: ~300k FIX 4.4
ExecutionReports, SOH, QuickFIX file-log lines) once; the day is cached under /tmp (the render is
per-row Python and takes ~20 s) with its reference data (trader aliases, symbology) and the same
events as canonical CSV (``clean/orders.csv``, used by ``bench_ingest_csv --sim``). Times
``connectors.fix`` and ``appliance.clean.apply_steps`` (with the day's reference data) in CPU
seconds of this process, with the load average; one JSON line per result. ``--profile`` prints
where the parse time goes (cProfile on CPU time, by own time, with the load average: the machine
is shared, and wall time under load says little). ``--chunk-mb MB`` also times the file read as
chunked ingest reads a file larger than ``ingest.chunk_bytes``: chunks of complete lines, each
read with the previous one's ``FixCarry`` and a held-back tail (``tail_limit``: half a chunk),
each cleaned (parse + clean per chunk; no Parquet, no store). The process keeps freed heap as
ingest does (``appliance.allocator``).
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


def chunked(path: Path, chunk: int, conn, ctx) -> tuple[int, int, int]:
    """Parse and clean ``path`` as chunked ingest does (``appliance.ingest._stateful_pass``
    without its Parquet parts): (records, events kept, chunks)."""
    import tempfile

    from appliance.clean import apply_steps
    from appliance.ingest import carry_class, read_range
    from appliance.tee import _Plain, complete_lines

    size, carry, start, line, rows, kept, k = path.stat().st_size, carry_class("fix").empty(), \
        0, 1, 0, 0, 0
    reader = _Plain(path)
    with tempfile.TemporaryDirectory() as tmp:
        while (data := complete_lines(reader, start, chunk, at_eof=True)) is not None:
            last = start + len(data) >= size
            extra = {} if last else {"tail_limit": chunk // 2}
            result = read_range(conn, data, path=path, fid="bench", start=start,
                                first_line=line, preamble=None, tmp_dir=Path(tmp),
                                carry=carry, **extra)
            kept += apply_steps(result.events, "orders", ctx)[0].num_rows
            carry, used = result.carry, result.consumed
            line += data[:used].count(b"\n")
            rows, start, k = rows + result.rows, start + used, k + 1
    reader.close()
    return rows, kept, k


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="print the parse profile")
    parser.add_argument("--chunk-mb", type=float, default=0.0,
                        help="also time chunked reads of this many MiB (parse + clean)")
    args = parser.parse_args()
    one_core()
    from appliance.allocator import keep_freed_memory

    keep_freed_memory()
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
    if args.chunk_mb:
        chunk = int(args.chunk_mb * 2**20)
        chunked(path, chunk, conn, ctx)  # the same warm-up as the whole file's
        cpu, wall, (rows, kept, chunks) = cpu_timed(lambda: chunked(path, chunk, conn, ctx),
                                                    args.repeat)
        report(f"fix parse + clean, {args.chunk_mb:g} MiB chunks", rows, cpu,
               wall_s=round(wall, 4), kept=kept, chunks=chunks)
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
