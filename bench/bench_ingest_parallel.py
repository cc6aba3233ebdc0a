"""Chunked ingest of a large simulator CSV: in-process vs Ray with 1 and 2 workers, and peak
memory against the chunk size (issue #5). With ``--fix-files N``: N FIX session logs (simulator
days of seeds 1..N, so distinct content) ingested in one call, in-process and with 1 and 2 Ray
CPUs (the files run concurrently: a file's chunk chain is one task), with messages/s per core
and the parallel efficiency (2-CPU throughput over twice the 1-CPU one).

    .venv/bin/python -m bench.bench_ingest_parallel [--minutes 240] [--chunk-mb 4 16]
    .venv/bin/python -m bench.bench_ingest_parallel --fix-files 4 --minutes 5 --chunk-mb 16

Each configuration runs in a fresh subprocess (clean peak RSS). Printed per run: wall seconds,
CPU seconds of the driver and of the Ray workers, MB/s, the driver's peak RSS, the largest
worker RSS seen (sampled from /proc every 50 ms) and the load average (the machine is shared).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _proc_stats(pattern: str) -> dict[int, tuple[float, float]]:
    """pid -> (rss MB, cpu s) of this process's descendants whose command line contains
    ``pattern`` (the machine is shared: other users' Ray workers are not ours)."""
    out, parent, stats = {}, {}, {}
    tick = os.sysconf("SC_CLK_TCK")
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text().rsplit(")", 1)[1].split()
            parent[int(d.name)] = int(stat[1])
            if pattern.encode() in (d / "cmdline").read_bytes():
                stats[int(d.name)] = stat
        except (OSError, IndexError, ValueError):
            continue
    me = os.getpid()
    for pid, stat in stats.items():
        up = pid
        while up > 1 and up != me:
            up = parent.get(up, 0)
        if up != me:
            continue
        try:
            rss = int(stat[21]) * os.sysconf("SC_PAGE_SIZE") / 2**20
            out[pid] = (rss, (int(stat[11]) + int(stat[12])) / tick)
        except (OSError, IndexError, ValueError):
            continue
    return out


def _peak_rss_mb() -> int:
    """This process's peak RSS (``VmHWM``; ``ru_maxrss`` would count the parent's at the fork:
    Linux keeps the larger across exec, and the parent held the simulated days)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024)
    return 0


def _warm(fmt: str, sample: str) -> None:
    """A Ray task that imports the ingest code and reads ``sample`` (the first lines of an
    input: numba's cached functions loaded), one per worker before the clock starts: a
    worker's start-up is a fixed cost, not throughput."""
    import appliance.ingest  # noqa: F401
    from connectors import get_connector

    get_connector(fmt).read(Path(sample), "warm")
    time.sleep(0.5)  # hold the worker so that the next warm-up task starts another


def child(args: argparse.Namespace) -> None:
    import dataclasses

    from appliance import config, store
    from appliance.ingest import ingest_files

    data = Path(args.data)
    data.mkdir(parents=True)
    (data / "surveil.toml").write_text(config.example_text())
    cfg = config.load(data / "surveil.toml")
    store.connect(cfg.store_path, create=True).close()
    cfg = dataclasses.replace(cfg, values={**cfg.values, "ingest.chunk_bytes": args.chunk << 20,
                                           "ingest.mode": args.mode,
                                           "ray.num_cpus": args.workers})
    files = [Path(f) for f in args.files]
    peak: dict[int, tuple[float, float]] = {}
    base: dict[int, float] = {}  # a worker's CPU seconds before the timed run
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            for pid, (rss, cpu) in _proc_stats("ray::").items():
                old = peak.get(pid, (0.0, 0.0))
                peak[pid] = (max(old[0], rss), max(old[1], cpu))
            time.sleep(0.05)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    clock = time.pthread_getcpuclockid(thread.ident)  # the sampler's CPU: not ingest work
    con = store.connect(cfg.store_path)
    t0, c0, s0 = time.perf_counter(), os.times(), time.clock_gettime(clock)
    if args.mode == "ray":
        from appliance.pipeline import ray_session

        with ray_session(cfg) as ray:
            # Ray start-up is not ingest time: every worker started, the connectors imported
            sample = Path(args.data) / "warm.sample"
            with open(files[0], "rb") as fh:
                sample.write_bytes(b"".join(fh.readline() for _ in range(200)))
            ray.get([ray.remote(_warm).remote(args.fmt, str(sample))
                     for _ in range(max(args.workers, 1))])
            base.update({pid: cpu for pid, (_, cpu) in _proc_stats("ray::").items()})
            t0, c0, s0 = time.perf_counter(), os.times(), time.clock_gettime(clock)
            reports = ingest_files(cfg, con, files, args.fmt, "bench", ray_module=ray)
            wall, c1, s1 = time.perf_counter() - t0, os.times(), time.clock_gettime(clock)
            stop.set()
    else:
        reports = ingest_files(cfg, con, files, args.fmt, "bench")
        wall, c1, s1 = time.perf_counter() - t0, os.times(), time.clock_gettime(clock)
        stop.set()
    thread.join()
    size = sum(f.stat().st_size for f in files)
    rows = sum(r.rows for r in reports)
    driver_cpu = c1.user + c1.system - c0.user - c0.system - (s1 - s0)
    worker_cpu = sum(c - base.get(pid, 0.0) for pid, (_, c) in peak.items())
    print(json.dumps({
        "mode": args.mode, "workers": args.workers, "chunk_mb": args.chunk,
        "files": len(files), "file_mb": round(size / 2**20, 1), "rows": rows,
        "wall_s": round(wall, 2),
        "driver_cpu_s": round(driver_cpu, 2),
        "sampler_cpu_s": round(s1 - s0, 2),
        "worker_cpu_s": round(worker_cpu, 2),
        "mb_per_s": round(size / 2**20 / wall, 1),
        "rows_per_s": round(rows / wall),
        # the machine is shared: per CPU second is the figure that does not depend on the load
        "rows_per_cpu_s": round(rows / (driver_cpu + worker_cpu)),
        "driver_peak_rss_mb": _peak_rss_mb(),
        "worker_peak_rss_mb": round(max((r for r, _ in peak.values()), default=0)),
        "load_avg": [round(x, 2) for x in os.getloadavg()],
    }))  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--minutes", type=float, default=240.0)
    ap.add_argument("--chunk-mb", type=int, nargs="+", default=[4, 16])
    ap.add_argument("--fix-files", type=int, default=0,
                    help="ingest this many FIX session logs (else one CSV)")
    ap.add_argument("--child", action="store_true")
    ap.add_argument("--files", nargs="+")
    ap.add_argument("--fmt", default="csv")
    ap.add_argument("--data")
    ap.add_argument("--chunk", type=int)
    ap.add_argument("--mode")
    ap.add_argument("--workers", type=int, default=0)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    if args.fix_files:
        fix_files(args)
        return
    from appliance.sim import SimConfig, simulate

    with tempfile.TemporaryDirectory() as tmp:
        sim = simulate(SimConfig(seed=1, minutes=args.minutes, instruments=6, traders=40,
                                 fmt="vendor-a"), Path(tmp) / "sim")
        path = sim.clean_orders_path
        print(f"# {path.stat().st_size / 2**20:.1f} MB canonical CSV, load {os.getloadavg()}")
        runs = [("inprocess", 0, c) for c in args.chunk_mb]
        runs += [("ray", w, args.chunk_mb[0]) for w in (1, 2)]
        for i, (mode, workers, chunk) in enumerate(runs):
            _run_child([path], "csv", f"{tmp}/d{i}", chunk, mode, workers)


def _run_child(files: list[Path], fmt: str, data: str, chunk: int, mode: str,
               workers: int) -> dict | None:
    """One configuration in a fresh subprocess (clean peak RSS); print and return its figures."""
    cmd = [sys.executable, "-m", "bench.bench_ingest_parallel", "--child", "--files",
           *map(str, files), "--fmt", fmt, "--data", data, "--chunk", str(chunk), "--mode",
           mode, "--workers", str(workers)]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    print(out.stdout.strip() or out.stderr[-2000:], flush=True)
    return json.loads(out.stdout) if out.returncode == 0 else None


def fix_files(args: argparse.Namespace) -> None:
    """N FIX session logs in one ``ingest_files`` call: in-process, then 1 and 2 Ray CPUs."""
    from appliance.sim import SimConfig, simulate

    with tempfile.TemporaryDirectory() as tmp:
        files = [simulate(SimConfig(seed=seed, minutes=args.minutes, instruments=6, traders=40,
                                    fmt="fix"), Path(tmp) / f"sim{seed}").orders_path
                 for seed in range(1, args.fix_files + 1)]
        mb = sum(f.stat().st_size for f in files) / 2**20
        print(f"# {len(files)} FIX logs, {mb:.1f} MB, load {os.getloadavg()}")
        chunk = args.chunk_mb[0]
        got = {(mode, w): _run_child(files, "fix", f"{tmp}/{mode}{w}", chunk, mode, w)
               for mode, w in (("inprocess", 0), ("ray", 1), ("ray", 2))}
        for (mode, w), r in got.items():
            if r is not None:
                cores = max(w, 1)
                print(f"# {mode} {cores} CPU: {r['rows'] / r['wall_s'] / cores:,.0f} messages/s "
                      f"per core (wall), {r['rows_per_cpu_s']:,} per CPU second")
        one, two = got[("ray", 1)], got[("ray", 2)]
        if one and two:
            print(f"# efficiency at 2 CPUs: {one['wall_s'] / two['wall_s'] / 2:.2f} (wall)")


if __name__ == "__main__":
    main()
