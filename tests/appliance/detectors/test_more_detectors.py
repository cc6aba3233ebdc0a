"""Hand-computed features of front running, marking the close and momentum ignition on tiny
fixtures (issue #6), and one clear/benign pair of rules scores per detector.

Market context is given per event as ``ctx_*`` columns (what ``appliance.context.attach`` would
join), so every input of a feature is written in the fixture; account types come from an accounts
reference table through ``pipeline.with_reference``. Tick 0.25 everywhere."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from appliance import pipeline
from appliance.context import CONTEXT_COLUMNS, InstrumentInfo
from appliance.detectors import REGISTRY
from appliance.detectors.common import Batch
from connectors import get_connector
from tests.scenarios import Book, ts

TICK = 0.25
NS = 1_000_000_000
T0 = int(np.datetime64(ts(0.0).rstrip("Z"), "ns").astype(np.int64))  # 14:30:00 in ns


class CtxBook(Book):
    """A ``Book`` whose every row also carries its market context (``ctx_*`` values)."""

    def __init__(self):
        super().__init__()
        self.ctx: list[dict[str, float]] = []

    def at(self, ctx, *args, **kw):
        self.ctx.append({"ctx_tick": TICK, **ctx})
        return self.add(*args, **kw)


def quote(bid, ask, **more):
    return {"ctx_bid": bid, "ctx_ask": ask, **more}


def run(name, book, tmp_path, accounts=None, info=None, params=None):
    """Features (one dict per cluster) and the matrix, through the detector's own grouping."""
    det = REGISTRY[name]
    events = get_connector("csv").read(book.write(tmp_path / "o.csv"), "t").events
    assert events.num_rows == len(book.ctx)  # rows keep the book's order
    events = pipeline.with_reference(events, accounts)
    for c in CONTEXT_COLUMNS:
        events = events.append_column(c, pa.array([r.get(c, np.nan) for r in book.ctx],
                                                  pa.float64()))
    batch = Batch.build(events)
    g = det.group(batch, info or {}, params or {})
    m = det.kernel(batch, g, params or {})
    return [dict(zip([f.name for f in det.features], r, strict=True)) for r in m], m


def check(f, expected):
    for name, value in expected.items():
        if isinstance(value, float) and math.isnan(value):
            assert math.isnan(f[name]), name
        else:
            assert f[name] == pytest.approx(value, rel=1e-9, abs=1e-9), name


# ------------------------------------------------------------------------------ front running

ACCOUNTS = pa.table({"account": ["C1", "H1"], "owner": ["C1", "H1"], "type": ["client", "house"]})


def front_book(aggressive=True, unwind=True):
    """Client C1 buys 50 lots over [10 s, 20 s]; house trader HT holds 4 lots bought at 3 s,
    buys 10 more at 11.5 s (aggressive: price at the ask), sells 1 at 13 s, and (``unwind``)
    sells 8 at 31 s, after the client order is done."""
    b = CtxBook()
    h = {"trader": "HT", "account": "H1"}
    c = {"trader": "CL", "account": "C1"}
    q0 = quote(99.75, 100.0)
    b.at(q0, 2.0, side="BUY", event="NEW", oid="p1", price=100.0, qty=4, leaves=4, **h)
    b.at(q0, 3.0, side="BUY", event="FILL", oid="p1", price=100.0, qty=4, leaves=0,
         exec_qty=4, exec_price=100.0, **h)
    b.at(q0, 10.0, side="BUY", event="NEW", oid="c1", price=100.5, qty=50, leaves=50, **c)
    hp = 100.0 if aggressive else 99.75
    b.at(q0, 11.0, side="BUY", event="NEW", oid="h1", price=hp, qty=10, leaves=10, **h)
    b.at(q0, 11.5, side="BUY", event="FILL", oid="h1", price=hp, qty=10, leaves=0,
         exec_qty=10, exec_price=hp, **h)
    b.at(q0, 12.0, side="SELL", event="NEW", oid="h3", price=100.25, qty=1, leaves=1, **h)
    b.at(q0, 13.0, side="SELL", event="FILL", oid="h3", price=100.25, qty=1, leaves=0,
         exec_qty=1, exec_price=100.25, **h)
    b.at(quote(100.0, 100.25), 15.0, side="BUY", event="FILL", oid="c1", price=100.5, qty=50,
         leaves=30, exec_qty=20, exec_price=100.25, **c)
    b.at(quote(100.25, 100.5), 20.0, side="BUY", event="FILL", oid="c1", price=100.5, qty=50,
         leaves=0, exec_qty=30, exec_price=100.5, **c)
    if unwind:
        q1 = quote(100.5, 100.75)
        b.at(q1, 30.0, side="SELL", event="NEW", oid="h2", price=100.75, qty=8, leaves=8, **h)
        b.at(q1, 31.0, side="SELL", event="FILL", oid="h2", price=100.75, qty=8, leaves=0,
             exec_qty=8, exec_price=100.75, **h)
    return b


