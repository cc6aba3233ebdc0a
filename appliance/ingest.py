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
from appliance.allocator import keep_freed_memory
from appliance.clean import CleanContext, apply_steps, etl_version, resends
from appliance.config import Config
from appliance.schema import QUARANTINE
from appliance.timefmt import now_iso
from connectors import get_connector
from connectors.base import InputRefused, ReadResult


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


#: rows per Parquet row group: the unit of work of the scoring run's parallel spool
ROW_GROUP_ROWS = 1 << 17


def _write_parquet(table: pa.Table, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".tmp")
    pq.write_table(table, tmp, compression="zstd", row_group_size=ROW_GROUP_ROWS)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, dest)


#: UTC offsets and their changes (DST, midnight) fall on multiples of 15 minutes in every zone
_QUARTER_NS = 900 * 10**9


def _trade_dates(ts: pa.ChunkedArray | pa.Array, tz: str) -> pa.Array:
    """The local date (``YYYY-MM-DD`` in ``tz``) of each timestamp. Formatted once per distinct
    UTC quarter hour, not per row (``strftime`` costs about a microsecond a row): within a
    quarter hour the offset and the local date cannot change."""
    arr = ts.combine_chunks() if isinstance(ts, pa.ChunkedArray) else ts
    ns = pc.fill_null(arr.cast(pa.int64()), 0).to_numpy()
    quarters, inverse = np.unique(ns // _QUARTER_NS, return_inverse=True)
    starts = pa.array(quarters * _QUARTER_NS, pa.timestamp("ns", tz="UTC"))
    local = pc.cast(starts, pa.timestamp("ns", tz=tz))
    dates = pc.take(pc.strftime(local, format="%Y-%m-%d"), pa.array(inverse.ravel()))
    if arr.null_count:
        dates = pc.if_else(pc.is_null(arr), pa.scalar(None, pa.string()), dates)
    return dates


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


#: Formats read in chunks when a file is larger than ``ingest.chunk_bytes``. ``lobster`` is read
#: whole: a LOBSTER message file is read together with its order-book sibling line by line.
CHUNKED = frozenset({"csv", "md-csv", "fix", "cat-json", "vendor"})
#: Chunked formats whose records depend on earlier records (order chains, duplicates; vendor:
#: skipped lines, the header and duplicate lines, see ``VendorCarry``): their chunks are read in
#: order, each with the state (``carry``) the previous one left.
STATEFUL = frozenset({"fix", "cat-json", "vendor"})


def ingest_file(cfg: Config, con: apsw.Connection, path: Path, fmt: str, user: str,
                mapping: str | None = None, *, ray_module=None) -> FileReport:
    """Ingest one file (a no-op when its content was ingested before).

    ``mapping`` is passed to connectors described by a mapping file (``vendor``). A file larger
    than ``ingest.chunk_bytes`` of a format in ``CHUNKED`` is read in chunks of complete lines
    (memory bounded by the chunk size); with ``ray_module`` the chunks are Ray tasks.
    """
    return ingest_files(cfg, con, [path], fmt, user, mapping, ray_module=ray_module)[0]


def ingest_files(cfg: Config, con: apsw.Connection, paths: list[Path], fmt: str, user: str,
                 mapping: str | None = None, *, mode: str | None = None,
                 ray_module=None) -> list[FileReport]:
    """Ingest several files of one format. In ``ray`` mode (``auto``: when the files hold more
    than ``ingest.inprocess_max_bytes``) the files run concurrently as Ray tasks
    (``_ingest_concurrent``), else one after the other in this process. The results (reports,
    store rows in input order, Parquet files) do not depend on the mode or the chunk size."""
    keep_freed_memory()
    connector = get_connector(fmt, mapping) if mapping is not None else get_connector(fmt)
    for path in paths:
        if not path.is_file():
            raise InputRefused(path, "file", "not found or not a regular file",
                               "check the path and permissions")
    chunk = int(cfg.get("ingest.chunk_bytes"))
    mode = mode or cfg.get("ingest.mode")
    if mode == "auto":
        total = sum(p.stat().st_size for p in paths if fmt in CHUNKED)
        mode = "ray" if total > int(cfg.get("ingest.inprocess_max_bytes")) else "inprocess"
    if ray_module is None and mode == "ray" and fmt in CHUNKED:
        from appliance.pipeline import ray_session

        with ray_session(cfg) as ray:
            return ingest_files(cfg, con, paths, fmt, user, mapping, mode="ray", ray_module=ray)
    ctx = CleanContext(traders=reference.current(con, "traders"),
                       symbology=reference.current(con, "symbology"))
    if ray_module is not None and fmt in CHUNKED:
        return _ingest_concurrent(cfg, con, paths, fmt, user, mapping, ctx, ray_module)
    reports: list[FileReport] = []
    for path in paths:
        plan = _plan(path, fmt, chunk, connector)
        report = _already_ingested(con, plan.path, plan.sha, fmt)
        if report is None:
            if fmt not in CHUNKED or len(plan.ranges) <= 1:
                done = _whole_file(cfg, connector, fmt, path, plan.fid, ctx)
            else:
                _clear_parts(cfg, plan.fid)  # a crashed attempt's parts
                done = _chunked_inprocess(cfg, connector, plan, ctx)
            _record_done(cfg, con, plan, done, user)
            report = done.report
        reports.append(report)
    return reports


def _connector(fmt: str, mapping: Any) -> Any:
    return get_connector(fmt, mapping) if mapping is not None else get_connector(fmt)


def _already_ingested(con: apsw.Connection, path: Path, sha: str,
                      fmt: str) -> FileReport | None:
    """The report of a file whose content the store holds already (``None``: it does not)."""
    known = list(store.rows(con, "SELECT * FROM files WHERE sha256 = ?", (sha,)))
    if not known:
        return None
    prior = known[0]
    report = FileReport(str(path), sha[:16], fmt, "already_ingested")
    for key in ("rows", "accepted", "quarantined", "ignored"):
        setattr(report, key, prior[key])
    report.reasons = json.loads(prior["reasons"])
    return report


@dataclass
class _Done:
    """One file's work, done in this process or in a Ray task: its report and what the store
    records about it (``_record_done``, in the driver, in input order)."""

    report: FileReport
    kind: str
    written: list[tuple[str, int, str]]  # (trade date, rows, Parquet path relative to data)
    detail: dict[str, Any]  # the audit row's
    chunked: bool = False  # its part files were under ``_parts_dir`` (removed once recorded)


def _whole_file(cfg: Config, connector, fmt: str, path: Path, fid: str,
                ctx: CleanContext) -> _Done:
    """A file read whole (at most one chunk, or a format never chunked): parse, clean, write.
    Memory: the file (at most ``ingest.chunk_bytes`` for a chunked format)."""
    report = FileReport(str(path), fid, fmt, "ingested")
    result = connector.read(path, fid)
    written = _clean_and_write(cfg, None, connector, result, report, path,
                               lambda: (path.read_bytes(), 0), ctx=ctx)
    return _Done(report, connector.kind, written,
                 {"path": str(path), "format": fmt, "rows": report.rows})


def _record_done(cfg: Config, con: apsw.Connection, plan: _Plan, done: _Done,
                 user: str) -> None:
    """The store transaction of a file whose Parquet files are written (durably)."""
    _record(con, done.report, plan.sha, str(plan.path.resolve()), plan.size, done.kind,
            done.written, user, done.detail)
    if done.chunked:
        _clear_parts(cfg, plan.fid)


def _clear_parts(cfg: Config, fid: str) -> None:
    import shutil

    shutil.rmtree(_parts_dir(cfg, fid), ignore_errors=True)


@dataclass
class _Plan:
    path: Path
    fmt: str
    sha: str
    fid: str
    size: int
    chunk_bytes: int
    ranges: list[tuple[int, int, int]]  # (start, end, first line) of each chunk
    preamble: bytes  # the header (CSV) parsed in front of every chunk but the first
    mapping: Any = None  # vendor: the mapping that applies to the file (sidecar resolved)


def _line_ends(data: bytes, fmt: str) -> int:
    """Lines ended in ``data`` as the format's scanner counts them (FIX: a lone CR too)."""
    n = data.count(b"\n")
    if fmt == "fix" and b"\r" in data:  # a memchr: most logs have no CR, skip two counts
        n += data.count(b"\r") - data.count(b"\r\n")
    return n


def _plan(path: Path, fmt: str, chunk_bytes: int, connector=None) -> _Plan:
    """One streaming pass: the file's SHA-256 and its chunks of complete lines (the tee's
    ``complete_lines``), with the first line number of each. Memory: one chunk.

    A connector with a mapping (``vendor``) is bound to ``path`` on a copy: chunks are read from
    temporary files, where no sidecar mapping sits, and the mapping decides ``connector.kind``
    (set here, per file, for the chunked path that never calls ``connector.read``)."""
    from appliance.tee import HEADER_FORMATS, _first_record_split, _Plain, complete_lines

    mapping = None
    if hasattr(connector, "bind"):
        bound = type(connector)(connector.mapping)
        try:
            bound.bind(path)
            mapping, connector.kind = bound.mapping, bound.kind
        except InputRefused:
            pass  # no or a bad mapping: reading the file whole refuses it with the reason
    digest = hashlib.sha256()
    ranges: list[tuple[int, int, int]] = []
    preamble = b""
    reader = _Plain(path)
    try:
        start, line = 0, 1
        while (data := complete_lines(reader, start, chunk_bytes, at_eof=True)) is not None:
            digest.update(data)
            # a stateful format's carry holds its header (vendor), it needs no preamble
            if not ranges and fmt in HEADER_FORMATS and fmt not in STATEFUL:
                preamble = _first_record_split(data, True)[0] or b""
            ranges.append((start, start + len(data), line))
            start += len(data)
            line += _line_ends(data, fmt)
    finally:
        reader.close()
    sha = digest.hexdigest()
    if fmt in HEADER_FORMATS and fmt not in STATEFUL and not preamble and len(ranges) > 1:
        ranges = [(0, start, 1)]  # no header in the first chunk: read the file whole
    if fmt in STATEFUL and len(ranges) > 1 and hasattr(connector, "bind") and mapping is None:
        ranges = [(0, start, 1)]  # no usable mapping: the whole-file read refuses the file
    return _Plan(path, fmt, sha, sha[:16], start, chunk_bytes, ranges, preamble, mapping)


@dataclass
class _ChunkOut:
    """What one chunk left behind: its part files and its share of the report."""

    index: int
    rows: int = 0
    accepted: int = 0
    quarantined: int = 0
    ignored: int = 0
    reasons: Counter = field(default_factory=Counter)
    dates: dict[str, int] = field(default_factory=dict)  # trade date -> rows in its part
    quarantine: bool = False
    span: tuple[int, int] = (0, 0)  # the bytes its lines came from (raw evidence of resends)
    indexed: int = 0  # rows in its resend index (appliance.clean.resends), -1: none written


def _parts_dir(cfg: Config, fid: str) -> Path:
    return cfg.data_dir / "tmp" / "parts" / fid


def _part(cfg: Config, fid: str, what: str, k: int) -> Path:
    """Deterministic part names (a retry after a crash rewrites the same ones)."""
    return _parts_dir(cfg, fid) / f"{what}-{k:06d}.parquet"


def read_range(connector, data: bytes, *, path: Path, fid: str, start: int, first_line: int,
               preamble: bytes | None, tmp_dir: Path, **kwargs) -> ReadResult:
    """Read ``data``, the complete lines [start, start + len(data)) of ``path`` (whose line
    ``first_line`` starts at ``start``), as file ``fid``; ``preamble`` (a CSV header line) is
    parsed in front of them when they do not begin the file, and not counted. Provenance is
    relative to ``path``. ``kwargs`` go to ``connector.read`` (``carry``, ``tail_limit``); a
    carry holds what the connector needs of earlier lines (vendor: the header), so no preamble
    is parsed with one. A mapping-driven connector (vendor) is bound to ``path`` first: the
    temporary file has no sidecar mapping next to it."""
    prefix = (preamble or b"") if kwargs.get("carry") is None else b""
    if hasattr(connector, "bind") and connector.mapping is None:
        connector.bind(path)
    tmp = tmp_dir / f"{fid}-{start}-{os.getpid()}.lines"
    tmp.parent.mkdir(parents=True, exist_ok=True)
    try:
        if prefix:  # what the preamble alone counts (blank or header lines): not this range's
            tmp.write_bytes(prefix)
            alone = connector.read(tmp, fid)
            if alone.accepted or alone.quarantined:
                raise InputRefused(path, f"bytes {start}-{start + len(data)}",
                                   "the header line parses as a record")
        with open(tmp, "wb") as fh:
            fh.write(prefix)
            fh.write(data)
        try:
            result = connector.read(tmp, fid, **kwargs)
        except InputRefused as exc:
            raise InputRefused(path, f"bytes {start}-{start + len(data)}: {exc.where}",
                               exc.reason, exc.hint) from None
    finally:
        tmp.unlink(missing_ok=True)
    if prefix:
        result.rows -= alone.rows
        result.ignored -= alone.ignored
        if hasattr(result, "consumed"):
            result.consumed -= len(prefix)  # type: ignore[attr-defined]
    shift_off = start - len(prefix)
    shift_line = first_line - 1 - _line_ends(prefix, connector.name)
    result.events = _shift(result.events, shift_off, shift_line)
    result.quarantine = _shift(result.quarantine, shift_off, shift_line, path)
    return result


def _chunk_work(cfg: Config, connector, path: Path, fid: str, k: int, data: bytes, start: int,
                first_line: int, preamble: bytes | None, ctx: CleanContext,
                **kwargs) -> tuple[_ChunkOut, ReadResult]:
    """Parse, clean and write one chunk's part files."""
    result = read_range(connector, data, path=path, fid=fid, start=start,
                        first_line=first_line, preamble=preamble,
                        tmp_dir=cfg.data_dir / "tmp", **kwargs)
    kept, rejected = apply_steps(result.events, connector.kind, ctx)
    clean_q, clean_reasons = _clean_rejects(path, fid, result.events, rejected,
                                            lambda: (data, start))
    quarantine = pa.concat_tables([result.quarantine, clean_q])
    out = _ChunkOut(k, result.rows, kept.num_rows, quarantine.num_rows, result.ignored,
                    result.reasons + clean_reasons)
    if out.accepted + out.quarantined + out.ignored != out.rows:
        raise AssertionError(f"{path}: record balance broken in chunk {k}: {out}")
    kept = kept.sort_by([("ts", "ascending"), ("line", "ascending")])
    dates = _trade_dates(kept.column("ts"), cfg.get("ingest.trade_date_tz"))
    for day in sorted(pc.unique(dates).to_pylist()):
        part = kept.filter(pc.equal(dates, day))
        _write_parquet(part, _part(cfg, fid, f"events-{day}", k))
        out.dates[day] = part.num_rows
    if quarantine.num_rows:
        _write_parquet(quarantine.sort_by([("offset", "ascending")]),
                       _part(cfg, fid, "quarantine", k))
        out.quarantine = True
    out.span, out.indexed = (start, start + len(data)), -1
    if resends.applies(connector.kind):  # resends of rows kept by other chunks: found later
        index = resends.build_index(kept, dates, k)
        _index_path(cfg, fid, k).parent.mkdir(parents=True, exist_ok=True)
        np.save(_index_path(cfg, fid, k), index)  # scratch like the parts: no fsync needed
        out.indexed = index.shape[1]
    return out, result


def _index_path(cfg: Config, fid: str, k: int) -> Path:
    return _parts_dir(cfg, fid) / f"resends-{k:06d}.npy"


def _read_slice(path: Path, start: int, end: int) -> bytes:
    with open(path, "rb") as fh:
        fh.seek(start)
        return fh.read(end - start)


def _run_chunk(cfg: Config, fmt: str, mapping, plan: _Plan, k: int,
               ctx: CleanContext) -> _ChunkOut:
    """One chunk of a stateless format (a Ray task, or called in-process)."""
    connector = get_connector(fmt, mapping) if mapping is not None else get_connector(fmt)
    start, end, line = plan.ranges[k]
    data = _read_slice(plan.path, start, end)
    return _chunk_work(cfg, connector, plan.path, plan.fid, k, data, start, line,
                       plan.preamble if k else None, ctx)[0]


def _run_stateful(cfg: Config, fmt: str, plan: _Plan, ctx: CleanContext) -> list[_ChunkOut]:
    """Every chunk of a stateful format, in order, each with the previous one's carry. A FIX
    chunk may stop early (``tail_limit``) so that a request and its answer share a chunk.

    A headerless delimited vendor file is parsed with its first chunk's most common field count;
    when the whole file's turns out different (``VendorCarry.exact``), the chunks are read again
    with that one (rare: the part files of the first pass are overwritten, same names)."""
    outs, carry = _stateful_pass(cfg, fmt, plan, ctx, _empty_carry(fmt))
    if hasattr(carry, "exact") and not carry.exact():
        outs, carry = _stateful_pass(cfg, fmt, plan, ctx,
                                     carry_class(fmt)(width=int(carry.hist.argmax())))
    return outs


def _stateful_pass(cfg: Config, fmt: str, plan: _Plan, ctx: CleanContext,
                   carry: Any) -> tuple[list[_ChunkOut], Any]:
    from appliance.tee import _Plain, complete_lines

    connector = get_connector(fmt, plan.mapping) if plan.mapping is not None else \
        get_connector(fmt)
    outs: list[_ChunkOut] = []
    reader = _Plain(plan.path)
    try:
        start, line, k = 0, 1, 0
        while (data := complete_lines(reader, start, plan.chunk_bytes, at_eof=True)) is not None:
            last = start + len(data) >= plan.size
            extra = {"tail_limit": plan.chunk_bytes // 2} if fmt == "fix" and not last else {}
            out, result = _chunk_work(cfg, connector, plan.path, plan.fid, k, data, start, line,
                                      None, ctx, carry=carry, **extra)
            carry = result.carry  # type: ignore[attr-defined]
            used = getattr(result, "consumed", len(data))
            outs.append(out)
            line += _line_ends(data if used == len(data) else data[:used], fmt)
            start += used
            k += 1
    finally:
        reader.close()
    return outs, carry


def carry_class(fmt: str) -> Any:
    """The carry type of a format in ``STATEFUL``: ``empty()``, ``replay(deltas)`` and, after a
    chunk, ``delta`` (a ``pa.Table`` the tee persists per committed range)."""
    if fmt == "fix":
        from connectors.fix import FixCarry

        return FixCarry
    if fmt == "cat-json":
        from connectors.cat_json import CatCarry

        return CatCarry
    if fmt == "vendor":
        from connectors.vendor import VendorCarry

        return VendorCarry
    raise ValueError(f"{fmt}: not a stateful format")


def _empty_carry(fmt: str) -> Any:
    return carry_class(fmt).empty()


def _chunked_inprocess(cfg: Config, connector, plan: _Plan, ctx: CleanContext) -> _Done:
    """A file of several chunks, in this process: its chunks in order, then ``_finish_chunked``."""
    mapping = getattr(connector, "mapping", None)
    if plan.fmt in STATEFUL:
        outs = _run_stateful(cfg, plan.fmt, plan, ctx)
    else:
        outs = [_run_chunk(cfg, plan.fmt, mapping, plan, k, ctx)
                for k in range(len(plan.ranges))]
    return _finish_chunked(cfg, plan, connector.kind, outs)


def _stateful_file(cfg: Config, plan: _Plan, kind: str, ctx: CleanContext) -> _Done:
    """A stateful file of several chunks, whole: its chunk chain and its finish (a Ray task:
    the unit of parallelism of a stateful format is the file)."""
    return _finish_chunked(cfg, plan, kind, _run_stateful(cfg, plan.fmt, plan, ctx))


def _finish_chunked(cfg: Config, plan: _Plan, kind: str, outs: list[_ChunkOut]) -> _Done:
    """Chunks' part files → resends across chunks dropped → per trade date a directory of the
    parts (renamed, not copied) and one quarantine file merged part by part (bounded memory);
    the store transaction is the caller's (``_record_done``)."""
    report = FileReport(str(plan.path), plan.fid, plan.fmt, "ingested")
    outs = sorted(outs, key=lambda o: o.index)
    if len(outs) > 1 and all(o.indexed >= 0 for o in outs):
        _resends_across_chunks(cfg, plan, outs)
    reasons: Counter[str] = Counter()
    for o in outs:
        report.rows += o.rows
        report.accepted += o.accepted
        report.quarantined += o.quarantined
        report.ignored += o.ignored
        reasons.update(o.reasons)
        for day, n in o.dates.items():
            report.trade_dates[day] = report.trade_dates.get(day, 0) + n
    report.reasons = dict(sorted(reasons.items()))
    report.trade_dates = dict(sorted(report.trade_dates.items()))
    if report.accepted + report.quarantined + report.ignored != report.rows:
        raise AssertionError(f"{plan.path}: record balance broken: {report}")
    written: list[tuple[str, int, str]] = []
    for day, n in report.trade_dates.items():
        rel = f"events/{kind}/trade_date={day}/{plan.fid}"
        _move_parts([_part(cfg, plan.fid, f"events-{day}", o.index) for o in outs
                     if day in o.dates], cfg.data_dir / rel)
        written.append((day, n, rel))
    if report.quarantined:
        _merge_parts([_part(cfg, plan.fid, "quarantine", o.index) for o in outs
                      if o.quarantine], cfg.data_dir / f"quarantine/{plan.fid}.parquet")
    return _Done(report, kind, written, {"path": str(plan.path), "format": plan.fmt,
                                         "rows": report.rows, "chunks": len(outs)}, True)


def _plan_task(path: Path, fmt: str, chunk_bytes: int, mapping: Any) -> tuple[_Plan, str]:
    """``_plan`` as a Ray task, with the kind it decides (``connector.kind``, per file for a
    mapping-driven format; the task's connector is a copy, so it is returned)."""
    connector = _connector(fmt, mapping)
    plan = _plan(path, fmt, chunk_bytes, connector)
    return plan, connector.kind


def _whole_file_task(cfg: Config, fmt: str, mapping: Any, path: Path, fid: str,
                     ctx: CleanContext) -> _Done:
    return _whole_file(cfg, _connector(fmt, mapping), fmt, path, fid, ctx)


@dataclass
class _Refusal:
    """An ``InputRefused`` raised in a Ray task, returned as a value: the exception does not
    survive Ray's pickling (its ``__init__`` takes more than its message), and the driver raises
    it as in-process mode would."""

    path: str
    where: str
    reason: str
    hint: str


def _in_task(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` in a Ray task, a refusal returned as a ``_Refusal``."""
    keep_freed_memory()
    try:
        return fn(*args)
    except InputRefused as exc:
        return _Refusal(exc.path, exc.where, exc.reason, exc.hint)


def _ingest_concurrent(cfg: Config, con: apsw.Connection, paths: list[Path], fmt: str,
                       user: str, mapping: str | None, ctx: CleanContext,
                       ray_module) -> list[FileReport]:
    """``ingest_files`` in ``ray`` mode: the files of the call run concurrently as Ray tasks,
    at most one task per CPU in flight, and the driver only decides and records.

    Tasks: each file's plan (SHA-256 and chunks, ``_plan``); then a file of at most one chunk
    is one task (read whole), a stateful file's chunk chain is one task (``_stateful_file``:
    the file is the unit of parallelism of FIX, CAT and vendor files), a stateless file's
    chunks are tasks followed by a finish task. Earlier files' tasks go first, so files are
    finished about in input order and the driver holds a few plans and chunk summaries only.

    Same results as in-process mode: plans are decided in input order (the content is in the
    store, or an earlier file of this call has it: ``already_ingested``, no task), and each
    file's store transaction is made in input order, so reports, store rows and Parquet files
    are those of the serial loop. A failing file raises (as in-process) once the files before
    it are recorded; files after it are not recorded (their parts are cleared on a retry)."""
    import heapq

    chunk = int(cfg.get("ingest.chunk_bytes"))
    limit = max(1, int(ray_module.cluster_resources().get("CPU", 1)))
    ctx_ref = ray_module.put(ctx)
    task = ray_module.remote(_in_task)
    remote = {"plan": _plan_task, "whole": _whole_file_task, "chain": _stateful_file,
              "chunk": _run_chunk, "finish": _finish_chunked}
    n = len(paths)
    plans: dict[int, tuple[_Plan, str]] = {}
    outs: dict[int, list[_ChunkOut]] = {}
    done: dict[int, _Done | None] = {}  # None: already ingested, no work
    failed: dict[int, BaseException] = {}
    seen: set[str] = set()  # contents this call ingests (a later copy is already_ingested)
    queue: list[tuple[int, int, int, str]] = [(i, 0, 0, "plan") for i in range(n)]
    running: dict[Any, tuple[int, str, int]] = {}
    decided = recorded = 0
    reports: list[FileReport] = []

    def submit(i: int, what: str, k: int) -> Any:
        fn = remote[what]
        if what == "plan":
            return task.remote(fn, paths[i], fmt, chunk, mapping)
        plan, kind = plans[i]
        if what == "whole":
            return task.remote(fn, cfg, fmt, mapping, plan.path, plan.fid, ctx_ref)
        if what == "chain":
            return task.remote(fn, cfg, plan, kind, ctx_ref)
        if what == "chunk":
            return task.remote(fn, cfg, fmt, mapping, plan, k, ctx_ref)
        return task.remote(fn, cfg, plan, kind, outs[i])

    try:
        while True:
            while decided < n and (decided in plans or decided in failed):
                i, decided = decided, decided + 1
                if i in failed:
                    continue
                plan, _ = plans[i]
                if plan.sha in seen or _already_ingested(con, plan.path, plan.sha, fmt):
                    done[i] = None  # its report is read from the store when its turn comes
                    continue
                seen.add(plan.sha)
                if len(plan.ranges) <= 1:
                    heapq.heappush(queue, (i, 1, 0, "whole"))
                    continue
                _clear_parts(cfg, plan.fid)  # a crashed attempt's parts
                if fmt in STATEFUL:
                    heapq.heappush(queue, (i, 1, 0, "chain"))
                else:
                    outs[i] = []
                    for k in range(len(plan.ranges)):
                        heapq.heappush(queue, (i, 1, k, "chunk"))
            while recorded < n and (recorded in done or recorded in failed):
                i, recorded = recorded, recorded + 1
                if i in failed:
                    raise failed[i]
                result, plan = done.pop(i), plans.pop(i)[0]
                if result is None:
                    report = _already_ingested(con, plan.path, plan.sha, fmt)
                    assert report is not None, plan.path
                else:
                    _record_done(cfg, con, plan, result, user)
                    report = result.report
                reports.append(report)
            if recorded == n:
                return reports
            while queue and len(running) < limit:
                i, _, k, what = heapq.heappop(queue)
                if i not in failed:  # the rest of a failed file is not worth running
                    running[submit(i, what, k)] = (i, what, k)
            if not running:
                raise AssertionError(f"ingest stalled at file {recorded} of {n}")
            (ref,), _ = ray_module.wait(list(running), num_returns=1)
            i, what, k = running.pop(ref)
            try:
                value = ray_module.get(ref)
            except Exception as exc:  # noqa: BLE001 - raised in input order, see above
                failed.setdefault(i, exc)
                continue
            if isinstance(value, _Refusal):
                failed.setdefault(i, InputRefused(value.path, value.where, value.reason,
                                                  value.hint))
            elif what == "plan":
                plans[i] = value
            elif what == "chunk":
                outs[i].append(value)
                if len(outs[i]) == len(plans[i][0].ranges):
                    heapq.heappush(queue, (i, 2, 0, "finish"))
            else:
                done[i] = value
                outs.pop(i, None)
    finally:
        for ref in running:  # an error: do not leave tasks writing parts behind
            ray_module.cancel(ref)


#: Fewest index entries a hash range (and a verification batch) of the resend check holds.
RESEND_MIN_BUDGET = 1 << 16


def _resends_across_chunks(cfg: Config, plan: _Plan, outs: list[_ChunkOut]) -> None:
    """``drop_resent_duplicates`` across chunks: a kept row equal to one an earlier chunk kept
    moves from its chunk's event part to its quarantine part, as the whole-file step would have
    quarantined it; ``outs`` are updated. Memory: about one chunk — the chunks' memory-mapped
    resend indexes are walked hash range by hash range, hash matches across chunks are read
    back from the parts and compared in full in batches of about a chunk's rows (the verdicts
    go to small files), then each chunk with resends has its affected parts rewritten."""
    fid, by_k = plan.fid, {o.index: o for o in outs}
    indexes = [resends.load_index(_index_path(cfg, fid, o.index)) for o in outs]
    budget = max(max(o.indexed for o in outs), RESEND_MIN_BUDGET)
    spill = _parts_dir(cfg, fid)

    def parts(k: int) -> list[tuple[Path, int]]:
        return [(_part(cfg, fid, f"events-{d}", k), n) for d, n in sorted(by_k[k].dates.items())]

    def verify(batch: list[np.ndarray], b: int) -> None:
        entries = np.concatenate(batch, axis=1)
        order = np.lexsort((entries[2], entries[1]))  # chunks in file order: the first one wins
        src, pos = entries[1][order], entries[2][order]
        again = resends.later_repeats(resends.read_rows(parts, src, pos, resends.COLUMNS))
        for k in np.unique(src[again]):
            np.save(spill / f"dups-{int(k):06d}-{b:06d}.npy", pos[again & (src == k)])

    batch: list[np.ndarray] = []
    held = batches = 0
    for entries in resends.buckets(indexes, budget):
        found = resends.across_sources(entries)
        if found.shape[1]:
            batch.append(found)
            held += found.shape[1]
        if held >= budget:
            verify(batch, batches)
            batch, held, batches = [], 0, batches + 1
    if batch:
        verify(batch, batches)
    del indexes
    for o in outs:
        found_files = sorted(spill.glob(f"dups-{o.index:06d}-*.npy"))
        if found_files:
            _drop_chunk_resends(cfg, plan, o, np.concatenate([np.load(f) for f in found_files]))


def _drop_chunk_resends(cfg: Config, plan: _Plan, out: _ChunkOut, pos: np.ndarray) -> None:
    """Move the kept rows at ``pos`` (positions in the chunk's day parts, in day order) of chunk
    ``out`` to its quarantine part as ``duplicate``, with their raw lines from the input file."""
    pos = np.sort(pos.astype(np.int64))
    dropped, base = [], 0
    for day, n in sorted(out.dates.items()):
        a, b = np.searchsorted(pos, [base, base + n])
        if b > a:
            path = _part(cfg, plan.fid, f"events-{day}", out.index)
            table = pq.read_table(path)
            drop = np.zeros(n, bool)
            drop[pos[a:b] - base] = True
            dropped.append(table.filter(pa.array(drop)))
            if b - a < n:
                _write_parquet(table.filter(pa.array(~drop)), path)
                out.dates[day] = n - (b - a)
            else:  # every row of the part was a resend (its originals hold the trade date)
                path.unlink()
                del out.dates[day]
        base += n
    rows = pa.concat_tables(dropped)
    quarantine, reasons = _clean_rejects(
        plan.path, plan.fid, rows, [(np.arange(rows.num_rows), "duplicate", None, resends.STEP)],
        lambda: (_read_slice(plan.path, *out.span), out.span[0]))
    qpath = _part(cfg, plan.fid, "quarantine", out.index)
    if out.quarantine:
        quarantine = pa.concat_tables([pq.read_table(qpath).cast(quarantine.schema), quarantine])
    _write_parquet(quarantine.sort_by([("offset", "ascending")]), qpath)
    out.quarantine = True
    out.accepted -= rows.num_rows
    out.quarantined += rows.num_rows
    out.reasons = out.reasons + reasons


def _move_parts(parts: list[Path], dest: Path) -> None:
    """Make the (durable) part files the directory ``dest``, in part order, by renames: no
    copy, so the driver's work does not grow with the file. A directory left by a crashed
    attempt (never recorded in the store) is replaced."""
    import shutil

    staging = dest.with_name(dest.name + ".tmp")
    for stale in (staging, dest):
        shutil.rmtree(stale, ignore_errors=True)
    staging.mkdir(parents=True)
    for k, part in enumerate(parts):
        os.replace(part, staging / f"part-{k:06d}.parquet")
    _fsync_dir(staging)
    os.replace(staging, dest)
    _fsync_dir(dest.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _merge_parts(parts: list[Path], dest: Path) -> None:
    """Concatenate part files into ``dest`` one part at a time (temporary name, fsync, rename)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".tmp")
    writer = None
    try:
        for part in parts:
            table = pq.read_table(part)
            if writer is None:
                writer = pq.ParquetWriter(tmp, table.schema, compression="zstd")
            writer.write_table(table, row_group_size=ROW_GROUP_ROWS)
    finally:
        if writer is not None:
            writer.close()
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, dest)


def ingest_range(cfg: Config, con: apsw.Connection, *, data: bytes, path: Path, fmt: str,
                 fid: str, sha: str, start: int, first_line: int, header: bytes | None,
                 user: str, audit_detail: dict[str, Any],
                 record: Callable[[apsw.Connection], None], carry: Any = None,
                 carry_path: Path | None = None,
                 resend_index: resends.StreamResends | None = None,
                 mapping: str | None = None) -> FileReport:
    """Ingest ``data``, the complete lines [start, start + len(data)) of ``path``, as file ``fid``.

    Provenance stays relative to the original file: ``offset`` += start and ``line`` +=
    first_line - 1. ``header`` (a CSV header line, with its newline) is parsed in front of the
    lines when the range does not begin with it. The Parquet names depend on ``fid`` only, so a
    retry after a crash rewrites them; ``record(con)`` runs inside the store transaction that
    records the range (the tee's progress row). With ``carry`` (a stateful format's state after
    the earlier ranges) the state after this range is ``report.carry``; its delta (``FixCarry``)
    is written durably to ``carry_path`` before the store transaction, like the Parquet files.
    With ``resend_index`` (the stream's committed ranges) a kept row equal to one an earlier range
    kept is quarantined as ``duplicate``, and this range's index file is written before the
    store transaction too. ``mapping`` is a vendor source's mapping (else its sidecar applies).
    """
    keep_freed_memory()
    connector = get_connector(fmt, mapping) if mapping else get_connector(fmt)
    report = FileReport(str(path), fid, fmt, "ingested")
    kwargs = {"carry": carry} if carry is not None else {}
    result = read_range(connector, data, path=path, fid=fid, start=start, first_line=first_line,
                        preamble=header, tmp_dir=cfg.data_dir / "tmp", **kwargs)
    written = _clean_and_write(cfg, con, connector, result, report, path, lambda: (data, start),
                               resend_index)
    if carry_path is not None:
        _write_parquet(result.carry.delta, carry_path)  # type: ignore[attr-defined]
    _record(con, report, sha, str(path), len(data), connector.kind, written, user,
            {"path": str(path), "format": fmt, "rows": report.rows, **audit_detail}, record)
    report.carry = getattr(result, "carry", None)  # type: ignore[attr-defined]
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


def _clean_and_write(cfg: Config, con: apsw.Connection | None, connector, result,
                     report: FileReport, path: Path, raw: RawBytes,
                     resend_index: resends.StreamResends | None = None, *,
                     ctx: CleanContext | None = None) -> list[tuple[str, int, str]]:
    """Clean the connector's rows, fill ``report``, write the Parquet files; return their rows.
    ``resend_index``: the tee's earlier ranges of the stream (``ingest_range``). ``ctx``: the
    reference data to clean with (else read from ``con``; a Ray task has no connection)."""
    fid = report.file_id
    if ctx is None:
        assert con is not None
        ctx = CleanContext(traders=reference.current(con, "traders"),
                           symbology=reference.current(con, "symbology"))
    kept, rejected = apply_steps(result.events, connector.kind, ctx)
    clean_q, clean_reasons = _clean_rejects(path, fid, result.events, rejected, raw)
    use_index = resend_index is not None and resends.applies(connector.kind)
    if use_index:  # what drop_resent_duplicates would say seeing the stream's earlier ranges
        again = resend_index.repeats(kept)  # type: ignore[union-attr]
        if again.any():
            more_q, more = _clean_rejects(path, fid, kept, [
                (np.flatnonzero(again), "duplicate", None, resends.STEP)], raw)
            kept, clean_q = kept.filter(pa.array(~again)), pa.concat_tables([clean_q, more_q])
            clean_reasons += more
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
    if use_index:
        resend_index.write(kept, dates)  # type: ignore[union-attr]
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
