"""The day → partitions shuffle: any number of map tasks gives the same partitions and scores."""

import math

import numpy as np
import pyarrow.parquet as pq
import pytest

from appliance import context, pipeline, spool
from appliance.detectors import REGISTRY
from connectors import get_connector
from tests.appliance.test_pipeline import day_book, market_csv

MARKET = {"after_seconds": 1.0, "reference_symbol": ""}


@pytest.fixture(scope="module")
def day_files(tmp_path_factory):
    """The scenario day as two Parquet files of small row groups (many map units)."""
    d = tmp_path_factory.mktemp("day")
    events = get_connector("csv").read(day_book().write(d / "orders.csv"), "src1").events
    half = events.num_rows // 2
    paths = [d / "a.parquet", d / "b.parquet"]
    pq.write_table(events.slice(0, half), paths[0], row_group_size=7)
    pq.write_table(events.slice(half), paths[1], row_group_size=11)
    return paths, events.num_rows


def _plain(tables):
    return [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
            for t in tables for r in t.to_pylist()]


def _spooled(paths, tmp, maps, n=3):
    groups = pipeline.partition_groups(list(REGISTRY))
    return spool.spool_day(paths, None, None, MARKET, groups, n, tmp, batch_rows=5, maps=maps)


def _scores(sd):
    names = list(REGISTRY)
    params = {d: {"gap_seconds": 5.0} for d in names}
    floors = {d: 0 for d in names}
    per_task = [pipeline.score_partition(part, ns, sd.shared, params, floors)
                for part, ns, _ in sd.tasks]
    return {d: _plain(sorted((r[d] for r in per_task if d in r), key=lambda t: t.num_rows))
            for d in names}


def test_map_ranges_cover_every_row_group_once_in_order(day_files):
    paths, _ = day_files
    units = [(str(p), g) for p in paths for g in range(pq.ParquetFile(p).num_row_groups)]
    for maps in (1, 2, 3, 5, 100):
        ranges = spool.map_ranges(paths, maps)
        assert 1 <= len(ranges) <= maps
        assert [u for r in ranges for u in r] == units


@pytest.mark.parametrize("maps", [2, 4, 9])
def test_any_number_of_maps_gives_the_same_partitions_and_scores(day_files, tmp_path, maps):
    paths, rows = day_files
    one = _spooled(paths, tmp_path / "one", 1)
    many = _spooled(paths, tmp_path / "many", maps)
    assert len(spool.map_ranges(paths, maps)) > 1
    assert one.events == many.events == rows
    assert one.shared.names == many.shared.names
    assert [(ns, r) for _, ns, r in one.tasks] == [(ns, r) for _, ns, r in many.tasks]
    for (a, _, _), (b, _, _) in zip(one.tasks, many.tasks, strict=True):
        ta = spool.read_partition(a, one.shared.remaps)
        tb = spool.read_partition(b, many.shared.remaps)
        assert ta.equals(tb)
    assert _scores(one) == _scores(many)


def test_every_row_lands_in_exactly_one_partition_per_group(day_files, tmp_path):
    paths, rows = day_files
    sd = _spooled(paths, tmp_path, 4)
    per_group: dict[str, list] = {}
    for part, ns, r in sd.tasks:
        t = spool.read_partition(part, sd.shared.remaps)
        assert t.num_rows == r
        per_group.setdefault(ns[0], []).append(t)
    for tables in per_group.values():
        lines = np.concatenate([t.column("line").to_numpy() for t in tables])
        assert sorted(lines.tolist()) == list(range(2, rows + 2))


def test_an_empty_day_gives_every_detector_one_empty_task(tmp_path, day_files):
    paths, _ = day_files
    empty = tmp_path / "empty.parquet"
    pq.write_table(pq.read_table(paths[0]).slice(0, 0), empty)
    sd = _spooled([empty], tmp_path / "s", 4)
    assert sd.events == 0
    assert sorted(d for _, names, _ in sd.tasks for d in names) == sorted(REGISTRY)
    assert all(spool.read_partition(p, sd.shared.remaps).num_rows == 0 for p, _, _ in sd.tasks)


def test_groups_placed_alike_are_merged_and_a_split_group_stays_apart():
    keys = [("trader", "instrument"), ("owner", "instrument"), ("instrument",)]
    groups = {k: [f"d{i}"] for i, k in enumerate(keys)}
    light = spool.plan_partitions({"ES": 50, "NQ": 40, "CL": 30}, 2, keys)
    merged, plans = spool.same_placement(groups, light)
    assert merged == {keys[0]: ["d0", "d1", "d2"]} and plans == light[:1]
    heavy = spool.plan_partitions({"ES": 900, "NQ": 60, "CL": 30}, 4, keys)  # ES split in two
    merged, plans = spool.same_placement(groups, heavy)
    assert merged == {keys[0]: ["d0"], keys[1]: ["d1"], keys[2]: ["d2"]} and plans == heavy
    one = [spool.GroupPlan(k, 1, {}) for k in keys]
    assert spool.same_placement(groups, one)[0] == {keys[0]: ["d0", "d1", "d2"]}


