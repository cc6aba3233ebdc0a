"""``vendor``: delimited or fixed-width files described entirely by a TOML mapping.

A new vendor layout is a mapping file, not code. See ``docs/connectors.md`` and the examples in
``connectors/mappings/``. Which mapping applies to a file, in order:

1. the ``mapping`` given to the connector (``VendorConnector(mapping=...)``: a path, a built-in
   name such as ``example-delimited``, or a dict; this is what ``--mapping`` passes);
2. a sidecar ``<file name>.mapping.toml`` next to the file;
3. a ``mapping.toml`` in the file's folder.

A sidecar may hold ``extends = "<built-in name or path>"`` and override only what differs.
Without a mapping the file is refused (``InputRefused``).

Every value goes through the same vectorised parsers as the canonical CSV: a row whose value
cannot be parsed is quarantined with its line, byte offset, column and reason; comment and blank
lines are ``ignored``; a header line is not a record.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import tomllib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from numba import njit

from appliance.clean.tokens import EVENT_TOKENS, SIDE_TOKENS
from appliance.schema import EVENTS, MARKET_DATA, ORDER_EVENTS, SIDES, TIMESTAMP
from connectors.base import InputRefused, ReadResult
from connectors.lines import join_lines, quarantine_lines, raw_slices, scan_lines, utf8_ok
from connectors.parse import clean_string, normalise_tokens, parse_number

MAPPINGS = Path(__file__).resolve().parent / "mappings"
KINDS = {"orders": ORDER_EVENTS, "market": MARKET_DATA}
VALUE_KINDS = ("timestamp", "number", "string", "side", "event")
_REQUIRED = ("ts", "trader", "symbol", "side", "event", "order_id")
_DEFAULT_KIND = {"ts": "timestamp", "side": "side", "event": "event", "firm": "string",
                 "trader": "string", "account": "string", "symbol": "string",
                 "order_id": "string", "venue": "string"}  # fmt: skip
#: strftime-like directives understood in timestamp formats -> (regex, component)
_DIRECTIVES = {
    "%Y": (r"(?P<Y>\d{4})", "Y"), "%m": (r"(?P<m>\d{1,2})", "m"), "%d": (r"(?P<d>\d{1,2})", "d"),
    "%H": (r"(?P<H>\d{1,2})", "H"), "%M": (r"(?P<M>\d{2})", "M"), "%S": (r"(?P<S>\d{2})", "S"),
    "%f": (r"(?P<f>\d{1,9})", "f"), "%y": (r"(?P<y>\d{2})", "y"),
    "%b": (r"(?P<b>[A-Za-z]{3})", "b"), "%p": (r"(?P<p>[AaPp][Mm])", "p"),
}  # fmt: skip
_MONTHS = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
_EPOCH = {"epoch_s": 10**9, "epoch_ms": 10**6, "epoch_us": 10**3, "epoch_ns": 1}


class MappingError(ValueError):
    """The mapping file itself is wrong (raised as InputRefused by ``read``)."""


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_mapping(spec: str | Path | dict, _depth: int = 0) -> dict:
    """Load a mapping from a dict, a TOML path, or a built-in name; resolves ``extends``."""
    if _depth > 5:
        raise MappingError("extends chain too deep")
    if isinstance(spec, dict):
        raw = spec
        here = MAPPINGS
    else:
        path = Path(spec)
        if not path.exists() and (MAPPINGS / f"{spec}.toml").exists():
            path = MAPPINGS / f"{spec}.toml"
        if not path.exists():
            raise MappingError(f"mapping {spec!s} not found (built-in: {', '.join(builtin())})")
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise MappingError(f"{path}: {exc}") from exc
        here = path.parent
    parent = raw.get("extends")
    if parent:
        base_spec = here / parent if (here / str(parent)).exists() else parent
        raw = _merge(load_mapping(base_spec, _depth + 1), {k: v for k, v in raw.items()
                                                            if k != "extends"})  # fmt: skip
    return raw


def builtin() -> list[str]:
    return sorted(p.stem for p in MAPPINGS.glob("*.toml"))


def validate_mapping(m: dict) -> dict:
    """Check a mapping and fill defaults; returns the normalised mapping (MappingError if bad)."""
    fmt = dict(m.get("format", {}))
    kind = fmt.setdefault("kind", "orders")
    if kind not in KINDS:
        raise MappingError(f"format.kind must be orders or market, not {kind!r}")
    layout = fmt.setdefault("layout", "delimited")
    if layout not in ("delimited", "fixed-width"):
        raise MappingError(f"format.layout must be delimited or fixed-width, not {layout!r}")
    fmt.setdefault("delimiter", ",")
    if layout == "delimited" and (len(fmt["delimiter"]) != 1 or fmt["delimiter"] in "\r\n\""):
        raise MappingError("format.delimiter must be one character (not a quote or newline)")
    fmt.setdefault("header", "auto")
    fmt.setdefault("comment", [])
    if isinstance(fmt["comment"], str):
        fmt["comment"] = [fmt["comment"]]
    fmt.setdefault("skip_lines", 0)
    fmt.setdefault("decimal", ".")
    fmt.setdefault("thousands", "")
    fmt.setdefault("timezone", "UTC")
    fmt.setdefault("dedupe", True)
    fmt.setdefault("record_length", 0)  # fixed-width: longer records are column_count (0: any)
    schema = KINDS[kind]
    cols: dict[str, dict] = {}
    for name, spec in m.get("columns", {}).items():
        if name not in schema.names or name in ("source", "offset", "line", "instrument"):
            raise MappingError(f"columns.{name}: not a column of the {kind} schema")
        spec = {"name": spec} if isinstance(spec, (str, list)) else dict(spec)
        spec.setdefault("kind", _DEFAULT_KIND.get(name, "number"))
        if spec["kind"] not in VALUE_KINDS:
            raise MappingError(f"columns.{name}.kind must be one of {VALUE_KINDS}")
        names = spec.get("name", name)
        spec["names"] = [n.lower() for n in ([names] if isinstance(names, str) else names)]
        positioned = "start" in spec and ("width" in spec or "end" in spec)
        if layout == "fixed-width" and "default" not in spec and not positioned:
            raise MappingError(f"columns.{name}: fixed-width columns need start and width")
        if "decimals" in spec:  # implied decimals given per record by another field
            dec = spec["decimals"]
            ok = isinstance(dec, dict) and spec["kind"] == "number" and (
                ("start" in dec and "width" in dec) if layout == "fixed-width"
                else ("name" in dec or "index" in dec))
            if not ok:
                raise MappingError(f"columns.{name}.decimals must be a table with start and "
                                   "width (fixed-width) or name/index (delimited), on a number")
        cols[name] = spec
    required = [f.name for f in schema if not f.nullable and f.name not in
                ("source", "offset", "line", "instrument")]  # fmt: skip
    missing = [c for c in required if c not in cols]
    if missing:
        raise MappingError(f"mapping lacks required column(s): {', '.join(missing)}")
    tokens = m.get("tokens", {})
    side = {**SIDE_TOKENS, **{k.upper(): v for k, v in tokens.get("side", {}).items()}}
    event = {**EVENT_TOKENS, **{k.upper(): v for k, v in tokens.get("event", {}).items()}}
    if bad := {v for v in side.values() if v not in SIDES}:
        raise MappingError(f"tokens.side maps to unknown side(s): {sorted(bad)}")
    if bad := {v for v in event.values() if v not in EVENTS}:
        raise MappingError(f"tokens.event maps to unknown event(s): {sorted(bad)}")
    return {"format": fmt, "columns": cols, "side": side, "event": event,
            "name": fmt.get("name", "vendor")}  # fmt: skip


# ---------------------------------------------------------------------------------------------
def _ts_regex(fmt: str) -> tuple[str, list[str]]:
    """Regex for a strftime-like format; a fraction after a one-character separator (``.%f``,
    ``,%f``) is optional."""
    out, parts, i = "", [], 0
    last_literal = ""
    while i < len(fmt):
        d = fmt[i : i + 2]
        if d == "%f" and last_literal:
            out = out[: -len(last_literal)] + f"(?:{last_literal}{_DIRECTIVES[d][0]})?"
            parts.append("f")
            i += 2
            last_literal = ""
        elif d in _DIRECTIVES:
            rx, comp = _DIRECTIVES[d]
            out += rx
            parts.append(comp)
            i += 2
            last_literal = ""
        elif d == "%%":
            out += "%"
            i += 2
            last_literal = ""
        else:
            last_literal = re.escape(fmt[i])
            out += last_literal
            i += 1
    return "^" + out + "$", parts


def _utc_offsets_ns(local_ns: np.ndarray, tz: str) -> np.ndarray:
    """UTC offset (ns) for each local wall-clock time, exact per hour (DST aware)."""
    if tz.upper() in ("UTC", "Z", "GMT"):
        return np.zeros_like(local_ns)
    m = re.fullmatch(r"([+-])(\d{2}):?(\d{2})", tz)
    if m:
        sign = -1 if m[1] == "-" else 1
        return np.full_like(local_ns, sign * (int(m[2]) * 3600 + int(m[3]) * 60) * 10**9)
    from zoneinfo import ZoneInfo

    zone = ZoneInfo(tz)
    hours = local_ns // (3600 * 10**9)
    uniq, inv = np.unique(hours, return_inverse=True)
    offs = np.empty(uniq.shape[0], np.int64)
    for k, h in enumerate(uniq.tolist()):
        dt = datetime(1970, 1, 1) + timedelta(hours=h)
        off = dt.replace(tzinfo=zone).utcoffset() or timedelta(0)
        offs[k] = int(off.total_seconds()) * 10**9
    return offs[inv]


def parse_timestamp(col: pa.Array, fmt: str, tz: str) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """Parse text timestamps with a strftime-like ``fmt`` (or epoch_s/ms/us/ns, or iso) in ``tz``.

    Returns (timestamps, missing, bad)."""
    col = pc.utf8_trim_whitespace(col)
    missing = np.asarray(pc.or_kleene(pc.is_null(col), pc.equal(col, "")).fill_null(True))
    n = len(col)
    if fmt in _EPOCH:
        ok = np.asarray(pc.match_substring_regex(col, r"^\d{1,19}$").fill_null(False))
        vals = pc.cast(pc.if_else(pa.array(ok), col, None), pa.int64(), safe=False)
        v = vals.fill_null(0).to_numpy(zero_copy_only=False)
        limit = np.iinfo(np.int64).max // _EPOCH[fmt]
        ok &= v < limit
        ns = np.where(ok, v, 0) * _EPOCH[fmt]
        return _ts_array(ns, ok), missing, ~ok & ~missing
    if fmt == "iso":
        fmt = "%Y-%m-%dT%H:%M:%S.%f"
        col = pc.replace_substring_regex(col, r"^(\d{4}-\d{2}-\d{2}) ", r"\1T")
        col = pc.replace_substring_regex(col, r"T(\d{2}:\d{2}:\d{2})(Z|$)", r"T\1.0\2")
        col = pc.replace_substring_regex(col, r"Z$", "")
    rx, parts = _ts_regex(fmt)
    ok = np.asarray(pc.match_substring_regex(col, rx).fill_null(False))
    safe = pc.if_else(pa.array(ok), col, None)
    st = pc.extract_regex(safe, rx)
    comps = {}
    ok_a = pa.array(ok)
    for p in parts:
        field = pc.if_else(ok_a, st.field(p), pa.scalar(None, pa.string()))
        field = pc.if_else(pc.equal(field, ""), pa.scalar(None, pa.string()), field)
        if p == "b":
            idx = pc.index_in(pc.utf8_upper(field), value_set=pa.array(_MONTHS))
            comps["m"] = idx.fill_null(-100).to_numpy(zero_copy_only=False).astype(np.int64) + 1
        elif p == "p":
            comps["p"] = np.asarray(pc.equal(pc.utf8_upper(field), "PM").fill_null(False))
        elif p == "f":
            padded = pc.utf8_rpad(field.fill_null("0"), 9, "0")
            comps["f"] = pc.cast(padded, pa.int64()).to_numpy(zero_copy_only=False)
        else:
            comps[p] = pc.cast(field.fill_null("0"), pa.int64()).to_numpy(zero_copy_only=False)
    zero = np.zeros(n, np.int64)
    y = comps.get("Y", comps["y"] + 2000 if "y" in comps else zero + 1970)
    mo, d = comps.get("m", zero + 1), comps.get("d", zero + 1)
    h, mi = comps.get("H", zero), comps.get("M", zero)
    s, f = comps.get("S", zero), comps.get("f", zero)
    if "p" in comps:
        ok &= (h >= 1) & (h <= 12)
        h = np.where(comps["p"], h % 12 + 12, h % 12)
    leap = (y % 4 == 0) & ((y % 100 != 0) | (y % 400 == 0))
    mdays = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])[np.clip(mo, 0, 12)]
    mdays = mdays + ((mo == 2) & leap)
    ok &= (mo >= 1) & (mo <= 12) & (d >= 1) & (d <= mdays) & (h < 24) & (mi < 60) & (s < 61)
    ok &= y >= 1970
    yy = np.where(mo <= 2, y - 1, y)
    era = yy // 400
    yoe = yy - era * 400
    doy = (153 * ((mo + 9) % 12) + 2) // 5 + d - 1
    days = era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468
    local = ((days * 24 + h) * 60 + mi) * 60 * 10**9 + s * 10**9 + f
    local = np.where(ok, local, 0)
    ns = local - _utc_offsets_ns(local, tz)
    return _ts_array(ns, ok), missing, ~ok & ~missing


def _ts_array(ns: np.ndarray, ok: np.ndarray) -> pa.Array:
    return pa.array(ns, pa.int64(), mask=~ok).cast(TIMESTAMP)


# --------------------------------------------------------------------------------------------
@njit(cache=True)
def _fmix(h):  # pragma: no cover - numba
    """MurmurHash3's 64-bit finaliser: every input bit reaches every output bit."""
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xFF51AFD7ED558CCD)
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xC4CEB9FE1A85EC53)
    h ^= h >> np.uint64(33)
    return h


