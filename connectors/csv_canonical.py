"""``csv`` and ``md-csv``: the canonical delimited formats (order events and market data).

Columns are matched by header name (any order, case-insensitive; unknown extra columns are
ignored). A missing required column refuses the whole file; a row that cannot be parsed is
quarantined with its line, byte offset, field and reason, and its raw bytes.

Most files take the fast path: one numba pass that scans lines and converts every cell (see
``_fused``). Anything that pass is not certain about goes through the general path (Arrow's typed
CSV read, and for a file with a cell Arrow cannot convert, the exact row-by-row parsers), which
decides exactly as before.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from numba import njit

from appliance.clean.tokens import EVENT_TOKENS, SIDE_TOKENS
from appliance.schema import MARKET_DATA, ORDER_EVENTS, TIMESTAMP
from connectors.base import InputRefused, Kind, ReadResult
from connectors.lines import (
    UTF8_BOM,
    ScannedLines,
    _count_lines,
    join_lines,
    quarantine_lines,
    scan_lines,
    utf8_ok,
)
from connectors.parse import clean_string, normalise_tokens, parse_iso_utc, parse_number

# Column kinds: how a text cell becomes a canonical value.
TS, NUM, STR, SIDE, EVENT = "ts", "num", "str", "side", "event"


def _parse(kind: str, col: pa.Array) -> tuple[pa.Array, np.ndarray, np.ndarray, str]:
    """Return (values, missing, bad, reason-for-bad) for one column."""
    if kind == TS:
        return (*parse_iso_utc(col), "bad_timestamp")
    if kind == NUM:
        return (*parse_number(col), "non_numeric")
    if kind == SIDE:
        return (*normalise_tokens(col, SIDE_TOKENS), "unknown_token")
    if kind == EVENT:
        return (*normalise_tokens(col, EVENT_TOKENS), "unknown_token")
    values, missing = clean_string(col)
    return values, missing, np.zeros(len(missing), bool), ""


def _null_mask(col: pa.Array) -> np.ndarray:
    return np.asarray(col.is_null().to_numpy(zero_copy_only=False), dtype=bool)


def _typed_cells(kind: str, col: pa.Array):
    """(values, missing, bad, reason) for a column Arrow already converted; ``bad`` is None when
    the type guarantees validity. Text is normalised once per distinct value (dictionary)."""
    if kind == TS:
        return col, _null_mask(col), None, ""
    if kind == NUM:
        missing = _null_mask(col)
        bad = ~np.asarray(pc.fill_null(pc.is_finite(col), True).to_numpy(zero_copy_only=False))
        return pc.if_else(pa.array(bad), None, col), missing, bad, "non_numeric"
    if pa.types.is_dictionary(col.type):
        values, missing, bad, reason = _parse(kind, col.dictionary)
        idx = col.indices.to_numpy(zero_copy_only=False)
        is_null = _null_mask(col.indices)
        safe = np.where(is_null, 0, idx).astype(np.int64)
        row_missing = is_null | (missing[safe] if missing.size else is_null)
        row_bad = ~is_null & (bad[safe] if bad.size else False)
        taken = values.take(pa.array(safe)) if len(values) else pa.nulls(len(col), pa.string())
        cleaned = pc.if_else(pa.array(row_missing | row_bad), None, taken)
        return cleaned, row_missing, row_bad, reason
    return _parse(kind, col)


# --- Fast path: one numba pass over the raw bytes -------------------------------------------
#
# The pass does what ``scan_lines`` does (line table with the same starts, ends, field counts and
# validity) and, for every data line, splits the fields and converts each cell where it stands:
# ISO-8601 UTC timestamps to ns, decimals to float64, side/event tokens to canonical codes, text
# copied into one Arrow data buffer per column. A common line is read once, cell by cell
# (``_fast_line``); any other line is redone byte by byte (``_fused``), which also classifies
# garbage, wrong field counts and per-cell rejects exactly as the general path would. Only cells
# whose value both earlier paths (Arrow's typed read and the exact regex path) agree on by
# construction are converted; a cell outside that subset (quotes, edge whitespace, exponents,
# >15 significant digits, years before 1970, non-ASCII tokens...) makes the pass give up, and the
# file goes through the general path below, unchanged.

_K_IGNORE, _K_TS, _K_NUM, _K_STR, _K_TOK = 0, 1, 2, 3, 4
_KIND_CODE = {TS: _K_TS, NUM: _K_NUM, STR: _K_STR, SIDE: _K_TOK, EVENT: _K_TOK}
#: per-line status codes; a cell reject is _CELL + 2 * column priority + (1 if missing)
_NOT_DATA, _ACCEPTED, _GARBAGE, _WIDTH, _CELL = -1, 0, 1, 2, 3
#: cell outcomes
_OK, _MISSING, _BAD, _UNSURE = 0, 1, 2, 3
_TS_NULL = np.iinfo(np.int64).min
_POW10 = np.array([10.0**k for k in range(23)])


@njit(cache=True, inline="always")
def _edge_ok(buf, a, b):  # pragma: no cover - numba
    """No trimming can change the cell: first and last bytes are printable ASCII."""
    c0 = buf[a]
    c1 = buf[b - 1]
    return 0x20 < c0 < 0x7F and 0x20 < c1 < 0x7F


@njit(cache=True)
def _cell_ts(buf, a, b, out, k, r):  # pragma: no cover - numba
    """``YYYY-MM-DDTHH:MM:SS[.f{1,9}]Z`` from 1970 to 2261 (ns); a well-shaped impossible date or
    time is bad for both earlier parsers."""
    n = b - a
    if n == 0:
        return _MISSING
    c0 = buf[a]
    if (65 <= c0 <= 90) or (97 <= c0 <= 122):
        return _BAD  # Arrow's parser and the exact regex both need a digit first
    if n < 20 or n > 30 or buf[b - 1] != 90:  # 'Z'
        return _UNSURE
    for p in (0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18):
        if not 48 <= buf[a + p] <= 57:
            return _UNSURE
    if buf[a + 4] != 45 or buf[a + 7] != 45 or buf[a + 10] != 84 or buf[a + 13] != 58 \
            or buf[a + 16] != 58:
        return _UNSURE
    frac = 0
    nd = n - 20
    if n > 20:
        if buf[a + 19] != 46 or nd < 2:  # '.' then 1..9 digits
            return _UNSURE
        nd -= 1
        for p in range(a + 20, b - 1):
            c = buf[p]
            if not 48 <= c <= 57:
                return _UNSURE
            frac = frac * 10 + (c - 48)
        for _ in range(9 - nd):
            frac *= 10
    y = (buf[a] - 48) * 1000 + (buf[a + 1] - 48) * 100 + (buf[a + 2] - 48) * 10 + buf[a + 3] - 48
    m = (buf[a + 5] - 48) * 10 + buf[a + 6] - 48
    d = (buf[a + 8] - 48) * 10 + buf[a + 9] - 48
    hh = (buf[a + 11] - 48) * 10 + buf[a + 12] - 48
    mm = (buf[a + 14] - 48) * 10 + buf[a + 15] - 48
    ss = (buf[a + 17] - 48) * 10 + buf[a + 18] - 48
    if y < 1970 or y > 2261:  # Arrow takes years before 1970, the exact parser does not
        return _UNSURE
    if m < 1 or m > 12 or d < 1 or hh > 23 or mm > 59 or ss > 59:
        return _BAD  # both parsers refuse impossible dates and times
    leap = (y % 4 == 0) and ((y % 100 != 0) or (y % 400 == 0))
    dim = 31
    if m == 2:
        dim = 29 if leap else 28
    elif m == 4 or m == 6 or m == 9 or m == 11:
        dim = 30
    if d > dim:
        return _BAD
    yy = y - 1 if m <= 2 else y
    era = yy // 400
    yoe = yy - era * 400
    mp = m - 3 if m > 2 else m + 9
    doy = (153 * mp + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    days = era * 146097 + doe - 719468
    out[k, r] = ((days * 24 + hh) * 60 + mm) * 60 + ss
    out[k, r] = out[k, r] * 1_000_000_000 + frac
    return _OK


@njit(cache=True)
def _cell_num(buf, a, b, out, k, r, pow10):  # pragma: no cover - numba
    """``-?\\d+(\\.\\d+)?`` with at most 15 digits: exactly representable mantissa over an exact
    power of ten, so the division is correctly rounded like Arrow's parser."""
    if a == b:
        return _MISSING
    p = a
    neg = buf[p] == 45
    if neg:
        p += 1
    mant = 0
    digits = 0
    scale = 0
    dot = False
    ok = p < b
    while p < b:
        c = buf[p]
        if 48 <= c <= 57:
            mant = mant * 10 + (c - 48)
            digits += 1
            if dot:
                scale += 1
        elif c == 46 and not dot and digits > 0 and p + 1 < b:
            dot = True
        else:
            ok = False
            break
        p += 1
    if ok and digits <= 15:
        v = mant / pow10[scale] if scale else float(mant)
        out[k, r] = -v if neg else v
        return _OK
    for q in range(a, b):  # a letter other than an exponent's e: no parser takes it
        c = buf[q] | 0x20
        if 97 <= c <= 122 and c != 101:
            return _BAD
    return _UNSURE