def test_front_running_by_hand(tmp_path):
    (f,), m = run("front_running", front_book(), tmp_path, accounts=ACCOUNTS)
    check(f, {
        "n_events": 8,  # house rows: p1 ×2, h1 ×2, h3 ×2, h2 ×2 (client rows not counted)
        "client_side": 1,  # client fills: +20 +30 → net buy
        "client_qty": 50,  # 20 + 30
        "client_duration_s": 10,  # t1 − t0 = 20 − 10
        "same_side_qty": 10,  # h1's buy fill at 11.5 s ∈ [10, 20]
        "opp_side_qty": 1,  # h3's sell fill at 13 s ∈ [10, 20]
        "share_of_client": 0.2,  # 10 / 50
        "lead_s": 1.5,  # 11.5 − 10
        "unwind_qty": 8,  # h2's sell fill at 31 s > t1
        "unwind_ratio": 0.8,  # 8 / 10
        "pnl_ticks": 3,  # +1 × (100.75 − 100.00) / 0.25
        "client_impact_ticks": 2,  # mid 99.875 at 10 s → 100.375 at 20 s: 0.5 / 0.25
        "aggressive_share": 1,  # h1 bought at the ask (100.00 ≥ 100.00): 10 / 10
        "pre_position": 4,  # p1's buy fill at 3 s < t0
    })  # fmt: skip
    # directional (0.2 ≥ 0.01, 10 ≥ 3 × 1) 2.5 + unwind 2 + aggressive 1 + pnl 0.5 + lead 0.5
    # = 6.5 → −6 + 6.5 = 0.5 log2-odds → 500 + 25
    assert REGISTRY["front_running"].score(m).score.tolist() == [525]


def test_front_running_benign_passive_house_buyer_without_unwind(tmp_path):
    (f,), m = run("front_running", front_book(aggressive=False, unwind=False), tmp_path,
                  accounts=ACCOUNTS)
    assert f["same_side_qty"] == 10 and f["unwind_qty"] == 0 and f["aggressive_share"] == 0
    assert math.isnan(f["pnl_ticks"])  # nothing unwound: no round trip
    # directional 2.5 + lead 0.5 only: −3 → 350
    assert REGISTRY["front_running"].score(m).score.tolist() == [350]


def test_front_running_needs_account_types(tmp_path):
    rows, m = run("front_running", front_book(), tmp_path, accounts=None)
    assert rows == [] and m.shape == (0, 14)


# ------------------------------------------------------------------------- marking the close

CLOSE_S = 600.0  # close at 14:40:00; the closing window is [480 s, 600 s] (120 s)
# tape: 10 lots a second before the window, 1 lot a second inside it
VOL_CUM = np.where(np.arange(601) <= 480, 10.0 * np.arange(601), 4800.0 + np.arange(601) - 480)
INFO = {"ESZ6": InstrumentInfo(tick=TICK, mean_gap_ns=1e9, first_ns=T0,
                               close_ns=T0 + int(CLOSE_S) * NS, day_volume=4920.0,
                               vol_cum=VOL_CUM)}


