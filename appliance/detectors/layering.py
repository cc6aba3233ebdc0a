"""Layering: several orders on consecutive levels of one side, kept away from the touch by
continuous modification, rarely filled, while the trader trades the other side (patterns.md
§2.2; CME 575.A "modify to avoid execution")."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from numba import njit

from appliance.detectors.base import Feature
from appliance.detectors.common import (
    CANCEL,
    FILL,
    MODIFY,
    NEW,
    Batch,
    Grouping,
    RulesDetector,
    col,
    ratio,
)

FEATURES: tuple[Feature, ...] = (
    Feature("n_events", "count", "events in the cluster"),
    Feature("duration_s", "s", "last minus first event time"),
    Feature("layer_side", "+1 buy / -1 sell", "side with the larger peak resting quantity"),
    Feature("max_open_orders", "count", "peak number of simultaneously open layer-side orders"),
    Feature("price_levels", "count", "distinct prices of layer-side orders entered"),
    Feature("size_cv", "ratio", "coefficient of variation of layer-side order sizes"),
    Feature("layer_max_resting", "lots", "peak open quantity on the layer side"),
    Feature("one_sidedness", "×", "layer peak resting ÷ (other side peak resting + 1)"),
    Feature("layer_fill_rate", "ratio", "layer executed quantity ÷ layer entered quantity"),
    Feature("layer_cancel_share", "ratio", "layer cancelled quantity ÷ layer entered quantity"),
    Feature("modifies", "count", "layer-side price-changing modifies"),
    Feature("modifies_per_s", "1/s", "layer-side price-changing modifies ÷ duration"),
    Feature("distance_kept_share", "ratio",
            "price-changing modifies leaving the order ≥ 1 tick behind the touch"),
    Feature("mean_dist_ticks", "ticks", "mean distance of layer orders from the same-side "
            "touch at entry"),
    Feature("depth_share", "ratio", "peak own layer resting ÷ (own + visible touch size)"),
    Feature("opp_fill_qty", "lots", "other-side executions while the layer rested"),
    Feature("mid_drift_ticks", "ticks", "mid move first → last event, + = away from the layer "
            "(the direction the layer's pressure pushes)"),
    Feature("excess_move_bps", "bps", "mid move in the pressure direction minus the reference "
            "instrument's move over the same span"),
)  # fmt: skip


@njit(cache=True)
def layering_kernel(idx, starts, ts, event, rside, dq, oqty, opx, dist, fill, bid, ask,
                    bid_size, ask_size, tick, ref_mid):  # pragma: no cover - numba
    nc = starts.shape[0] - 1
    out = np.full((nc, 18), np.nan)
    for c in range(nc):
        a, b = starts[c], starts[c + 1]
        rest = np.zeros(2)
        peak = np.zeros(2)
        nopen = np.zeros(2)
        peak_open = np.zeros(2)
        new_q = np.zeros(2)
        fill_q = np.zeros(2)
        canc_q = np.zeros(2)
        for j in range(a, b):  # pass 1: which side is the layer
            i = idx[j]
            s = rside[i]
            rest[s] += dq[i]
            if rest[s] > peak[s]:
                peak[s] = rest[s]
        L = 0 if peak[0] >= peak[1] else 1
        rest[:] = 0.0
        n_new = 0
        sz_sum = 0.0
        sz_sq = 0.0
        prices = np.full(b - a, np.nan)
        mods = 0
        kept = 0
        dist_sum = 0.0
        dist_n = 0
        depth = 0.0
        opp = 0.0
        for j in range(a, b):
            i = idx[j]
            s = rside[i]
            e = event[i]
            before = rest[L]
            rest[s] += dq[i]
            if e == NEW:
                new_q[s] += oqty[i]
                nopen[s] += 1
                if nopen[s] > peak_open[s]:
                    peak_open[s] = nopen[s]
                if s == L:
                    n_new += 1
                    sz_sum += oqty[i]
                    sz_sq += oqty[i] * oqty[i]
                    prices[n_new - 1] = opx[i]
                    if not np.isnan(dist[i]):
                        dist_sum += dist[i]
                        dist_n += 1
            elif e == CANCEL:
                canc_q[s] -= dq[i]
                nopen[s] -= 1
            elif e == FILL:
                fill_q[s] += fill[i]
                if s != L and before > 0:
                    opp += fill[i]
            elif e == MODIFY and s == L:
                mods += 1
                if dist[i] >= 1.0:
                    kept += 1
            if s == L and dq[i] != 0.0:
                touch = bid_size[i] if L == 0 else ask_size[i]
                if not np.isnan(touch) and rest[L] > 0:
                    share = rest[L] / (rest[L] + touch)
                    if share > depth:
                        depth = share
        dur = (ts[idx[b - 1]] - ts[idx[a]]) / 1e9
        mean_sz = sz_sum / n_new if n_new > 0 else 0.0
        var = sz_sq / n_new - mean_sz * mean_sz if n_new > 0 else 0.0
        direction = 1.0 if L == 0 else -1.0  # a buy layer pushes the price up
        m0 = (bid[idx[a]] + ask[idx[a]]) / 2
        m1 = (bid[idx[b - 1]] + ask[idx[b - 1]]) / 2
        tk = tick[idx[a]]
        r0, r1 = ref_mid[idx[a]], ref_mid[idx[b - 1]]
        out[c, 0] = b - a
        out[c, 1] = dur
        out[c, 2] = 1.0 if L == 0 else -1.0
        out[c, 3] = peak_open[L]
        out[c, 4] = len(np.unique(prices[:n_new][~np.isnan(prices[:n_new])])) if n_new else 0
        out[c, 5] = np.sqrt(max(var, 0.0)) / mean_sz if mean_sz > 0 else np.nan
        out[c, 6] = peak[L]
        out[c, 7] = peak[L] / (peak[1 - L] + 1.0)
        out[c, 8] = ratio(fill_q[L], new_q[L])
        out[c, 9] = ratio(canc_q[L], new_q[L])
        out[c, 10] = mods
        out[c, 11] = mods / max(dur, 1e-3)
        out[c, 12] = ratio(kept, mods)
        out[c, 13] = dist_sum / dist_n if dist_n > 0 else np.nan
        out[c, 14] = depth
        out[c, 15] = opp
        move = direction * (m1 - m0)
        out[c, 16] = move / tk if tk > 0 else np.nan
        ref = (r1 / r0 - 1.0) * 1e4 * direction if r0 > 0 else 0.0
        out[c, 17] = (move / m0 * 1e4 - ref) if m0 > 0 else np.nan
    return out


class Layering(RulesDetector):
    name: ClassVar[str] = "layering"
    model_version: ClassVar[str] = "layering-rules-1"
    description: ClassVar[str] = "one-sided ladder kept behind the touch by modifies, unfilled"
    features: ClassVar[tuple[Feature, ...]] = FEATURES
    context_columns: ClassVar[tuple[str, ...]] = (
        "ctx_bid", "ctx_ask", "ctx_bid_size", "ctx_ask_size", "ctx_tick", "ctx_ref_mid")
    batch_fields: ClassVar[tuple[str, ...]] = ("rside", "dq", "oqty", "opx", "dist", "fill")
    code_columns: ClassVar[tuple[str, ...]] = ("trader", "instrument")

    def kernel(self, batch: Batch, g: Grouping, params) -> np.ndarray:
        if g.count == 0:
            return np.zeros((0, len(FEATURES)))
        x = batch.ctx
        return layering_kernel(g.idx, g.starts, batch.ts, batch.event, batch.rside, batch.dq,
                               batch.oqty, batch.opx, batch.dist, batch.fill, x["ctx_bid"],
                               x["ctx_ask"], x["ctx_bid_size"], x["ctx_ask_size"], x["ctx_tick"],
                               x["ctx_ref_mid"])

    def rules(self, m):
        f = lambda n, nan=0.0: col(m, FEATURES, n, nan)  # noqa: E731
        one_sided = f("one_sidedness") >= 4
        return [
            (f("max_open_orders") >= 3, 1.5),
            (one_sided, 2.0),
            (one_sided & (f("modifies") >= 3) & (f("distance_kept_share") >= 0.5), 2.0),
            (one_sided & (f("opp_fill_qty") > 0), 1.5),
            (f("layer_fill_rate", 1.0) <= 0.05, 1.0),
            (f("layer_cancel_share") >= 0.9, 0.5),
        ]

    def reasons(self, v):
        side = "buy" if v["layer_side"] > 0 else "sell"
        return [
            f"number of orders: up to {v['max_open_orders']:g} {side} orders open at once on "
            f"{v['price_levels']:g} price levels",
            f"size relative to the other side: {v['layer_max_resting']:g} lots resting, "
            f"{v['one_sidedness']:.1f}× the other side",
            f"modified to avoid execution: {v['modifies']:g} re-pricings, "
            f"{100 * v['distance_kept_share']:.0f}% kept the orders behind the touch",
            f"opposite-side executions while the layer rested: {v['opp_fill_qty']:g} lots",
            f"orders rarely meant to trade: layer fill rate {100 * v['layer_fill_rate']:.1f}%",
            f"order entry and cancellation: {100 * v['layer_cancel_share']:.0f}% of the layer "
            "cancelled",
        ]
