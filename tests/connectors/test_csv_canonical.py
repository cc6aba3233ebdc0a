import pyarrow as pa
import pytest

from appliance.clean import apply_steps
from connectors import get_connector
from connectors.base import InputRefused
from tests.conftest import DATA

MESSY = DATA / "csv" / "orders_messy.csv"


def read(name, fmt="csv"):
    return get_connector(fmt).read(DATA / "csv" / name, "fixture")


def test_every_row_is_accounted_for_with_its_reason():
    r = read("orders_messy.csv")
    assert r.rows == 18 and r.ignored == 1
    assert r.accepted + r.quarantined + r.ignored == r.rows
    assert dict(r.reasons) == {"bad_timestamp": 2, "unknown_token": 1, "non_numeric": 3,
                               "column_count": 1, "invalid_utf8": 3, "missing_value": 1}
    by_line = {q["line"]: (q["reason"], q["field"]) for q in r.quarantine.to_pylist()}
    assert by_line[5] == ("bad_timestamp", "ts")
    assert by_line[6] == ("unknown_token", "side")
    assert by_line[7] == ("non_numeric", "price")
    assert by_line[8] == ("column_count", None)
    assert by_line[9] == ("invalid_utf8", None)
    assert by_line[11] == ("missing_value", "trader")
    assert by_line[13] == ("non_numeric", "price")  # NaN is not a price
    assert by_line[16] == ("invalid_utf8", None)  # unbalanced quote is garbage


def test_quarantine_keeps_the_exact_raw_bytes_at_the_recorded_offset():
    data = MESSY.read_bytes()
    r = read("orders_messy.csv")
    for q in r.quarantine.to_pylist():
        assert data[q["offset"]:].startswith(q["raw"])
        assert data.split(b"\r\n")[q["line"] - 1] == q["raw"]


def test_accepted_rows_carry_provenance_and_canonical_tokens():
    data = MESSY.read_bytes()
    r = read("orders_messy.csv")
    ev = r.events.drop_columns(["ts"]).to_pydict()
    assert ev["line"] == [2, 3, 12, 14, 17, 19]
    assert ev["side"] == ["BUY", "BUY", "BUY", "SELL", "BUY", "SELL"]
    assert ev["event"] == ["NEW", "CANCEL", "FILL", "NEW", "FILL", "NEW"]
    for off, line in zip(ev["offset"], ev["line"], strict=True):
        assert data[off:].startswith(data.split(b"\r\n")[line - 1])
    assert r.events.column("ts").cast(pa.int64())[0].as_py() == 1795444200000000001
    assert r.events.schema.field("ts").type == pa.timestamp("ns", tz="UTC")


def test_cleaning_quarantines_impossible_values_and_resends():
    r = read("orders_messy.csv")
    kept, rejected = apply_steps(r.events, "orders")
    reasons = {(reason, step) for _, reason, _, step in rejected}
    assert ("impossible_value", "check_order_values") in reasons
    assert ("duplicate", "drop_resent_duplicates") in reasons
    assert kept.num_rows == r.accepted - 2


def test_missing_required_column_refuses_the_whole_file():
    with pytest.raises(InputRefused) as exc:
        read("orders_missing_column.csv")
    msg = str(exc.value)
    assert "orders_missing_column.csv" in msg and "line 1" in msg and "side" in msg


def test_columns_by_name_in_any_order_with_bom_and_extra_columns():
    r = read("orders_shuffled.csv")
    assert r.rows == 2 and r.accepted == 2
    assert r.events.column("order_id").to_pylist() == ["o1", "o1"]
    assert r.events.column("firm").to_pylist() == [None, None]
    assert r.events.column("offset").to_pylist()[0] == (DATA / "csv" / "orders_shuffled.csv"
                                                        ).read_bytes().index(b"o1,B")


def test_market_data_rows():
    r = read("market.csv", "md-csv")
    assert r.rows == 5 and r.accepted == 4 and r.quarantined == 1
    kept, rejected = apply_steps(r.events, "market")
    assert kept.num_rows == 2
    assert sorted(reason for _, reason, _, _ in rejected) == ["impossible_value", "missing_value"]


def test_empty_file_is_not_an_error(tmp_path):
    p = tmp_path / "empty.csv"
    p.write_bytes(b"")
    r = get_connector("csv").read(p, "x")
    assert (r.rows, r.accepted, r.quarantined) == (0, 0, 0)