@njit(cache=True)
def _cell_tok(buf, a, b, tab, tlen, tcode, k):  # pragma: no cover - numba
    """Canonical code of an ASCII token (case-insensitive), -1 when unknown, -2 when unsure."""
    n = b - a
    for t in range(tlen.shape[1]):
        if tlen[k, t] != n:
            continue
        same = True
        for q in range(n):
            c = buf[a + q]
            if 97 <= c <= 122:
                c -= 32
            if c != tab[k, t, q]:
                same = False
                break
        if same:
            return tcode[k, t]
    for q in range(a, b):
        if buf[q] >= 0x80:
            return -2  # Unicode case folding: leave it to the general path
    return -1


@njit(cache=True, inline="always")
def _fast_line(buf, i, delim, cls, low, fkind, fslot, freq, tkey, tcode, pow10, ts_out, num_out,
               num_ok, str_data, spos, str_ok, tok_out, r):  # pragma: no cover - numba
    """The common line, in one pass over its bytes: every cell in the accepted subset, no
    quote, NUL, CR (but a CRLF end), non-ASCII byte or reject. Returns the position of the line
    end (its CR or LF, or the buffer size), or -1: then ``_fused`` redoes the line byte by byte
    and classifies it exactly. ``cls`` flags the bytes that end or complicate a cell; none is
    above ``low`` and below 128."""
    size = buf.shape[0]
    ncols = fkind.shape[0]
    for col in range(ncols):
        kind = fkind[col]
        slot = fslot[col]
        a = i
        if kind == 1:
            if i + 20 > size:
                return -1
            for q in range(19):
                c = buf[i + q]
                if q == 4 or q == 7:
                    if c != 45:
                        return -1
                elif q == 10:
                    if c != 84:
                        return -1
                elif q == 13 or q == 16:
                    if c != 58:
                        return -1
                elif not 48 <= c <= 57:
                    return -1
            p = i + 19
            frac = 0
            if buf[p] == 46:
                p += 1
                while p < size and 48 <= buf[p] <= 57:
                    frac = frac * 10 + (buf[p] - 48)
                    p += 1
                nd = p - (i + 20)
                if nd < 1 or nd > 9:
                    return -1
                for _ in range(9 - nd):
                    frac *= 10
            if p >= size or buf[p] != 90:
                return -1
            y = (buf[a] - 48) * 1000 + (buf[a + 1] - 48) * 100 + (buf[a + 2] - 48) * 10 \
                + buf[a + 3] - 48
            m = (buf[a + 5] - 48) * 10 + buf[a + 6] - 48
            d = (buf[a + 8] - 48) * 10 + buf[a + 9] - 48
            hh = (buf[a + 11] - 48) * 10 + buf[a + 12] - 48
            mm = (buf[a + 14] - 48) * 10 + buf[a + 15] - 48
            ss = (buf[a + 17] - 48) * 10 + buf[a + 18] - 48
            if y < 1970 or y > 2261 or m < 1 or m > 12 or d < 1 or hh > 23 or mm > 59 \
                    or ss > 59:
                return -1
            leap = (y % 4 == 0) and ((y % 100 != 0) or (y % 400 == 0))
            dim = 31
            if m == 2:
                dim = 29 if leap else 28
            elif m == 4 or m == 6 or m == 9 or m == 11:
                dim = 30
            if d > dim:
                return -1
            yy = y - 1 if m <= 2 else y
            era = yy // 400
            yoe = yy - era * 400
            mp = m - 3 if m > 2 else m + 9
            doe = yoe * 365 + yoe // 4 - yoe // 100 + (153 * mp + 2) // 5 + d - 1
            days = era * 146097 + doe - 719468
            ts_out[slot, r] = (((days * 24 + hh) * 60 + mm) * 60 + ss) * 1_000_000_000 + frac
            i = p + 1
        elif kind == 2:
            p = i
            neg = p < size and buf[p] == 45
            if neg:
                p += 1
            mant = 0
            digits = 0
            scale = 0
            while p < size and 48 <= buf[p] <= 57:
                mant = mant * 10 + (buf[p] - 48)
                digits += 1
                p += 1
            if digits > 0 and p < size and buf[p] == 46:
                p += 1
                while p < size and 48 <= buf[p] <= 57:
                    mant = mant * 10 + (buf[p] - 48)
                    scale += 1
                    p += 1
                if scale == 0:
                    return -1
            if p == a:
                if freq[col]:
                    return -1
                num_ok[slot, r] = False
            else:
                if digits == 0 or digits + scale > 15:
                    return -1
                v = mant / pow10[scale] if scale else float(mant)
                num_out[slot, r] = -v if neg else v
                num_ok[slot, r] = True
            i = p
        elif kind == 3:
            q = spos[slot]
            p = i
            while p < size:
                c = buf[p]
                if (c <= low or c >= 128) and cls[c]:
                    break
                str_data[slot, q] = c
                q += 1
                p += 1
            if p == a:
                if freq[col]:
                    return -1
                str_ok[slot, r] = False
            else:
                if not (0x20 < buf[a] < 0x7F and 0x20 < buf[p - 1] < 0x7F):
                    return -1
                str_ok[slot, r] = True
                spos[slot] = q
            i = p
        elif kind == 4:
            k1 = np.uint64(0)
            k2 = np.uint64(0)
            p = i
            while p < size:
                c = buf[p]
                if (c <= low or c >= 128) and cls[c]:
                    break
                if 97 <= c <= 122:
                    c -= 32
                n = p - a
                if n < 8:
                    k1 |= np.uint64(c) << np.uint64(8 * n)
                elif n < 16:
                    k2 |= np.uint64(c) << np.uint64(8 * (n - 8))
                p += 1
            n = p - a
            if n == 0:
                if freq[col]:
                    return -1
                tok_out[slot, r] = -1
            else:
                if n > 16 or not (0x20 < buf[a] < 0x7F and 0x20 < buf[p - 1] < 0x7F):
                    return -1
                code = -1
                for t in range(tkey.shape[1]):
                    if tkey[slot, t, 0] == k1 and tkey[slot, t, 1] == k2 \
                            and tkey[slot, t, 2] == n:
                        code = tcode[slot, t]
                        break
                if code < 0:
                    return -1
                tok_out[slot, r] = code
            i = p
        else:
            while i < size and cls[buf[i]] == 0:
                i += 1
        if col < ncols - 1:
            if i >= size or buf[i] != delim:
                return -1
            i += 1
    if i == size or buf[i] == 10:
        return i
    if buf[i] == 13 and (i + 1 == size or buf[i + 1] == 10):
        return i
    return -1


