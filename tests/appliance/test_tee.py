"""The tee (appliance/tee.py): follow growing, rotating, gzipped logs and ingest every record
exactly once, across restarts, ``kill -9``, truncation, inode reuse and a full disk."""

from __future__ import annotations

import gzip
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import apsw
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from appliance import config, store, tee
from tests.scenarios import HEADER, ts

SURVEIL = str(Path(sys.executable).with_name("surveil"))


def record(seq: int) -> bytes:
    """One canonical CSV order event, unique by order id (o<seq>)."""
    return (f"{ts(seq * 0.001)},F1,T{seq % 7},A{seq % 3},ESZ6,{'BUY' if seq % 2 else 'SELL'},"
            f"NEW,o{seq},{100 + seq % 10}.25,{1 + seq % 5},{1 + seq % 5},,,CME\n").encode()


def tee_config(logs: str, **tee_keys) -> str:
    """The default config with [tee] keys set and one csv source ``orders.log*`` in ``logs``."""
    text = config.example_text()
    at = text.index("[tee]")  # ([ingest] has a chunk_bytes too)
    head, text = text[:at], text[at:]
    for key, value in tee_keys.items():
        text = re.sub(rf"(?m)^{key} = .*$", f"{key} = {value!r}", text, count=1)
    text = head + text
    return text + f'\n[[tee.sources]]\ndir = {logs}\nglob = "orders.log*"\nformat = "csv"\n'


def setup_dir(tmp_path: Path, **tee_keys) -> tuple[Path, Path]:
    """A data dir whose config follows <tmp>/logs/orders.log* as csv; returns (config, logs)."""
    data, logs = tmp_path / "d", tmp_path / "logs"
    data.mkdir()
    logs.mkdir()
    text = tee_config('"../logs"', **tee_keys)
    (data / "surveil.toml").write_text(text)
    store.connect(data / "surveil.db", create=True).close()
    return data / "surveil.toml", logs


def once(cfg_path: Path) -> dict:
    cfg = config.load(cfg_path)
    con = store.connect(cfg.store_path)
    try:
        return tee.follow(cfg, con, "tester", lambda *_: None, once=True)
    finally:
        con.close()


def events(data_dir: Path) -> pa.Table:
    con = store.connect(data_dir / "surveil.db")
    paths = [data_dir / r[0] for r in con.execute("SELECT parquet FROM file_dates")]
    con.close()
    return pq.read_table(paths) if paths else pa.table({"order_id": pa.array([], pa.string())})


def order_ids(data_dir: Path) -> list[int]:
    return sorted(int(o[1:]) for o in events(data_dir).column("order_id").to_pylist())


# --------------------------------------------------------------------------- in-process


def test_growing_file_partial_lines_and_provenance(tmp_path):
    cfg_path, logs = setup_dir(tmp_path, chunk_bytes=300)
    log = logs / "orders.log"
    body = HEADER.encode() + b"\n" + b"".join(record(i) for i in range(40))
    cut = body.index(record(10)) + 20  # mid-line
    log.write_bytes(body[:cut])
    once(cfg_path)
    assert order_ids(tmp_path / "d") == list(range(10))  # the partial line waits
    log.write_bytes(body)
    totals = once(cfg_path)
    assert totals["chunks"] >= 2  # small chunks, header remembered from the first one
    assert order_ids(tmp_path / "d") == list(range(40))
    once(cfg_path)  # nothing new: a no-op
    assert order_ids(tmp_path / "d") == list(range(40))
    table = events(tmp_path / "d")
    lines = body.split(b"\n")
    for row in table.to_pylist():  # provenance points into the original file
        assert body[row["offset"]:].startswith(record(int(row["order_id"][1:])))
        assert lines[row["line"] - 1] + b"\n" == record(int(row["order_id"][1:]))
    con = store.connect(tmp_path / "d" / "surveil.db")
    with pytest.raises(apsw.ConstraintError, match="append-only"):
        con.execute("UPDATE tee_progress SET end_offset = 0")
    with pytest.raises(apsw.ConstraintError, match="append-only"):
        con.execute("DELETE FROM tee_streams")


def test_rename_copytruncate_gzip_truncation_and_inode_reuse(tmp_path):
    cfg_path, logs = setup_dir(tmp_path, chunk_bytes=512, fingerprint_bytes=256)
    log, seq = logs / "orders.log", 0

    def write(n: int, path: Path = log) -> None:
        nonlocal seq
        with open(path, "ab") as fh:
            if path.stat().st_size == 0 if path.exists() else True:
                fh.write(HEADER.encode() + b"\n")
            for _ in range(n):
                fh.write(record(seq))
                seq += 1

    log.touch()
    write(20)
    once(cfg_path)
    write(5)
    os.rename(log, logs / "orders.log.1")  # rename rotation; the tail is read from .1
    log.touch()
    write(7)
    once(cfg_path)
    write(6)
    shutil.copyfile(log, logs / "orders.log.2")  # copytruncate
    os.truncate(log, 0)
    write(9)
    with open(logs / "orders.log.2", "rb") as src, gzip.open(logs / "orders.log.2.gz", "wb") as gz:
        gz.write(src.read())
    (logs / "orders.log.2").unlink()
    once(cfg_path)
    # truncation with inode reuse: same inode, new content (a new stream)
    os.truncate(log, 0)
    write(11)
    # a gzip of a stream never seen before (written while the follower was down)
    with gzip.open(logs / "orders.log.0.gz", "wb") as gz:
        gz.write(HEADER.encode() + b"\n" + b"".join(record(i) for i in range(1000, 1012)))
    once(cfg_path)
    once(cfg_path)
    assert order_ids(tmp_path / "d") == list(range(seq)) + list(range(1000, 1012))


