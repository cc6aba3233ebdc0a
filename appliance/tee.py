"""The tee: follow the firm's audit-log directories and ingest every record exactly once.

``[[tee.sources]]`` names directories, file-name globs and formats. ``surveil ingest --follow``
polls them until SIGTERM/SIGINT; ``surveil ingest --once`` makes one pass (cron, nightly run).
See docs/tee.md for what is guaranteed and what is not.

How exactly-once holds:

* A *stream* is the content of one log, whatever file currently holds it: a file continues a
  stream when the sha256 of its first ``fp_len`` bytes is the stream's fingerprint, where
  ``fp_len = min(bytes consumed, tee.fingerprint_bytes)``. Renames, copies (copytruncate), gzip
  and inode reuse therefore do not matter; a truncated or new file is a new stream.
* A stream is consumed in chunks of complete lines ``[start, end)`` (a partial last line is never
  read as a record). Each chunk is ingested like a file (appliance.ingest.ingest_range) and its
  progress row is appended in the same store transaction as the chunk's files/file_dates rows;
  the transaction also checks that the stream's latest progress ends at ``start``.
* A chunk's file id depends only on (stream, start), so a crash before the commit leaves nothing
  recorded and the retry rewrites the same Parquet names.
* One follower at a time: an exclusive flock on ``<data dir>/tee.lock``.
* Before a chunk is committed the file's identity is checked again (a copytruncate during the
  read is noticed), and before a stream is extended the last bytes consumed are compared with the
  recorded tail hash (a stream rewritten in place is reported, never extended).
* A FIX stream's tail that later lines may still change (unanswered requests, reordered pairs)
  is held back, boundedly (``Tee._hold``, ``tee.hold_seconds``): committed ranges are final.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import time
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import apsw

from appliance.config import Config, ConfigError
from appliance.store import StoreError
from appliance.timefmt import now_iso
from connectors.base import InputRefused

#: Formats whose first non-blank line may be a header: a stream starts only once a line follows
#: it (a fingerprint covering just a header would match every log of the layout). csv/md-csv
#: parse it in front of later chunks; vendor keeps its header decision in its carry instead.
HEADER_FORMATS = frozenset({"csv", "md-csv", "vendor"})
#: Formats whose unsettled tail is held back while the stream may grow (``Tee._hold``).
HOLD_FORMATS = frozenset({"fix"})
#: Bytes before a stream's end whose hash is checked before the stream is extended.
TAIL_BYTES = 256
Say = Callable[[str, dict[str, Any]], None]


class DiskFull(StoreError):
    """The data dir's file system is full: nothing was recorded for the chunk being ingested."""


class _Moved(Exception):
    """The stream's progress moved under us (another writer): retry on the next pass."""


@dataclass(frozen=True)
class Source:
    dir: Path
    glob: str
    format: str
    mapping: str | None = None  # vendor: a built-in name or a resolved TOML path


@dataclass(frozen=True)
class Stream:
    """A stream's latest progress row."""

    stream: str
    format: str
    header: bytes | None
    end: int
    end_line: int
    fp_len: int
    fp_sha: str
    tail_len: int
    tail_sha: str


def sources(cfg: Config) -> list[Source]:
    base = cfg.path.parent if cfg.path else Path.cwd()
    out = []
    for item in cfg.get("tee.sources"):
        d = Path(item["dir"])
        mapping = item.get("mapping") or None
        if mapping and (mapping.endswith(".toml") or "/" in mapping):  # a file, not a name
            m = Path(mapping)
            mapping = str((m if m.is_absolute() else base / m).resolve())
        out.append(Source((d if d.is_absolute() else base / d).resolve(), item["glob"],
                          item["format"], mapping))
    return out


def load_streams(con: apsw.Connection) -> dict[str, Stream]:
    sql = """SELECT s.stream, s.format, s.header, p.end_offset, p.end_line, p.fp_len,
                    p.fp_sha256, p.tail_len, p.tail_sha256
             FROM tee_streams s JOIN tee_progress p ON p.progress_id =
                  (SELECT max(progress_id) FROM tee_progress WHERE stream = s.stream)"""
    return {r[0]: Stream(r[0], r[1], r[2], *r[3:]) for r in con.execute(sql)}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def is_disk_full(exc: BaseException) -> bool:
    if isinstance(exc, apsw.FullError):
        return True
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return True
    text = str(exc)  # pyarrow's OSError carries the errno in its message only
    return isinstance(exc, OSError) and any(
        s in text for s in ("No space left", "Disk quota exceeded", "File too large"))