@njit(cache=True)
def _fused(buf, skip, delim, head, fkind, fslot, fprio, freq, tab, tlen, tcode, tkey,
           starts, ends, nfields, valid, status,
           ts_out, num_out, num_ok, str_data, str_off, str_ok, tok_out,
           row_line):  # pragma: no cover - numba
    """Returns the number of accepted rows, or -1 when a cell needs the general path."""
    size = buf.shape[0]
    ncols = fkind.shape[0]
    nstr = str_off.shape[0]
    spos = np.zeros(nstr, np.int64)
    str_off[:, 0] = 0
    cls = np.zeros(256, np.uint8)  # bytes that end or complicate a cell
    cls[128:] = 1
    cls[delim] = cls[10] = cls[13] = cls[34] = cls[0] = 1
    low = max(delim, 34)
    line = 0
    r = 0
    pos = skip
    while pos < size:
        start = pos
        for s in range(nstr):  # roll back a rejected row's text
            spos[s] = str_off[s, r]
        if line > head:
            e = _fast_line(buf, pos, delim, cls, low, fkind, fslot, freq, tkey, tcode, _POW10,
                           ts_out, num_out, num_ok, str_data, spos, str_ok, tok_out, r)
            if e >= 0:
                starts[line] = start
                ends[line] = e
                nfields[line] = ncols
                valid[line] = True
                status[line] = _ACCEPTED
                row_line[r] = line
                r += 1
                for s in range(nstr):
                    str_off[s, r] = spos[s]
                line += 1
                if e < size and buf[e] == 13:
                    e += 1
                pos = e + 1
                continue
            for s in range(nstr):
                spos[s] = str_off[s, r]
        data = line > head
        fields = 1
        fstart = pos
        in_quotes = False
        nul = False
        high = False
        quotes = False
        crs = 0
        best = 1 << 30
        unsure = False
        i = pos
        while True:
            c = 10 if i == size else buf[i]
            last = c == 10
            if c == delim and not in_quotes or last:
                fend = i
                if last and fend > start and buf[fend - 1] == 13:
                    fend -= 1
                    crs -= 1
                col = fields - 1
                if data and col < ncols and not unsure:
                    kind = fkind[col]
                    slot = fslot[col]
                    res = _OK
                    if kind == 1:
                        res = _cell_ts(buf, fstart, fend, ts_out, slot, r)
                        if res == _MISSING:
                            ts_out[slot, r] = _TS_NULL
                    elif kind == 2:
                        res = _cell_num(buf, fstart, fend, num_out, slot, r, _POW10)
                        num_ok[slot, r] = res == _OK
                    elif kind == 3 or kind == 4:
                        if fend == fstart:
                            res = _MISSING
                        elif not _edge_ok(buf, fstart, fend):
                            res = _UNSURE
                        elif kind == 3:
                            p = spos[slot]
                            for q in range(fstart, fend):
                                str_data[slot, p] = buf[q]
                                p += 1
                            spos[slot] = p
                            str_ok[slot, r] = True
                        else:
                            code = _cell_tok(buf, fstart, fend, tab, tlen, tcode, slot)
                            if code == -2:
                                res = _UNSURE
                            elif code == -1:
                                res = _BAD
                            tok_out[slot, r] = code
                        if res == _MISSING:
                            if kind == 3:
                                str_ok[slot, r] = False
                            else:
                                tok_out[slot, r] = -1
                    if res == _UNSURE:
                        unsure = True
                    elif res == _BAD or (res == _MISSING and freq[col]):
                        key = 2 * fprio[col] + (1 if res == _MISSING else 0)
                        if key < best:
                            best = key
                if last:
                    break
                fields += 1
                fstart = i + 1
            elif c == 34:
                in_quotes = not in_quotes
                quotes = True
            elif c >= 128:
                high = True
            elif c == 0:
                nul = True
            elif c == 13:
                crs += 1
            i += 1
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
        if not data or end == start:
            status[line] = _NOT_DATA
        elif not ok:
            status[line] = _GARBAGE
        elif fields != ncols:
            status[line] = _WIDTH
        elif unsure or quotes or crs > 0:
            return -1
        elif best < (1 << 30):
            status[line] = _CELL + best
        else:
            status[line] = _ACCEPTED
            row_line[r] = line
            r += 1
            for s in range(nstr):
                str_off[s, r] = spos[s]
        line += 1
        pos = i + 1
    return r