@njit(cache=True)
def _line_keys(buf, starts, ends):  # pragma: no cover - numba
    """A 128-bit key of each line's bytes: two unrelated 64-bit hashes (FNV-1a and a
    multiply-xorshift), each finalised with the line length."""
    n = starts.shape[0]
    hi = np.empty(n, np.uint64)
    lo = np.empty(n, np.uint64)
    p1 = np.uint64(0x100000001B3)
    p2 = np.uint64(0x9E3779B97F4A7C15)
    for k in range(n):
        a = np.uint64(0xCBF29CE484222325)
        b = np.uint64(0x84222325CBF29CE4)
        for i in range(starts[k], ends[k]):
            c = np.uint64(buf[i])
            a = (a ^ c) * p1
            b = (b + c) * p2
            b ^= b >> np.uint64(29)
        length = np.uint64(ends[k] - starts[k])
        hi[k] = _fmix(a ^ length)
        lo[k] = _fmix(b ^ (length * p2))
    return hi, lo


@njit(cache=True)
def _dedupe(hi, lo, order, seen_hi, seen_lo):  # pragma: no cover - numba
    """Lines whose key was seen before (in ``seen``, sorted by (hi, lo), or earlier in this
    chunk; ``order`` is the chunk's stable sort by key, so the first of equal keys is the
    earliest line), and ``seen`` merged with this chunk's new keys (still sorted)."""
    n, s = order.shape[0], seen_hi.shape[0]
    dup = np.zeros(n, np.bool_)
    out_hi = np.empty(s + n, np.uint64)
    out_lo = np.empty(s + n, np.uint64)
    j = m = 0
    prev_h = prev_l = np.uint64(0)
    for t in range(n):
        k = order[t]
        h, v = hi[k], lo[k]
        if t > 0 and h == prev_h and v == prev_l:
            dup[k] = True
            continue
        prev_h, prev_l = h, v
        while j < s and (seen_hi[j] < h or (seen_hi[j] == h and seen_lo[j] < v)):
            out_hi[m] = seen_hi[j]
            out_lo[m] = seen_lo[j]
            m += 1
            j += 1
        if j < s and seen_hi[j] == h and seen_lo[j] == v:
            dup[k] = True
        else:
            out_hi[m] = h
            out_lo[m] = v
            m += 1
    while j < s:
        out_hi[m] = seen_hi[j]
        out_lo[m] = seen_lo[j]
        m += 1
        j += 1
    return dup, out_hi[:m], out_lo[:m]


