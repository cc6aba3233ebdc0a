"""Resends across chunks and across tee ranges: the cleaning step ``drop_resent_duplicates`` made
exact over a whole file read in pieces, in memory bounded by one piece.

``drop_resent_duplicates`` sees one table. A large file is cleaned chunk by chunk
(appliance.ingest) and a followed log range by range (appliance.tee), so a resend whose original
is in another piece needs a second look. Every piece leaves a *resend index* of the rows it kept:
a ``(3, n)`` uint64 array, sorted by row, ``[hash, source, position]`` per kept row, where
``hash`` is ``content_hashes`` (the same for equal rows in any piece), ``source`` the piece
(chunk number, or range ordinal within a stream) and ``position`` the row's place in the piece's
event parts (days ascending, as written). The files are memory-mapped and searched with
``np.searchsorted``; equal hashes are only candidates: the rows are read back from the Parquet
parts and compared in full (``_first_of_content``) before anything is called a duplicate.

Only rows with a timestamp are indexed: a row without one is never a repeat.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from appliance.arrays import distinct
from appliance.clean import (
    _DUP_KEY,
    STEPS,
    _first_of_content,
    _first_of_equal,
    _key_columns,
    content_hashes,
)

#: The cleaning step whose verdict the index completes (the quarantine's ``step``).
STEP = "drop_resent_duplicates"
#: The columns compared (a resend is equal in all of them, timestamp included).
COLUMNS = list(_DUP_KEY)
#: Entries handled at once by a bucket walk (24 bytes each) when nothing smaller is known.
BUCKET_ROWS = 1 << 20


def applies(kind: str) -> bool:
    """Whether ``kind``'s cleaning steps drop resends (orders; market data has no such step)."""
    return any(s.name == STEP for s in STEPS[kind])