def close_book(window_side="BUY"):
    """Trader MC builds a long of 15 lots (buys 20 at 20 s, sells 5 at 110 s), then in the window
    trades 3 × 4 lots aggressively on ``window_side`` (fills at 520.1, 540.1, 560.1 s) and sells
    2 lots passively (fill at 575 s)."""
    b = CtxBook()
    q = quote(99.75, 100.0)
    b.at(q, 10.0, "MC", "BUY", "NEW", "p1", 99.75, 20, 20)
    b.at(q, 20.0, "MC", "BUY", "FILL", "p1", 99.75, 20, 0, 20, 99.75)
    b.at(q, 100.0, "MC", "SELL", "NEW", "p2", 100.0, 5, 5)
    b.at(q, 110.0, "MC", "SELL", "FILL", "p2", 100.0, 5, 0, 5, 100.0)
    for k in range(3):  # the quote climbs a tick per order; mid 1 s after the last: 100.625
        bid, ask = 100.0 + k * TICK, 100.25 + k * TICK
        px = ask if window_side == "BUY" else bid  # at the touch: aggressive
        ctx = quote(bid, ask, ctx_mid_after=100.625)
        b.at(ctx, 520.0 + 20 * k, "MC", window_side, "NEW", f"w{k}", px, 4, 4)
        b.at(ctx, 520.1 + 20 * k, "MC", window_side, "FILL", f"w{k}", px, 4, 0, 4, px)
    q = quote(100.75, 101.0)
    b.at(q, 570.0, "MC", "SELL", "NEW", "p3", 101.0, 2, 2)
    b.at(q, 575.0, "MC", "SELL", "FILL", "p3", 101.0, 2, 0, 2, 101.0)
    return b


def test_marking_the_close_by_hand(tmp_path):
    (f,), m = run("marking_the_close", close_book(), tmp_path, info=INFO)
    check(f, {
        "n_events": 12,  # 4 before the window + 3 × 2 aggressive + 2 passive
        "window_events": 8,  # events at ≥ 480 s
        "pre_window_position": 15,  # +20 − 5
        "window_aggr_qty": 12,  # 3 × 4 (orders priced at the ask)
        "window_aggr_fills": 3,
        "window_direction": 1,
        "aligned": 1,  # buying in the window with a long exposure
        "window_tape_share": 14 / 120,  # (12 + 2) ÷ (vol_cum[600] − vol_cum[480] = 120)
        "day_tape_share": 39 / 4920,  # (20 + 5 + 12 + 2) ÷ day volume
        "share_ratio": (14 / 120) / (39 / 4920),  # ≈ 14.7
        "mid_move_ticks": 2,  # mid 100.125 at the first aggressive fill → 100.625: 0.5 / 0.25
        "first_aggr_before_close_s": 79.9,  # 600 − 520.1
        "window_fill_qty": 14,  # 12 aggressive + 2 passive
        "exposure_ratio": 0.8,  # 12 / |15|
    })  # fmt: skip
    # aligned 3 + share ratio ≥ 3 1.5 + tape share ≥ 5% 1 + mid ≥ 1 tick 1 + ≤ 90 s 0.5 = 7
    # → −6 + 7 = 1 log2-odds → 550
    assert REGISTRY["marking_the_close"].score(m).score.tolist() == [550]


def test_marking_the_close_benign_unwinding_into_the_close(tmp_path):
    (f,), m = run("marking_the_close", close_book(window_side="SELL"), tmp_path, info=INFO)
    # selling the long of 15 off at the close: aggressive, but against the exposure
    assert f["window_direction"] == -1 and f["aligned"] == 0 and f["window_aggr_fills"] == 3
    assert f["mid_move_ticks"] == pytest.approx(-2)  # the mid rose against the sells
    # share ratio 1.5 + tape share 1 + timing 0.5 = 3 → −3 → 350
    assert REGISTRY["marking_the_close"].score(m).score.tolist() == [350]


def test_marking_the_close_without_market_facts_has_no_tape_shares(tmp_path):
    (f,), _ = run("marking_the_close", close_book(), tmp_path)  # close = the last event, 575 s
    assert math.isnan(f["window_tape_share"]) and math.isnan(f["share_ratio"])
    assert f["window_events"] == 8  # window [455 s, 575 s]
    assert f["first_aggr_before_close_s"] == pytest.approx(54.9)  # 575 − 520.1


