"""Momentum ignition: a burst of aggressive orders sweeping the book after pre-positioning exit
orders on the other side, which fill into the move the burst triggered (patterns.md §2.7; TT's
"Igniter price levels", "Ignites (vol)", "Opp. side (vol)")."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from numba import njit

from appliance.detectors.base import Feature
from appliance.detectors.common import FILL, Batch, Grouping, RulesDetector, col

BURST_NS = 2_000_000_000

FEATURES: tuple[Feature, ...] = (
    Feature("n_events", "count", "events in the cluster"),
    Feature("duration_s", "s", "last minus first event time"),
    Feature("burst_side", "+1 buy / -1 sell", "side of the largest aggressive burst"),
    Feature("burst_qty", "lots", "aggressive executed quantity in the busiest 2 s window"),
    Feature("burst_fills", "count", "aggressive executions in that window"),
    Feature("burst_ms", "ms", "first to last aggressive execution of the burst"),
    Feature("levels_swept", "ticks", "price range of the burst's aggressive orders"),
    Feature("depth_ratio", "×", "burst quantity ÷ visible opposite touch size at its start"),
    Feature("pre_positioned_qty", "lots",
            "own resting quantity on the exit (other) side when the burst started"),
    Feature("exit_fill_qty", "lots", "exit-side executions after the burst"),
    Feature("exit_delay_ms", "ms", "burst end → first exit-side execution"),
    Feature("mid_move_ticks", "ticks",
            "mid 1 s after the burst minus mid before it, in the burst direction"),
    Feature("follow_volume", "lots",
            "others' tape volume in the burst direction from burst end to cluster end"),
    Feature("pnl_ticks", "ticks", "mean exit price minus mean burst price, burst direction"),
    Feature("net_position", "lots", "bought minus sold over the cluster"),
    Feature("order_to_fill", "ratio", "events ÷ executions"),
)  # fmt: skip


@njit(cache=True)
def ignition_kernel(idx, starts, ts, event, rside, dq, opx, xpx, aggr, fill, bid, ask, bid_size,
                    ask_size, mid_after, tick, mkt_vol, mkt_buy, burst_ns):  # pragma: no cover
    nc = starts.shape[0] - 1
    out = np.full((nc, 16), np.nan)
    for c in range(nc):
        a, b = starts[c], starts[c + 1]
        best = 0.0
        bs, ba, bb = 0, -1, -1
        for s in range(2):  # two pointers: busiest burst_ns window of aggressive fills per side
            lo = a
            acc = 0.0
            for j in range(a, b):
                i = idx[j]
                if event[i] == FILL and aggr[i] and rside[i] == s:
                    acc += fill[i]
                while ts[idx[lo]] < ts[i] - burst_ns:
                    k = idx[lo]
                    if event[k] == FILL and aggr[k] and rside[k] == s:
                        acc -= fill[k]
                    lo += 1
                if acc > best:
                    best, bs, ba, bb = acc, s, lo, j
        n_fill = 0
        net = 0.0
        for j in range(a, b):
            i = idx[j]
            if event[i] == FILL:
                n_fill += 1
                net += fill[i] if rside[i] == 0 else -fill[i]
        out[c, 0] = b - a
        out[c, 1] = (ts[idx[b - 1]] - ts[idx[a]]) / 1e9
        out[c, 14] = net
        out[c, 15] = (b - a) / n_fill if n_fill > 0 else np.nan
        if bb < 0:
            out[c, 3] = 0.0
            out[c, 4] = 0.0
            continue
        d = 1.0 if bs == 0 else -1.0
        first = -1
        last = -1
        n_b = 0
        pmin, pmax = np.inf, -np.inf
        px_sum = 0.0
        for j in range(ba, bb + 1):
            i = idx[j]
            if event[i] == FILL and aggr[i] and rside[i] == bs:
                if first < 0:
                    first = j
                last = j
                n_b += 1
                px_sum += xpx[i] * fill[i]  # what was paid, not the limit
                p = xpx[i] if np.isnan(opx[i]) else opx[i]  # a market order's level: its fill
                if not np.isnan(p):
                    pmin = min(pmin, p)
                    pmax = max(pmax, p)
        # own resting on the exit side when the burst started
        rest = 0.0
        for j in range(a, first):
            i = idx[j]
            if rside[i] != bs:
                rest += dq[i]
        exit_q = 0.0
        exit_px = 0.0
        delay = np.nan
        t_end = ts[idx[last]]
        for j in range(last + 1, b):
            i = idx[j]
            if event[i] == FILL and rside[i] != bs:
                exit_q += fill[i]
                exit_px += xpx[i] * fill[i]
                if np.isnan(delay):
                    delay = (ts[i] - t_end) / 1e6
        i0, i1, il = idx[first], idx[last], idx[b - 1]
        tk = tick[i0]
        touch = ask_size[i0] if bs == 0 else bid_size[i0]
        m0 = (bid[i0] + ask[i0]) / 2
        out[c, 2] = d
        out[c, 3] = best
        out[c, 4] = n_b
        out[c, 5] = (t_end - ts[i0]) / 1e6
        out[c, 6] = (pmax - pmin) / tk if tk > 0 and pmax >= pmin else np.nan
        out[c, 7] = best / touch if touch > 0 else np.nan
        out[c, 8] = max(rest, 0.0)
        out[c, 9] = exit_q
        out[c, 10] = delay
        out[c, 11] = d * (mid_after[i1] - m0) / tk if tk > 0 else np.nan
        if bs == 0:
            out[c, 12] = mkt_buy[il] - mkt_buy[i1]
        else:
            out[c, 12] = (mkt_vol[il] - mkt_buy[il]) - (mkt_vol[i1] - mkt_buy[i1])
        if exit_q > 0 and tk > 0:
            out[c, 13] = d * (exit_px / exit_q - px_sum / best) / tk
    return out


class MomentumIgnition(RulesDetector):
    name: ClassVar[str] = "momentum_ignition"
    model_version: ClassVar[str] = "momentum_ignition-rules-1"
    description: ClassVar[str] = "pre-positioned exit, aggressive sweep, exit into the move"
    features: ClassVar[tuple[Feature, ...]] = FEATURES
    context_columns: ClassVar[tuple[str, ...]] = (
        "ctx_bid", "ctx_ask", "ctx_bid_size", "ctx_ask_size", "ctx_mid_after", "ctx_tick",
        "ctx_mkt_vol", "ctx_mkt_buy")
    batch_fields: ClassVar[tuple[str, ...]] = ("rside", "dq", "opx", "exec_price", "aggr", "fill")
    code_columns: ClassVar[tuple[str, ...]] = ("trader", "instrument")

    def kernel(self, batch: Batch, g: Grouping, params) -> np.ndarray:
        if g.count == 0:
            return np.zeros((0, len(FEATURES)))
        x = batch.ctx
        return ignition_kernel(g.idx, g.starts, batch.ts, batch.event, batch.rside, batch.dq,
                               batch.opx, batch.exec_price, batch.aggr, batch.fill,
                               x["ctx_bid"], x["ctx_ask"],
                               x["ctx_bid_size"], x["ctx_ask_size"], x["ctx_mid_after"],
                               x["ctx_tick"], x["ctx_mkt_vol"], x["ctx_mkt_buy"], BURST_NS)

    def rules(self, m):
        f = lambda n, nan=0.0: col(m, FEATURES, n, nan)  # noqa: E731
        burst = (f("burst_fills") >= 3) & (f("depth_ratio", 1.0) >= 0.5)
        return [
            (burst, 2.0),
            (burst & (f("pre_positioned_qty") > 0), 2.5),
            (burst & (f("exit_fill_qty") > 0), 2.0),
            (burst & (f("mid_move_ticks") >= 1), 1.0),
            (burst & (f("exit_fill_qty") > 0) & (f("pnl_ticks") > 0), 0.5),
        ]

    def reasons(self, v):
        side = "buying" if v["burst_side"] > 0 else "selling"
        return [
            f"aggressive {side} burst: {v['burst_fills']:g} executions, {v['burst_qty']:g} lots "
            f"({v['depth_ratio']:.1f}× the touch) in {v['burst_ms']:.0f} ms",
            f"pre-positioned: {v['pre_positioned_qty']:g} lots resting on the other side before "
            "the burst",
            f"exit into the move: {v['exit_fill_qty']:g} lots filled on the other side "
            f"{v['exit_delay_ms']:.0f} ms after the burst",
            f"change in the price caused: mid moved {v['mid_move_ticks']:.1f} ticks",
            f"round trip profit: {v['pnl_ticks']:.1f} ticks per lot",
        ]
