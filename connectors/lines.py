"""Byte-level line scanning shared by the text connectors (numba kernels, no per-line Python).

A raw file is split into lines once; for each line we keep its byte range, whether it is valid
UTF-8 without NUL bytes, and how many delimiter-separated fields it has (double quotes respected).
Those arrays are the provenance every canonical row carries (``offset``, ``line``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from numba import njit

UTF8_BOM = b"\xef\xbb\xbf"


@njit(cache=True)
def _count_lines(buf):  # pragma: no cover - numba
    n = 0
    size = buf.shape[0]
    for i in range(size):
        if buf[i] == 10:
            n += 1
    if size > 0 and buf[size - 1] != 10:
        n += 1
    return n


@njit(cache=True)
def utf8_ok(buf, start, end):  # pragma: no cover - numba
    i = start
    while i < end:
        c = buf[i]
        if c == 0:
            return False
        if c < 0x80:
            i += 1
            continue
        if 0xC2 <= c <= 0xDF:
            need = 1
        elif 0xE0 <= c <= 0xEF:
            need = 2
        elif 0xF0 <= c <= 0xF4:
            need = 3
        else:
            return False
        if i + need > end - 1:
            return False
        for k in range(1, need + 1):
            if (buf[i + k] & 0xC0) != 0x80:
                return False
        # overlongs and surrogates
        if c == 0xE0 and buf[i + 1] < 0xA0:
            return False
        if c == 0xED and buf[i + 1] > 0x9F:
            return False
        if c == 0xF0 and buf[i + 1] < 0x90:
            return False
        if c == 0xF4 and buf[i + 1] > 0x8F:
            return False
        i += need + 1
    return True


@njit(cache=True)
def _scan(buf, delim):  # pragma: no cover - numba
    n = _count_lines(buf)
    starts = np.empty(n, np.int64)
    ends = np.empty(n, np.int64)
    nfields = np.empty(n, np.int32)
    valid = np.empty(n, np.bool_)
    size = buf.shape[0]
    line = 0
    start = 0
    fields = 1
    in_quotes = False
    nul = False
    high = False  # a byte >= 0x80: only then is the slower UTF-8 check needed
    for i in range(size + 1):
        at_end = i == size
        if at_end and start == size:
            break
        c = 10 if at_end else buf[i]
        if c == 10:
            end = i
            if end > start and buf[end - 1] == 13:
                end -= 1
            starts[line] = start
            ends[line] = end
            nfields[line] = fields if end > start else 0
            ok = not nul and not in_quotes
            if ok and high:
                ok = utf8_ok(buf, start, end)
            valid[line] = ok
            line += 1
            start = i + 1
            fields = 1
            in_quotes = False
            nul = False
            high = False
        elif c == 34:
            in_quotes = not in_quotes
        elif c == delim:
            if not in_quotes:
                fields += 1
        elif c >= 128:
            high = True
        elif c == 0:
            nul = True
    return starts, ends, nfields, valid


@njit(cache=True)
def _gather(buf, starts, ends, sep):  # pragma: no cover - numba
    total = 0
    for k in range(starts.shape[0]):
        total += ends[k] - starts[k]
        if sep >= 0:
            total += 1
    out = np.empty(total, np.uint8)
    offsets = np.empty(starts.shape[0] + 1, np.int32)
    pos = 0
    for k in range(starts.shape[0]):
        offsets[k] = pos
        length = ends[k] - starts[k]
        out[pos : pos + length] = buf[starts[k] : ends[k]]
        pos += length
        if sep >= 0:
            out[pos] = sep
            pos += 1
    offsets[starts.shape[0]] = pos
    return out, offsets


@dataclass(frozen=True)
class ScannedLines:
    """Line boundaries of one buffer. Index ``k`` is line number ``k + 1``. ``valid_utf8`` is
    False for invalid UTF-8, NUL bytes, or an unbalanced double quote (all three are garbage)."""

    buf: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    nfields: np.ndarray
    valid_utf8: np.ndarray

    @property
    def count(self) -> int:
        return int(self.starts.shape[0])

    @property
    def blank(self) -> np.ndarray:
        return self.ends == self.starts


def scan_lines(data: bytes, delimiter: bytes = b",") -> ScannedLines:
    """Split ``data`` into lines (LF or CRLF) and classify each one. A leading BOM is skipped by
    treating it as part of no line: the first line then starts at offset 3."""
    buf = np.frombuffer(data, dtype=np.uint8)
    skip = len(UTF8_BOM) if data.startswith(UTF8_BOM) else 0
    starts, ends, nfields, valid = _scan(buf[skip:], np.uint8(delimiter[0]))
    if skip:
        starts += skip
        ends += skip
    return ScannedLines(buf, starts, ends, nfields, valid)


def join_lines(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray, sep: int = 10) -> bytes:
    """Concatenate the selected byte ranges, each followed by ``sep`` (newline by default)."""
    out, _ = _gather(buf, starts, ends, sep)
    return out.tobytes()


def raw_slices(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> pa.BinaryArray:
    """The selected byte ranges as an Arrow binary array (raw evidence for quarantine)."""
    out, offsets = _gather(buf, starts, ends, -1)
    return pa.BinaryArray.from_buffers(
        pa.binary(), len(starts), [None, pa.py_buffer(offsets), pa.py_buffer(out)]
    )


#: (line indices, reason, field) for a group of rejected lines
LineRejects = list[tuple[np.ndarray, str, str | None]]


def quarantine_lines(source: str, path, lines: ScannedLines, rejects: LineRejects,
                     step: str) -> tuple[pa.Table, Counter[str]]:
    """QUARANTINE rows for rejected lines (raw bytes included), sorted by line, and the count per
    reason."""
    from appliance.schema import QUARANTINE

    reasons: Counter[str] = Counter()
    parts = []
    for idx, reason, field in rejects:
        if idx.size == 0:
            continue
        reasons[reason] += int(idx.size)
        n = idx.size
        parts.append(pa.table({
            "source": pa.array([source] * n, pa.string()),
            "path": pa.array([str(path)] * n, pa.string()),
            "line": pa.array(idx + 1, pa.int64()),
            "offset": pa.array(lines.starts[idx], pa.int64()),
            "step": pa.array([step] * n, pa.string()),
            "field": pa.array([field] * n, pa.string()),
            "reason": pa.array([reason] * n, pa.string()),
            "raw": raw_slices(lines.buf, lines.starts[idx], lines.ends[idx]),
        }, schema=QUARANTINE))  # fmt: skip
    if not parts:
        return QUARANTINE.empty_table(), reasons
    return pa.concat_tables(parts).sort_by([("line", "ascending")]), reasons