# ------------------------------------------------------------------------- momentum ignition


def ignition_book(pre_position=True, market_orders=False):
    """Trader MI rests a 10-lot sell at 101.00 (``pre_position``), sweeps three levels with 5-lot
    buys at the ask (fills at 1.001, 1.201, 1.401 s; 10 lots showing at the first ask), and the
    resting sell fills into the move at 2.5 s."""
    b = CtxBook()
    if pre_position:
        b.at(quote(100.0, 100.25), 0.0, "MI", "SELL", "NEW", "x1", 101.0, 10, 10)
    for k in range(3):
        bid, ask = 100.0 + k * TICK, 100.25 + k * TICK
        ctx = quote(bid, ask, ctx_ask_size=10.0, ctx_mid_after=100.875, ctx_mkt_buy=20.0)
        limit = "" if market_orders else ask
        b.at(ctx, 1.0 + 0.2 * k, "MI", "BUY", "NEW", f"a{k}", limit, 5, 5)
        b.at(ctx, 1.001 + 0.2 * k, "MI", "BUY", "FILL", f"a{k}", limit, 5, 0, 5, ask)
    if pre_position:
        b.at(quote(100.75, 101.0, ctx_mkt_buy=50.0), 2.5, "MI", "SELL", "FILL", "x1", 101.0,
             10, 0, 10, 101.0)
    return b


def test_momentum_ignition_by_hand(tmp_path):
    (f,), m = run("momentum_ignition", ignition_book(), tmp_path)
    check(f, {
        "n_events": 8,
        "duration_s": 2.5,  # 0 → 2.5 s
        "burst_side": 1,
        "burst_qty": 15,  # 3 × 5 lots bought aggressively within 2 s
        "burst_fills": 3,
        "burst_ms": 400,  # 1.001 → 1.401 s
        "levels_swept": 2,  # (100.75 − 100.25) / 0.25
        "depth_ratio": 1.5,  # 15 ÷ 10 lots at the ask at the first fill
        "pre_positioned_qty": 10,  # x1 resting on the sell side before the burst
        "exit_fill_qty": 10,
        "exit_delay_ms": 1099,  # 1.401 → 2.5 s
        "mid_move_ticks": 3,  # mid 100.125 at the first fill → 100.875 after: 0.75 / 0.25
        "follow_volume": 30,  # tape buy volume 20 at the burst's last fill → 50 at the end
        "pnl_ticks": 2,  # exit 101.00 − mean burst price (100.25 + 100.5 + 100.75) / 3 = 0.5
        "net_position": 5,  # +15 − 10
        "order_to_fill": 2,  # 8 events ÷ 4 fills
    })  # fmt: skip
    # burst (3 fills, depth 1.5 ≥ 0.5) 2 + pre-positioned 2.5 + exit 2 + mid 1 + pnl 0.5 = 8
    # → −6 + 8 = 2 log2-odds → 600
    assert REGISTRY["momentum_ignition"].score(m).score.tolist() == [600]


def test_momentum_ignition_benign_aggressive_buyer_without_exit(tmp_path):
    (f,), m = run("momentum_ignition", ignition_book(pre_position=False), tmp_path)
    assert f["burst_fills"] == 3 and f["pre_positioned_qty"] == 0 and f["exit_fill_qty"] == 0
    assert math.isnan(f["pnl_ticks"]) and f["net_position"] == 15
    # burst 2 + mid move 1 only: −3 → 350
    assert REGISTRY["momentum_ignition"].score(m).score.tolist() == [350]


def test_momentum_ignition_market_order_burst_uses_execution_prices(tmp_path):
    """A sweep is usually sent as market orders (no limit): its levels and the trader's profit
    come from the execution prices (regression: both used to be NaN)."""
    (f,), m = run("momentum_ignition", ignition_book(market_orders=True), tmp_path)
    assert f["levels_swept"] == 2  # fills at 100.25 → 100.75: 0.5 / 0.25
    assert f["pnl_ticks"] == 2  # 101.00 − mean fill 100.50 = 0.5 → 2 ticks
    assert REGISTRY["momentum_ignition"].score(m).score.tolist() == [600]
