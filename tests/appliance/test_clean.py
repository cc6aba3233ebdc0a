"""Cleaning steps: each step's behaviour, and the vectorised steps against the per-row
implementations they replaced (kept here, verbatim, as the reference): same kept rows, same
rejected rows, reasons, fields, steps and order."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance import clean
from appliance.clean import (
    _DUP_KEY,
    STEPS,
    CleanContext,
    Rejection,
    _first_of_content,
    _first_of_equal,
    _key_columns,
    _mask,
    _norm,
    _utc_days,
    apply_steps,
    check_market_values,
    check_order_values,
    drop_resent_duplicates,
    etl_version,
    resolve_instrument,
    resolve_trader_alias,
)
from appliance.schema import ORDER_EVENTS
from connectors import get_connector
from tests.conftest import DATA

DAY = 86_400 * 10**9
T0 = int(np.datetime64("2026-11-30T12:00:00", "ns").astype(np.int64))


# --- the per-row implementations (etl steps as of c71baf7), the reference ----------------------


def old_resolve_trader_alias(table, ctx):
    aliases = ctx.traders
    if aliases is None or aliases.num_rows == 0:
        return table, []
    idx = pc.index_in(pc.utf8_trim_whitespace(table.column("trader")),
                      value_set=aliases.column("alias"))
    mapped = pc.take(aliases.column("trader").combine_chunks(), idx)
    trader = pc.coalesce(mapped, table.column("trader"))
    i = table.schema.get_field_index("trader")
    return table.set_column(i, table.schema.field(i), trader), []


def old_resolve_instrument(table, ctx):
    symbol = _norm(table.column("symbol"))
    instrument = symbol
    sym = ctx.symbology
    if sym is not None and sym.num_rows and table.num_rows:
        day = pc.strftime(table.column("ts"), format="%Y-%m-%d")
        rows = pa.table({"__row": pa.array(np.arange(table.num_rows)), "symbol": symbol,
                         "day": day})
        maps = pa.table({"symbol": _norm(sym.column("symbol")),
                         "instrument": sym.column("instrument"),
                         "valid_from": sym.column("valid_from"),
                         "valid_to": pc.fill_null(sym.column("valid_to"), "9999-12-31")})
        joined = rows.join(maps, "symbol", join_type="inner", use_threads=False)
        live = pc.and_(pc.greater_equal(joined.column("day"), joined.column("valid_from")),
                       pc.less(joined.column("day"), joined.column("valid_to")))
        joined = joined.filter(live).sort_by([("__row", "ascending"), ("valid_from", "descending")])
        out = np.full(table.num_rows, None, dtype=object)
        rows_hit = joined.column("__row").to_numpy()
        first = np.ones(len(rows_hit), bool)
        first[1:] = rows_hit[1:] != rows_hit[:-1]
        out[rows_hit[first]] = np.asarray(joined.column("instrument").to_pylist(),
                                          dtype=object)[first]
        instrument = pc.coalesce(pa.array(out, pa.string()), symbol)
    i = table.schema.get_field_index("instrument")
    return table.set_column(i, table.schema.field(i), instrument), []


def old_drop_resent_duplicates(table, ctx):
    if table.num_rows == 0:
        return table, []
    ts = table.column("ts").cast(pa.int64()).to_numpy()
    order = np.argsort(ts, kind="stable")
    same = np.zeros(ts.size, bool)
    tied = ts[order][1:] == ts[order][:-1]
    same[order[1:][tied]] = True
    same[order[:-1][tied]] = True
    candidates = np.flatnonzero(same)
    if candidates.size == 0:
        return table, []
    sub = table.take(pa.array(candidates)).select(list(_DUP_KEY))
    sub = sub.append_column("__row", pa.array(candidates))
    first = sub.group_by(list(_DUP_KEY), use_threads=False).aggregate([("__row", "min")])
    keep = np.ones(table.num_rows, bool)
    keep[candidates] = False
    keep[first.column("__row_min").to_numpy()] = True
    return table, [Rejection(~keep, "duplicate", None)]


OLD = {"resolve_trader_alias": old_resolve_trader_alias,
       "resolve_instrument": old_resolve_instrument,
       "drop_resent_duplicates": old_drop_resent_duplicates}


def old_apply_steps(table, kind, ctx=None):
    """The runner as it was: filter after every step that rejects."""
    ctx = ctx or CleanContext()
    alive = np.arange(table.num_rows)
    rejected = []
    for step in STEPS[kind]:
        table, rejections = OLD.get(step.name, step.fn)(table, ctx)
        dead = np.zeros(table.num_rows, bool)
        for r in rejections:
            new = r.mask & ~dead
            if new.any():
                rejected.append((alive[new], r.reason, r.field, step.name))
                dead |= new
        if dead.any():
            table = table.filter(pa.array(~dead))
            alive = alive[~dead]
    return table, rejected


def assert_same(got, want):
    (kept, rejected), (kept0, rejected0) = got, want
    assert kept.schema == kept0.schema
    assert kept.equals(kept0)
    assert [r[1:] for r in rejected] == [r[1:] for r in rejected0]
    for r, r0 in zip(rejected, rejected0, strict=True):
        np.testing.assert_array_equal(r[0], r0[0])


# --- building canonical order tables ---------------------------------------------------------


def orders(**cols) -> pa.Table:
    """A canonical order table of ``len(cols['ts'])`` rows; unspecified columns get defaults."""
    n = len(cols["ts"])
    base = {"ts": cols["ts"], "firm": ["F"] * n, "trader": ["T1"] * n, "account": ["A"] * n,
            "symbol": ["ESZ6"] * n, "instrument": ["ESZ6"] * n, "side": ["BUY"] * n,
            "event": ["NEW"] * n, "order_id": [f"o{i}" for i in range(n)], "price": [1.0] * n,
            "qty": [1.0] * n, "leaves_qty": [1.0] * n, "exec_qty": [None] * n,
            "exec_price": [None] * n, "venue": ["X"] * n, "attrs": [None] * n,
            "source": ["s"] * n, "offset": list(range(n)), "line": list(range(1, n + 1))}
    base.update(cols)
    return pa.Table.from_pydict(base, schema=ORDER_EVENTS)


def fixture_events() -> pa.Table:
    return get_connector("csv").read(DATA / "csv" / "orders_messy.csv", "x").events


def ref_table(path) -> pa.Table:
    import csv

    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return pa.Table.from_pylist([{k: (v or None) for k, v in r.items()} for r in rows],
                                schema=pa.schema([(k, pa.string()) for k in rows[0]]))


# --- each step ---------------------------------------------------------------------------------


def test_resolve_trader_alias_maps_known_aliases_and_keeps_the_rest():
    t = orders(ts=[T0] * 4, trader=["JSMITH", " j.smith ", "other", "JS01"])
    ctx = CleanContext(traders=ref_table(DATA / "reference" / "traders.csv"))
    out, rejected = resolve_trader_alias(t, ctx)
    assert rejected == []
    assert out.column("trader").to_pylist() == ["jsmith", "jsmith", "other", "jsmith"]
    assert resolve_trader_alias(t, CleanContext())[0] is t


def test_resolve_instrument_is_effective_dated_and_end_exclusive():
    sym = ref_table(DATA / "reference" / "symbology.csv")
    nov30, dec1 = T0, T0 + DAY  # ES: 2026-12 contract until 2026-12-01 (exclusive)
    t = orders(ts=[nov30, dec1, dec1, nov30, T0 - 100 * DAY],
               symbol=["es", " ES ", "ESZ6", "NQZ6", "ESZ6"])
    out, rejected = resolve_instrument(t, CleanContext(symbology=sym))
    assert rejected == []
    assert out.column("instrument").to_pylist() == [
        "ES-2026-12", "ES-2027-03", "ES-2026-12", "NQZ6", "ESZ6"]
    no_ref = resolve_instrument(t, CleanContext())[0].column("instrument").to_pylist()
    assert no_ref == ["ES", "ES", "ESZ6", "NQZ6", "ESZ6"]


def test_check_order_values_reasons():
    t = orders(ts=[T0] * 5, event=["NEW", "FILL", "FILL", "CANCEL", "NEW"],
               qty=[0.0, 1.0, 1.0, -1.0, 2.0], exec_qty=[None, 0.0, 2.0, None, None],
               exec_price=[None, 1.0, None, None, None])
    _, rej = check_order_values(t, CleanContext())
    got = [(np.flatnonzero(r.mask).tolist(), r.reason, r.field) for r in rej]
    assert got == [([0], "impossible_value", "qty"), ([1], "impossible_value", "exec_qty"),
                   ([2], "missing_value", "exec_price"), ([3], "impossible_value", "qty")]


def test_drop_resent_duplicates_keeps_the_first_of_equal_content():
    t = orders(ts=[T0, T0, T0, T0 + 1, T0], order_id=["a", "a", "b", "a", "a"],
               offset=[0, 1, 2, 3, 4])  # provenance differs, content of 0, 1, 4 does not
    _, rej = drop_resent_duplicates(t, CleanContext())
    assert [np.flatnonzero(r.mask).tolist() for r in rej] == [[1, 4]]
    assert rej[0].reason == "duplicate" and rej[0].field is None
    live = np.array([False, True, True, True, True])  # the first is already rejected
    _, rej = drop_resent_duplicates(t, CleanContext(), live)
    assert np.flatnonzero(rej[0].mask).tolist() == [4]
    assert drop_resent_duplicates(t.slice(0, 0), CleanContext()) == (t.slice(0, 0), [])


def test_check_market_values_reasons():
    events = get_connector("md-csv").read(DATA / "csv" / "market.csv", "x").events
    t = events.slice(0, 2)
    t = t.set_column(t.schema.get_field_index("bid_size"), "bid_size",
                     pa.array([-1.0, None]))
    for name in ("bid", "ask", "last"):
        t = t.set_column(t.schema.get_field_index(name), name, pa.array([1.0, None]))
    _, rej = check_market_values(t, CleanContext())
    assert [(np.flatnonzero(r.mask).tolist(), r.reason, r.field) for r in rej] == [
        ([0], "impossible_value", "size"), ([1], "missing_value", "bid/ask/last")]


def test_apply_steps_rejects_once_with_original_indices_and_filters_at_the_end():
    t = orders(ts=[T0, T0, T0, T0], qty=[0.0, 0.0, 1.0, 1.0], order_id=["a", "a", "b", "b"])
    kept, rejected = apply_steps(t, "orders")
    assert [(r[0].tolist(), r[1], r[2], r[3]) for r in rejected] == [
        ([0, 1], "impossible_value", "qty", "check_order_values"),
        ([3], "duplicate", None, "drop_resent_duplicates")]
    assert kept.column("offset").to_pylist() == [2]
    assert kept.schema == t.schema


def test_step_list_and_etl_version_are_unchanged_by_the_vectorisation():
    """The vectorisation kept every step's version; ``drop_resent_duplicates`` is 2 since it
    also finds resends across chunks and tee ranges (chunked results changed)."""
    assert [(s.name, s.version, s.row_local) for s in STEPS["orders"]] == [
        ("resolve_trader_alias", "1", True), ("resolve_instrument", "2", True),
        ("check_order_values", "1", True), ("drop_resent_duplicates", "2", False)]
    assert etl_version() == etl_version("") and etl_version().startswith("etl-")


# --- identical to the per-row implementations --------------------------------------------------


def test_fixture_file_identical_with_and_without_reference_data():
    events = fixture_events()
    ctx = CleanContext(traders=ref_table(DATA / "reference" / "traders.csv"),
                       symbology=ref_table(DATA / "reference" / "symbology.csv"))
    for c in (None, ctx):
        assert_same(apply_steps(events, "orders", c), old_apply_steps(events, "orders", c))
    doubled = pa.concat_tables([events, events])  # every row resent, two chunks
    for c in (None, ctx):
        assert_same(apply_steps(doubled, "orders", c), old_apply_steps(doubled, "orders", c))


SPELLINGS = ["ESZ6", "esz6", " ESZ6", "ES", "es ", "NQZ6", "CLF7", "ZZZ", ""]
DATES = [f"2026-{m:02d}-{d:02d}" for m in (10, 11, 12) for d in (1, 15, 30)] + ["1969-12-31",
                                                                              "1970-01-01"]
symbology_rows = st.lists(
    st.tuples(st.sampled_from(["ESZ6", "esz6", "ES", "NQZ6", "CLF7", "  es"]),
              st.sampled_from(["I1", "I2", "I3", "I4"]),
              st.sampled_from(DATES + [None]), st.sampled_from(DATES + [None])),
    min_size=0, max_size=10)
timestamps = st.lists(
    st.one_of(st.integers(T0 - 40 * DAY, T0 + 40 * DAY),
              st.sampled_from([0, -1, DAY - 1, DAY, -DAY, T0, T0 + DAY])),
    min_size=0, max_size=40)


def sym_table(rows) -> pa.Table:
    return pa.table({"symbol": pa.array([r[0] for r in rows], pa.string()),
                     "instrument": pa.array([r[1] for r in rows], pa.string()),
                     "valid_from": pa.array([r[2] for r in rows], pa.string()),
                     "valid_to": pa.array([r[3] for r in rows], pa.string())})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=symbology_rows, ts=timestamps, data=st.data())
def test_resolve_instrument_matches_per_row(rows, ts, data):
    n = len(ts)
    symbol = data.draw(st.lists(st.sampled_from(SPELLINGS), min_size=n, max_size=n))
    t = orders(ts=ts, symbol=symbol)
    # overlapping, expired and open windows, unknown symbols, case/space variants, ties
    ctx = CleanContext(symbology=sym_table(rows))
    got, want = resolve_instrument(t, ctx)[0], old_resolve_instrument(t, ctx)[0]
    assert got.equals(want)
    half = t.num_rows // 2  # a chunked table gives the same
    chunked = pa.concat_tables([t.slice(0, half), t.slice(half)])
    assert resolve_instrument(chunked, ctx)[0].equals(want)


def test_resolve_instrument_sparse_pairs_and_other_time_zones():
    rng = np.random.default_rng(3)
    n = 500  # many symbols × a wide span of days: the np.unique path, not the dense table
    ts = rng.integers(-200 * 365 * DAY, 200 * 365 * DAY, n)
    symbol = [f"S{i}" for i in rng.integers(0, 400, n)]
    rows = [(f"S{i}", f"I{i}", d, None) for i in range(0, 400, 3) for d in ("1950-01-01",
                                                                            "2020-06-01")]
    t = orders(ts=ts.tolist(), symbol=symbol)
    ctx = CleanContext(symbology=sym_table(rows))
    assert resolve_instrument(t, ctx)[0].equals(old_resolve_instrument(t, ctx)[0])
    # a timestamp in another zone: dates as strftime writes them (local), per row
    tokyo = t.column("ts").cast(pa.timestamp("ns", tz="Asia/Tokyo"))
    for col in (tokyo, t.column("ts").cast(pa.timestamp("ns")), pa.array(ts, pa.timestamp("ns"))):
        code, valid, dates = _utc_days(col)
        assert valid.all()
        assert dates.take(pa.array(code)).equals(
            pc.strftime(col, format="%Y-%m-%d").combine_chunks()
            if isinstance(col, pa.ChunkedArray) else pc.strftime(col, format="%Y-%m-%d"))


@settings(max_examples=200, deadline=None)
@given(names=st.lists(st.sampled_from(["JSMITH", " jsmith", "j.smith", "JS01", "x", "", "  "]),
                      max_size=30),
       aliases=st.lists(st.tuples(st.sampled_from(["JSMITH", "j.smith", "JS01", "x", ""]),
                                  st.sampled_from(["jsmith", "other", None])), max_size=6))
def test_resolve_trader_alias_matches_per_row(names, aliases):
    t = orders(ts=[T0] * len(names), trader=names)
    traders = pa.table({"alias": pa.array([a for a, _ in aliases], pa.string()),
                        "trader": pa.array([b for _, b in aliases], pa.string())})
    ctx = CleanContext(traders=traders)
    assert resolve_trader_alias(t, ctx)[0].equals(old_resolve_trader_alias(t, ctx)[0])


FLOATS = [1.0, 2.0, 0.0, -0.0, float("nan"), None]
STRINGS = ["a", "b", "", None]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), n=st.integers(0, 60))
def test_drop_resent_duplicates_matches_group_by(data, n):
    ts = data.draw(st.lists(st.sampled_from([T0, T0, T0 + 1, T0 - 7, 0]), min_size=n,
                            max_size=n))
    s = st.lists(st.sampled_from(STRINGS), min_size=n, max_size=n)
    f = st.lists(st.sampled_from(FLOATS), min_size=n, max_size=n)
    t = orders(ts=ts, trader=[x or "t" for x in data.draw(s)], account=data.draw(s),
               order_id=[x or "o" for x in data.draw(s)], price=data.draw(f), qty=data.draw(f),
               exec_price=data.draw(f), offset=list(range(n)))
    got, want = drop_resent_duplicates(t, CleanContext()), old_drop_resent_duplicates(
        t, CleanContext())
    assert [(r.reason, r.field) for r in got[1]] == [(r.reason, r.field) for r in want[1]]
    for r, r0 in zip(got[1], want[1], strict=True):
        np.testing.assert_array_equal(r.mask, r0.mask)
    if n:  # exact fallbacks agree with the kernel
        idx = np.arange(n)
        content = t.select(list(_DUP_KEY))
        np.testing.assert_array_equal(_first_of_content(content, idx),
                                      _first_of_equal(_key_columns(content)))
        live = np.asarray(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)))
        _, rej = drop_resent_duplicates(t, CleanContext(), live)
        _, rej0 = old_drop_resent_duplicates(t.filter(pa.array(live)), CleanContext())
        got_rows = np.flatnonzero(rej[0].mask) if rej else np.array([], int)
        want_rows = np.flatnonzero(live)[rej0[0].mask] if rej0 else np.array([], int)
        np.testing.assert_array_equal(got_rows, want_rows)
        assert not (rej and (rej[0].mask & ~live).any())


def test_dedup_reads_sliced_and_odd_column_types():
    t = orders(ts=[T0] * 6, order_id=["a", "b", "a", "b", "a", "c"]).slice(1)  # array offsets
    assert _first_of_content(t.select(list(_DUP_KEY)), np.arange(5)).tolist() == [
        True, True, False, False, True]
    odd = pa.table({"x": pa.array([1, 1, 2], pa.int32()), "y": pa.array([b"a", b"a", b"a"]),
                    "z": pa.array(["p", "p", "p"], pa.large_string())})
    assert _first_of_content(odd, np.arange(3)).tolist() == [True, False, True]
    nested = pa.table({"x": pa.array([[1], [1]])})
    assert _first_of_content(nested, np.arange(2)) is None  # the caller sorts instead


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_apply_steps_matches_old_runner_on_random_tables(seed):
    rng = np.random.default_rng(seed)
    n = 3000
    qty = rng.integers(-1, 4, n).astype(float)
    t = orders(ts=(T0 + rng.integers(0, 40, n) * DAY // 7).tolist(),
               trader=rng.choice(["JSMITH", "j.smith", "other"], n).tolist(),
               symbol=rng.choice(SPELLINGS, n).tolist(),
               event=rng.choice(["NEW", "FILL", "CANCEL", "MODIFY"], n).tolist(),
               order_id=rng.choice(["a", "b", "c", "d"], n).tolist(), qty=qty.tolist(),
               exec_qty=rng.integers(0, 3, n).astype(float).tolist(),
               exec_price=[None if x else 1.0 for x in rng.random(n) < 0.1])
    sym = ref_table(DATA / "reference" / "symbology.csv")
    ctx = CleanContext(traders=ref_table(DATA / "reference" / "traders.csv"), symbology=sym)
    for c in (None, ctx):
        assert_same(apply_steps(t, "orders", c), old_apply_steps(t, "orders", c))


def test_mask_helper_treats_null_as_false():
    assert _mask(pa.array([True, None, False])).tolist() == [True, False, False]
    assert clean.Step("x", "1", lambda t, c: (t, []), "").row_local


def test_content_hashes_equal_rows_equal_hashes_any_column_differs():
    """The resend index's hash (appliance.clean.resends): equal ``_DUP_KEY`` content gives the
    same hash in any table (sliced, other rows around it, string columns of another offset
    width); a difference in any one column — null vs value, 0.0 vs -0.0, one string byte —
    gives another hash; columns outside the key do not count."""
    from appliance.clean import content_hashes

    base = orders(ts=[T0], exec_qty=[0.0], exec_price=[1.5])
    h0 = content_hashes(base)[0]
    assert h0.dtype == np.uint64
    other = orders(ts=[T0 + 1, T0, T0], order_id=["x", "o0", "y"], exec_qty=[1.0, 0.0, None],
                   exec_price=[None, 1.5, 1.5], venue=["Y", "Z", "X"], line=[9, 9, 9])
    assert content_hashes(other.slice(1))[0] == h0  # position, slice, venue, line: same hash
    assert content_hashes(other, np.array([1]))[0] == h0
    large = other.cast(pa.schema([f.with_type(pa.large_string()) if f.type == pa.string() else f
                                  for f in other.schema]))
    assert content_hashes(large, np.array([1]))[0] == h0
    seen = {int(h0)}
    for name in _DUP_KEY:
        for value in {"ts": [T0 + 1, None], "price": [-0.0, None, 1.0000001],
                      "exec_qty": [-0.0, None], "exec_price": [None]}.get(name, ["q", None]):
            if name in ("qty", "leaves_qty"):
                value = None if value is None else 2.0
            try:
                row = orders(**{"ts": [T0], "exec_qty": [0.0], "exec_price": [1.5],
                                name: [value]})
            except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError):
                continue  # not nullable in the schema
            h = int(content_hashes(row)[0])
            assert h not in seen, (name, value)
            seen.add(h)
    assert len(seen) > 2 * len(_DUP_KEY)
    zero = orders(ts=[T0, T0], price=[0.0, -0.0])
    a, b = content_hashes(zero)
    assert a != b  # 0.0 and -0.0 differ, as in drop_resent_duplicates
