"""Truth episodes of a small simulator day land inside clusters of their pattern's detector."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from appliance import config, pipeline, store
from appliance.ingest import ingest_file


def score_sim_day(out: Path, data: Path, mode: str = "inprocess"):
    """Ingest a simulator day (orders, market) and run every detector with its accounts."""
    data.mkdir(parents=True, exist_ok=True)
    (data / "surveil.toml").write_text(config.example_text())
    cfg = config.load(data / "surveil.toml")
    con = store.connect(cfg.store_path, create=True)
    ingest_file(cfg, con, out / "orders.csv", "csv", "t")
    ingest_file(cfg, con, out / "market.csv", "md-csv", "t")
    accounts = pcsv.read_csv(out / "reference" / "accounts.csv")
    summary = pipeline.run(cfg, con, mode=mode, accounts=accounts)
    return cfg, summary, accounts


def coverage(cfg, run_id: str, truth_path: Path, accounts: pa.Table) -> dict[str, dict]:
    """Per pattern: positive episodes, how many lie inside one cluster of the pattern's detector
    (same symbol, a cluster trader or owner of the episode, span within the cluster's), and how
    many clusters contain two or more positive episodes."""
    truth = pcsv.read_csv(truth_path)
    start = truth.column("start_ts").cast(pa.int64()).to_numpy()
    end = truth.column("end_ts").cast(pa.int64()).to_numpy()
    rows = truth.drop_columns(["start_ts", "end_ts", "order_ids"]).to_pylist()
    owner = dict(zip(accounts.column("account").to_pylist(), accounts.column("owner").to_pylist(),
                     strict=True))
    out: dict[str, dict] = {}
    by_pattern: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        if r["label"] == "positive":
            by_pattern[r["pattern"]].append(i)
    for pattern, eps in by_pattern.items():
        t = pq.read_table(cfg.data_dir / "runs" / run_id / pattern)
        key = t.column("key").to_pylist()
        trader = t.column("trader").to_pylist()
        sym = t.column("symbol").to_pylist()
        c0, c1 = t.column("start_ns").to_numpy(), t.column("end_ns").to_numpy()
        hits = np.zeros(t.num_rows, int)
        covered = 0
        for i in eps:
            r = rows[i]
            owners = {owner.get(a, a) for a in str(r["accounts"]).split(";")}
            who = (np.array([r["trader"] in (tr or "").split(";") or k.split("\x1f")[0] in owners
                             for tr, k in zip(trader, key, strict=True)], bool)
                   if t.num_rows else np.zeros(0, bool))  # fmt: skip
            inside = who & (np.array(sym) == r["symbol"]) & (c0 <= start[i]) & (c1 >= end[i])
            if inside.any():
                covered += 1
                hits[np.flatnonzero(inside)] += 1
        out[pattern] = {"episodes": len(eps), "covered": covered,
                        "multi_episode_clusters": int((hits >= 2).sum()), "clusters": t.num_rows}
    return out


def test_simulator_episodes_land_in_clusters_of_their_detector(tmp_path):
    from appliance.sim import SimConfig, simulate

    out = tmp_path / "sim"
    simulate(SimConfig(seed=3, minutes=10, instruments=2, traders=20), out)
    cfg, summary, accounts = score_sim_day(out, tmp_path / "data")
    cov = coverage(cfg, summary.run_id, out / "truth.csv", accounts)
    assert set(cov) >= {"spoofing", "layering", "wash_trade", "quote_stuffing",
                        "momentum_ignition", "marking_the_close", "front_running"}
    for pattern, c in cov.items():
        assert c["covered"] >= 0.99 * c["episodes"], (pattern, c)
        assert c["multi_episode_clusters"] <= max(1, c["episodes"] // 20), (pattern, c)
