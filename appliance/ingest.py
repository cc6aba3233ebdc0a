"""Ingest: raw file → connector → cleaning steps → Parquet partitioned by trade date + quarantine.

A file is identified by the SHA-256 of its content, so ingesting the same bytes twice is a no-op
wherever they live. Parquet files are written to a temporary name, fsynced and renamed before the
store records the file, in one transaction: a crash leaves either nothing recorded (the next
attempt rewrites the same Parquet names) or everything.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import apsw
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from appliance import reference, store
from appliance.clean import CleanContext, apply_steps, etl_version
from appliance.config import Config
from appliance.schema import QUARANTINE
from appliance.timefmt import now_iso
from connectors import get_connector
from connectors.base import InputRefused


@dataclass
class FileReport:
    """What happened to one input file (the JSON ``surveil ingest --json`` prints per file)."""

    path: str
    file_id: str
    format: str
    status: str  # ingested | already_ingested
    rows: int = 0
    accepted: int = 0
    quarantined: int = 0
    ignored: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    trade_dates: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _write_parquet(table: pa.Table, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".tmp")
    pq.write_table(table, tmp, compression="zstd")
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, dest)


def _trade_dates(ts: pa.ChunkedArray | pa.Array, tz: str) -> pa.Array:
    local = pc.cast(ts, pa.timestamp("ns", tz=tz))
    return pc.strftime(local, format="%Y-%m-%d")


def _raw_lines(data: bytes, base: int, offsets: np.ndarray) -> pa.Array:
    """The raw record at each byte offset (up to its newline): evidence for cleaning rejects.

    ``data`` holds the bytes from offset ``base`` of the original file (0 for a whole file).
    """
    buf = np.frombuffer(data, np.uint8)
    local = np.asarray(offsets, np.int64) - base
    newlines = np.flatnonzero(buf == 10)
    pos = np.searchsorted(newlines, local)
    ends = np.where(pos < newlines.size, newlines[np.minimum(pos, newlines.size - 1)], buf.size)
    return pa.array([data[s:e].rstrip(b"\r") for s, e in zip(local, ends, strict=True)],
                    pa.binary())


RawBytes = Callable[[], tuple[bytes, int]]


def _clean_rejects(path: Path, fid: str, events: pa.Table, rejected,
                   raw: RawBytes) -> tuple[pa.Table, Counter]:
    reasons: Counter[str] = Counter()
    parts = []
    for rows, reason, field_name, step in rejected:
        reasons[reason] += len(rows)
        picked = events.take(pa.array(rows))
        offsets = picked.column("offset").to_numpy()
        n = len(rows)
        parts.append(pa.table({
            "source": pa.array([fid] * n, pa.string()),
            "path": pa.array([str(path)] * n, pa.string()),
            "line": picked.column("line"),
            "offset": picked.column("offset"),
            "step": pa.array([f"clean:{step}"] * n, pa.string()),
            "field": pa.array([field_name] * n, pa.string()),
            "reason": pa.array([reason] * n, pa.string()),
            "raw": _raw_lines(*raw(), offsets),
        }, schema=QUARANTINE))  # fmt: skip
    if not parts:
        return QUARANTINE.empty_table(), reasons
    return pa.concat_tables(parts), reasons


def ingest_file(cfg: Config, con: apsw.Connection, path: Path, fmt: str, user: str,
                mapping: str | None = None) -> FileReport:
    """Ingest one file (a no-op when its content was ingested before).

    ``mapping`` is passed to connectors described by a mapping file (``vendor``).
    """
    connector = get_connector(fmt, mapping) if mapping is not None else get_connector(fmt)
    if not path.is_file():
        raise InputRefused(path, "file", "not found or not a regular file",
                           "check the path and permissions")
    sha = file_sha256(path)
    fid = sha[:16]
    report = FileReport(str(path), fid, fmt, "ingested")
    known = list(store.rows(con, "SELECT * FROM files WHERE sha256 = ?", (sha,)))
    if known:
        prior = known[0]
        report.status = "already_ingested"
        for key in ("rows", "accepted", "quarantined", "ignored"):
            setattr(report, key, prior[key])
        report.reasons = json.loads(prior["reasons"])
        return report

    result = connector.read(path, fid)
    written = _clean_and_write(cfg, con, connector, result, report, path,
                               lambda: (path.read_bytes(), 0))
    _record(con, report, sha, str(path.resolve()), path.stat().st_size, connector.kind, written,
            user, {"path": str(path), "format": fmt, "rows": report.rows})
    return report


def ingest_range(cfg: Config, con: apsw.Connection, *, data: bytes, path: Path, fmt: str,
                 fid: str, sha: str, start: int, first_line: int, header: bytes | None,
                 user: str, audit_detail: dict[str, Any],
                 record: Callable[[apsw.Connection], None]) -> FileReport:
    """Ingest ``data``, the complete lines [start, start + len(data)) of ``path``, as file ``fid``.

    Provenance stays relative to the original file: ``offset`` += start and ``line`` +=
    first_line - 1. ``header`` (a CSV header line, with its newline) is parsed in front of the
    lines when the range does not begin with it. The Parquet names depend on ``fid`` only, so a
    retry after a crash rewrites them; ``record(con)`` runs inside the store transaction that
    records the range (the tee's progress row).
    """
    connector = get_connector(fmt)
    report = FileReport(str(path), fid, fmt, "ingested")
    tmp = cfg.data_dir / "tmp" / f"{fid}.lines"
    tmp.parent.mkdir(parents=True, exist_ok=True)
    prefix = header or b""
    try:
        with open(tmp, "wb") as fh:
            fh.write(prefix)
            fh.write(data)
        try:
            result = connector.read(tmp, fid)
        except InputRefused as exc:
            raise InputRefused(path, f"bytes {start}-{start + len(data)}: {exc.where}",
                               exc.reason, exc.hint) from None
    finally:
        tmp.unlink(missing_ok=True)
    shift_off, shift_line = start - len(prefix), first_line - 1 - (1 if header else 0)
    result.events = _shift(result.events, shift_off, shift_line)
    result.quarantine = _shift(result.quarantine, shift_off, shift_line, path)
    written = _clean_and_write(cfg, con, connector, result, report, path, lambda: (data, start))
    _record(con, report, sha, str(path), len(data), connector.kind, written, user,
            {"path": str(path), "format": fmt, "rows": report.rows, **audit_detail}, record)
    return report


def _shift(table: pa.Table, offset: int, line: int, path: Path | None = None) -> pa.Table:
    """Move provenance from a temporary file's coordinates to the original file's."""
    if not table.num_rows:
        return table
    for name, delta in (("offset", offset), ("line", line)):
        i = table.schema.get_field_index(name)
        col = pc.add(table.column(name), pa.scalar(delta, table.schema.field(name).type))
        table = table.set_column(i, table.schema.field(name), col)
    if path is not None:
        i = table.schema.get_field_index("path")
        table = table.set_column(i, table.schema.field("path"),
                                 pa.array([str(path)] * table.num_rows, pa.string()))
    return table


def _clean_and_write(cfg: Config, con: apsw.Connection, connector, result, report: FileReport,
                     path: Path, raw: RawBytes) -> list[tuple[str, int, str]]:
    """Clean the connector's rows, fill ``report``, write the Parquet files; return their rows."""
    fid = report.file_id
    ctx = CleanContext(traders=reference.current(con, "traders"),
                       symbology=reference.current(con, "symbology"))
    kept, rejected = apply_steps(result.events, connector.kind, ctx)
    clean_q, clean_reasons = _clean_rejects(path, fid, result.events, rejected, raw)
    quarantine = pa.concat_tables([result.quarantine, clean_q])
    reasons = result.reasons + clean_reasons

    report.rows, report.ignored = result.rows, result.ignored
    report.accepted, report.quarantined = kept.num_rows, quarantine.num_rows
    report.reasons = dict(sorted(reasons.items()))
    if report.accepted + report.quarantined + report.ignored != report.rows:
        raise AssertionError(f"{path}: record balance broken in cleaning: {report}")

    data_dir = cfg.data_dir
    kept = kept.sort_by([("ts", "ascending"), ("line", "ascending")])
    dates = _trade_dates(kept.column("ts"), cfg.get("ingest.trade_date_tz"))
    written: list[tuple[str, int, str]] = []
    for day in sorted(pc.unique(dates).to_pylist()):
        part = kept.filter(pc.equal(dates, day))
        rel = f"events/{connector.kind}/trade_date={day}/{fid}.parquet"
        _write_parquet(part, data_dir / rel)
        written.append((day, part.num_rows, rel))
        report.trade_dates[day] = part.num_rows
    if quarantine.num_rows:
        _write_parquet(quarantine.sort_by([("offset", "ascending")]),
                       data_dir / f"quarantine/{fid}.parquet")
    return written


def _record(con: apsw.Connection, report: FileReport, sha: str, path: str, size: int, kind: str,
            written: list[tuple[str, int, str]], user: str, detail: dict[str, Any],
            extra: Callable[[apsw.Connection], None] | None = None) -> None:
    """One transaction: the files row, its trade dates, the audit row (and ``extra``)."""
    now = now_iso()
    with con:
        con.execute(
            "INSERT INTO files VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (report.file_id, sha, path, size, report.format, kind,
             report.rows, report.accepted, report.quarantined, report.ignored,
             json.dumps(report.reasons, sort_keys=True), etl_version(reference.digest(con)), now,
             user),
        )  # fmt: skip
        for day, n, rel in written:
            con.execute("INSERT INTO file_dates VALUES (?,?,?,?)", (report.file_id, day, n, rel))
        store.audit(con, now, user, "ingest", report.file_id, detail)
        if extra is not None:
            extra(con)