_BAD_REASON = {TS: "bad_timestamp", NUM: "non_numeric", SIDE: "unknown_token",
               EVENT: "unknown_token"}


def _first_nonblank(data: bytes, skip: int, limit: int = 1000) -> tuple[int, int, int]:
    """(line index, start, end) of the first non-blank line, as ``scan_lines`` splits lines;
    (-1, 0, 0) when there is none within ``limit`` lines (the general path decides then)."""
    pos, line, size = skip, 0, len(data)
    while pos < size and line < limit:
        nl = data.find(b"\n", pos)
        stop = size if nl < 0 else nl
        end = stop - 1 if stop > pos and data[stop - 1] == 13 else stop
        if end > pos:
            return line, pos, end
        line, pos = line + 1, stop + 1
    return -1, 0, 0


def _token_arrays(tables: list[dict[str, str]]):
    """Token tables as padded byte matrices for ``_cell_tok``, and each column's canonical
    values (the code a token maps to indexes them)."""
    width = max((len(t) for table in tables for t in table), default=1)
    count = max((len(table) for table in tables), default=1)
    tab = np.zeros((len(tables), count, width), np.uint8)
    tlen = np.full((len(tables), count), -1, np.int32)
    tcode = np.zeros((len(tables), count), np.int8)
    tkey = np.zeros((len(tables), count, 3), np.uint64)  # first 8 bytes, next 8, length
    canon = []
    for k, table in enumerate(tables):
        values = sorted(set(table.values()))
        canon.append(pa.array(values, pa.string()))
        for t, (token, value) in enumerate(table.items()):
            raw = token.encode()
            tab[k, t, : len(raw)] = np.frombuffer(raw, np.uint8)
            tlen[k, t] = len(raw)
            tcode[k, t] = values.index(value)
            padded = raw.ljust(16, b"\0")[:16]
            tkey[k, t] = (int.from_bytes(padded[:8], "little"),
                          int.from_bytes(padded[8:], "little"), len(raw))
    return tab, tlen, tcode, tkey, canon


