"""Marking the close: aggressive volume concentrated in the closing (settlement) window, in the
direction of an exposure built earlier, that moves the reference price (patterns.md §2.6; CEA
4c(a)(5)(B); CME 575). Clustering is by session window: one cluster per (trader, instrument,
trade date) — the whole session, so the exposure built before the window is in the cluster —
with the window ``window_seconds`` before the instrument's close (its last market event, or
``close_utc`` when set)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from numba import njit

from appliance.detectors.base import Feature
from appliance.detectors.common import FILL, Batch, Grouping, RulesDetector, col, composite, ratio

FEATURES: tuple[Feature, ...] = (
    Feature("n_events", "count", "events of the session"),
    Feature("window_events", "count", "events inside the closing window"),
    Feature("pre_window_position", "lots", "net bought − sold before the window (exposure)"),
    Feature("window_aggr_qty", "lots", "aggressive executed quantity in the window"),
    Feature("window_aggr_fills", "count", "aggressive executions in the window"),
    Feature("window_direction", "+1 / -1 / 0", "sign of net aggressive window quantity"),
    Feature("aligned", "0/1", "window buying (selling) with a long (short) prior exposure"),
    Feature("window_tape_share", "ratio", "own window executions ÷ tape volume in the window"),
    Feature("day_tape_share", "ratio", "own executions of the day ÷ tape volume of the day"),
    Feature("share_ratio", "×", "window tape share ÷ day tape share"),
    Feature("mid_move_ticks", "ticks", "mid 1 s after the last window execution minus mid "
            "before the first, in the window direction"),
    Feature("first_aggr_before_close_s", "s", "close minus the first aggressive window fill"),
    Feature("window_fill_qty", "lots", "all own executions in the window"),
    Feature("exposure_ratio", "×", "window aggressive quantity ÷ |prior exposure|"),
)  # fmt: skip


@dataclass(frozen=True)
class SessionGrouping(Grouping):
    window_start: np.ndarray | None = None  # per cluster, ns
    close: np.ndarray | None = None
    window_volume: np.ndarray | None = None
    day_volume: np.ndarray | None = None


@njit(cache=True)
def close_kernel(idx, starts, ts, event, rside, aggr, fill, bid, ask, mid_after, tick, wstart,
                 close, wvol, dvol):  # pragma: no cover - numba
    nc = starts.shape[0] - 1
    out = np.full((nc, 14), np.nan)
    for c in range(nc):
        a, b = starts[c], starts[c + 1]
        pre = 0.0
        n_win = 0
        aq = 0.0
        an = 0
        net_a = 0.0
        wq = 0.0
        dq_ = 0.0
        first = -1
        last = -1
        for j in range(a, b):
            i = idx[j]
            inwin = ts[i] >= wstart[c]
            if inwin:
                n_win += 1
            if event[i] != FILL:
                continue
            sg = 1.0 if rside[i] == 0 else -1.0
            dq_ += fill[i]
            if not inwin:
                pre += sg * fill[i]
                continue
            wq += fill[i]
            if aggr[i]:
                aq += fill[i]
                an += 1
                net_a += sg * fill[i]
                if first < 0:
                    first = i
                last = i
        d = 1.0 if net_a > 0 else (-1.0 if net_a < 0 else 0.0)
        out[c, 0] = b - a
        out[c, 1] = n_win
        out[c, 2] = pre
        out[c, 3] = aq
        out[c, 4] = an
        out[c, 5] = d
        out[c, 6] = 1.0 if d != 0 and pre * d > 0 else 0.0
        ws = ratio(wq, wvol[c])
        ds = ratio(dq_, dvol[c])
        out[c, 7] = ws
        out[c, 8] = ds
        out[c, 9] = ws / ds if ds > 0 else np.nan
        if first >= 0:
            tk = tick[first]
            m0 = (bid[first] + ask[first]) / 2
            out[c, 10] = d * (mid_after[last] - m0) / tk if tk > 0 else np.nan
            out[c, 11] = (close[c] - ts[first]) / 1e9
        out[c, 12] = wq
        out[c, 13] = aq / abs(pre) if pre != 0 else np.nan
    return out


class MarkingTheClose(RulesDetector):
    name: ClassVar[str] = "marking_the_close"
    model_version: ClassVar[str] = "marking_the_close-rules-1"
    description: ClassVar[str] = "aggressive closing-window volume in the direction of exposure"
    features: ClassVar[tuple[Feature, ...]] = FEATURES
    context_columns: ClassVar[tuple[str, ...]] = (
        "ctx_bid", "ctx_ask", "ctx_mid_after", "ctx_tick")
    batch_fields: ClassVar[tuple[str, ...]] = ("rside", "aggr", "fill")
    code_columns: ClassVar[tuple[str, ...]] = ("trader", "instrument")

    def group(self, batch: Batch, info, params) -> Grouping:
        n = batch.ts.shape[0]
        if n == 0:
            return SessionGrouping(np.zeros(0, np.int64), np.zeros(1, np.int64),
                                   np.zeros(0, np.int64), np.zeros(0), np.zeros(0), np.zeros(0),
                                   np.zeros(0))
        order = batch.key_order(self.cluster_keys)
        c = composite(batch, self.cluster_keys, order)
        starts = np.append(np.flatnonzero(np.r_[True, c[1:] != c[:-1]]), n).astype(np.int64)
        first = order[starts[:-1]]
        window = int(params.get("window_seconds", 120.0) * 1e9)
        inst_names = batch.names["instrument"]
        close_at = _close_times(batch, info, params)
        close = np.array([close_at[inst_names[batch.codes["instrument"][r]]] for r in first],
                         dtype=np.int64)
        wstart = close - window
        wvol, dvol = [], []
        for r, t1 in zip(first, close, strict=True):
            inf = info.get(inst_names[batch.codes["instrument"][r]])
            wvol.append(inf.volume_between(int(t1) - window, int(t1)) if inf else np.nan)
            dvol.append(inf.day_volume if inf else np.nan)
        return SessionGrouping(order.astype(np.int64, copy=False), starts, first, wstart, close,
                               np.array(wvol, float), np.array(dvol, float))

    def kernel(self, batch: Batch, g: Grouping, params) -> np.ndarray:
        if g.count == 0:
            return np.zeros((0, len(FEATURES)))
        if not isinstance(g, SessionGrouping):  # tests: clusters given, close = last event
            g = self.group(batch, {}, params)
        x = batch.ctx
        return close_kernel(g.idx, g.starts, batch.ts, batch.event, batch.rside, batch.aggr,
                            batch.fill, x["ctx_bid"], x["ctx_ask"], x["ctx_mid_after"],
                            x["ctx_tick"], g.window_start, g.close, g.window_volume,
                            g.day_volume)

    def rules(self, m):
        f = lambda n, nan=0.0: col(m, FEATURES, n, nan)  # noqa: E731
        aggressive = f("window_aggr_fills") >= 3
        return [
            (aggressive & (f("aligned") > 0), 3.0),
            (aggressive & (f("share_ratio") >= 3), 1.5),
            (f("window_tape_share") >= 0.05, 1.0),
            (aggressive & (f("mid_move_ticks") >= 1), 1.0),
            (aggressive & (f("first_aggr_before_close_s", np.inf) <= 90), 0.5),
        ]

    def reasons(self, v):
        side = "buying" if v["window_direction"] > 0 else "selling"
        return [
            f"position referenced to the close: {side} {v['window_aggr_qty']:g} lots "
            f"aggressively in the window with a prior exposure of {v['pre_window_position']:g}",
            f"concentrated in the window: {v['share_ratio']:.1f}× the trader's share of the day",
            f"size relative to the market: {100 * v['window_tape_share']:.0f}% of the window's "
            "tape volume",
            f"change in the settlement price caused: mid moved {v['mid_move_ticks']:.1f} ticks",
            f"timing: first aggressive fill {v['first_aggr_before_close_s']:.0f} s before the "
            "close",
        ]


def _close_times(batch: Batch, info, params) -> dict[str, int]:
    """Close per instrument: ``close_utc`` (HH:MM[:SS] on the events' UTC date) if set, else the
    instrument's last market event of the day (its last event here when no info)."""
    out = {}
    hhmm = params.get("close_utc", "")
    names = batch.names["instrument"]
    latest = np.full(len(names), np.iinfo(np.int64).min, np.int64)
    np.maximum.at(latest, batch.codes["instrument"], batch.ts)
    for k, name in enumerate(names):
        last = int(latest[k])
        if hhmm:
            parts = [int(p) for p in hhmm.split(":")] + [0]
            day = last - last % 86_400_000_000_000
            out[name] = day + ((parts[0] * 60 + parts[1]) * 60 + parts[2]) * 1_000_000_000
        elif name in info:
            out[name] = info[name].close_ns
        else:
            out[name] = last
    return out
