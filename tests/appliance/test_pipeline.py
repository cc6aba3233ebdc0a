import math

import pyarrow.parquet as pq
import pytest

from appliance import config, pipeline, store
from appliance.ingest import ingest_file
from appliance.service import Service
from tests.scenarios import Book, ts


def day_book() -> Book:
    book = Book()
    for trader in ("S1", "S2"):
        for k in range(3):
            book.spoof_cycle(k * 2.0 + (5 if trader == "S2" else 0), trader, f"{trader}{k}",
                             symbol="ESZ6" if trader == "S1" else "NQZ6")
    for mm in ("MM1", "MM2", "MM3"):
        book.market_maker(1.0, mm, 10)
    return book


def market_csv(path, steps: int = 80):
    """Market data for ``day_book``'s symbols: a quote a quarter second on both, trades now
    and then (md-csv)."""
    lines = ["ts,symbol,bid,bid_size,ask,ask_size,last,last_size"]
    for k in range(steps):
        for sym, mid in (("ESZ6", 100.0), ("NQZ6", 200.0)):
            last = f"{mid + 0.25},{1 + k % 3}" if k % 5 == 0 else ","
            lines.append(f"{ts(k / 4)},{sym},{mid - (k % 4) * 0.25},{5 + k},{mid + 0.25},"
                         f"{7 + k},{last}")
    path.write_text("\n".join(lines) + "\n")
    return path


def fresh(tmp_path, name, extra=""):
    d = tmp_path / name
    d.mkdir()
    (d / "surveil.toml").write_text(extra or config.example_text())
    cfg = config.load(d / "surveil.toml")
    con = store.connect(cfg.store_path, create=True)
    return cfg, con


def clusters_of(cfg, run_id, detector="spoofing"):
    """Cluster rows with NaN as None, so that equal results compare equal."""
    t = pq.read_table(cfg.data_dir / "runs" / run_id / detector)
    return [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
            for r in t.to_pylist()]


def test_results_do_not_depend_on_partitions_or_ray(tmp_path):
    src = day_book().write(tmp_path / "orders.csv")
    md = market_csv(tmp_path / "md.csv")
    outputs = []
    for name, mode, parts in (("one", "inprocess", 1), ("three", "inprocess", 3),
                              ("ray", "ray", 2)):
        cfg, con = fresh(tmp_path, name, f"\n[pipeline]\npartitions = {parts}\n"
                         '[detectors.market]\nreference_symbol = "ESZ6"\n')
        ingest_file(cfg, con, src, "csv", "test")
        ingest_file(cfg, con, md, "md-csv", "test")  # tapes built by Ray tasks in ray mode
        summary = pipeline.run(cfg, con, mode=mode)
        assert summary.mode == mode
        # groups whose rows land in the same partitions share one task per partition
        # (``spool.same_placement``): in one partition, one task prepares the rows once
        assert summary.partitions == 1 if parts == 1 else summary.partitions >= 1
        outputs.append((clusters_of(cfg, summary.run_id),
                        [{k: v for k, v in a.items() if k not in ("id", "run_id")}
                         for a in Service(cfg).alerts()]))
    assert outputs[0] == outputs[1] == outputs[2]
    alerts = outputs[0][1]
    assert {a["trader"] for a in alerts} == {"S1", "S2"}
    assert len(outputs[0][0]) == 5  # S1, S2 and three market makers, one burst each


def test_run_scores_only_new_work_and_a_rescored_date_supersedes(tmp_path):
    cfg, con = fresh(tmp_path, "d")
    first = Book()
    for k in range(3):
        first.spoof_cycle(k * 2.0, "S1", f"a{k}")
    ingest_file(cfg, con, first.write(tmp_path / "a.csv"), "csv", "t")
    s1 = pipeline.run(cfg, con, mode="inprocess")
    assert s1.alerts["spoofing"] == 1
    assert pipeline.run(cfg, con, mode="inprocess").run_id is None  # nothing new

    second = Book()
    for k in range(3):
        second.spoof_cycle(100 + k * 2.0, "S9", f"b{k}")
    ingest_file(cfg, con, second.write(tmp_path / "b.csv"), "csv", "t")
    s2 = pipeline.run(cfg, con, mode="inprocess")
    assert s2.input_files == 2  # the date is rescored whole
    current = Service(cfg).alerts()
    assert {a["trader"] for a in current} == {"S1", "S9"}
    assert {a["run_id"] for a in current} == {s2.run_id}
    total = con.execute("select count(*) from alerts").fetchone()[0]
    assert total == 3  # the first run's alert is still there, for audit


