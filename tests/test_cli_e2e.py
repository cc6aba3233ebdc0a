"""End to end through the real ``surveil`` executable, a real SQLite file and real Ray."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.conftest import DATA
from tests.scenarios import Book

SURVEIL = [str(Path(sys.executable).with_name("surveil"))]


def cli(*args, cfg=None, ok=True):
    cmd = SURVEIL + (["--config", str(cfg)] if cfg else []) + [str(a) for a in args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=os.environ.copy())
    if ok:
        assert out.returncode == 0, out.stderr
    return out


@pytest.fixture
def data(tmp_path):
    d = tmp_path / "d"
    cli("init", d)
    return d / "surveil.toml"


def test_ingest_run_read_side_through_the_cli(tmp_path, data):
    book = Book()
    for k in range(4):
        book.spoof_cycle(k * 2.0, "SPOOFER", f"c{k}")
    book.market_maker(0.0, "MM1", 12)
    orders = book.write(tmp_path / "orders.csv")

    rep = json.loads(cli("ingest", "--format", "csv", orders, DATA / "csv" / "orders_messy.csv",
                         "--json", cfg=data).stdout)
    assert rep["rows"] == rep["accepted"] + rep["quarantined"] + rep["ignored"]
    assert rep["files"][1]["reasons"]["duplicate"] == 1
    again = json.loads(cli("ingest", "--format", "csv", orders, "--json", cfg=data).stdout)
    assert again["files"][0]["status"] == "already_ingested"
    cli("ingest", "--format", "md-csv", DATA / "csv" / "market.csv", cfg=data)

    summary = json.loads(cli("run", "--mode", "ray", "--json", cfg=data).stdout)
    assert summary["mode"] == "ray" and summary["alerts"]["spoofing"] >= 1
    assert json.loads(cli("run", "--json", cfg=data).stdout)["run_id"] is None

    alerts = json.loads(cli("alerts", "--json", cfg=data).stdout)
    assert [a["score"] for a in alerts] == sorted((a["score"] for a in alerts), reverse=True)
    top = alerts[0]
    for key in ("id", "detector", "score", "confidence", "trader", "account", "symbol",
                "start_ts", "end_ts", "n_events", "run_id", "model_version", "etl_version"):
        assert key in top
    assert top["trader"] == "SPOOFER" and 200 <= top["score"] <= 800
    assert top["start_ts"].endswith("Z")
    assert json.loads(cli("alerts", "--min-score", 801, "--json", cfg=data).stdout) == []
    assert json.loads(cli("alerts", "--detector", "nope", "--json", cfg=data).stdout) == []

    shown = json.loads(cli("show", top["id"], "--raw", "--json", cfg=data).stdout)
    crumb = shown["breadcrumbs"]["files"][0]
    assert crumb["path"] == str(orders.resolve())
    raw = orders.read_bytes()
    assert raw[crumb["offsets"][0]:].startswith(b"2026-11-23T14:30:00.000000000Z,F1,SPOOFER")
    assert all("SPOOFER" in e["raw"] for e in shown["evidence"])
    assert len(shown["evidence"]) == shown["n_events"]
    assert shown["features"]["fill_triggered_cancels"] == 4
    text = cli("show", top["id"], cfg=data).stdout
    assert "cancel timed off the fill" in text

    out = tmp_path / "events.csv"
    exported = json.loads(cli("events", "--out", out, "--json", cfg=data).stdout)
    assert exported["rows"] == rep["accepted"]
    with open(out, newline="") as fh:
        assert len(list(csv.DictReader(fh))) == exported["rows"]
    pq_out = tmp_path / "day.parquet"
    cli("events", "--date", "2026-11-23", "--out", pq_out, cfg=data)
    assert pq.read_table(pq_out).num_rows == rep["accepted"]

    dets = json.loads(cli("detectors", "--json").stdout)
    assert dets[0]["name"] == "spoofing" and len(dets[0]["features"]) >= 20
    runs = json.loads(cli("runs", "--json", cfg=data).stdout)
    assert runs[0]["run_id"] == summary["run_id"]


@pytest.mark.parametrize("args,code,needle", [
    (["ingest", "--format", "csv", "{missing}"], 3, "not found"),
    (["ingest", "--format", "csv", str(DATA / "csv" / "orders_missing_column.csv")], 3,
     "missing required column(s): side"),
    (["ingest", "--format", "nope", "{missing}"], 2, "unknown format"),
    (["show", "999"], 4, "alert 999 does not exist"),
])
def test_errors_are_one_line_with_documented_exit_codes(tmp_path, data, args, code, needle):
    args = [a.replace("{missing}", str(tmp_path / "missing.csv")) for a in args]
    out = cli(*args, cfg=data, ok=False)
    assert out.returncode == code, out.stderr
    assert needle in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_no_store_exits_5(tmp_path):
    cfg = tmp_path / "s.toml"
    cfg.write_text("")
    out = cli("alerts", cfg=cfg, ok=False)
    assert out.returncode == 5 and "surveil init" in out.stderr


def test_show_and_label_are_audited(tmp_path, data):
    book = Book()
    for k in range(3):
        book.spoof_cycle(k * 2.0, "S1", f"c{k}")
    cli("ingest", "--format", "csv", book.write(tmp_path / "o.csv"), cfg=data)
    cli("run", "--mode", "inprocess", cfg=data)
    cli("show", 1, "--user", "alice", cfg=data)
    cli("label", 1, "true_positive", "--note", "classic", "--user", "bob", cfg=data)
    shown = json.loads(cli("show", 1, "--json", "--user", "carol", cfg=data).stdout)
    assert shown["labels"][0]["user"] == "bob" and shown["labels"][0]["label"] == "true_positive"
    import apsw

    con = apsw.Connection(str(data.parent / "surveil.db"))
    log = [(u, a) for u, a in con.execute("select user, action from audit_log order by audit_id")]
    assert ("alice", "view_alert") in log and ("bob", "label") in log
    assert ("carol", "view_alert") in log


def test_reference_load_and_show(data):
    ref = DATA / "reference"
    loaded = json.loads(cli("reference", "load", "accounts", ref / "accounts.csv", "--json",
                            cfg=data).stdout)
    assert loaded == {"kind": "accounts", "version": 1, "rows": 3, "status": "loaded"}
    shown = json.loads(cli("reference", "show", "accounts", "--json", cfg=data).stdout)
    assert [r["owner"] for r in shown] == ["OWN1", "OWN1", "CLIENT9"]
    bad = cli("reference", "load", "accounts", ref / "accounts_dup.csv", cfg=data, ok=False)
    assert bad.returncode == 3 and "line 3" in bad.stderr


def test_vendor_file_with_its_mapping_and_fix_attributes(tmp_path, data):
    vendor = DATA / "vendor" / "example-delimited.csv"
    rep = json.loads(cli("ingest", "--format", "vendor", "--mapping",
                         str(vendor) + ".mapping.toml", vendor, "--json", cfg=data).stdout)
    assert rep["accepted"] > 0 and rep["rows"] == rep["accepted"] + rep["quarantined"] + \
        rep["ignored"]
    fix = cli("ingest", "--format", "fix", DATA / "fix" / "session.log", "--json", cfg=data)
    assert json.loads(fix.stdout)["accepted"] > 0
    out = tmp_path / "all.csv"
    cli("events", "--out", out, cfg=data)
    assert '""cl_ord_id"": ' in out.read_text()  # attrs exported as JSON text
    wrong = cli("ingest", "--format", "csv", "--mapping", "x.toml", vendor, cfg=data, ok=False)
    assert wrong.returncode == 2 and "takes no --mapping" in wrong.stderr


def test_quarantine_shows_every_rejected_record_with_its_raw_bytes(data):
    messy = DATA / "csv" / "orders_messy.csv"
    rep = json.loads(cli("ingest", "--format", "csv", messy, "--json", cfg=data).stdout)
    q = json.loads(cli("quarantine", "--json", cfg=data).stdout)
    assert q["total"] == rep["quarantined"] == len(q["records"])
    assert q["reasons"] == rep["reasons"]
    raw = messy.read_bytes()
    for rec in q["records"]:
        assert rec["path"] == str(messy)
        expected = raw[rec["offset"]:].split(b"\r\n")[0]
        assert rec["raw"] == expected.decode("utf-8", "backslashreplace")
    only = json.loads(cli("quarantine", "--reason", "bad_timestamp", "--json", cfg=data).stdout)
    assert only["total"] == 2 and {r["line"] for r in only["records"]} == {5, 10}
    assert "ES\\\\xff" in json.dumps(q)  # invalid bytes are shown escaped, not lost
