"""Front running: while a client order is being worked, a house account trades the same side in
the same instrument and unwinds after the client order is done (patterns.md §2.5; FINRA 5270 and
5320; CME 530/531).

Clustering rule "client order × house accounts": a client order is a burst of one client
account's events in one instrument (pauses ≤ ``parent_gap_seconds``), spanning [t0, t1]. Each
house trader with a same-side execution inside [t0, t1] gets one cluster: the client order's
events plus the trader's own events in [t0 − ``lead_seconds``, t1 + ``unwind_seconds``]. Account
types (house / client) come from the accounts reference table; without it nothing is a client
and the detector produces no clusters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from numba import njit

from appliance.detectors.base import Feature
from appliance.detectors.common import (
    FILL,
    Batch,
    Grouping,
    RulesDetector,
    col,
    composite,
    gap_grouping,
    ratio,
)

FEATURES: tuple[Feature, ...] = (
    Feature("n_events", "count", "house trader's events in the cluster"),
    Feature("client_side", "+1 buy / -1 sell", "net side of the client order's executions"),
    Feature("client_qty", "lots", "client executed quantity"),
    Feature("client_duration_s", "s", "client order span t1 − t0"),
    Feature("same_side_qty", "lots", "house executions on the client's side within [t0, t1]"),
    Feature("opp_side_qty", "lots", "house executions on the other side within [t0, t1]"),
    Feature("share_of_client", "ratio", "same-side quantity ÷ client quantity"),
    Feature("lead_s", "s", "t0 → first same-side house execution"),
    Feature("unwind_qty", "lots", "house executions on the other side after t1"),
    Feature("unwind_ratio", "ratio", "unwind quantity ÷ same-side quantity"),
    Feature("pnl_ticks", "ticks", "mean unwind price minus mean same-side price, client "
            "direction"),
    Feature("client_impact_ticks", "ticks", "mid move over the client order, client direction"),
    Feature("aggressive_share", "ratio", "aggressive share of same-side quantity"),
    Feature("pre_position", "lots", "house net position from fills before t0 in the cluster"),
)  # fmt: skip


@dataclass(frozen=True)
class ClientGrouping(Grouping):
    """Clusters "client order × house trader" without copying their rows: cluster ``c`` is
    client order ``parent[c]`` (rows ``p_idx[p_starts[p]:p_starts[p + 1]]``) plus the house
    trader's rows ``horder[hs[c]:he[c]]``, both in time order. ``idx`` stays empty and
    ``starts`` holds the cumulative cluster sizes, so memory grows with the number of clusters,
    not with their (overlapping) rows."""

    t0: np.ndarray | None = None
    t1: np.ndarray | None = None
    parent: np.ndarray | None = None
    p_idx: np.ndarray | None = None
    p_starts: np.ndarray | None = None
    horder: np.ndarray | None = None
    hs: np.ndarray | None = None
    he: np.ndarray | None = None
    ts: np.ndarray | None = None

    def rows(self, c: int) -> np.ndarray:
        p = self.parent[c]
        both = np.concatenate((self.p_idx[self.p_starts[p]:self.p_starts[p + 1]],
                               self.horder[self.hs[c]:self.he[c]]))
        return both[np.lexsort((both, self.ts[both]))]

    def _ends(self, last: bool) -> np.ndarray:
        if self.count == 0:
            return np.zeros(0, np.int64)
        client = self.p_idx[self.p_starts[self.parent + 1] - 1 if last
                            else self.p_starts[self.parent]]
        house = self.horder[self.he - 1 if last else self.hs]
        tc, th = self.ts[client], self.ts[house]
        client_first = (tc < th) | ((tc == th) & (client < house))
        return np.where(client_first != last, client, house)

    def first_rows(self) -> np.ndarray:
        return self._ends(False)

    def last_rows(self) -> np.ndarray:
        return self._ends(True)


@njit(cache=True)
def front_kernel(parent, p_idx, p_starts, horder, hs, he, ts, event, rside, aggr, fill,
                 xprice, bid, ask, tick, t0s, t1s):  # pragma: no cover - numba
    """Per cluster: the client order's rows (time order), then the house trader's rows."""
    nc = parent.shape[0]
    out = np.full((nc, 14), np.nan)
    for c in range(nc):
        t0, t1 = t0s[c], t1s[c]
        cnet = 0.0
        cq = 0.0
        m0 = np.nan
        m1 = np.nan
        for j in range(p_starts[parent[c]], p_starts[parent[c] + 1]):
            i = p_idx[j]
            m = (bid[i] + ask[i]) / 2
            if np.isnan(m0):
                m0 = m
            m1 = m
            if event[i] == FILL:
                cq += fill[i]
                cnet += fill[i] if rside[i] == 0 else -fill[i]
        cs = 0 if cnet >= 0 else 1
        d = 1.0 if cs == 0 else -1.0
        n = 0
        same = 0.0
        same_px = 0.0
        opp = 0.0
        unw = 0.0
        unw_px = 0.0
        lead = np.nan
        agg = 0.0
        pre = 0.0
        tk = np.nan
        for j in range(hs[c], he[c]):
            i = horder[j]
            n += 1
            tk = tick[i]
            if event[i] != FILL:
                continue
            x = fill[i]
            if ts[i] < t0:
                pre += x if rside[i] == 0 else -x
            elif ts[i] <= t1:
                if rside[i] == cs:
                    same += x
                    same_px += x * xprice[i]
                    if aggr[i]:
                        agg += x
                    if np.isnan(lead):
                        lead = (ts[i] - t0) / 1e9
                else:
                    opp += x
            elif rside[i] != cs:
                unw += x
                unw_px += x * xprice[i]
        out[c, 0] = n
        out[c, 1] = d
        out[c, 2] = cq
        out[c, 3] = (t1 - t0) / 1e9
        out[c, 4] = same
        out[c, 5] = opp
        out[c, 6] = ratio(same, cq)
        out[c, 7] = lead
        out[c, 8] = unw
        out[c, 9] = ratio(unw, same)
        if same > 0 and unw > 0 and tk > 0:
            out[c, 10] = d * (unw_px / unw - same_px / same) / tk
        out[c, 11] = d * (m1 - m0) / tk if tk > 0 else np.nan
        out[c, 12] = ratio(agg, same)
        out[c, 13] = pre
    return out


def _empty() -> ClientGrouping:
    z = np.zeros(0, np.int64)
    return ClientGrouping(z, np.zeros(1, np.int64), z, z, z, z, z, np.zeros(1, np.int64), z, z,
                          z, z)


class FrontRunning(RulesDetector):
    name: ClassVar[str] = "front_running"
    model_version: ClassVar[str] = "front_running-rules-1"
    description: ClassVar[str] = "house trading ahead of a client order on the same side"
    partition_keys: ClassVar[tuple[str, ...]] = ("instrument",)
    cluster_keys: ClassVar[tuple[str, ...]] = ("instrument",)
    features: ClassVar[tuple[Feature, ...]] = FEATURES
    context_columns: ClassVar[tuple[str, ...]] = ("ctx_bid", "ctx_ask", "ctx_tick")
    batch_fields: ClassVar[tuple[str, ...]] = ("acct_type", "rside", "aggr", "fill", "exec_price")
    code_columns: ClassVar[tuple[str, ...]] = ("trader", "instrument", "account")

    def group(self, batch: Batch, info, params) -> Grouping:
        client = np.flatnonzero(batch.acct_type == 1)
        if client.size == 0:
            return _empty()
        gap = int(params.get("parent_gap_seconds", 30.0) * 1e9)
        lead = int(params.get("lead_seconds", 60.0) * 1e9)
        unwind = int(params.get("unwind_seconds", 300.0) * 1e9)
        parents = gap_grouping(batch, ("account", "instrument"), {}, gap, rows=client)
        house = np.flatnonzero(batch.acct_type == 0)
        hkey = composite(batch, ("trader", "instrument"))
        horder = house[np.lexsort((house, batch.ts[house], hkey[house]))]
        hk = hkey[horder]
        bounds = np.append(np.flatnonzero(np.r_[True, hk[1:] != hk[:-1]]), horder.size) \
            if horder.size else np.zeros(1, np.int64)
        groups = [horder[bounds[k]:bounds[k + 1]] for k in range(bounds.size - 1)]
        # house fills of every group in time order: a parent only visits the groups that
        # filled on its side during it (same clusters, same order as trying every group)
        gid = np.repeat(np.arange(len(groups)), np.diff(bounds)) if groups else np.zeros(
            0, np.int64)
        hf = (batch.event[horder] == 3) if horder.size else np.zeros(0, bool)
        f_rows, f_gid = horder[hf], gid[hf]
        f_ord = np.lexsort((np.arange(f_rows.size), batch.ts[f_rows]))
        f_rows, f_gid = f_rows[f_ord], f_gid[f_ord]
        f_ts, f_side = batch.ts[f_rows], batch.rside[f_rows]
        inst = batch.codes["instrument"]
        g_inst = np.array([inst[g[0]] for g in groups], np.int64)
        parent, hs, he, t0s, t1s = [], [], [], [], []
        for p in range(parents.count):
            rows = parents.idx[parents.starts[p]:parents.starts[p + 1]]
            t0, t1 = int(batch.ts[rows[0]]), int(batch.ts[rows[-1]])
            fills = rows[batch.event[rows] == 3]
            net = (batch.fill[fills] * np.where(batch.rside[fills] == 0, 1, -1)).sum()
            side = 0 if net >= 0 else 1
            lo, hi = np.searchsorted(f_ts, t0, "left"), np.searchsorted(f_ts, t1, "right")
            hit = np.unique(f_gid[lo:hi][f_side[lo:hi] == side])
            for k in hit[g_inst[hit] == inst[rows[0]]].tolist():
                t = batch.ts[groups[k]]
                parent.append(p)
                hs.append(bounds[k] + np.searchsorted(t, t0 - lead, side="left"))
                he.append(bounds[k] + np.searchsorted(t, t1 + unwind, side="right"))
                t0s.append(t0)
                t1s.append(t1)
        if not parent:
            return _empty()
        ints = lambda x: np.array(x, np.int64)  # noqa: E731
        parent_, hs_, he_ = ints(parent), ints(hs), ints(he)
        sizes = np.diff(parents.starts)[parent_] + (he_ - hs_)
        return ClientGrouping(np.zeros(0, np.int64), np.concatenate(([0], np.cumsum(sizes))),
                              horder[hs_], ints(t0s), ints(t1s), parent_, parents.idx,
                              parents.starts, horder, hs_, he_, batch.ts)

    def kernel(self, batch: Batch, g: Grouping, params) -> np.ndarray:
        if not isinstance(g, ClientGrouping):
            g = self.group(batch, {}, params)
        if g.count == 0:
            return np.zeros((0, len(FEATURES)))
        x = batch.ctx
        return front_kernel(g.parent, g.p_idx, g.p_starts, g.horder, g.hs, g.he, batch.ts,
                            batch.event, batch.rside, batch.aggr, batch.fill, batch.exec_price,
                            x["ctx_bid"], x["ctx_ask"], x["ctx_tick"], g.t0, g.t1)

    def rules(self, m):
        f = lambda n, nan=0.0: col(m, FEATURES, n, nan)  # noqa: E731
        directional = (f("share_of_client") >= 0.01) & (f("same_side_qty") >= 3 * f("opp_side_qty"))
        return [
            (directional, 2.5),
            (directional & (f("unwind_ratio") >= 0.5), 2.0),
            (directional & (f("aggressive_share") >= 0.5), 1.0),
            (directional & (f("pnl_ticks") > 0), 0.5),
            (directional & (f("lead_s", np.inf) <= 60), 0.5),
        ]

    def reasons(self, v):
        side = "buy" if v["client_side"] > 0 else "sell"
        return [
            f"trading ahead of a client {side} order of {v['client_qty']:g} lots: "
            f"{v['same_side_qty']:g} lots on the same side ({100 * v['share_of_client']:.1f}%)",
            f"unwound after the client order: {v['unwind_qty']:g} lots "
            f"({100 * v['unwind_ratio']:.0f}% of the position)",
            f"aggressive: {100 * v['aggressive_share']:.0f}% of the same-side quantity",
            f"profit from the client's impact: {v['pnl_ticks']:.1f} ticks per lot",
            f"lead time: first same-side execution {v['lead_s']:.1f} s after the client order "
            "arrived",
        ]