def test_a_stream_rewritten_in_place_is_reported_not_extended(tmp_path):
    cfg_path, logs = setup_dir(tmp_path, fingerprint_bytes=128)
    log = logs / "orders.log"
    body = HEADER.encode() + b"\n" + b"".join(record(i) for i in range(10))
    log.write_bytes(body)
    once(cfg_path)
    said = []
    log.write_bytes(body[:-30] + b"X" * 29 + b"\n" + record(10))
    cfg = config.load(cfg_path)
    tee.follow(cfg, store.connect(cfg.store_path), "t", lambda e, f: said.append(e), once=True)
    assert "stream_diverged" in said
    assert order_ids(tmp_path / "d") == list(range(10))


def test_config_is_strict_about_sources():
    ok = config.parse('[[tee.sources]]\ndir = "x"\nglob = "*.log"\nformat = "fix"\n', "t.toml")
    assert ok.get("tee.sources") == ({"dir": "x", "glob": "*.log", "format": "fix",
                                      "mapping": ""},)
    for text, needle in [
        ('[[tee.sources]]\ndir = "x"\nglob = "*"\n', "'tee.sources[0].format' is required"),
        ('[[tee.sources]]\ndir = "x"\nglob = "*"\nformat = "lobster"\n', "must be one of"),
        ('[[tee.sources]]\ndir = "x"\nglob = "*"\nformat = "csv"\nmode = 1\n',
         "unknown key 'tee.sources[0].mode'"),
        ("[tee]\nsources = 1\n", "must be an array of tables"),
        ("[tee]\npoll_seconds = 0\n", "must be ≥ 0.01"),
    ]:
        with pytest.raises(config.ConfigError, match=re.escape(needle)):
            config.parse(text, "t.toml")


# --------------------------------------------------------------------------- the real process


def spawn(cfg_path: Path, log: Path, *args: str) -> subprocess.Popen:
    err = open(log, "wb")  # noqa: SIM115 - owned by the process
    return subprocess.Popen([SURVEIL, "--config", str(cfg_path), "ingest", *args],
                            stdout=subprocess.DEVNULL, stderr=err,
                            env={**os.environ, "SURVEIL_DEBUG": "1"})  # tracebacks in the log


