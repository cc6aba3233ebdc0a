import apsw
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from appliance import reference
from appliance.clean import CleanContext, apply_steps, etl_version
from appliance.ingest import ingest_file
from connectors.base import InputRefused
from tests.conftest import DATA
from tests.scenarios import Book

REF = DATA / "reference"


def test_load_versions_and_current(con):
    first = reference.load(con, "accounts", REF / "accounts.csv", "it")
    assert first["status"] == "loaded" and first["rows"] == 3
    assert reference.load(con, "accounts", REF / "accounts.csv", "it")["status"] == "unchanged"
    table = reference.current(con, "accounts")
    assert table.to_pylist()[0] == {"account": "H1", "owner": "OWN1", "type": "house"}
    with pytest.raises(apsw.ConstraintError, match="append-only"):
        con.execute("DELETE FROM ref_accounts")


def test_bad_reference_file_is_refused_with_its_line(con):
    with pytest.raises(InputRefused, match=r"line 3: duplicate account"):
        reference.load(con, "accounts", REF / "accounts_dup.csv", "it")
    assert reference.current(con, "accounts").num_rows == 0


def test_reference_data_changes_the_etl_version(con):
    before = etl_version(reference.digest(con))
    reference.load(con, "traders", REF / "traders.csv", "it")
    assert etl_version(reference.digest(con)) != before


def test_aliases_and_effective_dated_symbology_are_resolved(cfg, con, tmp_path):
    reference.load(con, "traders", REF / "traders.csv", "it")
    reference.load(con, "symbology", REF / "symbology.csv", "it")
    book = Book()
    book.add(0, "JSMITH", "BUY", "NEW", "o1", 100, 1, 1, symbol="ESZ6")
    book.add(1, "j.smith", "BUY", "NEW", "o2", 100, 1, 1, symbol="es")
    book.add(2, "other", "BUY", "NEW", "o3", 100, 1, 1, symbol="NQZ6")
    report = ingest_file(cfg, con, book.write(tmp_path / "o.csv"), "csv", "t")
    assert report.accepted == 3
    import pyarrow.parquet as pq

    t = pq.read_table(next((cfg.data_dir / "events" / "orders").rglob("*.parquet")))
    assert t.column("trader").to_pylist() == ["jsmith", "jsmith", "other"]
    assert t.column("instrument").to_pylist() == ["ES-2026-12", "ES-2026-12", "NQZ6"]
    assert t.column("symbol").to_pylist() == ["ESZ6", "es", "NQZ6"]  # as written, for evidence


def test_symbology_window_end_is_exclusive(con, tmp_path):
    reference.load(con, "symbology", REF / "symbology.csv", "it")
    from connectors import get_connector

    book = Book()
    book.add(0, "t", "BUY", "NEW", "o1", 1, 1, 1, symbol="ES")
    events = get_connector("csv").read(book.write(tmp_path / "o.csv"), "x").events
    shifted = pc.add(events.column("ts").cast(pa.int64()), 8 * 86400 * 10**9)
    late = events.set_column(0, events.schema.field(0), shifted.cast(events.schema.field(0).type))
    ctx = CleanContext(symbology=reference.current(con, "symbology"))
    kept, _ = apply_steps(late, "orders", ctx)  # 2026-12-01: the next contract
    assert kept.column("instrument").to_pylist() == ["ES-2027-03"]
