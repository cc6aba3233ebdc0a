"""Wash trades: executions on both sides, at the same price and nearly the same time and size,
by accounts of one beneficial owner, with no net change of position (patterns.md §2.3; CME 534;
FINRA 5210.02). Clusters are keyed by (beneficial owner, instrument) across accounts; the owner
comes from the accounts reference table (without it, an account is its own owner)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from numba import njit

from appliance.detectors.base import Feature
from appliance.detectors.common import FILL, Batch, Grouping, RulesDetector, col, ratio

FEATURES: tuple[Feature, ...] = (
    Feature("n_events", "count", "events in the cluster"),
    Feature("duration_s", "s", "last minus first event time"),
    Feature("n_accounts", "count", "distinct accounts of the owner in the cluster"),
    Feature("n_fills", "count", "executions"),
    Feature("matched_pairs", "count", "buy/sell execution pairs of the owner ≤ leg window apart "
            "and ≤ 1 tick apart in price"),
    Feature("matched_qty", "lots", "quantity of the smaller leg, summed over pairs"),
    Feature("matched_share", "ratio", "2 × matched quantity ÷ all executed quantity"),
    Feature("cross_account_share", "ratio", "pairs whose legs are different accounts ÷ pairs"),
    Feature("mean_leg_gap_ms", "ms", "mean time between the two legs of a pair"),
    Feature("mean_size_mismatch", "ratio", "mean |q1 − q2| ÷ max(q1, q2) over pairs"),
    Feature("max_price_offset_ticks", "ticks", "largest price difference between two legs"),
    Feature("net_position_ratio", "ratio", "|bought − sold| ÷ (bought + sold)"),
    Feature("tape_share", "ratio", "matched quantity ÷ tape volume over the cluster span"),
    Feature("pairs_per_min", "1/min", "matched pairs ÷ duration"),
)  # fmt: skip


@njit(cache=True)
def wash_kernel(idx, starts, ts, event, rside, fill, xprice, account, tick, mkt_vol,
                leg_ns):  # pragma: no cover - numba
    nc = starts.shape[0] - 1
    out = np.full((nc, 14), np.nan)
    for c in range(nc):
        a, b = starts[c], starts[c + 1]
        matched = np.zeros(b - a, np.bool_)
        pairs = 0
        mq = 0.0
        cross = 0
        gap_sum = 0.0
        mis_sum = 0.0
        max_off = 0.0
        bought = 0.0
        sold = 0.0
        n_fill = 0
        accts = np.unique(account[idx[a:b]])
        tk = tick[idx[a]]
        for j in range(a, b):
            i = idx[j]
            if event[i] != FILL:
                continue
            n_fill += 1
            if rside[i] == 0:
                bought += fill[i]
            else:
                sold += fill[i]
            k = j - 1
            while k >= a and ts[i] - ts[idx[k]] <= leg_ns:
                m = idx[k]
                if (event[m] == FILL and not matched[k - a] and rside[m] != rside[i]
                        and abs(xprice[m] - xprice[i]) <= (tk if tk > 0 else 0.0) + 1e-9):
                    matched[k - a] = True
                    matched[j - a] = True
                    pairs += 1
                    mq += min(fill[m], fill[i])
                    if account[m] != account[i]:
                        cross += 1
                    gap_sum += ts[i] - ts[m]
                    big = max(fill[m], fill[i])
                    mis_sum += abs(fill[m] - fill[i]) / big if big > 0 else 0.0
                    if tk > 0:
                        max_off = max(max_off, abs(xprice[m] - xprice[i]) / tk)
                    break
                k -= 1
        dur = (ts[idx[b - 1]] - ts[idx[a]]) / 1e9
        vol = mkt_vol[idx[b - 1]] - mkt_vol[idx[a]]
        out[c, 0] = b - a
        out[c, 1] = dur
        out[c, 2] = accts.shape[0]
        out[c, 3] = n_fill
        out[c, 4] = pairs
        out[c, 5] = mq
        out[c, 6] = ratio(2 * mq, bought + sold)
        out[c, 7] = ratio(cross, pairs)
        out[c, 8] = gap_sum / pairs / 1e6 if pairs > 0 else np.nan
        out[c, 9] = mis_sum / pairs if pairs > 0 else np.nan
        out[c, 10] = max_off if pairs > 0 else np.nan
        out[c, 11] = ratio(abs(bought - sold), bought + sold)
        out[c, 12] = mq / vol if vol > 0 else np.nan
        out[c, 13] = pairs / max(dur / 60.0, 1.0 / 60.0)
    return out


class WashTrade(RulesDetector):
    name: ClassVar[str] = "wash_trade"
    model_version: ClassVar[str] = "wash_trade-rules-1"
    description: ClassVar[str] = "offsetting executions between accounts of one owner"
    partition_keys: ClassVar[tuple[str, ...]] = ("owner", "instrument")
    cluster_keys: ClassVar[tuple[str, ...]] = ("owner", "instrument")
    multi_trader: ClassVar[bool] = True
    features: ClassVar[tuple[Feature, ...]] = FEATURES
    context_columns: ClassVar[tuple[str, ...]] = ("ctx_tick", "ctx_mkt_vol")
    batch_fields: ClassVar[tuple[str, ...]] = ("rside", "fill", "exec_price")
    code_columns: ClassVar[tuple[str, ...]] = ("owner", "instrument", "account")

    def kernel(self, batch: Batch, g: Grouping, params) -> np.ndarray:
        if g.count == 0:
            return np.zeros((0, len(FEATURES)))
        leg_ns = int(params.get("leg_seconds", 1.0) * 1e9)
        return wash_kernel(g.idx, g.starts, batch.ts, batch.event, batch.rside, batch.fill,
                           batch.exec_price, batch.codes["account"], batch.ctx["ctx_tick"],
                           batch.ctx["ctx_mkt_vol"], leg_ns)

    def rules(self, m):
        f = lambda n, nan=0.0: col(m, FEATURES, n, nan)  # noqa: E731
        pairs = f("matched_pairs")
        # One same-size, same-price pair across two accounts of one owner is already the
        # CME 534 signature; repetition and a flat position make it stronger.
        return [
            (pairs >= 1, 2.0),
            (pairs >= 2, 1.5),
            ((pairs >= 1) & (f("matched_share") >= 0.5), 2.0),
            ((pairs >= 1) & (f("cross_account_share") > 0), 1.5),
            ((pairs >= 1) & (f("mean_size_mismatch", 1.0) <= 0.05), 0.5),
            ((pairs >= 1) & (f("net_position_ratio", 1.0) <= 0.2), 0.5),
        ]

    def reasons(self, v):
        return [
            f"same beneficial owner on both sides: {v['matched_pairs']:g} buy/sell pairs, "
            f"{v['matched_qty']:g} lots, legs {v['mean_leg_gap_ms']:.0f} ms apart",
            f"repeated: {v['matched_pairs']:g} pairs ({v['pairs_per_min']:.1f} per minute)",
            f"{100 * v['matched_share']:.0f}% of the owner's executed volume matched itself",
            f"across accounts: {100 * v['cross_account_share']:.0f}% of pairs between "
            f"{v['n_accounts']:g} accounts of one owner",
            f"sizes agree: mean leg size mismatch {100 * v['mean_size_mismatch']:.1f}%",
            f"no change in position: net {100 * v['net_position_ratio']:.0f}% of gross",
        ]
