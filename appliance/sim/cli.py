"""``surveil sim`` arguments (the lead wires ``add_arguments``/``run`` into appliance/cli.py);
also runnable as ``python -m appliance.sim``."""

from __future__ import annotations

import argparse
import json

from .config import FORMATS, SimConfig


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--instruments", type=int, default=2)
    p.add_argument("--traders", type=int, default=20)
    p.add_argument("--format", dest="fmt", choices=FORMATS, default="canonical")
    p.add_argument("--dirty", type=float, default=0.0, help="defect rate per row (0..1)")
    p.add_argument("--bg-rate", type=float, default=250.0,
                   help="background events/s per instrument (volume knob)")
    p.add_argument("--fix-version", choices=("4.2", "4.4"), default="4.4")
    p.add_argument("--fix-sep", choices=("soh", "pipe"), default="soh")


def config_from_args(a: argparse.Namespace) -> SimConfig:
    return SimConfig(seed=a.seed, minutes=a.minutes, instruments=a.instruments,
                     traders=a.traders, fmt=a.fmt, dirty=a.dirty, bg_rate=a.bg_rate,
                     fix_version=a.fix_version, fix_sep=a.fix_sep)


def run(a: argparse.Namespace) -> int:
    from .driver import simulate

    res = simulate(config_from_args(a), a.out)
    pats: dict[str, int] = {}
    for e in res.episodes:
        k = f"{e['pattern']}/{e['label']}"
        pats[k] = pats.get(k, 0) + 1
    print(json.dumps({"out": str(res.out_dir), "orders": str(res.orders_path),
                      "events": res.n_events, "order_events": res.n_order_events,
                      "market_events": res.n_market_events, "seconds": round(res.seconds, 2),
                      "events_per_s": int(res.n_events / max(res.seconds, 1e-9)),
                      "episodes": pats, "settlement": res.settlement}, indent=1))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="surveil sim", description="market simulator")
    add_arguments(p)
    return run(p.parse_args(argv))