def part_order(dates: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """The kept rows' indices in the order the per-day parts hold them: days ascending, rows in
    table order within a day (what ``kept.filter(dates == day)`` per sorted day writes). Rows
    without a date are in no part and not listed."""
    if isinstance(dates, pa.ChunkedArray):
        dates = dates.combine_chunks()
    enc = pc.dictionary_encode(dates)
    rank = np.argsort(np.argsort(np.asarray(enc.dictionary.to_pylist(), dtype=object)))
    codes = pc.fill_null(enc.indices, -1).to_numpy().astype(np.int64)
    live = np.flatnonzero(codes >= 0)
    return live[np.argsort(rank[codes[live]], kind="stable")]


def build_index(kept: pa.Table, dates: pa.Array | pa.ChunkedArray, source: int) -> np.ndarray:
    """The resend index of ``kept`` (the rows a piece writes, split by trade date ``dates``)."""
    order = part_order(dates)
    pos = np.arange(order.size, dtype=np.uint64)
    ts = kept.column("ts")
    if ts.null_count:
        has_ts = np.asarray(pc.is_valid(ts).to_numpy(zero_copy_only=False), bool)[order]
        order, pos = order[has_ts], pos[has_ts]
    h = content_hashes(kept, order)
    by_hash = np.argsort(h)  # kept rows differ: equal hashes are rare collisions, any order
    out = np.empty((3, order.size), np.uint64)
    out[0], out[1], out[2] = h[by_hash], source, pos[by_hash]
    return out


def save_index(index: np.ndarray, path: Path) -> None:
    """Write ``index`` durably: temporary name, fsync, rename (a crash leaves the old file or
    the new one, never a torn one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        np.save(fh, np.ascontiguousarray(index, np.uint64))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def load_index(path: Path) -> np.ndarray:
    """A resend index, memory-mapped (pages are read as the searches touch them)."""
    return np.load(path, mmap_mode="r")


def _bounds(total: int, budget: int) -> np.ndarray:
    """Hash values splitting [0, 2**64) into equal ranges of about ``budget`` entries each
    (the hashes are uniform)."""
    n = max(1, -(-total // max(budget, 1)))
    return np.array([(i << 64) // n for i in range(1, n)], np.uint64)


def buckets(indexes: list[np.ndarray], budget: int) -> Iterator[np.ndarray]:
    """The entries of all ``indexes`` (given in source order, each sorted by hash) hash range by
    hash range, each range's ``(3, m)`` entries sorted by hash, equal hashes in source order;
    about ``budget`` entries in memory at a time."""
    total = sum(a.shape[1] for a in indexes)
    bounds = _bounds(total, budget)
    cuts = [np.concatenate(([0], np.searchsorted(a[0], bounds), [a.shape[1]])).astype(np.int64)
            for a in indexes]
    for b in range(bounds.size + 1):
        parts = [np.asarray(a[:, c[b]:c[b + 1]]) for a, c in zip(indexes, cuts, strict=True)
                 if c[b + 1] > c[b]]
        if not parts:
            continue
        entries = np.concatenate(parts, axis=1)
        # sorted runs in source order: a stable sort (timsort) merges them, ties stay in order
        yield entries[:, np.argsort(entries[0], kind="stable")]


def across_sources(entries: np.ndarray) -> np.ndarray:
    """Of sorted bucket entries, those whose hash occurs in more than one source: the
    candidates (a piece's own rows were already compared with each other)."""
    h, src = entries[0], entries[1]
    if h.size < 2:
        return entries[:, :0]
    start = np.ones(h.size, bool)
    start[1:] = h[1:] != h[:-1]
    end = np.ones(h.size, bool)
    end[:-1] = start[1:]
    run = np.cumsum(start) - 1
    mixed = src[start] != src[end]  # sorted by source within a run: first ≠ last
    return entries[:, mixed[run]]


def later_repeats(rows: pa.Table) -> np.ndarray:
    """Per row of ``rows`` (in file order), whether an earlier row is equal in every
    ``_DUP_KEY`` column: the exact comparison behind every hash match."""
    content = rows.select(list(_DUP_KEY))
    first = _first_of_content(content, np.arange(rows.num_rows, dtype=np.int64))
    if first is None:
        first = _first_of_equal(_key_columns(content))
    return ~first


Parts = Callable[[int], list[tuple[Path, int]]]


def read_rows(parts: Parts, source: np.ndarray, pos: np.ndarray, columns: list[str],
              schema: pa.Schema | None = None) -> pa.Table:
    """The rows at (``source``, ``pos``) (positions in a piece's parts, ``parts(source)`` giving
    its part files and their row counts in order), in the order asked. Each part is read once,
    ``columns`` only; ``schema`` (that of the rows they are compared with) is cast to."""
    order = np.lexsort((pos, source))
    s_sorted, p_sorted = source[order], pos[order].astype(np.int64)
    pieces = []
    for s in distinct(s_sorted):
        lo, hi = np.searchsorted(s_sorted, [s, s + 1])
        want = p_sorted[lo:hi]
        base = 0
        for path, n in parts(int(s)):
            a, b = np.searchsorted(want, [base, base + n])
            if b > a:
                table = pq.read_table(path, columns=columns)
                pieces.append(table.take(pa.array(want[a:b] - base)))
            base += n
    out = pa.concat_tables(pieces).select(columns) if pieces else None
    if out is None or out.num_rows != order.size:
        raise AssertionError("resend index points at rows the parts do not hold")
    if schema is not None:
        out = out.cast(schema)
    back = np.empty(order.size, np.int64)
    back[order] = np.arange(order.size)
    return out.take(pa.array(back))


# --------------------------------------------------------------------------- a tee stream

MERGE_AT = 16  # per-range index files of a stream before they are merged into one


def _seg_name(a: int, b: int) -> str:
    return f"seg-{a:09d}-{b:09d}.npy"


def _segments(folder: Path) -> list[tuple[int, int, Path]]:
    out = []
    for p in folder.glob("seg-*-*.npy"):
        a, b = p.stem.split("-")[1:]
        out.append((int(a), int(b), p))
    return out


class StreamResends:
    """One tee stream's resend index: per committed range a segment file covering its ordinal
    (``seg-<a>-<a+1>.npy``), merged as ranges accumulate (binary counter: 16 ranges, then pairs
    of equal spans), so a stream of n ranges has at most 16 + log2(n / 16) files to search.

    A range's file is written before the range's store transaction; only ranges the store has
    committed (``tee_progress``) count, so a file left by a crash before the commit is ignored
    and rewritten by the retry (same ordinal, same name)."""

    def __init__(self, data_dir: Path, con, stream: str, fids: list[str]) -> None:
        self.data_dir, self.con, self.stream = data_dir, con, stream
        self.fids = fids  # committed ranges, in progress order: ordinal -> file id
        self.folder = data_dir / "tee" / "resends" / stream
        self._index: np.ndarray | None = None

    @classmethod
    def load(cls, data_dir: Path, con, stream: str) -> StreamResends:
        fids = [r[0] for r in con.execute(
            "SELECT file_id FROM tee_progress WHERE stream = ? ORDER BY progress_id", (stream,))]
        return cls(data_dir, con, stream, fids)

    def cover(self) -> list[tuple[int, int, Path]]:
        """The segment files covering the committed ranges (largest first at each ordinal);
        ranges committed before the index existed have none."""
        n = len(self.fids)
        by_start: dict[int, tuple[int, int, Path]] = {}
        for a, b, p in _segments(self.folder):
            if b <= n and (a not in by_start or b > by_start[a][1]):
                by_start[a] = (a, b, p)
        out, a = [], 0
        while a < n:
            seg = by_start.get(a)
            if seg is None:
                a += 1
                continue
            out.append(seg)
            a = seg[1]
        return out

    def _parts(self, ordinal: int) -> list[tuple[Path, int]]:
        from appliance import store

        rows = self.con.execute("SELECT rows, parquet FROM file_dates WHERE file_id = ? "
                                "ORDER BY trade_date", (self.fids[ordinal],))
        out = []
        for n, rel in rows:
            files = store.parquet_files(self.data_dir, rel)
            if len(files) != 1:
                raise AssertionError(f"tee range {self.fids[ordinal]}: {rel} is not one file")
            out.append((files[0], n))
        return out

    def repeats(self, kept: pa.Table) -> np.ndarray:
        """Per row of ``kept`` (a new range's rows), whether the stream's committed ranges kept
        an equal row: hash matches in the segment files, then compared in full."""
        dup = np.zeros(kept.num_rows, bool)
        if not self.fids or not kept.num_rows:
            return dup
        rows = np.arange(kept.num_rows)
        ts = kept.column("ts")
        if ts.null_count:
            rows = np.flatnonzero(np.asarray(pc.is_valid(ts).to_numpy(zero_copy_only=False)))
        h = content_hashes(kept, rows)
        new, src, pos = [], [], []
        for _, _, path in self.cover():
            seg = load_index(path)
            lo = np.searchsorted(seg[0], h, "left")
            hi = np.searchsorted(seg[0], h, "right")
            n = hi - lo
            if not n.any():
                continue
            at = np.repeat(lo, n) + np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)
            new.append(np.repeat(rows, n))
            src.append(np.asarray(seg[1][at]))
            pos.append(np.asarray(seg[2][at]))
        if not new:
            return dup
        new_rows, src_a, pos_a = np.concatenate(new), np.concatenate(src), np.concatenate(pos)
        content = kept.select(list(_DUP_KEY))
        old = read_rows(self._parts, src_a, pos_a, list(_DUP_KEY), content.schema)
        mine = distinct(new_rows)
        both = pa.concat_tables([old, content.take(pa.array(mine))])
        dup[mine[later_repeats(both)[old.num_rows:]]] = True
        return dup

    def path(self, ordinal: int) -> Path:
        return self.folder / _seg_name(ordinal, ordinal + 1)

    def write(self, kept: pa.Table, dates: pa.Array | pa.ChunkedArray) -> None:
        """The new range's index file (before its store transaction)."""
        ordinal = len(self.fids)
        save_index(build_index(kept, dates, ordinal), self.path(ordinal))

    def committed(self, fid: str) -> None:
        """The new range was committed: count it, and merge segment files when many."""
        self.fids.append(fid)
        self.compact()

    def compact(self, budget: int | None = None) -> None:
        """Merge the trailing single-range files once there are ``MERGE_AT``, then trailing
        pairs of equal spans; a merge walks hash ranges (memory: ``budget`` entries, default
        ``BUCKET_ROWS``), writes a temporary file, renames it, then removes what it covers (a
        crash leaves either)."""
        budget = budget or BUCKET_ROWS
        while True:
            cover = self.cover()
            ones = 0
            while ones < len(cover) and cover[-1 - ones][1] - cover[-1 - ones][0] == 1:
                ones += 1
            if ones >= MERGE_AT:
                group = cover[-MERGE_AT:]
            elif len(cover) >= 2 and cover[-1][1] - cover[-1][0] == cover[-2][1] - cover[-2][0] \
                    and cover[-1][1] - cover[-1][0] > 1 and cover[-2][1] == cover[-1][0]:
                group = cover[-2:]
            else:
                return
            if any(group[i][1] != group[i + 1][0] for i in range(len(group) - 1)):
                return  # a range without an index in between: keep them apart
            self._merge(group, budget)

    def _merge(self, group: list[tuple[int, int, Path]], budget: int) -> None:
        a, b = group[0][0], group[-1][1]
        inputs = [load_index(p) for _, _, p in group]
        total = sum(x.shape[1] for x in inputs)
        dest = self.folder / _seg_name(a, b)
        tmp = dest.with_name(dest.name + ".tmp")
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint64, shape=(3, total))
        at = 0
        for entries in buckets(inputs, budget):
            out[:, at:at + entries.shape[1]] = entries
            at += entries.shape[1]
        out.flush()
        del out
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
        for sa, sb, p in _segments(self.folder):
            if a <= sa and sb <= b and (sa, sb) != (a, b):
                p.unlink(missing_ok=True)