def wait_for(path: Path, needle: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and needle in path.read_text(errors="replace"):
            return
        time.sleep(0.01)
    raise AssertionError(f"{needle} not in {path}: {path.read_text(errors='replace')[-2000:]}")


def test_sigterm_stops_the_follower_cleanly(tmp_path):
    cfg_path, logs = setup_dir(tmp_path)
    (logs / "orders.log").write_bytes(HEADER.encode() + b"\n" + record(0))
    err = tmp_path / "err.log"
    proc = spawn(cfg_path, err, "--follow", "--poll", "0.05")
    wait_for(err, '"chunk_ingested"')
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    lines = [json.loads(x) for x in err.read_text().splitlines()]  # JSON lines: not a TTY
    assert lines[-1]["event"] == "follow_stopped" and lines[-1]["rows"] == 1


class Writer(threading.Thread):
    """Appends records to orders.log, sometimes in two writes (a partial line for a while);
    rotates by rename or by copytruncate, then gzips the rotated file in pieces (a partial gzip
    is visible) and removes it."""

    def __init__(self, logs: Path, seed: int = 5) -> None:
        super().__init__(daemon=True)
        self.logs, self.rng = logs, random.Random(seed)
        self.seq, self.rotations, self.stop = 0, 0, threading.Event()

    def run(self) -> None:
        live = self.logs / "orders.log"
        fh = open(live, "ab")  # noqa: SIM115
        fh.write(HEADER.encode() + b"\n")
        while not self.stop.is_set():
            for _ in range(self.rng.randint(1, 8)):
                rec = record(self.seq)
                if self.rng.random() < 0.1:
                    fh.write(rec[:17])
                    fh.flush()
                    time.sleep(0.003)
                    rec = rec[17:]
                fh.write(rec)
                self.seq += 1
            fh.flush()
            time.sleep(self.rng.uniform(0.01, 0.05))
            if self.rng.random() < 0.03:
                self.rotations += 1
                rotated = self.logs / f"orders.log.{self.rotations}"
                if self.rotations % 2:
                    fh.close()
                    os.rename(live, rotated)
                    fh = open(live, "ab")  # noqa: SIM115
                else:
                    shutil.copyfile(live, rotated)
                    os.truncate(live, 0)
                fh.write(HEADER.encode() + b"\n")
                fh.flush()
                data = rotated.read_bytes()
                with gzip.open(rotated.with_name(rotated.name + ".gz"), "wb") as gz:
                    for i in range(0, len(data), 4096):
                        gz.write(data[i:i + 4096])
                        gz.flush()
                rotated.unlink()
        fh.close()


@pytest.mark.slow
def test_kill_loop_every_record_exactly_once(tmp_path):
    """≥ 50 kill -9 of `surveil ingest --follow` while the log grows, rotates and is gzipped."""
    cfg_path, logs = setup_dir(tmp_path, chunk_bytes=2048, fingerprint_bytes=512)
    rng = random.Random(11)
    writer = Writer(logs)
    writer.start()
    t0, kills, n = time.monotonic(), 0, 0
    current = spawn(cfg_path, tmp_path / f"err{n}.log", "--follow", "--poll", "0.05")
    while kills < 50:
        wait_for(tmp_path / f"err{n}.log", '"follow_started"')
        # a standby imports and warms up now, then waits for the lock
        standby = spawn(cfg_path, tmp_path / f"err{n + 1}.log", "--follow", "--poll", "0.05")
        time.sleep(rng.uniform(0.05, 0.6))
        current.send_signal(signal.SIGKILL)
        current.wait(30)
        kills += 1
        current, n = standby, n + 1
    print(f"kill loop: {kills} kills in {time.monotonic() - t0:.1f}s")
    writer.stop.set()
    writer.join(30)
    wait_for(tmp_path / f"err{n}.log", '"follow_started"')
    total = writer.seq
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # the survivor catches up
        con = store.connect(tmp_path / "d" / "surveil.db")
        got = con.execute("SELECT coalesce(sum(accepted), 0) FROM files").fetchone()[0]
        con.close()
        if got >= total:
            break
        time.sleep(0.1)
    current.send_signal(signal.SIGTERM)
    assert current.wait(30) == 0, (tmp_path / f"err{n}.log").read_text()[-3000:]
    seconds = time.monotonic() - t0

    table = events(tmp_path / "d")
    ids = sorted(int(o[1:]) for o in table.column("order_id").to_pylist())
    dupes, lost = len(ids) - len(set(ids)), set(range(total)) - set(ids)
    chunks = store.connect(tmp_path / "d" / "surveil.db").execute(
        "SELECT count(*), count(DISTINCT stream) FROM tee_progress").fetchone()
    print(f"kill loop: {kills} kills, {total} records, {writer.rotations} rotations, "
          f"{chunks[0]} chunks in {chunks[1]} streams, {dupes} duplicates, {len(lost)} lost, "
          f"{seconds:.1f}s")
    assert writer.rotations >= 3
    assert dupes == 0 and not lost and ids == list(range(total))
    # content, not only count: every canonical row is the record that was written
    for row in table.select(["order_id", "trader", "account", "price", "qty"]).to_pylist():
        seq = int(row["order_id"][1:])
        fields = record(seq).decode().split(",")
        assert (row["trader"], row["account"], row["price"], row["qty"]) == (
            fields[2], fields[3], float(fields[8]), float(fields[9]))


def test_disk_full_gives_a_clear_error_and_a_clean_resume(tmp_path):
    """A 3 MiB tmpfs holds the data dir (mounted in a private user+mount namespace, so no root
    and no trace outside the test); it is filled with a filler file, `ingest --once` must fail
    with exit 5 and a one-line 'disk full' message, and after the filler is removed a second
    `--once` must ingest every record exactly once."""
    if not shutil.which("unshare"):
        pytest.skip("unshare(1) not available: cannot mount a private tmpfs")
    probe = subprocess.run(["unshare", "-r", "-m", "sh", "-c",
                            f"mount -t tmpfs -o size=1m tmpfs {tmp_path}"], capture_output=True)
    if probe.returncode:
        pytest.skip(f"cannot mount a tmpfs in a user namespace: {probe.stderr!r}")
    mnt, out = tmp_path / "mnt", tmp_path / "out"
    mnt.mkdir()
    out.mkdir()
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "orders.log").write_bytes(
        HEADER.encode() + b"\n" + b"".join(record(i) for i in range(6000)))
    script = f"""
set -u
mount -t tmpfs -o size=3m tmpfs {mnt}
{SURVEIL} init {mnt}/d > /dev/null
cp {tmp_path}/cfg.toml {mnt}/d/surveil.toml
head -c 2700000 /dev/zero > {mnt}/filler
{SURVEIL} --config {mnt}/d/surveil.toml ingest --once 2> {out}/err1.log; echo $? > {out}/rc1
rm {mnt}/filler
{SURVEIL} --config {mnt}/d/surveil.toml ingest --once 2> {out}/err2.log; echo $? > {out}/rc2
cp -a {mnt}/d {out}/d
"""
    (tmp_path / "cfg.toml").write_text(tee_config(f'"{logs}"', chunk_bytes=65536))
    done = subprocess.run(["unshare", "-r", "-m", "bash", "-c", script], capture_output=True,
                          text=True, timeout=240, env=os.environ.copy())
    assert done.returncode == 0, done.stderr
    err1 = (out / "err1.log").read_text()
    assert (out / "rc1").read_text().strip() == "5", err1
    message = err1.strip().splitlines()[-1]
    assert message.startswith("surveil: ") and "disk full" in message and "rerun" in message
    assert (out / "rc2").read_text().strip() == "0", (out / "err2.log").read_text()
    before = sum('"chunk_ingested"' in x for x in err1.splitlines())
    assert before >= 1  # some chunks fitted: the resume starts mid-file
    assert order_ids(out / "d") == list(range(6000))
    print(f"disk full: {before} chunks committed before the error, resumed to 6000 records")