def test_plan_packs_instruments_and_splits_only_heavy_ones_in_splittable_groups():
    counts = {"ES": 900, "NQ": 60, "CL": 30, "GC": 10}
    by_trader, by_inst = spool.plan_partitions(counts, 4, [("trader", "instrument"),
                                                           ("instrument",)])
    assert len(by_trader.slots["ES"]) == 4 and len(set(by_trader.slots["ES"])) == 4
    assert all(len(by_trader.slots[i]) == 1 for i in ("NQ", "CL", "GC"))
    assert all(len(v) == 1 for v in by_inst.slots.values())  # an instrument never splits
    assert spool.plan_partitions(counts, 4, [("trader", "instrument")]) == [by_trader]
    # a trader's rows of one instrument always go to one partition
    slot = by_trader.slot({"trader": "T1", "instrument": "ES"})
    assert all(by_trader.slot({"trader": "T1", "instrument": "ES"}) == slot for _ in range(3))
    assert {by_trader.slot({"trader": f"T{k}", "instrument": "ES"}) for k in range(40)} == set(
        by_trader.slots["ES"])


def _market(tmp_path, steps=40):
    return get_connector("md-csv").read(market_csv(tmp_path / "md.csv", steps), "m").events


def _tape_arrays(tape):
    return {k: v for k, v in vars(tape).items() if isinstance(v, np.ndarray)}


@pytest.mark.parametrize("maps", [1, 3])
def test_market_maps_give_the_tapes_and_facts_of_the_whole_market(day_files, tmp_path, maps):
    """The market split by symbol in map tasks (from Parquet row groups, batch by batch) gives
    each symbol the tape, and the day the facts, that the whole market table gives."""
    paths, _ = day_files
    groups = pipeline.partition_groups(list(REGISTRY))
    market = _market(tmp_path, 80)
    market_paths = [tmp_path / "m1.parquet", tmp_path / "m2.parquet"]
    pq.write_table(market.slice(0, 70), market_paths[0], row_group_size=9)
    pq.write_table(market.slice(70), market_paths[1], row_group_size=13)
    whole = context.tapes(market)
    params = dict(MARKET, reference_symbol="NQZ6")
    sd = spool.spool_day(paths, market_paths, None, params, groups, 3, tmp_path / "s",
                         batch_rows=5, maps=maps)
    assert len(spool.market_ranges(market_paths, maps)) == maps
    assert list(sd.tapes) == list(sd.shared.market.tapes) and set(sd.tapes) == set(whole)
    for name, tape in whole.items():
        mine = _tape_arrays(sd.tapes[name])
        assert mine.keys() == _tape_arrays(tape).keys()
        for k, v in _tape_arrays(tape).items():
            np.testing.assert_array_equal(mine[k], v)
    # the day facts from the tapes' summaries are those from the whole day's tapes
    facts = context.DayFacts()
    for out in [spool.spool_map(src, None, spool.plan_partitions({}, 1, []), str(tmp_path / "f"),
                                m) for m, src in enumerate(spool.map_ranges(paths, 1))]:
        facts.merge(out.facts)
    expected = facts.instrument_info(whole)
    assert sd.shared.info.keys() == expected.keys()
    for name, info in expected.items():
        got = sd.shared.info[name]
        assert (got.tick, got.mean_gap_ns, got.first_ns, got.close_ns, got.day_volume) == (
            info.tick, info.mean_gap_ns, info.first_ns, info.close_ns, info.day_volume)
        np.testing.assert_array_equal(got.vol_cum, info.vol_cum)
    tick = facts.day_market(whole, after_ns=10**9, reference_symbol="NQZ6").tick
    assert sd.shared.market.tick == tick


def test_a_runner_may_keep_the_tapes_elsewhere(day_files, tmp_path):
    """With ``keep`` (the cluster path: ``ray.put``) the day holds handles, not tapes."""
    paths, _ = day_files
    groups = pipeline.partition_groups(list(REGISTRY))
    kept = []

    def keep(tape):
        kept.append(tape)
        return len(kept) - 1

    sd = spool.spool_day(paths, _market(tmp_path), None, MARKET, groups, 3, tmp_path / "s",
                         runner=spool.local_runner(keep))
    assert sd.shared.market.tapes == {}
    assert sorted(sd.tapes.values()) == [0, 1] and all(isinstance(t, context.Tape)
                                                       for t in kept)


def test_a_task_needs_only_its_symbols_tapes(day_files, tmp_path):
    paths, _ = day_files
    groups = pipeline.partition_groups(list(REGISTRY))
    market = _market(tmp_path)
    sd = spool.spool_day(paths, market, None, MARKET, groups, 4, tmp_path / "s", maps=2)
    assert set(sd.tapes) == {"ESZ6", "NQZ6"}
    instrument_only = [part for part, ns, _ in sd.tasks if "front_running" in ns]
    assert all(len(p.symbols) == 1 for p in instrument_only)  # one instrument per task here
    names = list(REGISTRY)
    params = {d: {"gap_seconds": 5.0} for d in names}
    floors = dict.fromkeys(names, 0)
    blind = 0
    for part, ns, _ in sd.tasks:
        alone = spool.with_tapes(sd.shared, part.symbols,
                                 [sd.tapes[s] for s in part.symbols])
        full = _plain(pipeline.score_partition(part, ns, sd.shared, params, floors).values())
        assert _plain(pipeline.score_partition(part, ns, alone, params, floors).values()) == full
        none = spool.with_tapes(sd.shared, (), ())
        blind += _plain(pipeline.score_partition(part, ns, none, params, floors).values()) != full
    assert blind  # the tapes matter, and a task's own symbols' tapes are enough
