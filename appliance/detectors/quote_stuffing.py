"""Quote stuffing / abusive messaging: bursts of tiny orders away from the touch, entered and
cancelled at a rate meant to flood the system, almost never filled (patterns.md §2.4; CME 575.C
and 575.D)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from numba import njit

from appliance.detectors.base import Feature
from appliance.detectors.common import CANCEL, FILL, NEW, Batch, Grouping, RulesDetector, col, ratio

FEATURES: tuple[Feature, ...] = (
    Feature("n_events", "count", "events in the cluster"),
    Feature("duration_s", "s", "last minus first event time"),
    Feature("peak_rate_100ms", "msgs/s", "most events in any 100 ms window × 10"),
    Feature("peak_rate_1s", "msgs/s", "most events in any 1 s window"),
    Feature("n_new", "count", "orders entered"),
    Feature("fill_count_rate", "ratio", "fills ÷ orders entered"),
    Feature("cancel_ratio", "ratio", "cancels ÷ orders entered"),
    Feature("mean_order_qty", "lots", "mean size of orders entered"),
    Feature("small_order_share", "ratio", "share of orders entered with size ≤ 1 lot"),
    Feature("mean_dist_ticks", "ticks", "mean distance from the same-side touch at entry"),
    Feature("mean_cancel_life_ms", "ms", "mean entry-to-cancel time"),
    Feature("msgs_per_tape_event", "ratio",
            "own events ÷ (market trades' volume during the burst + 1): messages per unit of "
            "real trading"),
)  # fmt: skip


@njit(cache=True)
def stuffing_kernel(idx, starts, ts, event, oqty, dist, life, mkt_vol):  # pragma: no cover
    nc = starts.shape[0] - 1
    out = np.full((nc, 12), np.nan)
    for c in range(nc):
        a, b = starts[c], starts[c + 1]
        peak100 = 0
        peak1s = 0
        lo100 = a
        lo1s = a
        n_new = 0
        n_fill = 0
        n_canc = 0
        q_sum = 0.0
        small = 0
        d_sum = 0.0
        d_n = 0
        life_sum = 0.0
        for j in range(a, b):
            i = idx[j]
            t = ts[i]
            while ts[idx[lo100]] <= t - 100_000_000:
                lo100 += 1
            while ts[idx[lo1s]] <= t - 1_000_000_000:
                lo1s += 1
            peak100 = max(peak100, j - lo100 + 1)
            peak1s = max(peak1s, j - lo1s + 1)
            e = event[i]
            if e == NEW:
                n_new += 1
                q_sum += oqty[i]
                if oqty[i] <= 1.0:
                    small += 1
                if not np.isnan(dist[i]):
                    d_sum += dist[i]
                    d_n += 1
            elif e == FILL:
                n_fill += 1
            elif e == CANCEL:
                n_canc += 1
                life_sum += life[i]
        v0, v1 = mkt_vol[idx[a]], mkt_vol[idx[b - 1]]
        out[c, 0] = b - a
        out[c, 1] = (ts[idx[b - 1]] - ts[idx[a]]) / 1e9
        out[c, 2] = peak100 * 10.0
        out[c, 3] = peak1s
        out[c, 4] = n_new
        out[c, 5] = ratio(n_fill, n_new)
        out[c, 6] = ratio(n_canc, n_new)
        out[c, 7] = ratio(q_sum, n_new)
        out[c, 8] = ratio(small, n_new)
        out[c, 9] = d_sum / d_n if d_n > 0 else np.nan
        out[c, 10] = life_sum / n_canc / 1e6 if n_canc > 0 else np.nan
        out[c, 11] = (b - a) / ((v1 - v0) + 1.0) if not np.isnan(v0) else np.nan
    return out


class QuoteStuffing(RulesDetector):
    name: ClassVar[str] = "quote_stuffing"
    model_version: ClassVar[str] = "quote_stuffing-rules-1"
    description: ClassVar[str] = "message bursts of tiny, unfilled orders away from the touch"
    features: ClassVar[tuple[Feature, ...]] = FEATURES
    context_columns: ClassVar[tuple[str, ...]] = ("ctx_mkt_vol",)
    batch_fields: ClassVar[tuple[str, ...]] = ("oqty", "dist", "life")
    code_columns: ClassVar[tuple[str, ...]] = ("trader", "instrument")

    def kernel(self, batch: Batch, g: Grouping, params) -> np.ndarray:
        if g.count == 0:
            return np.zeros((0, len(FEATURES)))
        return stuffing_kernel(g.idx, g.starts, batch.ts, batch.event, batch.oqty, batch.dist,
                               batch.life, batch.ctx["ctx_mkt_vol"])

    def rules(self, m):
        f = lambda n, nan=0.0: col(m, FEATURES, n, nan)  # noqa: E731
        burst = f("peak_rate_100ms") >= 500
        return [
            (burst, 3.0),
            (burst & (f("fill_count_rate", 1.0) <= 0.01), 1.5),
            (burst & (f("small_order_share") >= 0.8), 1.0),
            (burst & (f("mean_dist_ticks") >= 1.0), 1.0),
            (f("cancel_ratio") >= 0.9, 0.5),
            (f("mean_cancel_life_ms", np.inf) < 500, 0.5),
        ]

    def reasons(self, v):
        return [
            f"frequency of messages: up to {v['peak_rate_100ms']:.0f} msgs/s over 100 ms "
            f"({v['peak_rate_1s']:g} in one second)",
            f"orders not meant to trade: {100 * v['fill_count_rate']:.2f}% of "
            f"{v['n_new']:g} orders filled",
            f"size: {100 * v['small_order_share']:.0f}% of orders were 1 lot",
            f"placed away from the touch: {v['mean_dist_ticks']:.1f} ticks on average",
            f"order entry and cancellation: {v['cancel_ratio']:.2f} cancels per order",
            f"duration exposed to the market: {v['mean_cancel_life_ms']:.0f} ms on average",
        ]