def test_fix_log_appended_in_pieces_keeps_its_order_chains(tmp_path):
    """A FIX log followed while it grows (a new follower per pass, so the chain state is
    replayed from the store each time) gives the events of the whole file: same order ids, no
    orphan_reference (the tail that later lines may change is held back until the log is
    quiet: docs/tee.md)."""
    from appliance.sim import SimConfig, simulate
    from connectors import get_connector

    sim = simulate(SimConfig(seed=3, minutes=1.0, instruments=1, traders=4, fmt="fix",
                             fix_version="4.2", fix_sep="pipe"), tmp_path / "sim")
    data = sim.orders_path.read_bytes()
    cfg_path, logs = setup_dir(tmp_path)
    text = cfg_path.read_text().replace('format = "csv"', 'format = "fix"')
    cfg_path.write_text(text)
    log = logs / "orders.log"
    rng = random.Random(11)
    cuts = sorted(rng.sample(range(1, len(data)), 25)) + [len(data)]
    prev = 0
    for cut in cuts:  # pieces end anywhere, also inside a line
        with open(log, "ab") as fh:
            fh.write(data[prev:cut])
        prev = cut
        once(cfg_path)
    quiet = time.time() - 3600  # the log stopped growing: its held-back tail is committed
    os.utime(log, (quiet, quiet))
    once(cfg_path)
    got = events(cfg_path.parent)
    whole = get_connector("fix").read(sim.orders_path, "w")
    assert whole.events.num_rows > 500
    assert "orphan_reference" not in whole.reasons
    con = store.connect(cfg_path.parent / "surveil.db")
    rows = con.execute("SELECT sum(rows), sum(accepted), sum(quarantined), sum(ignored), "
                       "count(*) FROM files").fetchone()
    reasons = [json.loads(r[0]) for r in con.execute("SELECT reasons FROM files")]
    con.close()
    assert rows[4] > 10  # really in many chunks
    assert not any("orphan_reference" in r for r in reasons)
    assert tuple(rows[:4]) == (whole.rows, whole.accepted, whole.quarantined, whole.ignored)
    cols = ["offset", "line", "ts", "event", "order_id", "trader", "account", "symbol", "side",
            "price", "qty", "exec_qty", "exec_price", "venue", "firm"]
    key = [("offset", "ascending")]
    assert got.select(cols).sort_by(key).equals(whole.events.select(cols).sort_by(key))
    fills = pa.compute.equal(whole.events.column("event"), "FILL")
    g = got.sort_by(key)
    assert g.filter(pa.compute.equal(g.column("event"), "FILL")).column("leaves_qty").equals(
        whole.events.sort_by(key).filter(fills).column("leaves_qty"))


# --------------------------------------------------------------------------- carried state
def cat_log(orders: int, seed: int) -> bytes:
    """A CAT JSON log whose records reach back across any cut: NEWs repeated by MEOA,
    modifications under a new order id (``priorOrderID``), partial and full cancels (and a
    repeated full cancel), fills through ``buyDetails``, repeated ``firmROEID``s, identical lines
    without one, orphans, a blank and a malformed line."""
    rng = random.Random(seed)
    out: list[str] = []
    ms = 1704465000000

    def rec(**fields) -> str:
        nonlocal ms
        ms += 7
        return json.dumps({"eventTimestamp": ms, "CATReporterIMID": "FRMA", **fields})

    scripts = []
    for i in range(orders):
        sym, side, fd = f"S{i % 3}", "B" if i % 2 else "SL", f"FD{i % 5}"
        a, b = f"O{i}", f"O{i}b"
        scripts.append([
            dict(type="MENO", firmROEID=f"r{i}.0", symbol=sym, orderID=a, side=side,
                 price="10.25", quantity=100, firmDesignatedID=fd),
            dict(type="MEOA", firmROEID=f"r{i}.1", symbol=sym, orderID=a, side=side,
                 price="10.25", quantity=100, firmDesignatedID=fd),
            dict(type="MEOM", firmROEID=f"r{i}.2", orderID=b, priorOrderID=a, price="10.5",
                 quantity=90, leavesQty=90),
            dict(type="MEOC", firmROEID=f"r{i}.3", orderID=b, cancelQty=10, leavesQty=80),
            dict(type="MEOT", firmROEID=f"r{i}.4", symbol=sym, tradeID=f"T{i}", price="10.5",
                 quantity=30, buyDetails={"orderID": b, "side": side, "leavesQty": 50}),
            dict(type="MEOT", firmROEID=f"r{i}.4", symbol=sym, tradeID=f"T{i}", price="10.5",
                 quantity=30, buyDetails={"orderID": b, "side": side, "leavesQty": 50}),
            dict(type="MEOR", symbol=sym, orderID=b, destination="XNAS"),
            dict(type="MEOR", symbol=sym, orderID=b, destination="XNAS"),
            dict(type="MEOC", firmROEID=f"r{i}.5", orderID=b, leavesQty=0),
            dict(type="MEOC", firmROEID=f"r{i}.6", orderID=a, leavesQty=0),
            dict(type="MEOT", firmROEID=f"r{i}.7", orderID=b, price="10.5", quantity=5),
        ])
    while scripts:
        script = scripts[rng.randrange(min(len(scripts), 4))]  # a few orders interleaved
        fields = script.pop(0)
        line = rec(**fields)
        out.append(line)
        if fields["type"] == "MEOR":  # the identical line (no firmROEID) is a duplicate
            out.append(line)
        if not script:
            scripts.remove(script)
        if rng.random() < 0.03:
            out.append(rec(type="MEOM", firmROEID=f"x{len(out)}", orderID="NOPE", price="1"))
        if rng.random() < 0.02:
            out.append("")
        if rng.random() < 0.02:
            out.append('{"type": "MENO", "orderID": ')
    return ("\n".join(out) + "\n").encode()


