"""Re-measure the install figures of docs/install.md from a bundle tarball (not part of the build).

    python packaging/measure.py dist/surveil-<version>-linux-x86_64.tar.gz

In a fresh temp dir, with a scrubbed environment (PATH=/usr/bin:/bin, HOME in the temp dir): time
``tar xzf``, ``install.sh --prefix`` (incl. ``surveil init``), a cold and a warm ``surveil
--help``, and ``surveil demo --json`` (cold numba cache), with the time from launching the demo to
each of its JSON log events and to the first Ray task starting (Ray writes ``:task_name:<name>``
into the worker's ``worker-*.out`` log when it begins a task; polled every 50 ms). Prints one JSON
line; also the 1-minute load average before and after, since the figures are only comparable on
a quiet machine.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime


def _first_task(demo: str, t0: float, found: dict) -> None:
    pattern = os.path.join(demo, "ray", "session_*", "logs", "worker-*.out")
    while "s" not in found and not found.get("stop"):
        for path in glob.glob(pattern):
            try:
                with open(path) as f:
                    if ":task_name:" in f.read():
                        found["s"] = round(time.time() - t0, 2)
                        return
            except OSError:
                pass
        time.sleep(0.05)


def main(tarball: str) -> int:
    tarball = os.path.abspath(tarball)
    tmp = tempfile.mkdtemp(prefix="svm", dir="/tmp")  # short: Ray's socket paths
    env = {"PATH": "/usr/bin:/bin", "HOME": tmp, "LANG": "C.UTF-8"}
    out: dict = {"load_before": os.getloadavg()[0]}
    try:
        t0 = time.time()
        subprocess.run(["tar", "xzf", tarball], cwd=tmp, check=True)
        out["unpack_s"] = round(time.time() - t0, 2)
        (unpacked,) = [p for p in glob.glob(os.path.join(tmp, "surveil-*")) if os.path.isdir(p)]
        du = subprocess.run(["du", "-sb", unpacked], capture_output=True, text=True, check=True)
        out["unpacked_mb"] = round(int(du.stdout.split()[0]) / 1e6, 1)
        out["tarball_mb"] = round(os.path.getsize(tarball) / 1e6, 1)
        t = time.time()
        subprocess.run(["sh", os.path.join(unpacked, "install.sh"), "--prefix", f"{tmp}/opt",
                        "--bin-dir", f"{tmp}/bin", "--data-dir", f"{tmp}/data"],
                       env=env, cwd=tmp, check=True, capture_output=True)  # fmt: skip
        out["install_s"] = round(time.time() - t, 2)
        exe = os.path.join(tmp, "bin", "surveil")
        for key in ("help_cold_s", "help_warm_s"):
            t = time.time()
            subprocess.run([exe, "--help"], env=env, cwd=tmp, check=True, capture_output=True)
            out[key] = round(time.time() - t, 2)
        demo = os.path.join(tmp, "demo")
        found: dict = {}
        t = time.time()
        threading.Thread(target=_first_task, args=(demo, t, found), daemon=True).start()
        proc = subprocess.run([exe, "demo", "--dir", demo, "--json"], env=env, cwd=tmp,
                              capture_output=True, text=True)  # fmt: skip
        out["demo_s"] = round(time.time() - t, 2)
        found["stop"] = True
        out["tarball_to_first_demo_result_s"] = round(time.time() - t0, 1)
        out["demo_rc"] = proc.returncode
        out["first_ray_task_started_s"] = found.get("s")
        events: dict = {}
        for line in proc.stderr.splitlines():
            if line.startswith("{"):
                try:
                    e = json.loads(line)
                    ts = datetime.fromisoformat(e["ts"].replace("Z", "+00:00")).timestamp()
                except (ValueError, KeyError):
                    continue
                events.setdefault(e.get("event"), round(ts - t, 2))
        out["demo_events_s"] = events
        out["load_after"] = os.getloadavg()[0]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(out))
    return 0 if out.get("demo_rc") == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
