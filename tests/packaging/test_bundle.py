"""End-to-end test of the PyInstaller bundle (run by `make test-bundle`, which builds it first).

Installs the tarball with packaging/install.sh into a clean temp dir, runs it with a scrubbed
environment (no venv, no PYTHONPATH, PATH=/usr/bin:/bin), and checks: the Ray/numba/pyarrow/
sklearn self-test with real worker processes and loopback-only sockets, `surveil version --json`,
`surveil demo --json` giving the same alerts as the venv, upgrade in place keeping the data, and
uninstall keeping the data. Skipped unless SURVEIL_BUNDLE names the tarball (or
SURVEIL_BUILD_BUNDLE=1 asks this test to run `make bundle` itself).
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _tarball() -> Path:
    path = os.environ.get("SURVEIL_BUNDLE")
    if not path and os.environ.get("SURVEIL_BUILD_BUNDLE") == "1":
        subprocess.run(["make", "bundle"], cwd=ROOT, check=True)
        path = str(max(ROOT.glob("dist/surveil-*-linux-x86_64.tar.gz"), key=os.path.getmtime))
    if not path:
        pytest.skip("bundle test: run `make test-bundle` (or set SURVEIL_BUNDLE=<tarball>)")
    return Path(path).resolve()


def _scrubbed_env(home: Path) -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8", "USER": "surveil"}


def _run(cmd, env, cwd, timeout=600, check=True) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{cmd} -> {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        )
    return proc


def _last_json(stdout: str):
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise AssertionError(f"no JSON line in output:\n{stdout[-3000:]}")


def _comparable(demo: dict) -> dict:
    """The demo's findings without what legitimately differs between two runs."""
    keys = (
        "detector",
        "score",
        "confidence",
        "trader",
        "account",
        "symbol",
        "instrument",
        "trade_date",
        "start_ts",
        "end_ts",
        "n_events",
        "model_version",
    )
    alerts = sorted(tuple(a.get(k) for k in keys) for a in demo["alerts"])
    episodes = sorted(
        (
            e.get("pattern"),
            e.get("trader"),
            e.get("symbol"),
            e.get("alert_id") is not None,
            e.get("score"),
        )
        for e in demo["episodes"]
    )
    return {"alerts": alerts, "episodes": episodes}


def _watch_first_ray_task(demo_dir: Path, t0: float) -> dict:
    """Polls (in a thread, every 50 ms) for the first Ray task to start: Ray writes
    ``:task_name:<name>`` into the worker's ``worker-*.out`` log when it begins a task. The
    returned dict gets ``s``, seconds since ``t0``, once it is seen; set its ``stop`` to end."""
    found: dict = {}
    patterns = [str(demo_dir / "ray" / "session_*" / "logs" / "worker-*.out"),
                f"/tmp/surveil-ray-{os.getuid()}/session_*/logs/worker-*.out"]  # fmt: skip

    since = time.time() - (time.perf_counter() - t0)  # wall clock at t0: skip older sessions

    def poll() -> None:
        while time.perf_counter() - t0 < 600 and not found.get("stop"):
            for path in (p for pat in patterns for p in glob.glob(pat)):
                with contextlib.suppress(OSError), open(path) as f:
                    if os.path.getmtime(path) < since:
                        continue
                    if ":task_name:" in f.read():
                        found["s"] = time.perf_counter() - t0
                        return
            time.sleep(0.05)

    threading.Thread(target=poll, daemon=True).start()
    return found


@pytest.fixture(scope="module")
def installed():
    tarball = _tarball()
    sha = Path(str(tarball) + ".sha256").read_text().split()[0]
    assert hashlib.sha256(tarball.read_bytes()).hexdigest() == sha
    # Short path: Ray's unix sockets under <data>/ray must stay below 107 bytes.
    tmp = Path(tempfile.mkdtemp(prefix="svb", dir="/tmp"))
    home = tmp / "home"
    home.mkdir()
    env = _scrubbed_env(home)
    t0 = time.perf_counter()
    with tarfile.open(tarball) as tf:
        tf.extractall(tmp / "unpack", filter="tar")
    (unpacked,) = (tmp / "unpack").iterdir()
    proc = _run(["sh", unpacked / "install.sh", "--prefix", tmp / "opt", "--bin-dir",
                 tmp / "opt" / "bin", "--data-dir", tmp / "data"], env, tmp)  # fmt: skip
    t_install = time.perf_counter() - t0
    exe = tmp / "opt" / "bin" / "surveil"
    assert exe.is_symlink() and os.access(exe, os.X_OK), proc.stdout
    yield {"tmp": tmp, "env": env, "exe": exe, "unpacked": unpacked, "t_install": t_install,
           "install_log": proc.stdout, "t0": t0}  # fmt: skip
    shutil.rmtree(tmp, ignore_errors=True)


def test_install_log_and_init(installed):
    log = installed["install_log"]
    assert "installed surveil" in log and "linked" in log and "initialised" in log, log
    assert (installed["tmp"] / "data" / "surveil.toml").exists()


#: Size budget (MB, 10^6 bytes). The tarball target (issue #3) is 200 MB; unpacked the target is
#: 450 MB, which the bundle does not meet (see docs/install.md), so this only stops regressions
#: past the measured ~498 MB: lower it whenever the bundle shrinks.
TARBALL_MAX_MB = 200
UNPACKED_MAX_MB = 505


