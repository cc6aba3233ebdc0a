"""``surveil demo``: simulate a trading day, ingest it, score it, and show what was found.

The demo directory is recreated on every run (only if it carries the demo marker, so a real data
directory is never removed by mistake).
"""

from __future__ import annotations

import getpass
import json
import shutil
import sys
from pathlib import Path
from typing import Any

from appliance import config, pipeline, reference, store
from appliance.exit_codes import ExitCode
from appliance.ingest import ingest_file
from appliance.progress import Reporter
from appliance.service import Service

MARKER = ".surveil-demo"
TOP = 15


def _fresh_dir(target: Path) -> None:
    if target.exists():
        # (``cache`` may already be there: the CLI puts compiled kernels under the data dir)
        if not (target / MARKER).exists() and any(e.name != "cache" for e in target.iterdir()):
            raise config.ConfigError(
                f"{target}: exists and is not a demo directory; pass another --dir")
        for entry in target.iterdir():  # keep compiled kernels: the demo reruns in seconds
            if entry.name != "cache":
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    target.mkdir(parents=True, exist_ok=True)
    (target / MARKER).write_text("created by `surveil demo`; removed by the next demo run\n")


def _episodes_found(truth: list[dict[str, Any]], alerts: list[dict[str, Any]]) -> list[dict]:
    """Match each injected episode to the best alert on the same trader and symbol that
    overlaps it in time."""
    found = []
    for ep in truth:
        hits = [a for a in alerts if ep["trader"] in a["trader"].split(";")
                and a["symbol"] == ep["symbol"]
                and a["start_ts"] <= ep["end_ts"] and a["end_ts"] >= ep["start_ts"]]
        best = max(hits, key=lambda a: a["score"], default=None)
        found.append({**ep, "alert_id": best["id"] if best else None,
                      "score": best["score"] if best else None})
    return found


def _read_truth(path: Path) -> list[dict[str, Any]]:
    import csv

    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def run_demo(target: Path, seed: int = 7, as_json: bool = False, mode: str = "ray") -> int:
    """Run the whole path on simulated data and print the top alerts."""
    from appliance.sim import SimConfig, simulate

    say = Reporter("json" if as_json else "auto", quiet=False)
    _fresh_dir(target)
    cfg_path = target / config.DEFAULT_NAME
    cfg_path.write_text(config.example_text(), encoding="utf-8")
    cfg = config.load(cfg_path)
    con = store.connect(cfg.store_path, create=True)

    say("simulating", {"seed": seed})
    sim = simulate(SimConfig.demo(seed=seed), target / "input")
    say("simulated", {"events": sim.n_events, "episodes": len(sim.episodes)})
    user = getpass.getuser()
    for kind in ("accounts", "traders", "symbology"):
        ref = Path(sim.reference_dir) / f"{kind}.csv"
        if ref.exists():
            info = reference.load(con, kind, ref, user)
            say("reference_loaded", {"kind": kind, "rows": info["rows"]})
    reports = [ingest_file(cfg, con, Path(sim.orders_path), "csv", user),
               ingest_file(cfg, con, Path(sim.market_path), "md-csv", user)]
    for r in reports:
        say("ingested", {"path": Path(r.path).name, "rows": r.rows, "accepted": r.accepted,
                         "quarantined": r.quarantined})
    summary = pipeline.run(cfg, con, user=user, mode=mode, progress=say)

    svc = Service(cfg, user=user)
    alerts = svc.alerts()
    truth = [t for t in _read_truth(Path(sim.truth_path)) if t.get("label") == "positive"]
    episodes = _episodes_found(truth, alerts)
    if as_json:
        print(json.dumps({"summary": summary.to_json(), "ingest": [r.to_json() for r in reports],
                          "alerts": alerts, "episodes": episodes}, default=str))
        return ExitCode.OK
    _print(target, alerts, episodes, summary)
    return ExitCode.OK


def _print(target: Path, alerts, episodes, summary) -> None:
    from rich.console import Console

    from appliance.cli import ALERT_COLUMNS, _alert_rows, _table

    console = Console()
    _table(ALERT_COLUMNS, _alert_rows(alerts[:TOP]),
           f"Top {min(TOP, len(alerts))} of {len(alerts)} alerts (run {summary.run_id}, "
           f"{summary.mode}, {summary.seconds}s)")
    from appliance.detectors import REGISTRY

    by_pattern: dict[str, list[dict]] = {}
    for ep in episodes:
        by_pattern.setdefault(ep["pattern"], []).append(ep)
    for pattern, eps in sorted(by_pattern.items()):
        hit = sum(1 for e in eps if e["alert_id"] is not None)
        note = "" if pattern in REGISTRY else "  (no detector for this pattern yet)"
        console.print(f"injected {pattern} episodes inside an alert: {hit}/{len(eps)}{note}")
    cfg = target / config.DEFAULT_NAME
    console.print(f"\nexplore: surveil --config {cfg} show {alerts[0]['id'] if alerts else 'ID'}"
                  f" --raw   |   surveil --config {cfg} console")
    sys.stdout.flush()
