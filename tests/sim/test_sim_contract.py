"""The interface the lead's demo relies on: files, headers, formats, semantics, determinism."""

from __future__ import annotations

import hashlib
import re

from appliance.sim import SimConfig, simulate

from .helpers import read_rows

TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$")
ORDERS_HEADER = ("ts,firm,trader,account,symbol,side,event,order_id,price,qty,leaves_qty,"
                 "exec_qty,exec_price,venue")


def test_files_and_headers(demo_run):
    r = demo_run
    assert r.orders_path.read_text().split("\n", 1)[0] == ORDERS_HEADER
    assert r.market_path.read_text().split("\n", 1)[0] == (
        "ts,symbol,bid,bid_size,ask,ask_size,last,last_size")
    assert r.truth_path.read_text().split("\n", 1)[0] == (
        "episode_id,pattern,label,trader,accounts,symbol,start_ts,end_ts,order_ids")
    ref = r.reference_dir
    assert (ref / "accounts.csv").read_text().startswith("account,owner,type\n")
    assert (ref / "traders.csv").read_text().startswith("alias,trader\n")
    assert (ref / "symbology.csv").read_text().startswith("symbol,instrument,valid_from,valid_to\n")
    assert isinstance(r.n_events, int) and r.n_events == r.n_order_events + r.n_market_events
    # demo scale: 100-300k firm events, every pattern present
    assert 100_000 <= r.n_order_events <= 400_000
    pats = {(e["pattern"], e["label"]) for e in r.episodes}
    for p in ("spoofing", "layering", "wash_trade", "quote_stuffing", "front_running",
              "marking_the_close", "momentum_ignition"):
        assert (p, "positive") in pats, p
    assert sum(e["pattern"] == "spoofing" and e["label"] == "positive" for e in r.episodes) >= 3
    assert {e["label"] for e in r.episodes} == {"positive", "hard_negative"}


def test_row_semantics(demo_run):
    rows = read_rows(demo_run.orders_path)
    accounts = {a["account"] for a in read_rows(demo_run.reference_dir / "accounts.csv")}
    traders = {a["trader"] for a in read_rows(demo_run.reference_dir / "traders.csv")}
    last = ""
    seen_new = set()
    for r in rows[:200_000]:
        assert TS.match(r["ts"]) and r["ts"] >= last
        last = r["ts"]
        assert r["side"] in ("BUY", "SELL")
        assert r["account"] in accounts and r["trader"] in traders
        ev = r["event"]
        if ev == "NEW":
            assert r["order_id"] not in seen_new
            seen_new.add(r["order_id"])
            assert r["leaves_qty"] == r["qty"] and r["exec_qty"] == ""
        elif ev == "CANCEL":
            assert r["leaves_qty"] == "0"
        elif ev == "FILL":
            assert float(r["exec_qty"]) > 0 and float(r["exec_price"]) > 0
            assert 0 <= float(r["leaves_qty"]) < float(r["qty"])
        else:
            assert ev == "MODIFY"
        assert r["order_id"] in seen_new


def test_truth_orders_exist(demo_run):
    ids = {r["order_id"] for r in read_rows(demo_run.orders_path)}
    for e in demo_run.episodes:
        assert e["order_ids"] and set(e["order_ids"]) <= ids
        assert e["start_ts"] <= e["end_ts"]


def _digest(p):
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_same_seed_same_bytes(tmp_path):
    cfg = SimConfig(seed=11, minutes=3, instruments=2, traders=20)
    a = simulate(cfg, tmp_path / "a")
    b = simulate(cfg, tmp_path / "b")
    for name in ("orders.csv", "market.csv", "truth.csv", "reference/accounts.csv"):
        assert _digest(a.out_dir / name) == _digest(b.out_dir / name), name
    c = simulate(SimConfig(seed=12, minutes=3, instruments=2, traders=20), tmp_path / "c")
    assert _digest(a.out_dir / "market.csv") != _digest(c.out_dir / "market.csv")


def test_spoof_episodes_are_bursts(demo_run):
    """Consecutive events of a spoofing episode are < 5 s apart (one detector cluster)."""
    from .helpers import ns

    by_oid = {}
    for r in read_rows(demo_run.orders_path):
        by_oid.setdefault(r["order_id"], []).append(ns(r["ts"]))
    for e in demo_run.episodes:
        if e["pattern"] != "spoofing" or e["label"] != "positive":
            continue
        ts = sorted(t for o in e["order_ids"] for t in by_oid[o])
        gaps = [b - a for a, b in zip(ts, ts[1:], strict=False)]
        assert max(gaps, default=0) < 5 * 10**9