def test_bundle_size(installed):
    tarball = _tarball()
    du = subprocess.run(["du", "-sb", str(installed["unpacked"])], capture_output=True, text=True,
                        check=True)  # fmt: skip
    unpacked, packed = int(du.stdout.split()[0]), tarball.stat().st_size
    print(f"\n[bundle] tarball {packed / 1e6:.1f} MB, unpacked {unpacked / 1e6:.1f} MB")
    assert packed <= TARBALL_MAX_MB * 1e6
    assert unpacked <= UNPACKED_MAX_MB * 1e6, "see build/bundle/inventory.txt for where it goes"


def test_help_cold_start(installed):
    t = time.perf_counter()
    _run([installed["exe"], "--help"], installed["env"], installed["tmp"])
    print(f"\n[bundle] surveil --help: {time.perf_counter() - t:.2f}s")


def test_version_json(installed):
    proc = _run([installed["exe"], "version", "--json"], installed["env"], installed["tmp"])
    info = json.loads(proc.stdout)
    assert info["frozen"] is True
    assert info["commit"]
    for dep in ("ray", "numba", "pyarrow", "scikit-learn"):
        assert dep in info["dependencies"], info["dependencies"]
    build = json.loads((installed["unpacked"] / "BUILD_INFO.json").read_text())
    assert build["version"] == info["version"]


def test_selftest_real_workers_loopback_only(installed):
    data = installed["tmp"] / "probe"
    proc = _run([installed["exe"], "--bundle-selftest", data], installed["env"], installed["tmp"])
    out = _last_json(proc.stdout)
    assert out["frozen"] is True
    assert out["worker_pids"] and out["driver_pid"] not in out["worker_pids"]
    assert [r["sum"] for r in out["results"]] == [4950.0] * 4
    # RandomForest fitted in the driver, predicting in the workers.
    assert [r["pred"] for r in out["results"]] == [0, 0, 1, 1], out["results"]
    # What the bundle's exclusions must not break (packaging/probe.py _feature_checks).
    feats = out["features"]
    assert feats["dataset_sum_a"] == 4.0 and feats["parquet_rows"] == 4, feats
    assert feats["ipc_rows"] == feats["feather_rows"] == 4 and feats["csv_rows"] == 2, feats
    assert feats["rf_predict"] == [1, 0] and feats["rf_proba_ok"], feats
    assert feats["apsw"], feats
    assert feats["numba_threading_layer"] in ("workqueue", "omp", "tbb"), feats
    assert all(a.startswith(("127.", "::ffff:127.")) for a in out["listen"]), out["listen"]
    assert (data / "ray").is_dir()  # Ray's temp dir is under the data dir
    times = {k: v for k, v in out.items() if k[:2] == "t_"}
    print(f"\n[bundle] selftest: {json.dumps(times)}; numba layer {feats['numba_threading_layer']}")


def test_demo_matches_venv(installed):
    env, tmp = installed["env"], installed["tmp"]
    t = time.perf_counter()
    first_task = _watch_first_ray_task(tmp / "demo", t)
    try:
        proc = _run([installed["exe"], "demo", "--dir", tmp / "demo", "--json"], env, tmp)
    finally:
        first_task["stop"] = True
    t_demo = time.perf_counter() - t
    frozen = _last_json(proc.stdout)
    print(
        f"\n[bundle] demo: {t_demo:.1f}s (first Ray task started after "
        f"{first_task.get('s', float('nan')):.1f}s); tarball -> install -> first demo result "
        f"{time.perf_counter() - installed['t0']:.1f}s (install {installed['t_install']:.1f}s)"
    )
    assert frozen["summary"].get("mode", "ray") == "ray", frozen["summary"]
    # Real Ray worker processes ran (their logs are under the demo's Ray temp dir).
    ray_dirs = list((tmp / "demo").glob("ray/session_*/logs")) + list(
        Path(f"/tmp/surveil-ray-{os.getuid()}").glob("session_*/logs")
    )
    assert any(d.glob("worker-*") for d in ray_dirs), ray_dirs
    venv_env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    venv_env.pop("NUMBA_CACHE_DIR", None)
    venv_dir = Path(tempfile.mkdtemp(prefix="svv", dir="/tmp"))
    try:
        ref = _run([sys.executable, "-m", "appliance.cli", "demo", "--dir", venv_dir / "demo",
                    "--json"], venv_env, ROOT)  # fmt: skip
    finally:
        shutil.rmtree(venv_dir, ignore_errors=True)
    venv = _last_json(ref.stdout)
    out = ROOT / "build" / "bundle" / "test-out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "demo-frozen.json").write_text(json.dumps(frozen, indent=1, default=str))
    (out / "demo-venv.json").write_text(json.dumps(venv, indent=1, default=str))
    assert _comparable(frozen) == _comparable(venv), f"diff: see {out}"
    assert frozen["alerts"], "demo produced no alerts"


def test_upgrade_keeps_data_then_uninstall(installed):
    env, tmp = installed["env"], installed["tmp"]
    marker = tmp / "data" / "keep-me"
    marker.write_text("x")
    cfg_before = (tmp / "data" / "surveil.toml").read_bytes()
    proc = _run(["sh", installed["unpacked"] / "install.sh", "--prefix", tmp / "opt"], env, tmp)
    assert "left untouched" in proc.stdout, proc.stdout
    assert marker.exists() and (tmp / "data" / "surveil.toml").read_bytes() == cfg_before
    _run([installed["exe"], "--help"], env, tmp)
    proc = _run(["sh", tmp / "opt" / "current" / "install.sh", "--uninstall", "--prefix",
                 tmp / "opt"], env, tmp)  # fmt: skip
    assert not (tmp / "opt" / "releases").exists() and not installed["exe"].exists()
    assert marker.exists(), "uninstall must keep the data directory"
