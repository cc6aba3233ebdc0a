"""The memory-lean parts of a partition's preparation give exactly what the plain ones gave:
order-id interning, the counting-sort key order, context joined for some columns only, the
spooled partition read a piece at a time, and arrays dropped once no detector reads them."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from appliance import context, pipeline, spool
from appliance.detectors import REGISTRY
from appliance.detectors.common import (
    RELEASABLE,
    Batch,
    _stable_by_code,
    composite,
    key_columns,
    order_id_codes,
)
from tests.appliance.test_spool import MARKET, _market, day_files  # noqa: F401 (fixture)


def _arrow(col) -> tuple[list[int], int]:
    col = pa.chunked_array([col]) if isinstance(col, pa.Array) else col
    enc = pc.dictionary_encode(pc.fill_null(col, "") if col.null_count else col).combine_chunks()
    return enc.indices.to_pylist(), len(enc.dictionary)


@pytest.mark.parametrize("col", [
    pa.chunked_array([pa.array(["a", "b", "a", ""]), pa.array(["x", "b", "c", "a"]).slice(1)]),
    pa.chunked_array([pa.array(["o1", "o2"]), pa.array([], pa.string()), pa.array(["o2"])]),
    pa.chunked_array([], pa.string()),
    pa.chunked_array([pa.array(["x", None, "x", ""])]),  # nulls are '' (Arrow's path)
    pa.chunked_array([pa.array(["p", "q", "p"], pa.large_string())]),
    pa.array([f"id{i % 977}" for i in range(5000)]),  # many probes of one table
])  # fmt: skip
def test_order_ids_are_interned_as_arrow_encodes_them(col):
    codes, count = order_id_codes(col)
    assert codes.dtype == np.int32
    assert (codes.tolist(), count) == _arrow(col)


def test_counting_sort_key_order_is_the_stable_argsort():
    rng = np.random.default_rng(7)
    n = 10_000
    ts = rng.integers(0, 500, n)
    tord = np.argsort(ts, kind="stable")
    k1, k2 = rng.integers(0, 30, n).astype(np.int32), rng.integers(0, 7, n).astype(np.int32)
    code = k1.astype(np.int64) * 8 + k2
    want = tord[np.argsort(code[tord], kind="stable")]
    assert np.array_equal(_stable_by_code(tord, k1, k2, 8, 31 * 8), want)
    want1 = tord[np.argsort(k1[tord], kind="stable")]
    assert np.array_equal(_stable_by_code(tord, k1, k1, 1, 31), want1)


def _day_batch(day_files, tmp_path):  # noqa: F811 (fixture)
    """The scenario day spooled by two maps (codes remapped) with its market tapes."""
    groups = pipeline.partition_groups(list(REGISTRY))
    sd = spool.spool_day(day_files[0], _market(tmp_path), None, MARKET, groups, 2,
                         tmp_path / "s", batch_rows=5, maps=2)
    part, names, _ = sd.tasks[0]
    return sd, part, names


def test_a_lazily_read_partition_gives_the_batch_of_the_whole_table(day_files, tmp_path):  # noqa: F811
    sd, part, names = _day_batch(day_files, tmp_path)
    shared = sd.shared
    lazy = pipeline.LazyColumns(lambda c: spool.read_column(part, shared.remaps, c),
                                spool.SPOOLED_SCHEMA, spool.partition_rows(part))
    table = spool.read_partition(part, shared.remaps)
    assert lazy.num_rows == table.num_rows
    a = Batch.build(lazy, shared.market, shared.names)
    b = Batch.build(table, shared.market, shared.names)
    a.ensure_codes(("trader", "account", "owner", "source"))
    assert a.line is None and b.line is not None  # read on first use
    assert all(np.array_equal(x, y) for x, y in zip(a.provenance(), b.provenance(),
                                                     strict=True))
    for name in ("ts", "tord", "order", "event", "exec_price", *RELEASABLE):
        x, y = getattr(a, name), getattr(b, name)
        assert np.array_equal(x, y, equal_nan=x.dtype.kind == "f"), name
    assert a.codes.keys() == b.codes.keys() and a.names == b.names
    assert all(np.array_equal(a.codes[c], b.codes[c]) for c in a.codes)
    assert all(np.array_equal(a.ctx[c], b.ctx[c], equal_nan=True) for c in b.ctx)


def test_context_for_some_columns_is_those_of_the_whole_join(day_files, tmp_path):  # noqa: F811
    sd, part, _ = _day_batch(day_files, tmp_path)
    table = spool.read_partition(part, sd.shared.remaps)
    whole = Batch.build(table, sd.shared.market, sd.shared.names)
    some = ("ctx_mkt_vol", "ctx_ref_mid", "ctx_mid_after")
    cols = context.attach_arrays(whole.ts, whole.tord, whole.codes["symbol"],
                                 whole.names["symbol"], sd.shared.market, some)
    assert set(cols) == set(some)
    assert all(np.array_equal(cols[c], whole.ctx[c], equal_nan=True) for c in some)


def test_released_arrays_are_gone_and_keyed_orders_survive(day_files, tmp_path):  # noqa: F811
    sd, part, _ = _day_batch(day_files, tmp_path)
    batch = Batch.build(spool.read_partition(part, sd.shared.remaps), sd.shared.market,
                        sd.shared.names)
    keys = ("trader", "instrument")
    before = batch.key_order(keys).copy()
    batch.release({"fill"}, {"ctx_tick"})
    assert batch.tord is None and batch.qty is None and batch.fill is not None
    assert list(batch.ctx) == ["ctx_tick"]
    assert np.array_equal(batch.key_order(keys), before)  # cached
    other = ("account", "instrument")  # recomputed from ``ts`` without ``tord``
    code = composite(batch, other)
    tord = np.argsort(batch.ts, kind="stable")
    assert np.array_equal(batch.key_order(other), tord[np.argsort(code[tord], kind="stable")])
    assert key_columns(batch, ("trader",))[2] == 1