def _set_format(cfg_path: Path, fmt: str, **tee_keys) -> None:
    text = cfg_path.read_text().replace('format = "csv"', f'format = "{fmt}"')
    for key, value in tee_keys.items():
        at = text.index("[tee]")
        text = text[:at] + re.sub(rf"(?m)^{key} = .*$", f"{key} = {value!r}", text[at:], count=1)
    cfg_path.write_text(text)


def _stored(data_dir: Path) -> tuple[list, list, list]:
    """(events, quarantine, report totals) of everything a data dir holds, in file order, without
    the columns that name the file (its id or path)."""
    con = store.connect(data_dir / "surveil.db")
    try:
        parts = [data_dir / r[0] for r in con.execute("SELECT parquet FROM file_dates")]
        totals = list(con.execute("SELECT sum(rows), sum(accepted), sum(quarantined), "
                                  "sum(ignored) FROM files").fetchone())
    finally:
        con.close()
    ev = pq.read_table(parts).drop_columns(["source"]) if parts else None
    qfiles = sorted((data_dir / "quarantine").glob("*.parquet"))
    qt = pq.read_table(qfiles).drop_columns(["source", "path"]) if qfiles else None
    ev_rows = ev.sort_by([("offset", "ascending"), ("event", "ascending")]).to_pylist() if ev \
        else []
    q_rows = qt.sort_by([("offset", "ascending"), ("step", "ascending")]).to_pylist() if qt \
        else []
    return ev_rows, q_rows, totals


def _whole_ingest(tmp_path: Path, path: Path, fmt: str, mapping: str | None = None) -> tuple:
    """What ``surveil ingest`` of the whole file stores (the reference for the tee)."""
    from appliance.ingest import ingest_files

    data = tmp_path / "whole"
    data.mkdir()
    (data / "surveil.toml").write_text(config.example_text())
    store.connect(data / "surveil.db", create=True).close()
    cfg = config.load(data / "surveil.toml")
    con = store.connect(cfg.store_path)
    try:
        ingest_files(cfg, con, [path], fmt, "tester", mapping)
    finally:
        con.close()
    return _stored(data)


def _follow_pieces(tmp_path: Path, name: str, fmt: str, data: bytes, cuts: list[int],
                   restart: bool, log_name: str = "orders.log",
                   beside: dict[str, str] | None = None, **tee_keys) -> tuple:
    """Append ``data`` to a followed log in the pieces that end at ``cuts``, one tee pass after
    each: a new follower per pass with ``restart`` (the carry is replayed from its deltas),
    else one ``Tee`` kept in memory."""
    root = tmp_path / name
    root.mkdir()
    cfg_path, logs = setup_dir(root)
    _set_format(cfg_path, fmt, **tee_keys)
    for name, text in (beside or {}).items():  # e.g. a vendor mapping.toml
        (logs / name).write_text(text)
    log = logs / log_name
    cfg = config.load(cfg_path)
    con = store.connect(cfg.store_path)
    follower = tee.Tee(cfg, con, "tester", lambda *_: None)
    prev = 0
    try:
        for cut in [*cuts, len(data)]:
            with open(log, "ab") as fh:
                fh.write(data[prev:cut])
            prev = cut
            if restart:
                once(cfg_path)
            else:
                follower.run_pass()
    finally:
        con.close()
    assert log.read_bytes() == data
    return _stored(root / "d")


def test_cat_json_log_cut_at_every_line_is_the_whole_file(tmp_path):
    """The CAT carry (orders, cancellations, firmROEIDs and raw-line keys) persists per stream:
    an order opened before a cut is still known after it, with or without a restart."""
    path = Path(__file__).resolve().parents[1] / "data" / "cat-json" / "events.ndjson"
    data = path.read_bytes()
    whole = _whole_ingest(tmp_path, path, "cat-json")
    assert whole[0] and {q["reason"] for q in whole[1]} >= {"duplicate", "orphan_reference"}
    for b in (i + 1 for i, c in enumerate(data[:-1]) if c == 10):
        for restart in (False, True):
            got = _follow_pieces(tmp_path, f"c{b}-{restart}", "cat-json", data, [b], restart)
            assert got == whole, (b, restart)


def test_cat_json_log_in_many_pieces_with_restarts(tmp_path):
    """A generated log (every cross-record effect of the connector) appended in 30 pieces cut
    anywhere, also inside lines; the carry deltas stay small (hashes, not lines)."""
    data = cat_log(60, seed=3)
    path = tmp_path / "cat.ndjson"
    path.write_bytes(data)
    whole = _whole_ingest(tmp_path, path, "cat-json")
    reasons = {q["reason"] for q in whole[1]}
    assert {"duplicate", "orphan_reference", "malformed"} <= reasons, reasons
    assert {"NEW", "MODIFY", "CANCEL", "FILL"} <= {e["event"] for e in whole[0]}
    rng = random.Random(7)
    cuts = sorted(rng.sample(range(1, len(data)), 30))
    for restart in (False, True):
        got = _follow_pieces(tmp_path, f"r{restart}", "cat-json", data, cuts, restart)
        assert got == whole, restart
    data_dir = config.load(tmp_path / "rTrue" / "d" / "surveil.toml").data_dir
    deltas = sorted((data_dir / "tee" / "carry").glob("*.parquet"))
    assert len(deltas) > 10
    hashes = pa.concat_tables([pq.read_table(d) for d in deltas]).column("hash").drop_null()
    assert {len(h) for h in hashes.to_pylist()} == {16}


