"""Manipulations move what they are meant to move; negatives share the positives' marginals."""

from __future__ import annotations

import numpy as np

from appliance.sim import SimConfig, simulate

from .helpers import mid_at, mids, ns, orders_by_id, read_rows


def _truth_roles(run):
    return {r["order_id"]: (r["episode_id"], r["role"])
            for r in read_rows(run.out_dir / "truth_orders.csv")}


def test_spoof_bait_moves_mid_and_readers(demo_run):
    run = demo_run
    orders = orders_by_id(read_rows(run.orders_path))
    market = read_rows(run.market_path)
    roles = _truth_roles(run)
    pos = {e["episode_id"]: e for e in run.episodes
           if e["pattern"] == "spoofing" and e["label"] == "positive"}
    series = {s: mids(market, s) for s in {e["symbol"] for e in pos.values()}}
    trades = {}
    for r in market:
        if r["last"]:
            trades.setdefault(r["symbol"], []).append((ns(r["ts"]), float(r["last"])))
    moves, toward, total, fills = [], 0, 0, 0
    for oid, (ep, role) in roles.items():
        if ep not in pos or role != "bait":
            continue
        ev = orders[oid]
        sym = ev[0]["symbol"]
        sgn = 1.0 if ev[0]["side"] == "BUY" else -1.0
        t0, t1 = ns(ev[0]["ts"]), ns(ev[-1]["ts"])
        t, m = series[sym]
        moves.append(sgn * (mid_at(t, m, t1) - mid_at(t, m, t0 - 1)))
        fills += any(x["event"] == "FILL" for x in ev)
        # aggressor direction of trades while the bait rests (tick test vs the mid)
        for ts, px in trades[sym]:
            if t0 <= ts <= t1:
                mid = mid_at(t, m, ts - 1)
                if px != mid:
                    total += 1
                    toward += (px > mid) == (sgn > 0)
    moves = np.array(moves)
    assert len(moves) >= 30
    assert moves.mean() > 0  # mid moves in the bait's direction
    assert (moves > 0).sum() > 1.5 * (moves < 0).sum()
    # readers trade in the bait's direction: a significant excess over 50 % (z > 3)
    assert total > 50 and (toward / total - 0.5) * np.sqrt(total) / 0.5 > 3
    assert fills / len(moves) < 0.05  # bait rarely fills


def test_spoofs_succeed(demo_run):
    """At least 3 episodes whose genuine orders fill while the bait rests, then bait cancelled."""
    orders = orders_by_id(read_rows(demo_run.orders_path))
    roles = _truth_roles(demo_run)
    ok = {}
    for oid, (ep, role) in roles.items():
        if role == "genuine" and any(r["event"] == "FILL" for r in orders[oid]):
            ok[ep] = ok.get(ep, 0) + 1
    pos = {e["episode_id"] for e in demo_run.episodes
           if e["pattern"] == "spoofing" and e["label"] == "positive"}
    assert sum(1 for ep in pos if ok.get(ep, 0) >= 2) >= 3


def _cancel_rate(run, episodes):
    orders = orders_by_id(read_rows(run.orders_path))
    out = []
    for e in episodes:
        new = sum(1 for o in e["order_ids"] for r in orders[o] if r["event"] == "NEW")
        can = sum(1 for o in e["order_ids"] for r in orders[o] if r["event"] == "CANCEL")
        if new:
            out.append(can / new)
    return np.array(out)


def _auc(pos, neg):
    allv = np.concatenate([pos, neg])
    ranks = allv.argsort().argsort() + 1.0
    # average ranks for ties
    for v in np.unique(allv):
        sel = allv == v
        ranks[sel] = ranks[sel].mean()
    rp = ranks[: len(pos)].sum()
    return (rp - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg))


def test_cancel_rate_alone_does_not_separate(demo_run):
    """Matched-marginal negatives (patterns.md 4.3): on cancel rate alone, spoofing/layering
    positives and their hard negatives are near chance (AUC within [0.35, 0.65])."""
    eps = demo_run.episodes
    pos = [e for e in eps if e["pattern"] in ("spoofing", "layering") and e["label"] == "positive"]
    neg = [e for e in eps if e["pattern"] in ("spoofing", "layering")
           and e["label"] == "hard_negative"]
    cp, cn = _cancel_rate(demo_run, pos), _cancel_rate(demo_run, neg)
    assert len(cp) >= 10 and len(cn) >= 10
    auc = _auc(cp, cn)
    assert 0.35 <= auc <= 0.65, auc
    # overlap, not just a balanced AUC: a quarter of the positives lie inside the negatives'
    # interquartile range
    lo, hi = np.percentile(cn, [25, 75])
    assert ((cp >= lo) & (cp <= hi)).mean() > 0.25
    # market makers (hard negatives) cancel more than 90% of their orders
    mm = [e for e in neg if e["role"] == "market_maker"]
    assert _cancel_rate(demo_run, mm).mean() > 0.9


def test_marking_the_close_moves_settlement(tmp_path):
    """Same seeds with and without the close marker: the settlement moves its way."""
    with_m, without = [], []
    for seed in (1, 2, 3, 4):
        cfg = SimConfig(seed=seed, minutes=8, instruments=1, traders=20, close_window_s=60)
        a = simulate(cfg, tmp_path / f"m{seed}")
        b = simulate(SimConfig(seed=seed, minutes=8, instruments=1, traders=20,
                               close_window_s=60, disable=("close_marker",)), tmp_path / f"n{seed}")
        mk = [e for e in a.episodes if e["pattern"] == "marking_the_close"
              and e["label"] == "positive"]
        assert mk
        orders = orders_by_id(read_rows(a.orders_path))
        side = orders[mk[0]["order_ids"][-1]][0]["side"]
        sgn = 1.0 if side == "BUY" else -1.0
        for run, acc in ((a, with_m), (b, without)):
            sym = next(iter(run.settlement))
            t, m = mids(read_rows(run.market_path), sym)
            win = read_rows(run.reference_dir / "settlement.csv")[0]
            ref = mid_at(t, m, ns(win["window_start"]))
            acc.append(sgn * (run.settlement[sym] - ref))
    assert np.mean(with_m) > np.mean(without)
    assert sum(x > 0 for x in with_m) >= 2


def test_wash_trades_cross_same_owner(demo_run):
    owner = {r["account"]: r["owner"] for r in read_rows(demo_run.reference_dir / "accounts.csv")}
    rows = read_rows(demo_run.orders_path)
    fills = {}
    for r in rows:
        if r["event"] == "FILL":
            fills.setdefault((r["ts"], r["exec_price"], r["exec_qty"]), []).append(r)
    crosses = 0
    for e in demo_run.episodes:
        if e["pattern"] == "wash_trade":
            assert len({owner[a] for a in e["accounts"]}) == 1
    for grp in fills.values():
        sides = {r["side"] for r in grp}
        if sides == {"BUY", "SELL"} and len({owner[r["account"]] for r in grp}) == 1:
            crosses += 1
    assert crosses >= 5
