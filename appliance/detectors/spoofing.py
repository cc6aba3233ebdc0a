"""Spoofing: large one-sided resting interest, opposite-side fills while it rests, and a cancel
timed off those fills, repeated (patterns.md §2.1; CME Rule 575 factors).

The kernel walks each (trader, instrument) cluster's events in time order as a small order-book
state machine: open orders and their leaves per side, fills, cancels. The "bait" side is the side
with the larger peak resting quantity; the other side is "genuine". Until the models land the
score is a transparent rule sum (log2-odds), and every rule that fired is the explanation.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from numba import njit

from appliance.cluster import Clusters
from appliance.detectors.base import Feature, KernelInputs
from appliance.detectors.common import Batch, Grouping, RulesDetector, composite, identity_grouping

FEATURES: tuple[Feature, ...] = (
    Feature("n_events", "count", "events in the cluster"),
    Feature("n_orders", "count", "orders entered in the cluster (NEW events)"),
    Feature("duration_s", "s", "last event time minus first event time"),
    Feature("cancel_ratio", "ratio", "cancels ÷ new orders, both sides"),
    Feature("bait_side", "+1 buy / -1 sell", "side with the larger peak resting quantity"),
    Feature("bait_new_qty", "lots", "quantity entered on the bait side"),
    Feature("genuine_new_qty", "lots", "quantity entered on the genuine (other) side"),
    Feature("bait_max_resting", "lots", "peak open quantity on the bait side"),
    Feature("size_ratio", "×", "bait peak resting ÷ mean genuine order size"),
    Feature("bait_fill_rate", "ratio", "bait executed quantity ÷ bait entered quantity"),
    Feature("genuine_fill_rate", "ratio", "genuine executed ÷ genuine entered quantity"),
    Feature("opp_fill_qty", "lots", "genuine-side quantity executed while bait rested"),
    Feature("opp_fill_count", "count", "genuine-side executions while bait rested"),
    Feature("fill_triggered_cancels", "count",
            "bait cancels ≤ 1 s after a genuine fill, cancelling ≥ 4× the fill quantity"),
    Feature("min_fill_to_cancel_ms", "ms", "fastest genuine fill → bait cancel latency"),
    Feature("bait_mean_lifetime_ms", "ms", "mean entry-to-cancel time of bait orders"),
    Feature("bait_cancel_under_1s", "ratio", "share of bait cancels within 1 s of entry"),
    Feature("imbalance_at_fill", "ratio",
            "mean own bait share of own resting interest at genuine fills"),
    Feature("side_switches", "count", "times the dominant resting side flipped"),
    Feature("msgs_per_s", "1/s", "events ÷ duration"),
    Feature("bait_cancel_share", "ratio", "bait cancelled quantity ÷ bait entered quantity"),
    Feature("fill_triggered_share", "ratio", "fill-triggered bait cancels ÷ all bait cancels"),
)  # fmt: skip
F = {f.name: i for i, f in enumerate(FEATURES)}

_NEW, _MODIFY, _CANCEL, _FILL, _REJECT = 0, 1, 2, 3, 4
TRIGGER_NS = 1_000_000_000
SIZE_MULTIPLE = 4.0


@njit(cache=True)
def _nz(x):  # pragma: no cover - numba
    return 0.0 if np.isnan(x) else x


@njit(cache=True)
def spoofing_kernel(idx, starts, ckey, ts, side, event, order, n_orders, qty, leaves, exec_qty,
                    trigger_ns, size_multiple):  # pragma: no cover - numba
    """Cluster ``c`` is rows ``idx[starts[c]:starts[c + 1]]`` (time order) of the columns,
    ``ckey[c]`` its key code (the resting state carries over between clusters of a key):
    rows are read in place, not gathered into per-cluster copies of every column."""
    nc = starts.shape[0] - 1
    out = np.full((nc, 22), np.nan)
    o_side = np.full(n_orders, -1, np.int8)
    o_entry = np.zeros(n_orders, np.int64)
    o_open = np.zeros(n_orders, np.bool_)
    o_leaves = np.zeros(n_orders, np.float64)
    o_qty = np.zeros(n_orders, np.float64)
    o_filled = np.zeros(n_orders, np.float64)
    resting = np.zeros(2)
    prev_key = -1
    for c in range(nc):
        a, b = starts[c], starts[c + 1]
        if ckey[c] != prev_key:
            resting[:] = 0.0
            prev_key = ckey[c]
        n_new = np.zeros(2)
        new_qty = np.zeros(2)
        n_cancel = np.zeros(2)
        cancel_qty = np.zeros(2)
        n_fill = np.zeros(2)
        fill_qty = np.zeros(2)
        max_rest = resting.copy()
        life_sum = np.zeros(2)
        life_n = np.zeros(2)
        life_fast = np.zeros(2)
        opp_n = np.zeros(2)
        opp_qty = np.zeros(2)
        imb_sum = np.zeros(2)
        last_fill_ts = np.full(2, -1, np.int64)
        last_fill_qty = np.zeros(2)
        trig = np.zeros(2)
        trig_lat = np.full(2, np.inf)
        dominant = -1
        switches = 0
        for j in range(a, b):
            i = idx[j]
            o = order[i]
            s = side[i]
            if s < 0:
                s = o_side[o] if o_side[o] >= 0 else 0
            e = event[i]
            t = ts[i]
            if e == _NEW:
                q = _nz(qty[i])
                if o_open[o]:
                    resting[o_side[o]] -= o_leaves[o]
                o_side[o] = s
                o_entry[o] = t
                o_open[o] = True
                o_leaves[o] = q if np.isnan(leaves[i]) else leaves[i]
                o_qty[o] = q
                o_filled[o] = 0.0
                resting[s] += o_leaves[o]
                n_new[s] += 1
                new_qty[s] += q
            elif e == _MODIFY:
                if o_side[o] < 0:
                    o_side[o] = s
                    o_entry[o] = t
                if o_open[o]:
                    resting[s] -= o_leaves[o]
                if not np.isnan(leaves[i]):
                    new_leaves = leaves[i]
                elif not np.isnan(qty[i]):
                    new_leaves = qty[i] - o_filled[o]
                else:
                    new_leaves = o_leaves[o]
                if not np.isnan(qty[i]):
                    if qty[i] > o_qty[o]:
                        new_qty[s] += qty[i] - o_qty[o]
                    o_qty[o] = qty[i]
                o_leaves[o] = max(new_leaves, 0.0)
                o_open[o] = o_leaves[o] > 0
                resting[s] += o_leaves[o]
            elif e == _CANCEL:
                n_cancel[s] += 1
                cancelled = o_leaves[o] if o_open[o] else _nz(qty[i])
                cancel_qty[s] += cancelled
                if o_open[o]:
                    resting[s] -= o_leaves[o]
                    o_open[o] = False
                    o_leaves[o] = 0.0
                if o_side[o] >= 0:
                    life = t - o_entry[o]
                    life_sum[s] += life
                    life_n[s] += 1
                    if life < 1_000_000_000:
                        life_fast[s] += 1
                g = 1 - s
                if (last_fill_ts[g] >= 0 and t - last_fill_ts[g] <= trigger_ns
                        and cancelled >= size_multiple * last_fill_qty[g]):
                    trig[s] += 1
                    trig_lat[s] = min(trig_lat[s], float(t - last_fill_ts[g]))
            elif e == _FILL:
                x = _nz(exec_qty[i])
                n_fill[s] += 1
                fill_qty[s] += x
                o_filled[o] += x
                other = resting[1 - s]
                if other > 0:
                    opp_n[s] += 1
                    opp_qty[s] += x
                    imb_sum[s] += other / (other + resting[s])
                last_fill_ts[s] = t
                last_fill_qty[s] = x
                if o_open[o]:
                    resting[s] -= o_leaves[o]
                    rest = o_leaves[o] - x if np.isnan(leaves[i]) else leaves[i]
                    o_leaves[o] = max(rest, 0.0)
                    o_open[o] = o_leaves[o] > 0
                    resting[s] += o_leaves[o]
            elif e == _REJECT and o_open[o]:
                resting[s] -= o_leaves[o]
                o_open[o] = False
                o_leaves[o] = 0.0
            for k in range(2):
                if resting[k] < 1e-9:
                    resting[k] = 0.0
                if resting[k] > max_rest[k]:
                    max_rest[k] = resting[k]
            d = -1
            if resting[0] > 0 and resting[0] >= size_multiple * resting[1]:
                d = 0
            elif resting[1] > 0 and resting[1] >= size_multiple * resting[0]:
                d = 1
            if d >= 0 and d != dominant:
                if dominant >= 0:
                    switches += 1
                dominant = d
        bait = 0
        if max_rest[1] > max_rest[0] or (max_rest[1] == max_rest[0]
                                         and cancel_qty[1] > cancel_qty[0]):
            bait = 1
        gen = 1 - bait
        if n_new[gen] > 0:
            genuine_size = new_qty[gen] / n_new[gen]
        elif n_fill[gen] > 0:
            genuine_size = fill_qty[gen] / n_fill[gen]
        else:
            genuine_size = 0.0
        duration = (ts[idx[b - 1]] - ts[idx[a]]) / 1e9
        total_new = n_new[0] + n_new[1]
        out[c, 0] = b - a
        out[c, 1] = total_new
        out[c, 2] = duration
        out[c, 3] = (n_cancel[0] + n_cancel[1]) / max(total_new, 1.0)
        out[c, 4] = 1.0 if bait == 0 else -1.0
        out[c, 5] = new_qty[bait]
        out[c, 6] = new_qty[gen]
        out[c, 7] = max_rest[bait]
        out[c, 8] = max_rest[bait] / genuine_size if genuine_size > 0 else 0.0
        out[c, 9] = fill_qty[bait] / new_qty[bait] if new_qty[bait] > 0 else np.nan
        out[c, 10] = fill_qty[gen] / new_qty[gen] if new_qty[gen] > 0 else np.nan
        out[c, 11] = opp_qty[gen]
        out[c, 12] = opp_n[gen]
        out[c, 13] = trig[bait]
        out[c, 14] = trig_lat[bait] / 1e6 if trig[bait] > 0 else np.nan
        out[c, 15] = life_sum[bait] / life_n[bait] / 1e6 if life_n[bait] > 0 else np.nan
        out[c, 16] = life_fast[bait] / life_n[bait] if life_n[bait] > 0 else np.nan
        out[c, 17] = imb_sum[gen] / opp_n[gen] if opp_n[gen] > 0 else np.nan
        out[c, 18] = switches
        out[c, 19] = (b - a) / max(duration, 1e-3)
        out[c, 20] = cancel_qty[bait] / new_qty[bait] if new_qty[bait] > 0 else np.nan
        out[c, 21] = trig[bait] / n_cancel[bait] if n_cancel[bait] > 0 else np.nan
    return out


# ------------------------------------------------------------------ market-context features

CONTEXT_FEATURES: tuple[Feature, ...] = (
    Feature("bait_dist_ticks", "ticks",
            "mean distance of bait orders from the same-side touch at entry (+ = behind)"),
    Feature("bait_depth_share", "ratio",
            "mean bait order size ÷ (size + visible same-side touch size) at entry"),
    Feature("mid_move_resting_ticks", "ticks",
            "mean mid move from bait entry to bait cancel, in the bait's pressure direction"),
    Feature("post_cancel_reversal_ticks", "ticks",
            "mean mid move in the 1 s after a bait cancel, against the pressure direction"),
    Feature("induced_volume", "lots",
            "others' tape volume in the pressure direction while bait orders rested"),
    Feature("flip_count", "count",
            "bait cancels followed ≤ 100 ms by an aggressive genuine-side order"),
    Feature("genuine_improvement_ticks", "ticks",
            "mean genuine execution price vs the mid before the first bait, in the genuine "
            "side's favour"),
    Feature("mid_move_bps", "bps", "mid move over the cluster in the pressure direction"),
    Feature("ref_move_bps", "bps",
            "reference instrument's mid move over the same span, same direction"),
    Feature("excess_move_bps", "bps", "mid_move_bps − ref_move_bps (own pressure vs market)"),
    Feature("order_to_fill", "ratio", "events ÷ executions"),
)  # fmt: skip
ALL_FEATURES = FEATURES + CONTEXT_FEATURES
FLIP_NS = 100_000_000


@njit(cache=True)
def spoofing_context_kernel(idx, starts, bait_side, ts, event, order, n_orders, rside, oqty,
                            dist, aggr, xprice, bid, ask, bid_size, ask_size, mid_after, tick,
                            mkt_vol, mkt_buy, ref_mid):  # pragma: no cover - numba
    nc = starts.shape[0] - 1
    out = np.full((nc, 11), np.nan)
    e_mid = np.full(n_orders, np.nan)
    e_vol = np.zeros(n_orders)
    for c in range(nc):
        a, b = starts[c], starts[c + 1]
        bs = 0 if bait_side[c] > 0 else 1
        d = 1.0 if bs == 0 else -1.0  # buy bait pushes the price up
        gd = -d
        dist_s = 0.0
        dist_n = 0
        dshare_s = 0.0
        dshare_n = 0
        move_s = 0.0
        move_n = 0
        rev_s = 0.0
        rev_n = 0
        induced = 0.0
        flips = 0
        last_cancel = -1
        premid = np.nan
        imp_s = 0.0
        imp_n = 0
        n_fill = 0
        for j in range(a, b):
            i = idx[j]
            o = order[i]
            e = event[i]
            s = rside[i]
            mid = (bid[i] + ask[i]) / 2
            tk = tick[i]
            pv = mkt_buy[i] if bs == 0 else mkt_vol[i] - mkt_buy[i]
            if e == _FILL:
                n_fill += 1
            if s == bs:
                if e == _NEW:
                    e_mid[o] = mid
                    e_vol[o] = pv
                    if np.isnan(premid):
                        premid = mid
                    if not np.isnan(dist[i]):
                        dist_s += dist[i]
                        dist_n += 1
                    touch = bid_size[i] if bs == 0 else ask_size[i]
                    if not np.isnan(touch) and oqty[i] + touch > 0:
                        dshare_s += oqty[i] / (oqty[i] + touch)
                        dshare_n += 1
                elif e == _CANCEL:
                    last_cancel = ts[i]
                    if tk > 0 and not np.isnan(mid):
                        if not np.isnan(e_mid[o]):
                            move_s += d * (mid - e_mid[o]) / tk
                            move_n += 1
                        if not np.isnan(mid_after[i]):
                            rev_s += d * (mid - mid_after[i]) / tk
                            rev_n += 1
                    if not np.isnan(pv):
                        induced += pv - e_vol[o]
            else:
                if (e == _NEW and aggr[i] and last_cancel >= 0
                        and ts[i] - last_cancel <= FLIP_NS):
                    flips += 1
                    last_cancel = -1
                if e == _FILL and tk > 0 and not np.isnan(premid) and not np.isnan(xprice[i]):
                    imp_s += gd * (premid - xprice[i]) / tk
                    imp_n += 1
        i0, i1 = idx[a], idx[b - 1]
        m0 = (bid[i0] + ask[i0]) / 2
        m1 = mid_after[i1]
        out[c, 0] = dist_s / dist_n if dist_n else np.nan
        out[c, 1] = dshare_s / dshare_n if dshare_n else np.nan
        out[c, 2] = move_s / move_n if move_n else np.nan
        out[c, 3] = rev_s / rev_n if rev_n else np.nan
        out[c, 4] = induced
        out[c, 5] = flips
        out[c, 6] = imp_s / imp_n if imp_n else np.nan
        mv = d * (m1 / m0 - 1.0) * 1e4 if m0 > 0 else np.nan
        r0, r1 = ref_mid[i0], ref_mid[i1]
        rv = d * (r1 / r0 - 1.0) * 1e4 if r0 > 0 else 0.0
        out[c, 7] = mv
        out[c, 8] = rv
        out[c, 9] = mv - rv
        out[c, 10] = (b - a) / n_fill if n_fill else np.nan
    return out


class Spoofing(RulesDetector):
    """Rules-based spoofing detector (until the semi-supervised forest replaces the score)."""

    name: ClassVar[str] = "spoofing"
    model_version: ClassVar[str] = "spoofing-rules-1"
    description: ClassVar[str] = (
        "large resting bait on one side, fills on the other, bait cancelled off the fill"
    )
    cluster_keys: ClassVar[tuple[str, ...]] = ("trader", "instrument")
    features: ClassVar[tuple[Feature, ...]] = ALL_FEATURES
    context_columns: ClassVar[tuple[str, ...]] = (
        "ctx_bid", "ctx_ask", "ctx_bid_size", "ctx_ask_size", "ctx_mid_after", "ctx_tick",
        "ctx_mkt_vol", "ctx_mkt_buy", "ctx_ref_mid")
    batch_fields: ClassVar[tuple[str, ...]] = (
        "side", "qty", "leaves", "exec_qty", "order", "rside", "oqty", "dist", "aggr", "exec_price")
    code_columns: ClassVar[tuple[str, ...]] = ("trader", "instrument")

    def compute(self, clusters: Clusters, inputs: KernelInputs, params=None) -> np.ndarray:
        if clusters.count == 0:
            return np.zeros((0, len(ALL_FEATURES)))
        base = spoofing_kernel(
            np.arange(inputs.ts.shape[0]), inputs.starts, inputs.key[inputs.starts[:-1]],
            inputs.ts, inputs.side, inputs.event, inputs.order, inputs.n_orders, inputs.qty,
            inputs.leaves, inputs.exec_qty, TRIGGER_NS, SIZE_MULTIPLE,
        )  # fmt: skip
        batch = Batch.build(clusters.events)
        return self._with_context(base, batch, identity_grouping(clusters))

    def kernel(self, batch: Batch, g: Grouping, params) -> np.ndarray:
        if g.count == 0:
            return np.zeros((0, len(ALL_FEATURES)))
        ckey = composite(batch, self.cluster_keys, g.idx[g.starts[:-1]])
        base = spoofing_kernel(g.idx, g.starts, ckey, batch.ts, batch.side, batch.event,
                               batch.order, batch.n_orders, batch.qty, batch.leaves,
                               batch.exec_qty, TRIGGER_NS, SIZE_MULTIPLE)
        return self._with_context(base, batch, g)

    @staticmethod
    def _with_context(base: np.ndarray, batch: Batch, g: Grouping) -> np.ndarray:
        x = batch.ctx
        extra = spoofing_context_kernel(
            g.idx, g.starts, base[:, F["bait_side"]], batch.ts, batch.event, batch.order,
            batch.n_orders, batch.rside, batch.oqty, batch.dist, batch.aggr, batch.exec_price,
            x["ctx_bid"], x["ctx_ask"], x["ctx_bid_size"], x["ctx_ask_size"], x["ctx_mid_after"],
            x["ctx_tick"], x["ctx_mkt_vol"], x["ctx_mkt_buy"], x["ctx_ref_mid"])
        return np.hstack((base, extra))

    def rules(self, m: np.ndarray) -> list[tuple[np.ndarray, float]]:
        """(fired mask, log2-odds weight) per rule, in explanation order. "Dominant" bait means
        large against the genuine orders *and* most of the trader's own resting interest when
        the genuine orders filled: a two-sided market maker's ladder is large but balanced."""
        imbalance = np.nan_to_num(m[:, F["imbalance_at_fill"]])
        dominant = (np.nan_to_num(m[:, F["size_ratio"]]) >= SIZE_MULTIPLE) & (imbalance >= 0.75)
        trig = np.nan_to_num(m[:, F["fill_triggered_cancels"]])
        share = np.nan_to_num(m[:, F["fill_triggered_share"]])
        fill_rate = m[:, F["bait_fill_rate"]]
        return [
            (dominant, 2.5),
            (np.nan_to_num(m[:, F["opp_fill_count"]]) >= 1, 2.0),
            (dominant & (trig >= 1), 2.0),
            (dominant & (trig >= 3) & (share >= 0.2), 2.0),
            (~np.isnan(fill_rate) & (np.nan_to_num(fill_rate) <= 0.05), 1.0),
            (np.nan_to_num(m[:, F["bait_mean_lifetime_ms"]], nan=np.inf) < 2000, 0.5),
        ]

    def reasons(self, v: dict[str, float]) -> list[str]:
        """One sentence per rule (same order), phrased as the CME Rule 575 factors."""
        side = "buy" if v["bait_side"] > 0 else "sell"
        return [
            f"size relative to the trader's own opposite interest: {side} orders resting up to "
            f"{v['bait_max_resting']:g} lots, {v['size_ratio']:.1f}× the genuine order size and "
            f"{100 * v['imbalance_at_fill']:.0f}% of the trader's resting interest at the fills",
            f"opposite-side executions while the large orders rested: {v['opp_fill_count']:g} "
            f"fills, {v['opp_fill_qty']:g} lots",
            f"cancel timed off the fill: large orders cancelled "
            f"{v['min_fill_to_cancel_ms']:.0f} ms after an opposite-side execution",
            f"historical pattern: fill-then-cancel repeated {v['fill_triggered_cancels']:g} times "
            f"({100 * v['fill_triggered_share']:.0f}% of bait cancels)",
            f"orders rarely meant to trade: bait fill rate {100 * v['bait_fill_rate']:.2f}%",
            f"short exposure to the market: bait orders lived {v['bait_mean_lifetime_ms']:.0f} ms"
            " on average",
        ]
