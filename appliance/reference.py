"""Reference data: accounts (→ beneficial owner, type), trader aliases, and effective-dated
symbology. Each load is a new immutable version in the store; the current version of each kind
is the latest load, and its content hash is part of the ETL version.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import apsw
import pyarrow as pa

from appliance import store
from appliance.timefmt import now_iso
from connectors.base import InputRefused

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True)
class Kind:
    name: str
    table: str
    columns: tuple[str, ...]
    required: tuple[str, ...]
    key: tuple[str, ...]
    help: str


KINDS: dict[str, Kind] = {
    "accounts": Kind("accounts", "ref_accounts", ("account", "owner", "type"),
                     ("account", "owner", "type"), ("account",),
                     "account → beneficial owner (links accounts for wash trades) and type "
                     "(house, client, market_maker, …)"),
    "traders": Kind("traders", "ref_traders", ("alias", "trader"), ("alias", "trader"),
                    ("alias",), "every name a trader appears under → the canonical trader id"),
    "symbology": Kind("symbology", "ref_symbology",
                      ("symbol", "instrument", "valid_from", "valid_to"),
                      ("symbol", "instrument", "valid_from"), ("symbol", "valid_from"),
                      "symbol as written → instrument, effective from valid_from (inclusive) "
                      "to valid_to (exclusive; empty = open)"),
}  # fmt: skip


def _refuse(path: Path, line: int, reason: str) -> InputRefused:
    return InputRefused(path, f"line {line}", reason, "fix the reference file and load it again")


def _parse(kind: Kind, path: Path, data: bytes) -> list[dict[str, str | None]]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _refuse(path, data[: exc.start].count(b"\n") + 1, "not valid UTF-8") from None
    reader = csv.reader(io.StringIO(text))
    header = [h.strip().lower() for h in next(reader, [])]
    missing = [c for c in kind.columns if c not in header and c in kind.required]
    if missing:
        raise _refuse(path, 1, f"missing required column(s): {', '.join(missing)} "
                               f"(expected header {','.join(kind.columns)})")
    rows: list[dict[str, str | None]] = []
    seen: dict[tuple, int] = {}
    for number, cells in enumerate(reader, start=2):
        if not any(c.strip() for c in cells):
            continue
        if len(cells) != len(header):
            raise _refuse(path, number, f"expected {len(header)} fields, found {len(cells)}")
        rec = {h: c.strip() for h, c in zip(header, cells, strict=True)}
        row = {c: (rec.get(c) or None) for c in kind.columns}
        for c in kind.required:
            if not row[c]:
                raise _refuse(path, number, f"field '{c}' is empty")
        for c in ("valid_from", "valid_to"):
            if c in row and row[c] and not _DATE.match(row[c]):
                raise _refuse(path, number, f"field '{c}' must be YYYY-MM-DD, got {row[c]!r}")
        if kind.name == "accounts":
            row["type"] = row["type"].lower()
        key = tuple(row[c] for c in kind.key)
        if key in seen:
            raise _refuse(path, number, f"duplicate {'/'.join(kind.key)} {key} "
                                        f"(first on line {seen[key]})")
        seen[key] = number
        rows.append(row)
    return rows


def load(con: apsw.Connection, kind_name: str, path: Path, user: str) -> dict[str, Any]:
    """Load a reference file as the new current version of ``kind_name`` (no-op if identical)."""
    kind = KINDS.get(kind_name)
    if kind is None:
        raise KeyError(f"unknown reference kind {kind_name!r}; choose one of: {', '.join(KINDS)}")
    if not path.is_file():
        raise InputRefused(path, "file", "not found or not a regular file")
    data = path.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    current = _current_version(con, kind.name)
    if current and current["sha256"] == sha:
        return {"kind": kind.name, "version": current["version_id"], "rows": current["rows"],
                "status": "unchanged"}
    rows = _parse(kind, path, data)
    now = now_iso()
    with con:
        con.execute("INSERT INTO ref_versions(kind, sha256, path, rows, loaded_at, loaded_by) "
                    "VALUES (?,?,?,?,?,?)", (kind.name, sha, str(path.resolve()), len(rows),
                                             now, user))  # fmt: skip
        version = con.last_insert_rowid()
        cols = ", ".join(("version_id", *kind.columns))
        marks = ", ".join("?" * (len(kind.columns) + 1))
        con.executemany(f"INSERT INTO {kind.table}({cols}) VALUES ({marks})",
                        [(version, *(r[c] for c in kind.columns)) for r in rows])
        store.audit(con, now, user, "reference_load", kind.name,
                    {"path": str(path), "sha256": sha, "rows": len(rows), "version": version})
    return {"kind": kind.name, "version": version, "rows": len(rows), "status": "loaded"}


def _current_version(con: apsw.Connection, kind: str) -> dict[str, Any] | None:
    found = list(store.rows(con, "SELECT * FROM ref_versions WHERE kind = ? "
                                 "ORDER BY version_id DESC LIMIT 1", (kind,)))
    return found[0] if found else None


def current(con: apsw.Connection, kind_name: str) -> pa.Table:
    """The current version of a reference kind as an Arrow table (empty if never loaded)."""
    kind = KINDS[kind_name]
    version = _current_version(con, kind_name)
    schema = pa.schema([(c, pa.string()) for c in kind.columns])
    if version is None:
        return schema.empty_table()
    recs = list(store.rows(con, f"SELECT {', '.join(kind.columns)} FROM {kind.table} "
                                f"WHERE version_id = ? ORDER BY rowid", (version["version_id"],)))
    return pa.Table.from_pylist(recs, schema=schema)


def versions(con: apsw.Connection) -> dict[str, str]:
    """The current content hash of each kind ('' when never loaded)."""
    out = {}
    for name in KINDS:
        v = _current_version(con, name)
        out[name] = v["sha256"] if v else ""
    return out


def digest(con: apsw.Connection) -> str:
    """One hash of the current reference data (part of the ETL version)."""
    canon = "|".join(f"{k}={v}" for k, v in sorted(versions(con).items()))
    return hashlib.sha256(canon.encode()).hexdigest()[:12]