# --------------------------------------------------------------------------- readers


class _Plain:
    compressed = False

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_RDONLY)
        self.inode = os.fstat(self.fd).st_ino

    def read(self, offset: int, n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            got = os.pread(self.fd, n - len(out), offset + len(out))
            if not got:
                break
            out += got
        return bytes(out)

    def complete_size(self) -> int | None:
        return None

    def close(self) -> None:
        os.close(self.fd)


class _Gzip:
    """Sequential reader of a (possibly still being written) gzip file's content."""

    compressed = True

    def __init__(self, path: Path) -> None:
        self.fh = open(path, "rb")  # noqa: SIM115 - closed by close()
        self.inode = os.fstat(self.fh.fileno()).st_ino
        self._reset()

    def _reset(self) -> None:
        self.fh.seek(0)
        self.dec = zlib.decompressobj(31)
        self.pos = 0  # content offset of buf[0]
        self.buf = bytearray()
        self.done = False

    def _fill(self, upto: int) -> None:
        while self.pos + len(self.buf) < upto and not self.done:
            block = self.fh.read(1 << 16)
            if not block:
                self.done = True  # end of what is written so far (a partial gzip is fine)
                break
            try:
                self.buf += self.dec.decompress(block)
                while self.dec.eof and self.dec.unused_data:  # concatenated members
                    rest = self.dec.unused_data
                    self.dec = zlib.decompressobj(31)
                    self.buf += self.dec.decompress(rest)
            except zlib.error:
                self.done = True  # corrupt or not gzip: what was decompressed stands
                break

    def read(self, offset: int, n: int) -> bytes:
        if offset < self.pos:
            self._reset()
        self._fill(offset + n)
        drop = min(offset - self.pos, len(self.buf))
        del self.buf[:drop]
        self.pos += drop
        return bytes(self.buf[:n]) if self.pos == offset else b""

    def complete_size(self) -> int | None:
        """ISIZE from the gzip trailer (content size mod 2**32)."""
        here = self.fh.tell()
        try:
            self.fh.seek(-4, os.SEEK_END)
            return int.from_bytes(self.fh.read(4), "little")
        except OSError:
            return None
        finally:
            self.fh.seek(here)

    def close(self) -> None:
        self.fh.close()


# --------------------------------------------------------------------------- the follower


def _first_record_split(data: bytes, with_header: bool) -> tuple[bytes | None, bool]:
    """For a stream's first chunk: (header line, whether a record line follows it).

    A stream starts only once it holds a non-blank record line, so that its fingerprint never
    covers only a header (every CSV log starts with the same one).
    """
    pos, header = 0, None
    while pos < len(data):
        nl = data.index(b"\n", pos)
        line = data[pos:nl + 1]
        if line.strip():
            if with_header and header is None:
                header = line
            else:
                return header, True
        pos = nl + 1
    return header, False


def complete_lines(reader, start: int, chunk_bytes: int, *, at_eof: bool = False) -> bytes | None:
    """The complete lines from ``start``: at most ``chunk_bytes`` unless a single line is longer
    (then that line whole). None when no complete line is there yet, except with ``at_eof`` (a
    finished file, not a followed one), where an unterminated last line counts as complete.
    ``reader`` has ``read(offset, n)`` (``_Plain``, ``_Gzip``). Shared by the tee and by
    ``appliance.ingest`` (large files in chunks)."""
    n = chunk_bytes
    while True:
        data = reader.read(start, n)
        cut = data.rfind(b"\n")
        if len(data) < n and at_eof:
            return data or None  # the rest of the file
        if cut >= 0:
            return data[:cut + 1]
        if len(data) < n:
            return None  # a partial last line: wait for its newline
        n *= 2  # a line longer than chunk_bytes: read on to its newline


class Tee:
    """The follower's state across passes (in memory only; the truth is in the store)."""

    def __init__(self, cfg: Config, con: apsw.Connection, user: str, say: Say) -> None:
        self.cfg, self.con, self.user, self.say = cfg, con, user, say
        self.sources = sources(cfg)
        self.fp_bytes = int(cfg.get("tee.fingerprint_bytes"))
        self.chunk_bytes = int(cfg.get("tee.chunk_bytes"))
        self.settled: dict[str, tuple] = {}  # path -> stat key of a file with nothing left
        self.warned: set[str] = set()
        self.stats: Counter[str] = Counter()
        self.carries: dict[str, Any] = {}  # stream -> FixCarry (FIX chains across chunks)
        self.hold_seconds = float(cfg.get("tee.hold_seconds"))
        self.holds: dict[str, tuple[int, float]] = {}  # stream -> (held tail's start, since)

    def files(self) -> list[tuple[Path, Source]]:
        """Followed files: plain ones first (oldest first), then gzipped ones."""
        found: dict[Path, Source] = {}
        for src in self.sources:
            if not src.dir.is_dir():
                self._warn_once(f"dir:{src.dir}", "source_missing",
                                {"dir": str(src.dir), "glob": src.glob})
                continue
            for path in src.dir.glob(src.glob):
                if path.is_file() and not path.name.endswith((".tmp", ".swp")):
                    found.setdefault(path, src)

        def order(item: tuple[Path, Source]):
            path = item[0]
            try:
                mtime = path.stat().st_mtime_ns
            except OSError:
                mtime = 0
            return (path.name.endswith(".gz"), mtime, str(path))

        return sorted(found.items(), key=order)

    def run_pass(self, stop: Callable[[], bool] = lambda: False) -> None:
        streams = load_streams(self.con)
        listed = self.files()
        names = {str(p) for p, _ in listed}
        self.settled = {k: v for k, v in self.settled.items() if k in names}
        for path, src in listed:
            if stop():
                return
            try:
                st = path.stat()
            except OSError:
                continue  # rotated away since the listing
            key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
            if self.settled.get(str(path)) == key:
                continue
            try:
                reader = _Gzip(path) if path.name.endswith(".gz") else _Plain(path)
            except OSError:
                continue
            try:
                if self._consume(reader, path, src, streams, stop):
                    self.settled[str(path)] = key
            finally:
                reader.close()

    def _warn_once(self, key: str, event: str, fields: dict[str, Any]) -> None:
        if key not in self.warned:
            self.warned.add(key)
            self.say(event, {"level": "warning", **fields})

    def _match(self, prefix: bytes, streams: dict[str, Stream], fmt: str) -> Stream | None:
        hashes: dict[int, str] = {}
        best = None
        for s in streams.values():
            if s.format != fmt or len(prefix) < s.fp_len:
                continue
            h = hashes.get(s.fp_len) or hashes.setdefault(s.fp_len, _sha(prefix[:s.fp_len]))
            if h == s.fp_sha and (best is None or (s.fp_len, s.end) > (best.fp_len, best.end)):
                best = s
        return best

    def _consume(self, reader, path: Path, src: Source, streams: dict[str, Stream],
                 stop: Callable[[], bool]) -> bool:
        """Ingest what ``path`` holds beyond its stream's progress; True when nothing is left."""
        nread = max([self.fp_bytes, *(s.fp_len for s in streams.values())])
        prefix = reader.read(0, nread)
        stream = self._match(prefix, streams, src.format)
        if stream is not None:
            size = reader.complete_size()
            if size is not None and size == stream.end % (1 << 32):
                return True  # a finished gzip of a consumed stream: skip decompressing it
            tail = reader.read(stream.end - stream.tail_len, stream.tail_len)
            if len(tail) < stream.tail_len:
                return True  # holds less than was consumed (an older or partial copy)
            if _sha(tail) != stream.tail_sha:
                self._warn_once(f"diverged:{path}:{stream.stream}", "stream_diverged", {
                    "level": "error", "path": str(path), "stream": stream.stream,
                    "at": stream.end, "detail": "the file starts like a followed stream but "
                    "its consumed bytes changed; it is not ingested (see docs/tee.md)"})
                return True
        while not stop():
            start = stream.end if stream else 0
            data = complete_lines(reader, start, self.chunk_bytes)
            if data is None:
                return True  # nothing new, or a partial last line: wait for its newline
            held = False
            if src.format in HOLD_FORMATS:  # keep back a tail that later lines may change
                keep = self._hold(path, stream, start, data)
                if not keep:
                    return False  # all of it is held: look again on the next pass
                held, data = keep < len(data), data[:keep]
            header = stream.header if stream else None
            if stream is None:
                header, ok = _first_record_split(data, src.format in HEADER_FORMATS)
                if not ok:
                    return not held
            # a plain file may be truncated and rewritten while we read it (copytruncate)
            check = prefix if reader.compressed else reader.read(0, nread)
            end = start + len(data)
            if stream is not None:
                if len(check) < stream.fp_len or _sha(check[:stream.fp_len]) != stream.fp_sha:
                    return False  # changed under us (copytruncate): look again next pass
                fp = check[:min(end, self.fp_bytes)]
            else:
                fp = data[:min(end, self.fp_bytes)]
                if check[:len(data)] != data[:len(check)]:
                    return False
            if len(fp) < min(end, self.fp_bytes):
                return False
            try:
                stream = self._commit(reader, path, src, stream, start, data, header, fp)
            except _Moved:
                return False
            except InputRefused as exc:
                self.stats["refused"] += 1
                self.say("chunk_refused", {"level": "error", "path": str(path),
                                           "start": start, "error": str(exc)})
                return True
            except Exception as exc:
                if is_disk_full(exc):
                    raise DiskFull(
                        f"{self.cfg.data_dir}: disk full while ingesting {path} bytes "
                        f"{start}-{end} ({exc}); nothing was recorded for this chunk: free "
                        "space and rerun, the tee resumes where it stopped") from None
                raise
            streams[stream.stream] = stream
        return False

    def _commit(self, reader, path: Path, src: Source, stream: Stream | None, start: int,
                data: bytes, header: bytes | None, fp: bytes) -> Stream:
        from appliance.clean.resends import StreamResends
        from appliance.ingest import ingest_range

        end = start + len(data)
        first_line = (stream.end_line if stream else 0) + 1
        end_line = first_line - 1 + data.count(b"\n")
        if stream is None:
            origin = _sha(fp)
            k = self.con.execute("SELECT count(*) FROM tee_streams WHERE origin_sha = ?",
                                 (origin,)).fetchone()[0]
            sid = _sha(f"{origin}:{k}".encode())[:16]
        else:
            sid = stream.stream
        ident = _sha(f"tee:{sid}:{start}".encode())
        fid = ident[:16]
        tail = data[-min(len(data), TAIL_BYTES):]
        chunk_sha = _sha(data)
        new = Stream(sid, src.format, header, end, end_line, len(fp), _sha(fp), len(tail),
                     _sha(tail))

        def record(con: apsw.Connection) -> None:
            now = now_iso()
            if stream is None:
                con.execute("INSERT INTO tee_streams VALUES (?,?,?,?,?,?)",
                            (sid, origin, src.format, header, str(path), now))
            else:
                latest = con.execute(
                    "SELECT end_offset FROM tee_progress WHERE stream = ? "
                    "ORDER BY progress_id DESC LIMIT 1", (sid,)).fetchone()
                if latest is None or latest[0] != start:
                    raise _Moved(sid)
            con.execute(
                "INSERT INTO tee_progress(stream, file_id, path, inode, compressed, start_offset,"
                " end_offset, start_line, end_line, chunk_sha256, fp_len, fp_sha256, tail_len,"
                " tail_sha256, committed_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (sid, fid, str(path), reader.inode, int(reader.compressed), start, end,
                 first_line, end_line, chunk_sha, new.fp_len, new.fp_sha, new.tail_len,
                 new.tail_sha, now))  # fmt: skip

        carry = {}
        if src.format in CARRY_FORMATS:
            carry = {"carry": self._carry(sid, stream is None, src.format),
                     "carry_path": carry_file(self.cfg, fid)}
        # resends of rows the stream's committed ranges kept (docs/tee.md): the index of those
        # ranges, read from the store each time so that it never counts an uncommitted range
        index = (StreamResends.load(self.cfg.data_dir, self.con, sid) if stream is not None
                 else StreamResends(self.cfg.data_dir, self.con, sid, []))
        report = ingest_range(
            self.cfg, self.con, data=data, path=path, fmt=src.format, fid=fid, sha=ident,
            start=start, first_line=first_line, header=header if start > 0 else None,
            user=self.user, audit_detail={"stream": sid, "start": start, "end": end,
                                          "chunk_sha256": chunk_sha},
            record=record, resend_index=index, mapping=src.mapping, **carry)  # fmt: skip
        if carry:
            self.carries[sid] = report.carry  # type: ignore[attr-defined]
        try:
            index.committed(fid)  # may merge index files: an optimisation only
        except OSError as exc:
            if not is_disk_full(exc):
                raise
        for k in ("rows", "accepted", "quarantined", "ignored"):
            self.stats[k] += getattr(report, k)
        self.stats["chunks"] += 1
        self.say("chunk_ingested", {"path": str(path), "stream": sid, "start": start, "end": end,
                                    "rows": report.rows, "accepted": report.accepted,
                                    "quarantined": report.quarantined})
        return new


    def _carry(self, sid: str, new: bool, fmt: str = "fix"):
        """The stream's carried state (FIX chains, CAT JSON orders and duplicate keys, vendor
        header and duplicate keys) after its committed chunks: replayed once from the per-chunk
        deltas (``carry_file``), then kept in memory between chunks.

        The cached state is *taken* here and put back by ``_commit`` only once its chunk is
        committed: some connectors (cat-json, vendor) update their carry in place, so a chunk
        that fails after its read (moved progress, refused, disk full) must not leave its effects
        in memory; the next attempt replays the committed deltas instead."""
        from appliance.ingest import carry_class

        cls = carry_class(fmt)
        if new:
            return cls.empty()
        carry = self.carries.pop(sid, None)
        if carry is None:
            fids = [r[0] for r in self.con.execute(
                "SELECT file_id FROM tee_progress WHERE stream = ? ORDER BY progress_id", (sid,))]
            import pyarrow.parquet as pq

            # committed chunks only: a delta written by a crashed attempt has no progress row
            # (and its retry, with the same file id, overwrites it)
            deltas = [pq.read_table(f) for f in map(lambda x: carry_file(self.cfg, x), fids)
                      if f.exists()]  # chunks committed before chains were carried: none
            carry = cls.replay(deltas)
        return carry

    def _hold(self, path: Path, stream: Stream | None, start: int, data: bytes) -> int:
        """How many leading bytes of ``data`` (a FIX stream's next complete lines) to commit
        now. A tail that lines still to come may change is held back, as in a chunked file
        (``FixConnector.hold_back``: unanswered requests, messages that may precede a
        later-logged one in time): committed ranges are never revised. Bounded so that it never
        stalls: all is committed when the held tail is longer than half a chunk, when it has
        been held ``tee.hold_seconds`` (this follower's clock: from when the tail starting at
        that offset was first held), or when the file has not changed for that long (a rotated
        or finished log: ``--once`` after the day). 0: hold all of it (look again next pass)."""
        if self.hold_seconds <= 0:
            return len(data)
        key = stream.stream if stream is not None else f"new:{path}"
        try:
            quiet = time.time() - path.stat().st_mtime >= self.hold_seconds
        except OSError:
            quiet = False
        if quiet:
            self.holds.pop(key, None)
            return len(data)
        from connectors.fix import FixCarry, FixConnector

        if stream is None:
            carry = FixCarry.empty()
        else:  # taken from the cache by _carry: put back, hold_back does not change it
            self.holds.pop(f"new:{path}", None)  # its first range is committed
            carry = self.carries[stream.stream] = self._carry(stream.stream, False, "fix")
        keep = FixConnector().hold_back(data, carry, self.chunk_bytes // 2)
        if keep == len(data):
            self.holds.pop(key, None)
            return keep
        now = time.monotonic()
        since = self.holds.get(key)
        if since is None or since[0] != start + keep:
            self.holds[key] = (start + keep, now)
        elif now - since[1] >= self.hold_seconds:
            self.holds.pop(key)
            self.stats["held_released"] += 1
            self.say("held_tail_committed", {
                "level": "warning", "path": str(path), "at": start + keep,
                "detail": f"unanswered after {self.hold_seconds:g} s: committed as it is; a "
                "later refusal is quarantined as late_answer (see docs/tee.md)"})
            return len(data)
        return keep


#: Formats whose state is carried from chunk to chunk of a stream (docs/tee.md): FIX order
#: chains, CAT JSON orders/cancellations/duplicate keys, vendor header and duplicate keys.
CARRY_FORMATS = frozenset({"fix", "cat-json", "vendor"})


def carry_file(cfg: Config, fid: str) -> Path:
    """Where a chunk's carry delta (``carry_class(format)``, an Arrow table) lives: written
    durably before the chunk's commit; the committed progress rows say which ones count."""
    return cfg.data_dir / "tee" / "carry" / f"{fid}.parquet"


# --------------------------------------------------------------------------- the loop


class StopFlag:
    """Set from a signal handler: unlike threading.Event it takes no lock, so setting it while the
    main thread is inside ``wait`` cannot deadlock."""

    def __init__(self) -> None:
        self.flag = False

    def set(self) -> None:
        self.flag = True

    def is_set(self) -> bool:
        return self.flag

    def wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self.flag and (left := deadline - time.monotonic()) > 0:
            time.sleep(min(left, 0.02))
        return self.flag


class _Lock:
    """Exclusive flock on <data dir>/tee.lock: one follower at a time (released on kill -9)."""

    def __init__(self, data_dir: Path) -> None:
        self.fd = os.open(data_dir / "tee.lock", os.O_RDWR | os.O_CREAT, 0o644)

    def try_acquire(self) -> bool:
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    def close(self) -> None:
        os.close(self.fd)  # releases the lock


def _warm_up(cfg: Config) -> None:
    """Load the connectors' compiled kernels before taking the lock, so that a standby follower
    (systemd restart, a second instance) takes over without a compile or cache-load pause."""
    from connectors import get_connector

    tmp = cfg.data_dir / "tmp" / f"warm-up-{os.getpid()}.txt"
    try:
        tmp.parent.mkdir(parents=True, exist_ok=True)
        for fmt in sorted({item["format"] for item in cfg.get("tee.sources")}):
            connector = get_connector(fmt)
            header = getattr(connector, "header", "x")
            row = ",".join("1" for _ in header.split(","))
            tmp.write_text(f"{header}\n{row}\n")
            connector.read(tmp, "warm-up")
    except Exception:  # noqa: BLE001 - a warm-up failure only costs time later
        pass
    finally:
        tmp.unlink(missing_ok=True)


def follow(cfg: Config, con: apsw.Connection, user: str, say: Say, *, once: bool,
           poll: float | None = None, stop: StopFlag | None = None) -> dict[str, Any]:
    """Follow the tee until ``stop`` is set (or one pass with ``once``); return the totals.

    With ``once``, a disk-full error is raised (DiskFull); while following it is logged and the
    pass is retried after a pause, so the follower resumes by itself once space is freed.
    """
    stop = stop or StopFlag()
    poll = float(poll if poll is not None else cfg.get("tee.poll_seconds"))
    if not cfg.get("tee.sources"):
        raise ConfigError(f"{cfg.path}: no [[tee.sources]] configured: nothing to follow "
                          "(see docs/tee.md)")
    _warm_up(cfg)
    lock = _Lock(cfg.data_dir)
    try:
        waited = False
        while not lock.try_acquire():
            if once:
                say("tee_busy", {"detail": "another follower holds the tee lock; it ingests "
                                 "the tee, nothing to do"})
                return {"status": "busy"}
            if not waited:
                say("waiting_for_lock", {"lock": str(cfg.data_dir / "tee.lock")})
                waited = True
            if stop.wait(0.05):
                return {"status": "stopped"}
        tee = Tee(cfg, con, user, say)
        say("follow_started", {"pid": os.getpid(), "once": once, "poll": poll,
                               "sources": [str(s.dir / s.glob) for s in tee.sources]})
        while True:
            try:
                tee.run_pass(stop.is_set)
            except DiskFull as exc:
                if once:
                    raise
                say("disk_full", {"level": "error", "error": str(exc)})
                stop.wait(max(poll, 5.0))
                continue
            if once or stop.is_set():
                break
            stop.wait(poll)
        totals = {"status": "stopped" if not once else "done", **dict(tee.stats)}
        say("follow_stopped", totals)
        return totals
    finally:
        lock.close()