#: A chunk's carry delta: the 128-bit keys of the lines it added to the duplicate set; the
#: scalar state (``VendorCarry.META``) rides in the schema metadata.
CARRY_SCHEMA = pa.schema([("hi", pa.uint64()), ("lo", pa.uint64())])


def _no_keys() -> np.ndarray:
    return np.zeros(0, np.uint64)


@dataclass
class VendorCarry:
    """What a vendor file's later chunks need of its earlier ones (``read(carry=...)``):

    * ``lines``: lines read so far (``skip_lines`` counts from the file's first line);
    * ``decided``/``names``: whether the first content line was seen, and the header's cells
      when it was a header (later chunks are parsed with them; no preamble needed);
    * ``width``/``hist``: without a header, a delimited record must have the file's most common
      field count. Chunks use the first chunk's mode and count every chunk's field counts in
      ``hist``; ``exact()`` says whether the whole file's mode agreed (else the file is read again
      with ``VendorCarry(width=...)``);
    * ``seen_hi``/``seen_lo``: the sorted 128-bit keys of the lines read (``dedupe``): 16 bytes
      per distinct line, the only part that grows with the file.

    ``delta`` is what the last chunk added (the tee persists it; ``replay`` rebuilds)."""

    META: ClassVar[bytes] = b"vendor.carry"
    lines: int = 0
    decided: bool = False
    names: list[str] | None = None
    width: int = -1
    hist: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    seen_hi: np.ndarray = field(default_factory=_no_keys)
    seen_lo: np.ndarray = field(default_factory=_no_keys)
    delta: pa.Table = field(default_factory=CARRY_SCHEMA.empty_table)

    @classmethod
    def empty(cls) -> VendorCarry:
        return cls()

    def exact(self) -> bool:
        """Whether the chunks were parsed with the field count the whole file would use."""
        return self.width < 0 or not self.hist.any() or int(self.hist.argmax()) == self.width

    def count_widths(self, nfields: np.ndarray) -> None:
        counts = np.bincount(nfields)
        if counts.size > self.hist.size:
            counts[: self.hist.size] += self.hist
            self.hist = counts
        else:
            self.hist = self.hist.copy()
            self.hist[: counts.size] += counts

    def _meta(self) -> dict[bytes, bytes]:
        state = {"lines": self.lines, "decided": self.decided, "names": self.names,
                 "width": self.width, "hist": self.hist.tolist()}  # fmt: skip
        return {self.META: json.dumps(state).encode()}

    def finish(self, new_hi: np.ndarray, new_lo: np.ndarray) -> None:
        self.delta = pa.table({"hi": new_hi, "lo": new_lo},
                              schema=CARRY_SCHEMA.with_metadata(self._meta()))

    @classmethod
    def replay(cls, deltas: list[pa.Table]) -> VendorCarry:
        """The state after the chunks whose deltas are given, in chunk order."""
        if not deltas:
            return cls()
        state = json.loads(deltas[-1].schema.metadata[cls.META])
        hi = np.concatenate([d.column("hi").to_numpy() for d in deltas]).astype(np.uint64)
        lo = np.concatenate([d.column("lo").to_numpy() for d in deltas]).astype(np.uint64)
        order = np.lexsort((lo, hi))
        return cls(lines=state["lines"], decided=state["decided"], names=state["names"],
                   width=state["width"], hist=np.asarray(state["hist"], np.int64),
                   seen_hi=hi[order], seen_lo=lo[order])  # fmt: skip


