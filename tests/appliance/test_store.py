import apsw
import pytest

from appliance import store


def test_connection_is_configured_for_durability(con):
    assert con.execute("pragma journal_mode").fetchone()[0] == "wal"
    assert con.execute("pragma synchronous").fetchone()[0] == 2  # FULL
    assert con.execute("pragma user_version").fetchone()[0] == store.SCHEMA_VERSION
    assert con.execute("pragma foreign_keys").fetchone()[0] == 1


@pytest.mark.parametrize("table", store.APPEND_ONLY_TABLES)
def test_update_and_delete_are_refused_on_every_table(con, table):
    cols = [r[1] for r in con.execute(f"pragma table_info({table})")]
    for op in (f"UPDATE {table} SET {cols[0]} = {cols[0]}", f"DELETE FROM {table}"):
        with pytest.raises(apsw.ConstraintError, match="append-only"):
            # the trigger fires per row, so give it one row to refuse
            _seed(con)
            con.execute(op)


def _seed(con):
    if con.execute("select count(*) from runs").fetchone()[0]:
        return
    with con:
        con.execute("INSERT INTO files VALUES ('f1','sha','p',1,'csv','orders',1,1,0,0,'{}','e',"
                    "'t','u')")
        con.execute("INSERT INTO file_dates VALUES ('f1','2026-11-23',1,'x.parquet')")
        con.execute("INSERT INTO runs VALUES ('r1','a','b','c','d','e','{}','inprocess','{}','u')")
        con.execute("INSERT INTO run_inputs VALUES ('r1','f1','sha')")
        con.execute("INSERT INTO run_dates VALUES ('r1','2026-11-23')")
        con.execute("INSERT INTO alerts(run_id, trade_date, detector, model_version, etl_version,"
                    " score, confidence, trader, account, symbol, instrument, start_ns, end_ns,"
                    " n_events, features, explanation, breadcrumbs) VALUES ('r1','2026-11-23',"
                    "'spoofing','m','e',600,0.9,'T',NULL,'S','S',1,2,3,'{}','[]','{}')")
        con.execute("INSERT INTO labels(alert_id,label,user,created_at) VALUES (1,'x','u','t')")
        store.audit(con, "t", "u", "a", None, {})


def test_score_outside_200_800_is_refused(con):
    _seed(con)
    with pytest.raises(apsw.ConstraintError):
        con.execute("INSERT INTO alerts(run_id, trade_date, detector, model_version, etl_version,"
                    " score, confidence, trader, account, symbol, instrument, start_ns, end_ns,"
                    " n_events, features, explanation, breadcrumbs) VALUES ('r1','2026-11-23',"
                    "'spoofing','m','e',900,0.9,'T',NULL,'S','S',1,2,3,'{}','[]','{}')")


def test_reopening_does_not_migrate_again(cfg):
    first = store.connect(cfg.store_path)
    first.close()
    again = store.connect(cfg.store_path)
    assert again.execute("pragma user_version").fetchone()[0] == store.SCHEMA_VERSION


def test_newer_schema_is_refused_with_advice(cfg):
    c = store.connect(cfg.store_path)
    c.execute(f"pragma user_version = {store.SCHEMA_VERSION + 1}")
    c.close()
    with pytest.raises(store.StoreError, match="upgrade surveil"):
        store.connect(cfg.store_path)


def test_missing_store_is_an_error_unless_creating(tmp_path):
    with pytest.raises(store.StoreError, match="surveil init"):
        store.connect(tmp_path / "none.db")
