import math

import pytest

from appliance.cluster import gap_clusters
from appliance.detectors import REGISTRY, KernelInputs
from appliance.detectors.spoofing import ALL_FEATURES as FEATURES
from connectors import get_connector
from tests.scenarios import Book

DET = REGISTRY["spoofing"]


def features(book: Book, tmp_path, gap_s=5.0):
    path = book.write(tmp_path / "o.csv")
    events = get_connector("csv").read(path, "t").events
    clusters = gap_clusters(events, DET.cluster_keys, int(gap_s * 1e9))
    matrix = DET.compute(clusters, KernelInputs.build(clusters, DET.cluster_keys))
    names = [f.name for f in FEATURES]
    return [dict(zip(names, row, strict=True)) for row in matrix], matrix


def test_one_spoof_cycle_features_by_hand(tmp_path):
    (f,), matrix = features(Book().spoof_cycle(0.0, "S1", "c0"), tmp_path)
    expected = {
        "n_events": 4, "n_orders": 2, "duration_s": 0.45, "cancel_ratio": 0.5, "bait_side": -1,
        "bait_new_qty": 40, "genuine_new_qty": 2, "bait_max_resting": 40, "size_ratio": 20,
        "bait_fill_rate": 0, "genuine_fill_rate": 1, "opp_fill_qty": 2, "opp_fill_count": 1,
        "fill_triggered_cancels": 1, "min_fill_to_cancel_ms": 150, "bait_mean_lifetime_ms": 400,
        "bait_cancel_under_1s": 1, "imbalance_at_fill": 40 / 42, "side_switches": 1,
        "msgs_per_s": 4 / 0.45, "bait_cancel_share": 1, "fill_triggered_share": 1,
    }  # fmt: skip
    for name, value in expected.items():
        assert f[name] == pytest.approx(value, rel=1e-9), name
    # size, opposite fill, fill-timed cancel, no fill of bait, short life: -6+2.5+2+2+1+0.5
    assert DET.score(matrix).score.tolist() == [600]


def test_repetition_raises_the_score_and_every_fired_rule_is_explained(tmp_path):
    book = Book()
    for k in range(4):
        book.spoof_cycle(k * 2.0, "S1", f"c{k}")
    (f,), matrix = features(book, tmp_path)
    assert f["fill_triggered_cancels"] == 4
    assert DET.score(matrix).score.tolist() == [700]
    reasons = DET.explain(matrix[0])
    assert len(reasons) == 6 and any("repeated 4 times (100% of bait" in r for r in reasons)


def test_balanced_ladder_is_large_but_not_dominant(tmp_path):
    book = Book()
    for k in range(6):  # a ladder on both sides, small fills, cancels after each fill
        t = k * 1.0
        for lvl in range(4):
            book.add(t, "MM", "BUY", "NEW", f"b{k}{lvl}", 99 - lvl, 10, 10)
            book.add(t, "MM", "SELL", "NEW", f"s{k}{lvl}", 101 + lvl, 10, 10)
        book.add(t + 0.2, "MM", "BUY", "FILL", f"b{k}0", 99, 10, 8, 2, 99)
        for lvl in range(4):
            book.add(t + 0.3, "MM", "SELL", "CANCEL", f"s{k}{lvl}", 101 + lvl, 10, 0)
            book.add(t + 0.3, "MM", "BUY", "CANCEL", f"b{k}{lvl}", 99 - lvl, 10, 0)
    (f,), matrix = features(book, tmp_path)
    assert f["size_ratio"] >= 4 and f["fill_triggered_cancels"] >= 3
    assert f["imbalance_at_fill"] == pytest.approx(0.5, abs=0.05)
    assert DET.score(matrix).score[0] < 500


def test_two_sided_market_maker_is_not_an_alert(tmp_path):
    (f,), matrix = features(Book().market_maker(0.0, "MM", 20), tmp_path)
    assert f["cancel_ratio"] > 0.9  # cancels as much as a spoofer ...
    assert f["size_ratio"] == pytest.approx(1.0)  # ... but quotes both sides alike
    assert f["imbalance_at_fill"] == pytest.approx(0.5)
    assert DET.score(matrix).score[0] < 500


def test_bait_that_fills_is_not_called_a_no_fill_bait(tmp_path):
    book = Book().spoof_cycle(0.0, "S1", "c0")
    book.add(0.2, "S1", "SELL", "FILL", "c0b", 100.5, 40, 20, 20, 100.5)
    (f,), _ = features(book, tmp_path)
    assert f["bait_fill_rate"] == pytest.approx(0.5)


def test_gap_splits_clusters_and_state_survives_across_them(tmp_path):
    book = Book().spoof_cycle(0.0, "S1", "c0")
    book.add(20.0, "S1", "BUY", "NEW", "late", 100.0, 1, 1)
    book.add(20.5, "S1", "BUY", "CANCEL", "late", 100.0, 1, 0)
    rows, _ = features(book, tmp_path)
    assert [r["n_events"] for r in rows] == [4, 2]
    assert rows[1]["bait_mean_lifetime_ms"] == pytest.approx(500)
    assert math.isnan(rows[1]["min_fill_to_cancel_ms"])