# ---------------------------------------------------------------------------------------------
class VendorConnector:
    """Any delimited / fixed-width vendor file, driven by a TOML mapping."""

    name: ClassVar[str] = "vendor"
    kind: ClassVar[str] = "orders"  # the mapping's format.kind decides per file
    description: ClassVar[str] = (
        "delimited or fixed-width vendor files described by a TOML mapping (--mapping)"
    )
    version: ClassVar[str] = "2"
    takes_mapping: ClassVar[bool] = True

    def __init__(self, mapping: str | Path | dict | None = None) -> None:
        self.mapping = mapping
        if mapping is not None:  # the mapping decides the kind (orders or market)
            with contextlib.suppress(MappingError):  # read() reports it as InputRefused
                self.kind = validate_mapping(load_mapping(mapping))["format"]["kind"]

    def resolve_mapping(self, path: Path) -> dict:
        spec: Any = self.mapping
        if spec is None:
            for cand in (path.with_name(path.name + ".mapping.toml"), path.parent / "mapping.toml"):
                if cand.exists():
                    spec = cand
                    break
        if spec is None:
            raise InputRefused(path, "mapping", "no mapping for this vendor file",
                               f"pass --mapping FILE or a built-in name ({', '.join(builtin())})")
        try:
            return validate_mapping(load_mapping(spec))
        except MappingError as exc:
            raise InputRefused(path, "mapping", str(exc)) from exc

    def bind(self, path: Path) -> None:
        """Fix the mapping that applies to ``path`` (the given one, else its sidecar), so that
        its lines copied elsewhere (a chunk's temporary file) are read with it."""
        spec: Any = self.mapping
        if spec is None or isinstance(spec, (str, Path)):
            self.resolve_mapping(path)  # InputRefused when there is none or it is wrong
            for cand in (path.with_name(path.name + ".mapping.toml"), path.parent / "mapping.toml"):
                if spec is None and cand.exists():
                    spec = cand
            self.mapping = load_mapping(spec)  # extends resolved where the mapping file lives
        self.kind = validate_mapping(load_mapping(self.mapping))["format"]["kind"]  # type: ignore[misc]

    def read(self, path: Path, source: str, carry: VendorCarry | None = None) -> ReadResult:
        """Read ``path`` whole, or, with ``carry`` (``VendorCarry.empty()`` for the first chunk,
        then the previous chunk's ``result.carry``), as the next chunk of complete lines of a
        longer file: the header, ``skip_lines`` and duplicates of earlier chunks are known, and
        ``result.carry.delta`` is what this chunk added. The carry is updated in place."""
        path = Path(path)
        m = self.resolve_mapping(path)
        fmt, cols = m["format"], m["columns"]
        self.kind = fmt["kind"]  # type: ignore[misc]  # per instance, from the mapping
        schema = KINDS[fmt["kind"]]
        step = f"vendor:{m['name']}"
        data = path.read_bytes()
        delim = fmt["delimiter"].encode() if fmt["layout"] == "delimited" else b"\x00"
        lines = scan_lines(data, delim)
        n = lines.count
        skip = np.zeros(n, bool)
        done = carry.lines if carry is not None else 0  # lines of the file before this chunk
        skip[: max(0, int(fmt["skip_lines"]) - done)] = True
        comment = np.zeros(n, bool)
        buf, size = lines.buf, lines.buf.size
        for prefix in fmt["comment"]:  # vectorised: the prefix's bytes at every line start
            pb = np.frombuffer(prefix.encode(), np.uint8)
            hit = ~lines.blank & (lines.starts + pb.size <= size)
            for j in range(pb.size):
                hit &= buf[np.minimum(lines.starts + j, size - 1)] == pb[j]
            comment |= hit
        content = np.flatnonzero(~lines.blank & ~comment & ~skip)
        header_idx = None
        names: list[str] | None = None
        if carry is not None and carry.decided:  # the first content line was in an earlier chunk
            names = carry.names
        elif fmt["layout"] == "delimited" and content.size and lines.valid_utf8[content[0]]:
            first = data[lines.starts[content[0]] : lines.ends[content[0]]].decode()
            cells = [c.strip().strip('"').strip().lower() for c in first.split(fmt["delimiter"])]
            known = {a for spec in cols.values() for a in spec["names"]}
            known |= {str(j).lower() for spec in cols.values() for j in spec.get("join", [])}
            hits = sum(c in known for c in cells)
            header = fmt["header"]
            if header is True or (header == "auto" and hits >= max(1, len(cells) // 2)):
                header_idx = int(content[0])
                names = cells
        if carry is not None and content.size:
            carry.decided, carry.names = True, names
        body = content[1:] if header_idx is not None else content
        rejects: list[tuple[np.ndarray, str, str | None]] = []
        if fmt["layout"] == "delimited":  # invalid UTF-8, NUL or an unbalanced quote
            garbage = ~lines.valid_utf8[body]
        else:  # quotes mean nothing in fixed-width text
            garbage = ~_text_ok_lines(buf, lines.starts[body], lines.ends[body])
        rejects.append((body[garbage], "invalid_utf8", None))
        body = body[~garbage]
        new_hi, new_lo = _no_keys(), _no_keys()
        if fmt["dedupe"] and body.size:  # an identical earlier line: a resend, not a new event
            hi, lo = _line_keys(buf, lines.starts[body], lines.ends[body])
            seen = (carry.seen_hi, carry.seen_lo) if carry is not None else (_no_keys(),) * 2
            dup, seen_hi, seen_lo = _dedupe(hi, lo, np.lexsort((lo, hi)), *seen)
            if carry is not None:
                carry.seen_hi, carry.seen_lo = seen_hi, seen_lo
                new_hi, new_lo = hi[~dup], lo[~dup]
            rejects.append((body[dup], "duplicate", None))
            body = body[~dup]
        if carry is not None and not carry.decided:
            # only skipped, comment or blank lines so far: whether a header comes (and which
            # columns it names) is for a later chunk to say; nothing to parse here
            cells: dict[str, pa.Array] = {}
        elif fmt["layout"] == "delimited":
            if names is None and carry is not None and body.size:  # the field count: see carry
                carry.count_widths(lines.nfields[body])
                if carry.width < 0:
                    carry.width = int(np.bincount(lines.nfields[body]).argmax())
            cells, body = self._delimited(path, data, lines, body, names, cols, fmt, rejects,
                                          carry.width if carry is not None else -1)
        else:
            cells, body = self._fixed(data, lines, body, cols, fmt, rejects)
        table, kept = self._convert(cells, body, cols, m, schema, rejects)
        events = self._canonical(table, schema, source, lines, kept)
        quarantine, reasons = quarantine_lines(source, path, lines, rejects, step)
        rows = n - (1 if header_idx is not None else 0)
        ignored = int((lines.blank | comment | skip).sum())
        result = ReadResult(events=events, quarantine=quarantine, rows=rows, ignored=ignored,
                            reasons=reasons)  # fmt: skip
        if carry is not None:
            carry.lines += n
            carry.finish(new_hi, new_lo)
            result.carry = carry  # type: ignore[attr-defined]
        result.check_balance()
        return result

    # -----------------------------------------------------------------------------------------
    def _delimited(self, path, data, lines, body, names, cols, fmt, rejects, width=-1):
        """``width`` >= 0: the field count of a headerless record (a chunk's carry), else the
        most common one."""
        if width < 0:
            width = int(np.bincount(lines.nfields[body]).argmax()) if body.size else 0
        if names is not None:
            width = len(names)
            positions = {}
            for col, spec in cols.items():
                hit = [i for i, c in enumerate(names) if c in spec["names"]]
                if hit:
                    positions[col] = hit[0]
                elif "default" not in spec and "join" not in spec and spec.get(
                    "required", col in _REQUIRED
                ):
                    raise InputRefused(path, "header",
                                       f"header lacks column for {col} "
                                       f"(one of: {', '.join(spec['names'])})")  # fmt: skip
        else:
            positions = {c: int(s["index"]) - 1 for c, s in cols.items() if "index" in s}
            for c, s in cols.items():
                if "index" not in s and "default" not in s and "join" not in s:
                    raise InputRefused(path, "mapping", f"columns.{c}: no header, so an index "
                                       "(1-based position) is needed")  # fmt: skip
        bad_width = lines.nfields[body] != width
        rejects.append((body[bad_width], "column_count", None))
        body = body[~bad_width]
        text = join_lines(lines.buf, lines.starts[body], lines.ends[body])
        colnames = [f"c{i}" for i in range(width)]
        if body.size:
            try:
                t = pacsv.read_csv(
                    io.BytesIO(text),
                    read_options=pacsv.ReadOptions(column_names=colnames, use_threads=False),
                    parse_options=pacsv.ParseOptions(delimiter=fmt["delimiter"],
                                                     newlines_in_values=False),
                    convert_options=pacsv.ConvertOptions(
                        column_types={c: pa.string() for c in colnames},
                        strings_can_be_null=True, null_values=[""]),
                )  # fmt: skip
            except pa.ArrowInvalid as exc:
                raise InputRefused(path, "body", f"CSV structure error: {exc}") from exc
        else:
            t = pa.table({c: pa.array([], pa.string()) for c in colnames})
        for col, spec in cols.items():  # per-record implied decimals in another column
            dec = spec.get("decimals")
            if dec is None:
                continue
            if "index" in dec:
                positions[f"__dec_{col}"] = int(dec["index"]) - 1
            elif names is not None and str(dec["name"]).lower() in names:
                positions[f"__dec_{col}"] = names.index(str(dec["name"]).lower())
            else:
                raise InputRefused(path, "header", f"columns.{col}.decimals: no column "
                                   f"{dec.get('name')!r}")  # fmt: skip
        out = {}
        for col, pos in positions.items():
            if 0 <= pos < width:
                out[col] = t.column(pos).combine_chunks()
        for col, spec in cols.items():  # values spread over several columns (date + time)
            if "join" not in spec:
                continue
            parts = []
            for ref in spec["join"]:
                pos = (int(ref) - 1 if isinstance(ref, int) else
                       (names.index(ref.lower()) if names and ref.lower() in names else -1))
                if not 0 <= pos < width:
                    raise InputRefused(path, "header", f"columns.{col}.join: no column {ref!r}")
                parts.append(t.column(pos).combine_chunks())
            out[col] = pc.binary_join_element_wise(*parts, " ")
        return out, body

    def _fixed(self, data, lines, body, cols, fmt, rejects):
        # the lines were checked for UTF-8 (garbage): one gather, no per-line decode
        arr = raw_slices(lines.buf, lines.starts[body], lines.ends[body]).cast(pa.string())
        length = np.asarray(pc.utf8_length(arr)) if len(arr) else np.zeros(0, np.int64)
        # a record must reach every required column; optional trailing columns may be cut off
        # (trailing spaces trimmed by editors, short records) and are then empty
        starts = [int(s["start"]) for c, s in cols.items()
                  if "start" in s and s.get("required", c in _REQUIRED)]
        starts += [int(s["decimals"]["start"]) for c, s in cols.items()
                   if "decimals" in s and s.get("required", c in _REQUIRED)]
        last_start = max(starts, default=1)
        short = length < last_start
        limit = int(fmt["record_length"])
        if limit:  # a record longer than the record length has a field too many
            short |= length > limit
        rejects.append((body[short], "column_count", None))
        keep = ~short
        body = body[keep]
        arr = arr.filter(pa.array(keep))
        out = {}
        for col, s in cols.items():
            if "start" not in s:
                continue
            a = int(s["start"]) - 1
            w = int(s["width"]) if "width" in s else int(s["end"]) - a
            out[col] = pc.utf8_slice_codeunits(arr, a, a + w)
            if "decimals" in s:
                d = s["decimals"]
                a = int(d["start"]) - 1
                out[f"__dec_{col}"] = pc.utf8_slice_codeunits(arr, a, a + int(d["width"]))
        return out, body

    def _convert(self, cells, body, cols, m, schema, rejects):
        n = len(body)
        failed = np.zeros(n, bool)
        values: dict[str, pa.Array] = {}
        fmt = m["format"]
        for name, spec in cols.items():
            field = schema.field(name)
            if name in cells:
                col = cells[name]
                if "default" in spec:
                    empty = pc.equal(pc.utf8_trim_whitespace(col), "")
                    col = pc.coalesce(pc.if_else(empty, pa.scalar(None, pa.string()), col),
                                      pa.scalar(str(spec["default"])))  # fmt: skip
            elif "default" in spec:
                col = pa.array([str(spec["default"])] * n, pa.string())
            else:
                col = pa.nulls(n, pa.string())
            if spec.get("null_values"):  # vendor placeholders for "no value" (e.g. 0, N/A)
                blank = pc.is_in(pc.utf8_trim_whitespace(col),
                                 value_set=pa.array([str(v) for v in spec["null_values"]]))
                col = pc.if_else(blank, pa.scalar(None, pa.string()), col)
            kind = spec["kind"]
            if kind == "timestamp":
                parsed, missing, bad = parse_timestamp(
                    col, spec.get("format", "iso"), spec.get("timezone", fmt["timezone"])
                )
                why = "bad_timestamp"
            elif kind == "number":
                if fmt["thousands"]:
                    col = pc.replace_substring(col, fmt["thousands"], "")
                if fmt["decimal"] != ".":
                    col = pc.replace_substring(col, fmt["decimal"], ".")
                parsed, missing, bad = parse_number(col)
                if "scale" in spec:
                    scale = float(spec["scale"])
                    inv = 1.0 / scale if scale else 0.0
                    if 0 < scale < 1 and abs(inv - round(inv)) < 1e-9:  # implied decimals: exact
                        parsed = pc.divide(parsed, float(round(inv)))
                    else:
                        parsed = pc.multiply(parsed, scale)
                if f"__dec_{name}" in cells:  # implied decimals per record: exact division
                    dec, dmissing, dbad = parse_number(cells[f"__dec_{name}"])
                    d = dec.to_numpy(zero_copy_only=False)
                    dbad = dbad | (~dmissing & ((d < 0) | (d > 15) | (d != np.round(d))))
                    bad = bad | (dbad & ~missing)
                    missing = missing | dmissing  # a value without its decimals is no value
                    powers = np.power(10.0, np.where(dbad | dmissing, 0, np.nan_to_num(d)))
                    parsed = pc.divide(parsed, pa.array(powers))
                why = "non_numeric"
            elif kind in ("side", "event"):
                parsed, missing, bad = normalise_tokens(col, m[kind])
                why = "unknown_token"
            else:
                parsed, missing = clean_string(col)
                bad = np.zeros(n, bool)
                why = ""
            required = spec.get("required", not field.nullable)
            values[name] = parsed
            for mask, reason in ((bad, why), (missing & required, "missing_value")):
                new = mask & ~failed
                if new.any():
                    rejects.append((body[new], reason, name))
                    failed |= new
        keep = np.flatnonzero(~failed)
        take = pa.array(keep)
        return {k: v.take(take) for k, v in values.items()}, body[keep]

    def _canonical(self, table, schema, source, lines, kept) -> pa.Table:
        out = {}
        for f in schema:
            if f.name in table:
                out[f.name] = table[f.name]
            elif f.name == "instrument":
                out[f.name] = table["symbol"]
            elif f.name == "source":
                out[f.name] = pa.array([source] * len(kept), pa.string())
            elif f.name == "offset":
                out[f.name] = pa.array(lines.starts[kept], pa.int64())
            elif f.name == "line":
                out[f.name] = pa.array(kept + 1, pa.int64())
            else:
                out[f.name] = pa.nulls(len(kept), f.type)
        return pa.table({k: out[k].cast(schema.field(k).type) for k in schema.names}).cast(schema)


@njit(cache=True)
def _text_ok_lines(buf, starts, ends):  # pragma: no cover - numba
    """Per line: valid UTF-8 without NUL bytes (fixed-width text, where quotes mean nothing)."""
    ok = np.empty(starts.shape[0], np.bool_)
    for k in range(starts.shape[0]):
        ok[k] = utf8_ok(buf, starts[k], ends[k])
    return ok
