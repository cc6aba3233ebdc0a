"""The append-only result store: SQLite through apsw.

Every connection is configured in ``connect`` (WAL, ``synchronous=FULL``, busy timeout, foreign
keys). The schema is migrated by ``pragma user_version`` inside one transaction. Triggers refuse
UPDATE and DELETE on every table, so a result once written can be shown again years later exactly
as it was; corrections are new rows (a newer run, a new label), never edits.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import apsw

SCHEMA_VERSION = 3

_TABLES_V1 = """
CREATE TABLE files (
    file_id      TEXT PRIMARY KEY,          -- first 16 hex digits of sha256
    sha256       TEXT NOT NULL UNIQUE,
    path         TEXT NOT NULL,
    size         INTEGER NOT NULL,
    format       TEXT NOT NULL,
    kind         TEXT NOT NULL,             -- orders | market
    rows         INTEGER NOT NULL,
    accepted     INTEGER NOT NULL,
    quarantined  INTEGER NOT NULL,
    ignored      INTEGER NOT NULL,
    reasons      TEXT NOT NULL,             -- JSON {reason: count}
    etl_version  TEXT NOT NULL,
    ingested_at  TEXT NOT NULL,
    ingested_by  TEXT NOT NULL
);
CREATE TABLE file_dates (
    file_id      TEXT NOT NULL REFERENCES files(file_id),
    trade_date   TEXT NOT NULL,
    rows         INTEGER NOT NULL,
    parquet      TEXT NOT NULL,             -- path relative to the data dir
    PRIMARY KEY (file_id, trade_date)
);
CREATE TABLE runs (
    run_id        TEXT PRIMARY KEY,
    started_at    TEXT NOT NULL,
    finished_at   TEXT NOT NULL,
    code_version  TEXT NOT NULL,
    config_hash   TEXT NOT NULL,
    etl_version   TEXT NOT NULL,
    models        TEXT NOT NULL,            -- JSON {detector: model_version}
    mode          TEXT NOT NULL,            -- ray | inprocess
    counts        TEXT NOT NULL,            -- JSON summary per stage
    started_by    TEXT NOT NULL
);
CREATE TABLE run_inputs (
    run_id   TEXT NOT NULL REFERENCES runs(run_id),
    file_id  TEXT NOT NULL REFERENCES files(file_id),
    sha256   TEXT NOT NULL,
    PRIMARY KEY (run_id, file_id)
);
CREATE TABLE run_dates (
    run_id      TEXT NOT NULL REFERENCES runs(run_id),
    trade_date  TEXT NOT NULL,
    PRIMARY KEY (run_id, trade_date)
);
CREATE TABLE alerts (
    alert_id       INTEGER PRIMARY KEY,
    run_id         TEXT NOT NULL REFERENCES runs(run_id),
    trade_date     TEXT NOT NULL,
    detector       TEXT NOT NULL,
    model_version  TEXT NOT NULL,
    etl_version    TEXT NOT NULL,
    score          INTEGER NOT NULL CHECK (score BETWEEN 200 AND 800),
    confidence     REAL NOT NULL,
    trader         TEXT NOT NULL,
    account        TEXT,
    symbol         TEXT NOT NULL,
    instrument     TEXT NOT NULL,
    start_ns       INTEGER NOT NULL,
    end_ns         INTEGER NOT NULL,
    n_events       INTEGER NOT NULL,
    features       TEXT NOT NULL,           -- JSON {name: value}
    explanation    TEXT NOT NULL,           -- JSON [reason, ...]
    breadcrumbs    TEXT NOT NULL            -- JSON, see docs/schema.md
);
CREATE INDEX alerts_by_run ON alerts(run_id);
CREATE INDEX alerts_by_score ON alerts(score DESC);
CREATE TABLE labels (
    label_id    INTEGER PRIMARY KEY,
    alert_id    INTEGER NOT NULL REFERENCES alerts(alert_id),
    label       TEXT NOT NULL,              -- e.g. true_positive | false_positive | inconclusive
    reason      TEXT,
    note        TEXT,
    user        TEXT NOT NULL,
    created_at  TEXT NOT NULL
);
CREATE TABLE audit_log (
    audit_id    INTEGER PRIMARY KEY,
    at          TEXT NOT NULL,
    user        TEXT NOT NULL,
    action      TEXT NOT NULL,
    target      TEXT,
    detail      TEXT NOT NULL               -- JSON
);
-- The current alerts: those of the latest run that covered their trade date.
CREATE VIEW current_alerts AS
SELECT a.* FROM alerts a
WHERE a.run_id = (
    SELECT rd.run_id FROM run_dates rd JOIN runs r USING (run_id)
    WHERE rd.trade_date = a.trade_date
    ORDER BY r.finished_at DESC, r.run_id DESC LIMIT 1
);
"""

APPEND_ONLY_TABLES = (
    "files", "file_dates", "runs", "run_inputs", "run_dates", "alerts", "labels", "audit_log",
)  # fmt: skip


_REFERENCE_V2 = """
CREATE TABLE ref_versions (
    version_id  INTEGER PRIMARY KEY,
    kind        TEXT NOT NULL,              -- accounts | traders | symbology
    sha256      TEXT NOT NULL,
    path        TEXT NOT NULL,
    rows        INTEGER NOT NULL,
    loaded_at   TEXT NOT NULL,
    loaded_by   TEXT NOT NULL
);
CREATE TABLE ref_accounts (
    version_id  INTEGER NOT NULL REFERENCES ref_versions(version_id),
    account     TEXT NOT NULL,
    owner       TEXT NOT NULL,
    type        TEXT NOT NULL
);
CREATE TABLE ref_traders (
    version_id  INTEGER NOT NULL REFERENCES ref_versions(version_id),
    alias       TEXT NOT NULL,
    trader      TEXT NOT NULL
);
CREATE TABLE ref_symbology (
    version_id  INTEGER NOT NULL REFERENCES ref_versions(version_id),
    symbol      TEXT NOT NULL,
    instrument  TEXT NOT NULL,
    valid_from  TEXT NOT NULL,
    valid_to    TEXT
);
"""
REFERENCE_TABLES = ("ref_versions", "ref_accounts", "ref_traders", "ref_symbology")


# The tee (appliance/tee.py): followed log streams and, per ingested chunk, the progress row
# written in the same transaction as the chunk's files/file_dates rows. A stream's progress is its
# latest row (highest progress_id); UNIQUE (stream, start_offset) refuses a chunk ingested twice.
_TEE_V3 = """
CREATE TABLE tee_streams (
    stream       TEXT PRIMARY KEY,          -- 16 hex digits
    origin_sha   TEXT NOT NULL,             -- sha256 of the first chunk's fingerprint bytes
    format       TEXT NOT NULL,
    header       BLOB,                      -- header line of a CSV stream (NULL otherwise)
    first_path   TEXT NOT NULL,
    created_at   TEXT NOT NULL
);
CREATE TABLE tee_progress (
    progress_id  INTEGER PRIMARY KEY,
    stream       TEXT NOT NULL REFERENCES tee_streams(stream),
    file_id      TEXT NOT NULL REFERENCES files(file_id),
    path         TEXT NOT NULL,             -- the file the chunk was read from
    inode        INTEGER NOT NULL,
    compressed   INTEGER NOT NULL,          -- 1: read through gzip
    start_offset INTEGER NOT NULL,          -- byte range [start_offset, end_offset) of the stream
    end_offset   INTEGER NOT NULL,          --   content (decompressed for a .gz file)
    start_line   INTEGER NOT NULL,          -- line number of the chunk's first line (1-based)
    end_line     INTEGER NOT NULL,          -- lines consumed up to end_offset
    chunk_sha256 TEXT NOT NULL,             -- sha256 of the chunk's bytes
    fp_len       INTEGER NOT NULL,          -- the stream's fingerprint: sha256 of its first
    fp_sha256    TEXT NOT NULL,             --   fp_len bytes (min(end_offset, fingerprint_bytes))
    tail_len     INTEGER NOT NULL,          -- sha256 of the tail_len bytes before end_offset:
    tail_sha256  TEXT NOT NULL,             --   a stream rewritten in place is detected
    committed_at TEXT NOT NULL,
    UNIQUE (stream, start_offset)
);
CREATE INDEX tee_progress_by_stream ON tee_progress(stream, progress_id);
"""
TEE_TABLES = ("tee_streams", "tee_progress")


def _append_only_triggers(tables: tuple[str, ...] = APPEND_ONLY_TABLES) -> str:
    parts = []
    for table in tables:
        for op in ("UPDATE", "DELETE"):
            parts.append(
                f"CREATE TRIGGER {table}_no_{op.lower()} BEFORE {op} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{table} is append-only: {op} refused'); END;"
            )
    return "\n".join(parts)


#: Migration N takes the schema from version N-1 to N. Never edit a shipped migration.
MIGRATIONS: tuple[str, ...] = (
    _TABLES_V1 + _append_only_triggers(),
    _REFERENCE_V2 + _append_only_triggers(REFERENCE_TABLES),
    _TEE_V3 + _append_only_triggers(TEE_TABLES),
)


class StoreError(Exception):
    """The store cannot be opened or used (locked, corrupt, or newer than this code)."""


def connect(path: str | Path, *, create: bool = False) -> apsw.Connection:
    """Open (and migrate) the store at ``path``; without ``create`` a missing store is an error."""
    path = Path(path)
    if not create and not path.exists():
        raise StoreError(f"{path}: no store here (run `surveil init DIR` first)")
    flags = apsw.SQLITE_OPEN_READWRITE | (apsw.SQLITE_OPEN_CREATE if create else 0)
    try:
        con = apsw.Connection(str(path), flags=flags)
        con.set_busy_timeout(30_000)
        con.execute("pragma journal_mode = wal")
        con.execute("pragma synchronous = full")
        con.execute("pragma foreign_keys = on")
        _migrate(con, path)
    except apsw.Error as exc:
        raise StoreError(f"{path}: cannot open store: {exc}") from exc
    return con


def _migrate(con: apsw.Connection, path: Path) -> None:
    version = con.execute("pragma user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"{path}: store schema v{version} is newer than this surveil (v{SCHEMA_VERSION}); "
            "upgrade surveil"
        )
    with con:
        for number in range(version + 1, SCHEMA_VERSION + 1):
            con.execute(MIGRATIONS[number - 1])
            con.execute(f"pragma user_version = {number}")


def rows(con: apsw.Connection, sql: str, params: Iterable[Any] | dict = ()) -> Iterator[dict]:
    """Run ``sql`` and yield each row as a dict keyed by column name."""
    cursor = con.execute(sql, params)
    names: list[str] | None = None
    for row in cursor:
        if names is None:
            names = [d[0] for d in cursor.get_description()]
        yield dict(zip(names, row, strict=True))


def audit(con: apsw.Connection, at: str, user: str, action: str, target: str | None,
          detail: dict[str, Any]) -> None:
    """Append one audit-log row (call inside the caller's transaction)."""
    con.execute(
        "INSERT INTO audit_log(at, user, action, target, detail) VALUES (?, ?, ?, ?, ?)",
        (at, user, action, target, json.dumps(detail, sort_keys=True)),
    )


def parquet_files(data_dir: Path, rel: str) -> list[Path]:
    """The Parquet files behind a ``file_dates.parquet`` entry: one file, or a directory of
    part files (a file ingested in chunks), in part order."""
    path = data_dir / rel
    return sorted(path.glob("*.parquet")) if path.is_dir() else [path]