def test_cat_json_crash_between_the_delta_and_the_commit_doubles_nothing(tmp_path, monkeypatch):
    """The delta is written before the commit; a commit that fails leaves a delta file no
    progress row names: the retry (same file id) overwrites it and the replay ignores it."""
    from appliance import ingest

    data = cat_log(20, seed=5)
    path = tmp_path / "cat.ndjson"
    path.write_bytes(data)
    whole = _whole_ingest(tmp_path, path, "cat-json")
    cut = data.index(b"\n", len(data) // 2) + 1
    root = tmp_path / "t"
    root.mkdir()
    cfg_path, logs = setup_dir(root)
    _set_format(cfg_path, "cat-json")
    (logs / "orders.log").write_bytes(data[:cut])
    once(cfg_path)
    with open(logs / "orders.log", "ab") as fh:
        fh.write(data[cut:])
    real = ingest._record

    def crash(*args, **kwargs):
        raise OSError("simulated crash after the carry delta was written")

    cfg = config.load(cfg_path)
    carry_dir = cfg.data_dir / "tee" / "carry"
    before = set(carry_dir.glob("*.parquet"))
    con = store.connect(cfg.store_path)
    try:
        follower = tee.Tee(cfg, con, "tester", lambda *_: None)
        monkeypatch.setattr(ingest, "_record", crash)
        with pytest.raises(OSError, match="simulated crash"):
            follower.run_pass()
        stale = set(carry_dir.glob("*.parquet")) - before
        assert len(stale) == 1  # written, never committed
        monkeypatch.setattr(ingest, "_record", real)
        follower.run_pass()  # the same follower retries: its carry must not hold the failed try
    finally:
        con.close()
    assert set(carry_dir.glob("*.parquet")) - before == stale  # overwritten by the retry
    assert _stored(root / "d") == whole


# --------------------------------------------------------------------------- resends across ranges
def resent_log(n: int, seed: int) -> tuple[bytes, int]:
    """A canonical CSV log of ``n`` records with resends (exact repeats, some twice) far from
    their originals, and near-repeats that differ in one value (kept); returns (log, resends)."""
    rng = random.Random(seed)
    body = [record(i) for i in range(n)]
    resent = 0
    for i in rng.sample(range(n - 10), n // 10):
        at = body.index(record(i))
        for _ in range(1 + (i % 4 == 0)):  # some are resent twice
            body.insert(rng.randrange(at + 1, len(body) + 1), record(i))
            resent += 1
        if i % 3 == 0:  # same timestamp and order, another quantity: not a resend
            body.insert(rng.randrange(at + 1, len(body) + 1), record(i).replace(b",CME", b"0,CME"))
    return HEADER.encode() + b"\n" + b"".join(body), resent


@pytest.mark.parametrize("restart", [False, True])
def test_csv_resends_across_ranges_are_the_whole_file(tmp_path, monkeypatch, restart):
    """A resend of a row an earlier range of the stream kept is a ``duplicate``, as in the whole
    file: small ranges (≈ 3 records), pieces cut anywhere; the per-range index files are merged
    as they accumulate (fewer files than ranges; with restarts, merged in hash ranges of a few
    entries) and the result does not change."""
    from appliance.clean import resends

    if restart:
        monkeypatch.setattr(resends, "BUCKET_ROWS", 8)
    data, resent = resent_log(300, seed=3)
    path = tmp_path / "orders.csv"
    path.write_bytes(data)
    whole = _whole_ingest(tmp_path, path, "csv")
    dups = [q for q in whole[1] if q["reason"] == "duplicate"]
    assert len(dups) == resent and all(q["step"] == "clean:drop_resent_duplicates" for q in dups)
    cuts = sorted(random.Random(4).sample(range(1, len(data)), 20))
    got = _follow_pieces(tmp_path, "t", "csv", data, cuts, restart, chunk_bytes=300)
    assert got == whole
    root = tmp_path / "t" / "d"
    con = store.connect(root / "surveil.db")
    ranges = con.execute("SELECT count(*) FROM tee_progress").fetchone()[0]
    con.close()
    files = list((root / "tee" / "resends").glob("*/seg-*.npy"))
    assert ranges > 60 and len(files) < 20, (ranges, len(files))


def test_resend_index_written_before_a_failed_commit_is_ignored(tmp_path, monkeypatch):
    """A range's index file is written before its commit; a commit that fails leaves a file the
    store does not count (its rows are not originals); the retry rewrites it."""
    from appliance import ingest

    data, _ = resent_log(60, seed=8)
    path = tmp_path / "orders.csv"
    path.write_bytes(data)
    whole = _whole_ingest(tmp_path, path, "csv")
    cut = data.index(b"\n", len(data) // 2) + 1
    root = tmp_path / "t"
    root.mkdir()
    cfg_path, logs = setup_dir(root)
    (logs / "orders.log").write_bytes(data[:cut])
    once(cfg_path)
    with open(logs / "orders.log", "ab") as fh:
        fh.write(data[cut:])
    cfg = config.load(cfg_path)
    index_dir = cfg.data_dir / "tee" / "resends"
    before = {p: p.read_bytes() for p in index_dir.glob("*/seg-*.npy")}
    real = ingest._record

    def crash(*args, **kwargs):
        raise OSError("simulated crash after the resend index was written")

    con = store.connect(cfg.store_path)
    try:
        follower = tee.Tee(cfg, con, "tester", lambda *_: None)
        monkeypatch.setattr(ingest, "_record", crash)
        with pytest.raises(OSError, match="simulated crash"):
            follower.run_pass()
        stale = set(index_dir.glob("*/seg-*.npy")) - set(before)
        assert len(stale) == 1  # written, never committed
        monkeypatch.setattr(ingest, "_record", real)
        follower.run_pass()
    finally:
        con.close()
    assert {p: p.read_bytes() for p in before} == before  # committed ranges' files untouched
    assert _stored(root / "d") == whole


# --------------------------------------------------------------------------- FIX hold-back
FIX_COLS = ["offset", "line", "ts", "event", "order_id", "trader", "account", "symbol", "side",
            "price", "qty", "leaves_qty", "exec_qty", "exec_price", "venue", "firm"]


def fix_dir(tmp_path: Path, **tee_keys) -> tuple[Path, Path]:
    cfg_path, logs = setup_dir(tmp_path, **tee_keys)
    cfg_path.write_text(cfg_path.read_text().replace('format = "csv"', 'format = "fix"'))
    return cfg_path, logs


def fix_stored(data_dir: Path) -> tuple[list, tuple, dict]:
    """(events, (rows, accepted, quarantined, ignored), reasons) of everything the tee stored."""
    got = events(data_dir)
    rows = got.select(FIX_COLS).sort_by([("offset", "ascending")]).to_pylist() if got.num_rows \
        else []
    con = store.connect(data_dir / "surveil.db")
    counts = con.execute("SELECT sum(rows), sum(accepted), sum(quarantined), sum(ignored) "
                         "FROM files").fetchone()
    reasons: dict[str, int] = {}
    for (r,) in con.execute("SELECT reasons FROM files"):
        for k, v in json.loads(r).items():
            reasons[k] = reasons.get(k, 0) + v
    con.close()
    return rows, tuple(counts), reasons


def fix_whole(path: Path) -> tuple[list, tuple, dict]:
    from connectors import get_connector

    r = get_connector("fix").read(path, "w")
    rows = r.events.select(FIX_COLS).sort_by([("offset", "ascending")]).to_pylist()
    return rows, (r.rows, r.accepted, r.quarantined, r.ignored), dict(r.reasons)


def progress_end(data_dir: Path) -> int:
    con = store.connect(data_dir / "surveil.db")
    end = con.execute("SELECT max(end_offset) FROM tee_progress").fetchone()[0]
    con.close()
    return end or 0


def make_quiet(path: Path) -> None:
    """The log stopped growing an hour ago (a rotated or finished log)."""
    past = time.time() - 3600
    os.utime(path, (past, past))


@pytest.mark.parametrize("name", ["session.log", "reordered"])
def test_fix_tee_cut_between_every_request_and_its_answer(tmp_path, name):
    """A FIX log appended in two pieces, cut at every line (between every request and its
    answer, every answer logged before its request and the request): a new follower per pass
    gives exactly the whole file's events, counts and reasons. The tail that the next lines
    may change (an unanswered request, a message that may follow a later-logged one in time)
    is held back (nothing is committed past it) until its answer arrives."""
    from tests.connectors.test_fix import DATA as FIXDATA
    from tests.connectors.test_fix import reordered_log

    data = (FIXDATA / name).read_bytes() if name == "session.log" else reordered_log()
    (tmp_path / "whole.log").write_bytes(data)
    want = fix_whole(tmp_path / "whole.log")
    assert want[0] and "orphan_reference" not in want[2]
    held = 0
    for b in [i + 1 for i, c in enumerate(data[:-1]) if c == 10]:
        root = tmp_path / f"b{b}"
        root.mkdir()
        cfg_path, logs = fix_dir(root)
        log = logs / "orders.log"
        log.write_bytes(data[:b])
        once(cfg_path)
        held += progress_end(root / "d") < b
        with open(log, "ab") as fh:
            fh.write(data[b:])
        once(cfg_path)
        make_quiet(log)  # (session.log ends with a D never answered: held until then)
        once(cfg_path)
        assert progress_end(root / "d") == len(data), b
        assert fix_stored(root / "d") == want, b
    assert held >= 5  # the first piece's tail was really held back at several cuts


@pytest.mark.parametrize("limit", ["never_held", "bytes"])
def test_fix_tee_refusal_beyond_the_hold_limit_is_late_answer(tmp_path, limit):
    """Beyond the hold-back's bounds (``tee.hold_seconds = 0``; a held tail longer than half a
    chunk) the cancel request is committed with its CANCEL; its refusal, in a later range, is
    quarantined ``late_answer`` (never silently lost), the CANCEL stands and is not doubled."""
    from tests.connectors.test_fix import DATA as FIXDATA

    data = (FIXDATA / "session.log").read_bytes()
    b = data.rindex(b"\n", 0, data.index(b"35=9")) + 1  # F D2 | its 35=9 refusal
    keys = {"hold_seconds": 0.0} if limit == "never_held" else {"chunk_bytes": 256}
    cfg_path, logs = fix_dir(tmp_path, **keys)
    log = logs / "orders.log"
    log.write_bytes(data[:b])
    once(cfg_path)
    assert progress_end(tmp_path / "d") == b  # committed up to the refusal
    with open(log, "ab") as fh:
        fh.write(data[b:])
    once(cfg_path)
    rows, counts, reasons = fix_stored(tmp_path / "d")
    assert counts == (22, 10, 4, 8)  # whole file (22, 9, 3, 10): the F and its 35=9 ignored
    assert reasons["late_answer"] == 1
    assert [(r["line"], r["order_id"]) for r in rows if r["event"] == "CANCEL"] == [
        (13, "B1"), (18, "D1")]  # fmt: skip
    q = pq.read_table(list((tmp_path / "d" / "quarantine").glob("*.parquet"))).to_pylist()
    late = [x for x in q if x["reason"] == "late_answer"]
    assert [(x["line"], x["field"]) for x in late] == [(19, "11")] and b"11=D2" in late[0]["raw"]


def test_fix_tee_held_tail_released_after_hold_seconds_or_when_quiet(tmp_path):
    """A held tail waits at most ``tee.hold_seconds`` on the follower's clock (then it is
    committed, with a ``held_tail_committed`` warning), and not at all once the log has not
    changed for that long (``--once`` after the day)."""
    from tests.connectors.test_fix import DATA as FIXDATA

    data = (FIXDATA / "session.log").read_bytes()
    b = data.rindex(b"\n", 0, data.index(b"35=9")) + 1
    held_at = data.rindex(b"\n", 0, data.index(b"11=D1")) + 1  # D D1, never acknowledged
    from connectors.fix import FixCarry, FixConnector

    FixConnector().hold_back(data, FixCarry.empty(), len(data))  # load the kernels first
    cfg_path, logs = fix_dir(tmp_path, hold_seconds=3.0)  # (a pass may take a second)
    log = logs / "orders.log"
    log.write_bytes(data[:b])
    cfg = config.load(cfg_path)
    said: list[str] = []
    con = store.connect(cfg.store_path)
    try:
        follower = tee.Tee(cfg, con, "tester", lambda event, fields: said.append(event))
        os.utime(log)  # the log is live (its mtime is recent) before every pass
        follower.run_pass()
        assert progress_end(tmp_path / "d") == held_at  # D1 and F D2 are held back
        os.utime(log)
        follower.run_pass()
        assert progress_end(tmp_path / "d") == held_at  # still within hold_seconds
        time.sleep(3.1)
        os.utime(log)
        follower.run_pass()
        assert progress_end(tmp_path / "d") == b
        assert follower.stats["held_released"] == 1 and "held_tail_committed" in said
    finally:
        con.close()
    # --once: a fresh follower each run, released because the log is quiet
    root = tmp_path / "q"
    root.mkdir()
    cfg_path, logs = fix_dir(root)
    (logs / "orders.log").write_bytes(data[:b])
    once(cfg_path)
    assert progress_end(root / "d") == held_at
    make_quiet(logs / "orders.log")
    once(cfg_path)
    assert progress_end(root / "d") == b


def test_vendor_log_followed_in_pieces_is_the_whole_file(tmp_path):
    """A vendor log (mapping.toml next to it) followed in pieces: the header decision, skipped
    banner lines and the duplicate keys are carried per stream like the CAT/FIX state."""
    from appliance.sim import SimConfig, simulate

    sim = simulate(SimConfig(seed=4, minutes=0.5, instruments=1, traders=4, fmt="vendor-b",
                             dirty=0.03), tmp_path / "sim")
    data = sim.orders_path.read_bytes()
    path = tmp_path / "whole.tsv"
    path.write_bytes(data)
    whole = _whole_ingest(tmp_path, path, "vendor", "sim-vendor-b")
    assert whole[0] and "duplicate" in {q["reason"] for q in whole[1]}
    nl = [i + 1 for i, c in enumerate(data[:-1]) if c == 10]
    rng = random.Random(3)
    cuts = sorted({nl[0], nl[0] - 3, *rng.sample(range(1, len(data)), 12)})  # in the header too
    for restart in (False, True):
        got = _follow_pieces(tmp_path, f"v{restart}", "vendor", data, cuts, restart,
                             beside={"mapping.toml": 'extends = "sim-vendor-b"\n'})
        assert got == whole, restart
    # the mapping named by the source's `mapping` key instead of a file beside the log
    configured = 'vendor"\nmapping = "sim-vendor-b'  # the line after `format = "vendor"`
    assert _follow_pieces(tmp_path, "vcfg", configured, data, cuts, False) == whole


def test_fix_tee_reference_to_an_order_done_long_ago_is_the_whole_file(tmp_path):
    """A followed log whose late lines refer to orders done minutes earlier (pruned from the
    stream's carry by then): appended in pieces, at cuts before, inside and after those lines,
    the stored rows are the whole file's (a too-late cancel and its refusal ignored, a late
    fill and a cancel by OrderID attached to their orders: no ``orphan_reference``)."""
    from tests.connectors.test_fix import late_references_log

    data = late_references_log()
    (tmp_path / "whole.log").write_bytes(data)
    want = fix_whole(tmp_path / "whole.log")
    assert want[0] and not want[2]
    nls = [i + 1 for i, c in enumerate(data[:-1]) if c == 10]
    for cuts in ([nls[-7]], [nls[-6]], [nls[-5]], [nls[-3]], [nls[-2]], nls[20::40] + nls[-6:]):
        root = tmp_path / f"c{cuts[0]}_{len(cuts)}"
        root.mkdir()
        cfg_path, logs = fix_dir(root)
        log = logs / "orders.log"
        start = 0
        for b in [*cuts, len(data)]:
            with open(log, "ab") as fh:
                fh.write(data[start:b])
            start = b
            once(cfg_path)
        make_quiet(log)  # (the last cancel request is never answered: held until then)
        once(cfg_path)
        assert progress_end(root / "d") == len(data), cuts
        assert fix_stored(root / "d") == want, cuts