def _bitmap(ok: np.ndarray) -> pa.Buffer | None:
    """Arrow validity bitmap of a boolean mask; None when every value is valid."""
    if ok.all():
        return None
    return pa.py_buffer(np.packbits(ok, bitorder="little"))


class _CanonicalDelimited:
    """Shared reader for the canonical delimited layouts; subclasses declare their columns."""

    name: ClassVar[str]
    kind: ClassVar[Kind]
    description: ClassVar[str]
    version: ClassVar[str] = "1"
    schema: ClassVar[pa.Schema]
    #: column -> (kind, header required, value required)
    columns: ClassVar[dict[str, tuple[str, bool, bool]]]
    #: text columns with (nearly) one value per row: not worth dictionary-encoding
    high_cardinality: ClassVar[frozenset[str]] = frozenset({"order_id"})

    @property
    def header(self) -> str:
        return ",".join(self.columns)

    def read(self, path: Path, source: str) -> ReadResult:
        data = Path(path).read_bytes()
        fast = self._read_fast(path, source, data)
        return fast if fast is not None else self._read_general(path, source, data)

    def _read_fast(self, path: Path, source: str, data: bytes) -> ReadResult | None:
        """The one-pass reader; None when the file needs the general path."""
        size = len(data)
        if size >= (1 << 31) - 1:  # 32-bit string offsets
            return None
        skip = len(UTF8_BOM) if data.startswith(UTF8_BOM) else 0
        head, hstart, hend = _first_nonblank(data, skip)
        if head < 0:
            return None
        header = scan_lines(data[hstart:hend])
        if header.count != 1:
            return None
        names = self._header_names(path, data[hstart:hend], bool(header.valid_utf8[0]), head)
        order = list(self.columns)
        fkind = np.zeros(len(names), np.int8)
        fslot = np.zeros(len(names), np.int32)
        fprio = np.zeros(len(names), np.int32)
        freq = np.zeros(len(names), np.bool_)
        slots: dict[int, list[str]] = {k: [] for k in (_K_TS, _K_NUM, _K_STR, _K_TOK)}
        for j, name in enumerate(names):
            if name not in self.columns:
                continue
            kind, _, required = self.columns[name]
            code = _KIND_CODE[kind]
            fkind[j], fslot[j] = code, len(slots[code])
            fprio[j], freq[j] = order.index(name), required
            slots[code].append(name)
        tok_tables = [SIDE_TOKENS if self.columns[c][0] == SIDE else EVENT_TOKENS
                      for c in slots[_K_TOK]]
        tab, tlen, tcode, tkey, canon = _token_arrays(tok_tables)

        buf = np.frombuffer(data, np.uint8)
        nlines = _count_lines(buf[skip:])
        starts = np.empty(nlines, np.int64)
        ends = np.empty(nlines, np.int64)
        nfields = np.empty(nlines, np.int32)
        valid = np.empty(nlines, np.bool_)
        status = np.empty(nlines, np.int32)
        cap = max(nlines - head - 1, 1)
        ts_out = np.empty((len(slots[_K_TS]), cap), np.int64)
        num_out = np.empty((len(slots[_K_NUM]), cap), np.float64)
        num_ok = np.empty((len(slots[_K_NUM]), cap), np.bool_)
        str_data = np.empty((len(slots[_K_STR]), size), np.uint8)  # pages touched on use only
        str_off = np.empty((len(slots[_K_STR]), cap + 1), np.int32)
        str_ok = np.empty((len(slots[_K_STR]), cap), np.bool_)
        tok_out = np.empty((len(slots[_K_TOK]), cap), np.int8)
        row_line = np.empty(cap, np.int64)
        n = _fused(buf, skip, np.uint8(ord(",")), head, fkind, fslot, fprio, freq, tab, tlen,
                   tcode, tkey, starts, ends, nfields, valid, status, ts_out, num_out, num_ok,
                   str_data, str_off, str_ok, tok_out, row_line)
        if n < 0:
            return None
        lines = ScannedLines(buf, starts, ends, nfields, valid)
        rejects = []
        codes = np.unique(status[status > _ACCEPTED])
        for code in codes.tolist():
            idx = np.flatnonzero(status == code)
            if code == _GARBAGE:
                rejects.append((idx, "invalid_utf8", None))
            elif code == _WIDTH:
                rejects.append((idx, "column_count", None))
            else:
                name = order[(code - _CELL) // 2]
                missing = (code - _CELL) % 2 == 1
                reason = "missing_value" if missing else _BAD_REASON[self.columns[name][0]]
                rejects.append((idx, reason, name))
        kept = row_line[:n]
        if n == 0:
            return self._result(source, path, None, lines, kept, rejects, head)
        values: dict[str, pa.Array] = {}
        for name in self.columns:
            dtype = self.schema.field(name).type
            if name not in names:
                values[name] = pa.nulls(n, dtype)
                continue
            code = _KIND_CODE[self.columns[name][0]]
            k = slots[code].index(name)
            if code == _K_TS:
                ts = ts_out[k, :n]
                values[name] = pa.Array.from_buffers(dtype, n, [_bitmap(ts != _TS_NULL),
                                                                pa.py_buffer(ts)])
            elif code == _K_NUM:
                values[name] = pa.Array.from_buffers(dtype, n, [_bitmap(num_ok[k, :n]),
                                                                pa.py_buffer(num_out[k, :n])])
            elif code == _K_STR:
                off = str_off[k, : n + 1]
                values[name] = pa.Array.from_buffers(
                    pa.string(), n, [_bitmap(str_ok[k, :n]), pa.py_buffer(off),
                                     pa.py_buffer(str_data[k, : int(off[n])])])
            else:
                codes_k = tok_out[k, :n]
                idx = pa.Array.from_buffers(pa.int8(), n, [_bitmap(codes_k >= 0),
                                                           pa.py_buffer(codes_k)])
                values[name] = canon[k].take(idx)
        return self._result(source, path, (pa.table(values), kept), lines, kept, rejects, head)

    def _read_general(self, path: Path, source: str, data: bytes) -> ReadResult:
        lines = scan_lines(data)
        nonblank = np.flatnonzero(~lines.blank)
        if nonblank.size == 0:
            return self._result(source, path, None, lines, np.zeros(0, np.int64), [])
        head = int(nonblank[0])
        names = self._header_names(path, data[lines.starts[head] : lines.ends[head]],
                                   bool(lines.valid_utf8[head]), head)
        body = np.arange(head + 1, lines.count)
        body = body[~lines.blank[body]]
        garbage = ~lines.valid_utf8[body]
        width = lines.nfields[body] != len(names)
        rejects = [
            (body[garbage], "invalid_utf8", None),
            (body[~garbage & width], "column_count", None),
        ]
        good = body[~garbage & ~width]
        if good.size == 0:  # a header and nothing parseable below it
            return self._result(source, path, None, lines, good, rejects, head)
        if good.size == body.size:  # nothing refused by the scan: parse the bytes in place
            text = pa.py_buffer(data)[min(int(lines.ends[head]) + 1, len(data)):]
        else:
            text = join_lines(lines.buf, lines.starts[good], lines.ends[good])
        typed = self._read_typed(text, names)
        if typed is not None:
            table, kept, row_rejects = self._convert_typed(typed, good)
        else:  # some cell does not parse: find exactly which, row by row, column by column
            cells = self._read_cells(path, text, names)
            table, kept, row_rejects = self._convert(cells, good)
        rejects.extend(row_rejects)
        return self._result(source, path, (table, kept), lines, kept, rejects, head)

    def _header_names(self, path: Path, raw_bytes: bytes, ok: bool, head: int) -> list[str]:
        where = f"line {head + 1}"
        if not ok:
            raise InputRefused(path, where, "header is not valid UTF-8 text")
        raw = raw_bytes.decode()
        names = [c.strip().strip('"').strip().lower() for c in raw.split(",")]
        missing = [c for c, (_, need, _) in self.columns.items() if need and c not in names]
        if missing:
            raise InputRefused(
                path, where, f"missing required column(s): {', '.join(missing)}",
                f"the {self.name} format expects the header {self.header}",
            )  # fmt: skip
        dupes = sorted({c for c in names if names.count(c) > 1 and c in self.columns})
        if dupes:
            raise InputRefused(path, where, f"duplicate column(s): {', '.join(dupes)}")
        # Unknown columns get unique placeholder names so they can be ignored safely.
        return [c if c in self.columns else f"__extra{i}" for i, c in enumerate(names)]

    def _typed_columns(self, names: list[str]) -> dict[str, pa.DataType]:
        types: dict[str, pa.DataType] = {}
        for name in names:
            kind = self.columns.get(name, (None,))[0]
            if kind == TS:
                types[name] = TIMESTAMP
            elif kind == NUM:
                types[name] = pa.float64()
            elif name in self.high_cardinality:
                types[name] = pa.string()
            else:
                types[name] = pa.dictionary(pa.int32(), pa.string())
        return types

    def _read_typed(self, text, names: list[str]) -> pa.Table | None:
        """Fast path: let Arrow parse timestamps and numbers natively and dictionary-encode the
        low-cardinality text. Any cell Arrow cannot convert sends the file to the exact path."""
        try:
            return pacsv.read_csv(
                pa.BufferReader(text) if isinstance(text, pa.Buffer) else io.BytesIO(text),
                read_options=pacsv.ReadOptions(column_names=names, use_threads=False,
                                               block_size=1 << 24),
                parse_options=pacsv.ParseOptions(newlines_in_values=False),
                convert_options=pacsv.ConvertOptions(
                    column_types=self._typed_columns(names),
                    include_columns=[c for c in names if c in self.columns],
                    strings_can_be_null=True,
                    null_values=[""],
                ),
            )
        except pa.ArrowInvalid:
            return None

    def _convert_typed(self, cells: pa.Table, good: np.ndarray):
        n = cells.num_rows
        failed = np.zeros(n, bool)
        rejects = []
        values: dict[str, pa.Array] = {}
        for name, (kind, _, required) in self.columns.items():
            if name not in cells.column_names:
                values[name] = pa.nulls(n, self.schema.field(name).type)
                continue
            parsed, missing, bad, reason = _typed_cells(kind, cells.column(name).combine_chunks())
            values[name] = parsed
            for mask, why in ((bad, reason), (missing & required, "missing_value")):
                new = mask & ~failed if mask is not None else None
                if new is not None and new.any():
                    rejects.append((good[new], why, name))
                    failed |= new
        if not failed.any():
            return pa.table(values), good, rejects
        keep = np.flatnonzero(~failed)
        table = pa.table({k: v.take(pa.array(keep)) for k, v in values.items()})
        return table, good[keep], rejects

    def _read_cells(self, path: Path, text: bytes, names: list[str]) -> pa.Table:
        wanted = [c for c in names if c in self.columns]
        try:
            return pacsv.read_csv(
                io.BytesIO(text),
                read_options=pacsv.ReadOptions(column_names=names, use_threads=False),
                parse_options=pacsv.ParseOptions(newlines_in_values=False),
                convert_options=pacsv.ConvertOptions(
                    column_types={c: pa.string() for c in names},
                    include_columns=wanted,
                    strings_can_be_null=True,
                    null_values=[""],
                ),
            )
        except pa.ArrowInvalid as exc:  # pre-scan should make this unreachable
            raise InputRefused(path, "body", f"CSV structure error: {exc}") from exc

    def _convert(self, cells: pa.Table, good: np.ndarray):
        n = cells.num_rows
        failed = np.zeros(n, bool)
        rejects = []
        values: dict[str, pa.Array] = {}
        for name, (kind, _, required) in self.columns.items():
            if name not in cells.column_names:
                values[name] = pa.nulls(n, self.schema.field(name).type)
                if required:  # only reachable for optional headers with required values
                    failed[:] = True
                continue
            col = cells.column(name).combine_chunks()
            parsed, missing, bad, reason = _parse(kind, col)
            values[name] = parsed
            for mask, why in ((bad, reason), (missing & required, "missing_value")):
                new = mask & ~failed
                if new.any():
                    rejects.append((good[new], why, name))
                    failed |= new
        keep = np.flatnonzero(~failed)
        table = pa.table({k: v.take(pa.array(keep)) for k, v in values.items()})
        return table, good[keep], rejects

    def _result(self, source, path, converted, lines, good, rejects, head=None) -> ReadResult:
        kept_table, kept_lines = converted if converted is not None else (None, good)
        events = self._canonical(kept_table, source, lines, kept_lines)
        quarantine, reasons = quarantine_lines(source, path, lines, rejects, f"{self.name}:parse")
        header_lines = 0 if head is None else 1
        rows = lines.count - header_lines
        result = ReadResult(
            events=events, quarantine=quarantine, rows=rows,
            ignored=int(lines.blank.sum()), reasons=reasons,
        )  # fmt: skip
        result.check_balance()
        return result

    def _canonical(self, table, source, lines, kept) -> pa.Table:
        if table is None:
            return self.schema.empty_table()
        cols = {}
        for field in self.schema:
            if field.name in table.column_names:
                cols[field.name] = table.column(field.name)
            elif field.name == "instrument":
                cols[field.name] = table.column("symbol")
            elif field.name == "source":
                cols[field.name] = pa.repeat(pa.scalar(source, pa.string()), len(kept))
            elif field.name == "offset":
                cols[field.name] = pa.array(lines.starts[kept], pa.int64())
            elif field.name == "line":
                cols[field.name] = pa.array(kept + 1, pa.int64())
            else:
                cols[field.name] = pa.nulls(len(kept), field.type)
        return pa.table(cols).cast(self.schema)


class CanonicalCsv(_CanonicalDelimited):
    """Order events in the canonical CSV layout."""

    name = "csv"
    kind = "orders"
    description = "canonical order-event CSV (ts,firm,trader,account,symbol,side,event,...)"
    schema = ORDER_EVENTS
    columns = {
        "ts": (TS, True, True),
        "firm": (STR, False, False),
        "trader": (STR, True, True),
        "account": (STR, False, False),
        "symbol": (STR, True, True),
        "side": (SIDE, True, True),
        "event": (EVENT, True, True),
        "order_id": (STR, True, True),
        "price": (NUM, True, False),
        "qty": (NUM, True, False),
        "leaves_qty": (NUM, False, False),
        "exec_qty": (NUM, False, False),
        "exec_price": (NUM, False, False),
        "venue": (STR, False, False),
    }


class MarketCsv(_CanonicalDelimited):
    """Top-of-book quotes and trades in the canonical market-data CSV layout."""

    name = "md-csv"
    kind = "market"
    description = "canonical market-data CSV (ts,symbol,bid,bid_size,ask,ask_size,last,last_size)"
    schema = MARKET_DATA
    columns = {
        "ts": (TS, True, True),
        "symbol": (STR, True, True),
        "bid": (NUM, True, False),
        "bid_size": (NUM, True, False),
        "ask": (NUM, True, False),
        "ask_size": (NUM, True, False),
        "last": (NUM, True, False),
        "last_size": (NUM, True, False),
    }