def test_run_records_versions_and_inputs(tmp_path):
    cfg, con = fresh(tmp_path, "v")
    path = Book().spoof_cycle(0, "S1", "x").write(tmp_path / "a.csv")
    report = ingest_file(cfg, con, path, "csv", "t")
    s = pipeline.run(cfg, con, mode="inprocess")
    run = next(store.rows(con, "select * from runs"))
    assert run["code_version"].startswith("0.1.0+") and run["config_hash"] == cfg.digest
    assert run["etl_version"].startswith("etl-")
    inputs = list(store.rows(con, "select * from run_inputs where run_id = ?", (s.run_id,)))
    assert [(i["file_id"], len(i["sha256"])) for i in inputs] == [(report.file_id, 64)]


@pytest.mark.parametrize("gap,expected", [(0.1, 3), (5.0, 1)])
def test_gap_from_config_changes_clusters(tmp_path, gap, expected):
    cfg, con = fresh(tmp_path, f"g{gap}", f"\n[cluster]\ngap_seconds = {gap}\n")
    ingest_file(cfg, con, Book().spoof_cycle(0, "S1", "x").write(tmp_path / "a.csv"), "csv", "t")
    assert pipeline.run(cfg, con, mode="inprocess").clusters["spoofing"] == expected


def _listening() -> set[tuple[str, int]]:
    """(local address hex, port) of every listening TCP socket, from /proc."""
    found = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(name) as fh:
            for line in fh.readlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                if state == "0A":  # LISTEN
                    addr, port = local.split(":")
                    found.add((addr, int(port, 16)))
    return found


def test_private_ray_listens_on_loopback_only(cfg):
    loopback = {"0100007F", "00000000000000000000000001000000",
                "0000000000000000FFFF00000100007F"}  # 127.0.0.1, ::1, ::ffff:127.0.0.1
    before = _listening()
    with pipeline.ray_session(cfg) as ray:
        assert ray.nodes()[0]["NodeManagerAddress"] == "127.0.0.1"
        opened = _listening() - before
    assert opened, "Ray opened no socket at all?"
    assert {addr for addr, _ in opened} <= loopback, opened
    assert (cfg.data_dir / "ray").exists() or pipeline.ray_temp_dir(cfg.data_dir).exists()


def test_multi_node_ray_cluster_gives_the_same_results(tmp_path, monkeypatch):
    """Two Ray nodes on this machine (ray.cluster_utils.Cluster), joined via [ray] address."""
    pipeline._loopback_only()
    from ray.cluster_utils import Cluster

    src = day_book().write(tmp_path / "orders.csv")
    md = market_csv(tmp_path / "md.csv")
    cfg, con = fresh(tmp_path, "local", "\n[pipeline]\npartitions = 1\n")
    ingest_file(cfg, con, src, "csv", "test")
    ingest_file(cfg, con, md, "md-csv", "test")
    local = clusters_of(cfg, pipeline.run(cfg, con, mode="inprocess").run_id)
    tmp = pipeline.ray_temp_dir(tmp_path)
    (tmp / "ray").mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("RAY_TMPDIR", str(tmp))  # Ray's address file goes there, not /tmp/ray
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "node_ip_address": "127.0.0.1", "include_dashboard": False,
        "temp_dir": str(tmp)})
    try:
        cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1")
        cluster.wait_for_nodes()
        cfg2, con2 = fresh(tmp_path, "multi", f'\n[ray]\naddress = "{cluster.address}"\n'
                           "[pipeline]\npartitions = 4\n")
        ingest_file(cfg2, con2, src, "csv", "test")
        ingest_file(cfg2, con2, md, "md-csv", "test")  # tapes built in the driver and put
        assert len(cluster.list_all_nodes()) == 2
        s = pipeline.run(cfg2, con2, mode="ray")
        assert clusters_of(cfg2, s.run_id) == local
    finally:
        import ray

        ray.shutdown()
        cluster.shutdown()
