"""Hand-computed features of the new detectors on tiny fixtures, and the registry contract."""

from __future__ import annotations

import numpy as np
import pytest

from appliance import pipeline
from appliance.cluster import gap_clusters
from appliance.detectors import REGISTRY
from appliance.detectors.base import Feature
from appliance.detectors.common import RulesDetector
from connectors import get_connector
from tests.scenarios import Book


def feats(name, book, tmp_path, gap_s=5.0):
    det = REGISTRY[name]
    events = get_connector("csv").read(book.write(tmp_path / "o.csv"), "t").events
    events = pipeline.with_reference(events, None)
    clusters = gap_clusters(events, det.cluster_keys, int(gap_s * 1e9))
    m = det.compute(clusters, None)
    return [dict(zip([f.name for f in det.features], r, strict=True)) for r in m], m


def test_every_detector_has_enough_documented_features():
    for name, det in REGISTRY.items():
        assert len(det.features) >= (25 if name in ("spoofing",) else 10), name
        assert all(f.unit and f.description for f in det.features)


def test_wash_pair_by_hand(tmp_path):
    b = Book()
    b.add(0.0, "W", "BUY", "NEW", "b1", 100.0, 10, 10, account="A1")
    b.add(0.2, "W", "SELL", "NEW", "s1", 100.0, 10, 10, account="A1")
    b.add(0.2, "W", "BUY", "FILL", "b1", 100.0, 10, 0, 10, 100.0, account="A1")
    b.add(0.2, "W", "SELL", "FILL", "s1", 100.0, 10, 0, 10, 100.0, account="A1")
    (f,), m = feats("wash_trade", b, tmp_path)
    assert (f["matched_pairs"], f["matched_qty"], f["matched_share"]) == (1, 10, 1.0)
    assert f["net_position_ratio"] == 0 and f["mean_size_mismatch"] == 0
    assert f["mean_leg_gap_ms"] == 0 and f["n_accounts"] == 1


def test_quote_stuffing_rates_by_hand(tmp_path):
    b = Book()
    for k in range(50):  # 50 orders + 50 cancels within 0.1 s: 100 events
        b.add(k * 0.001, "Q", "BUY", "NEW", f"q{k}", 99.0, 1, 1)
        b.add(k * 0.001 + 0.0005, "Q", "BUY", "CANCEL", f"q{k}", 99.0, 1, 0)
    (f,), m = feats("quote_stuffing", b, tmp_path)
    assert f["peak_rate_100ms"] == 1000 and f["n_new"] == 50 and f["cancel_ratio"] == 1
    assert f["small_order_share"] == 1 and f["mean_cancel_life_ms"] == pytest.approx(0.5)
    assert REGISTRY["quote_stuffing"].score(m).score[0] >= 400


def test_layering_ladder_by_hand(tmp_path):
    b = Book()
    for lvl in range(4):
        b.add(0.0, "L", "SELL", "NEW", f"s{lvl}", 101 + lvl, 20, 20)
    for k in range(3):
        b.add(1.0 + k, "L", "SELL", "MODIFY", "s0", 102 + k, 20, 20)
    b.add(2.5, "L", "BUY", "NEW", "g", 100, 2, 2)
    b.add(2.6, "L", "BUY", "FILL", "g", 100, 2, 0, 2, 100)
    for lvl in range(4):
        b.add(5.0, "L", "SELL", "CANCEL", f"s{lvl}", 101 + lvl, 20, 0)
    (f,), _ = feats("layering", b, tmp_path)
    assert f["layer_side"] == -1 and f["max_open_orders"] == 4 and f["price_levels"] == 4
    assert f["layer_max_resting"] == 80 and f["one_sidedness"] == pytest.approx(80 / 3)
    assert f["modifies"] == 3 and f["opp_fill_qty"] == 2 and f["layer_fill_rate"] == 0
    assert f["size_cv"] == 0 and f["layer_cancel_share"] == 1


class Toy(RulesDetector):
    """A detector written for the test: one feature per cluster (its event count)."""

    name = "toy"
    model_version = "toy-1"
    description = "counts events"
    features = tuple(Feature(f"f{i}", "count", "events") for i in range(1))

    def kernel(self, batch, g, params):
        return np.diff(g.starts).astype(float)[:, None]

    def rules(self, m):
        return [(m[:, 0] >= 4, 7.0)]

    def reasons(self, v):
        return [f"{v['f0']:g} events"]


def test_a_toy_detector_is_one_class_and_one_registry_line(cfg, con, tmp_path, monkeypatch):
    from appliance.ingest import ingest_file

    monkeypatch.setitem(REGISTRY, "toy", Toy())
    ingest_file(cfg, con, Book().spoof_cycle(0, "S1", "x").write(tmp_path / "a.csv"), "csv", "t")
    s = pipeline.run(cfg, con, mode="inprocess")
    assert s.clusters["toy"] == 1 and s.alerts["toy"] == 1
    assert (cfg.data_dir / "runs" / s.run_id / "toy").exists()
