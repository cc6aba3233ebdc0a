"""Chunked ingest of a large simulator CSV: in-process vs Ray with 1 and 2 workers, and peak
memory against the chunk size (issue #5).

    .venv/bin/python -m bench.bench_ingest_parallel [--minutes 240] [--chunk-mb 4 16]

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


def child(args: argparse.Namespace) -> None:
    import dataclasses
    import resource

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
    peak: dict[int, tuple[float, float]] = {}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            for pid, (rss, cpu) in _proc_stats("ray::").items():
                old = peak.get(pid, (0.0, 0.0))
                peak[pid] = (max(old[0], rss), max(old[1], cpu))
            time.sleep(0.05)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    con = store.connect(cfg.store_path)
    t0, c0 = time.perf_counter(), os.times()
    if args.mode == "ray":
        from appliance.pipeline import ray_session

        with ray_session(cfg) as ray:
            ray.get(ray.remote(lambda: 0).remote())  # Ray start-up is not ingest time
            t0, c0 = time.perf_counter(), os.times()
            report = ingest_files(cfg, con, [Path(args.file)], "csv", "bench", ray_module=ray)[0]
            wall, c1 = time.perf_counter() - t0, os.times()
            stop.set()
    else:
        report = ingest_files(cfg, con, [Path(args.file)], "csv", "bench")[0]
        wall, c1 = time.perf_counter() - t0, os.times()
        stop.set()
    thread.join()
    size = Path(args.file).stat().st_size
    print(json.dumps({
        "mode": args.mode, "workers": args.workers, "chunk_mb": args.chunk,
        "file_mb": round(size / 2**20, 1), "rows": report.rows,
        "wall_s": round(wall, 2),
        "driver_cpu_s": round(c1.user + c1.system - c0.user - c0.system, 2),
        "worker_cpu_s": round(sum(c for _, c in peak.values()), 2),
        "mb_per_s": round(size / 2**20 / wall, 1),
        "driver_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "worker_peak_rss_mb": round(max((r for r, _ in peak.values()), default=0)),
        "load_avg": [round(x, 2) for x in os.getloadavg()],
    }))  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--minutes", type=float, default=240.0)
    ap.add_argument("--chunk-mb", type=int, nargs="+", default=[4, 16])
    ap.add_argument("--child", action="store_true")
    ap.add_argument("--file")
    ap.add_argument("--data")
    ap.add_argument("--chunk", type=int)
    ap.add_argument("--mode")
    ap.add_argument("--workers", type=int, default=0)
    args = ap.parse_args()
    if args.child:
        child(args)
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
            cmd = [sys.executable, "-m", "bench.bench_ingest_parallel", "--child", "--file",
                   str(path), "--data", f"{tmp}/d{i}", "--chunk", str(chunk), "--mode", mode,
                   "--workers", str(workers)]
            out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
            print(out.stdout.strip() or out.stderr[-2000:], flush=True)


if __name__ == "__main__":
    main()
