"""``cat-json``: CAT-style (Consolidated Audit Trail) order events, one JSON object per line.

Field names follow the CAT Industry Member technical specifications. Event types:

==========================  ==========================================================
MENO, MEOA, MECO            NEW (new order, order accepted, child order); one per order
MEOM, MECOM, MEOJ           MODIFY (``priorOrderID`` links a modification with a new id)
MEOC, MECOC                 CANCEL; a partial cancel (``leavesQty`` > 0) is a MODIFY
MEOT, MEOF                  FILL (``quantity``/``price`` are the execution; the order is the
                            top-level ``orderID`` or the ``buyDetails``/``sellDetails`` side
                            whose order is known)
MEOR, MEIR, MEOMR, MEOCR,   ignored (routes, requests, quotes: no canonical event)
MEOE, MENQ, MEQR, MEQC ...
==========================  ==========================================================

Columns: ``eventTimestamp`` (``YYYYMMDD HHMMSS[.fraction]`` New York time, ISO-8601 with a zone,
or integer epoch ms/us/ns) -> ``ts``; ``firmDesignatedID`` -> ``account`` and ``trader``
(a ``traderID`` extension field wins for ``trader``); ``CATReporterIMID`` -> ``firm``;
``side`` B/SL/SS/SX; ``price``; ``quantity`` -> ``qty`` (execution size on trades);
``leavesQty``; ``symbol``; ``destination``/``exchange`` -> ``venue``.

A line that is not one JSON object (``malformed``), has a duplicate key (``duplicate_key``),
a NaN/Infinity constant, an integer beyond 2**53 or a non-numeric number, is quarantined.
Records repeating a ``firmROEID`` (or an identical line) are ``duplicate``; references to an
order not in the file are ``orphan_reference``.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import numpy as np
import pyarrow as pa

from appliance.schema import ORDER_EVENTS, QUARANTINE, TIMESTAMP
from connectors.base import ReadResult
from connectors.lines import raw_slices, scan_lines
from connectors.lobster import new_york_offset

NEW_TYPES = {"MENO", "MEOA", "MECO"}
MODIFY_TYPES = {"MEOM", "MECOM", "MEOJ"}
CANCEL_TYPES = {"MEOC", "MECOC"}
FILL_TYPES = {"MEOT", "MEOF"}
IGNORED_TYPES = {
    "MEOR", "MEIR", "MEOMR", "MEOCR", "MEOE", "MENQ", "MEQR", "MEQC", "MEQS", "MEIM", "MEIC",
    "MECR", "MEOS", "MEPA", "MEAA", "MEMA", "MENI", "MECOMR", "MECOCR", "MEPF", "MEFA",
}  # fmt: skip
CAT_SIDES = {"B": "BUY", "SL": "SELL", "SS": "SELL", "SX": "SELL"}
MAX_INT = 2**53
_CAT_TS = re.compile(r"^(\d{4})(\d{2})(\d{2}) (\d{2})(\d{2})(\d{2})(?:\.(\d{1,9}))?$")
_ISO_TS = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:?\d{2})$"
)


class Reject(Exception):
    def __init__(self, reason: str, field: str | None, step: str = "parse") -> None:
        super().__init__(reason)
        self.reason, self.field, self.step = reason, field, step


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise Reject("duplicate_key", k)
        out[k] = v
    return out


def _constant(name: str) -> Any:
    raise Reject("non_numeric", None)


def _int(text: str) -> int:
    if len(text.lstrip("-")) > 16 or abs(int(text)) > MAX_INT:
        raise Reject("impossible_value", None)
    return int(text)


_DECODER = json.JSONDecoder(object_pairs_hook=_pairs, parse_constant=_constant, parse_int=_int)


def _loads(text: str) -> Any:
    return _DECODER.decode(text)


def parse_cat_ts(value: Any, field: str) -> int:
    """CAT timestamp to ns since the epoch (UTC)."""
    if isinstance(value, bool) or value is None:
        raise Reject("missing_value" if value is None else "bad_timestamp", field)
    if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
        v = int(value)
        digits = len(str(v))
        if digits <= 13:
            return v * 1_000_000
        if digits <= 16:
            return v * 1_000
        if digits <= 19:
            return v
        raise Reject("bad_timestamp", field)
    if not isinstance(value, str) or not value.strip():
        raise Reject("missing_value" if value == "" else "bad_timestamp", field)
    value = value.strip()
    fast = _cat_ts_fast(value)
    if fast is not None:
        return fast
    m = _CAT_TS.match(value) or _ISO_TS.match(value)
    if not m:
        raise Reject("bad_timestamp", field)
    y, mo, d, h, mi, s = (int(x) for x in m.groups()[:6])
    frac = int((m.group(7) or "").ljust(9, "0") or 0)
    try:
        day = date(y, mo, d)
        naive = datetime(y, mo, d, h, mi, s, tzinfo=UTC)
    except ValueError as exc:
        raise Reject("bad_timestamp", field) from exc
    if m.re is _CAT_TS:
        offset_s = int(new_york_offset(day).total_seconds())
    else:
        zone = m.group(8)
        offset_s = 0
        if zone != "Z":
            sign = -1 if zone[0] == "-" else 1
            zone = zone[1:].replace(":", "")
            offset_s = sign * (int(zone[:2]) * 3600 + int(zone[2:]) * 60)
    return (int(naive.timestamp()) - offset_s) * 1_000_000_000 + frac


@functools.lru_cache(maxsize=4096)
def _cat_day_base(ymd: str) -> int | None:
    """ns at New York midnight of ``YYYYMMDD`` (None when not a date)."""
    try:
        day = date(int(ymd[:4]), int(ymd[4:6]), int(ymd[6:8]))
    except ValueError:
        return None
    midnight = datetime(day.year, day.month, day.day, tzinfo=UTC) - new_york_offset(day)
    return int(midnight.timestamp()) * 1_000_000_000


def _cat_ts_fast(v: str) -> int | None:
    """The common CAT form ``YYYYMMDD HHMMSS[.fraction]`` without regexes (None: use the slow
    path, which also reports errors)."""
    if len(v) < 15 or v[8] != " " or not v[:8].isdigit() or not v[9:15].isdigit():
        return None
    frac = 0
    if len(v) > 15:
        f = v[16:]
        if v[15] != "." or not f.isdigit() or len(f) > 9:
            return None
        frac = int(f.ljust(9, "0"))
    h, mi, s = int(v[9:11]), int(v[11:13]), int(v[13:15])
    if h > 23 or mi > 59 or s > 60:
        return None
    base = _cat_day_base(v[:8])
    if base is None:
        return None
    return base + (h * 3600 + mi * 60 + s) * 1_000_000_000 + frac


def _num(rec: dict, key: str, required: bool = False) -> float | None:
    v = rec.get(key)
    if v is None or v == "":
        if required:
            raise Reject("missing_value", key, "convert")
        return None
    if isinstance(v, bool):
        raise Reject("non_numeric", key, "convert")
    if isinstance(v, str):
        if not re.fullmatch(r"[+-]?(\d+(\.\d*)?|\.\d+)", v.strip()):
            raise Reject("non_numeric", key, "convert")
        v = float(v)
    if not isinstance(v, (int, float)) or v != v or abs(v) > 1e15:
        raise Reject("impossible_value", key, "convert")
    if v < 0 and key != "price":
        raise Reject("impossible_value", key, "convert")
    return float(v)


def _str(rec: dict, *keys: str) -> str | None:
    for k in keys:
        v = rec.get(k)
        if v is None or v is True or v is False:
            continue
        if type(v) is str:
            v = v.strip()
            if v:
                return v
        elif type(v) is int:
            return str(v)
    return None


class _Origin(NamedTuple):
    """What later records of an order inherit from its NEW (and latest MODIFY): only the values
    ``_event`` reads back, as a tuple (a fraction of a row dict's memory)."""

    side: str | None = None
    symbol: str | None = None
    trader: str | None = None
    firm: str | None = None
    account: str | None = None
    price: float | None = None
    qty: float | None = None


_NO_ORIGIN = _Origin()
#: A chunk's carry delta: ``kind`` 0 = order id ``key`` -> stable id ``stable``; 1 = stable id
#: ``key``'s inherited values (the latest row wins); 2 = stable id ``key`` fully cancelled;
#: 3 = ``hash`` of a seen firmROEID or of a seen line without one (duplicate detection).
CARRY_SCHEMA = pa.schema([
    ("kind", pa.int8()), ("key", pa.string()), ("stable", pa.string()),
    *((name, pa.string()) for name in _Origin._fields[:5]),
    ("price", pa.float64()), ("qty", pa.float64()), ("hash", pa.binary(16)),
])  # fmt: skip


def _digest(tag: bytes, value: bytes) -> bytes:
    """128 bits stand for a firmROEID or a whole raw line in the duplicate set: bounded memory
    per record; a collision (odds ~n²/2**129) would be needed to call a new record a duplicate."""
    return hashlib.blake2b(value, digest_size=16, person=tag).digest()


@dataclass
class CatCarry:
    """The stitching state after some chunks of one CAT log, and ``delta``: what the last chunk
    changed (replaying the deltas in chunk order rebuilds the state; the tee persists them).

    Every map is insert-only except ``origin`` (a MODIFY updates it), so a delta is the keys
    added since the chunk began plus the origins it touched. It grows with the number of orders
    (``root``, ``origin``, ``cancelled``) and of records (``seen``: 16 bytes each), never with
    the bytes of the records."""

    root: dict[str, str] = field(default_factory=dict)  # orderID -> stable order id
    origin: dict[str, _Origin] = field(default_factory=dict)  # stable id -> inherited values
    cancelled: set[str] = field(default_factory=set)  # stable ids fully cancelled
    seen: set[bytes] = field(default_factory=set)  # _digest of firmROEIDs / raw lines
    delta: pa.Table = field(default_factory=CARRY_SCHEMA.empty_table)
    # the journal of the chunk being read (begin() .. finish())
    _root_len: int = 0
    _touched: set[str] = field(default_factory=set)
    _new_cancelled: list[str] = field(default_factory=list)
    _new_seen: list[bytes] = field(default_factory=list)

    @classmethod
    def empty(cls) -> CatCarry:
        return cls()

    def begin(self) -> None:
        self._root_len = len(self.root)
        self._touched, self._new_cancelled, self._new_seen = set(), [], []

    def finish(self) -> None:
        """Build ``delta`` from the chunk's journal."""
        added = list(itertools.islice(self.root.items(), self._root_len, None))
        touched = sorted(self._touched)  # sorted: the same delta bytes whatever the set order
        values = [self.origin[k] for k in touched]
        n0, n1, n2, n3 = len(added), len(touched), len(self._new_cancelled), len(self._new_seen)
        cols: dict[str, list] = {
            "kind": [0] * n0 + [1] * n1 + [2] * n2 + [3] * n3,
            "key": [k for k, _ in added] + touched + self._new_cancelled + [None] * n3,
            "stable": [v for _, v in added] + [None] * (n1 + n2 + n3),
            "hash": [None] * (n0 + n1 + n2) + self._new_seen,
        }
        for i, name in enumerate(_Origin._fields):
            cols[name] = [None] * n0 + [v[i] for v in values] + [None] * (n2 + n3)
        self.delta = pa.table(cols, schema=CARRY_SCHEMA)
        self.begin()

    @classmethod
    def replay(cls, deltas: list[pa.Table]) -> CatCarry:
        """The state after the chunks whose deltas are given, in chunk order."""
        self = cls()
        if not deltas:
            return self
        t = pa.concat_tables([d.select(CARRY_SCHEMA.names).cast(CARRY_SCHEMA) for d in deltas])
        kind = t.column("kind").to_numpy()
        cols = {name: t.column(name).to_pylist() for name in CARRY_SCHEMA.names[1:]}
        key, fields = cols["key"], [cols[name] for name in _Origin._fields]
        for i in np.flatnonzero(kind == 0).tolist():  # in order: root's insertion order
            self.root[key[i]] = cols["stable"][i]
        for i in np.flatnonzero(kind == 1).tolist():  # later rows win
            self.origin[key[i]] = _Origin(*(f[i] for f in fields))
        self.cancelled.update(key[i] for i in np.flatnonzero(kind == 2).tolist())
        self.seen.update(cols["hash"][i] for i in np.flatnonzero(kind == 3).tolist())
        self.begin()
        return self


class CatJsonConnector:
    """CAT Industry Member order events (NDJSON) to canonical order events."""

    name: ClassVar[str] = "cat-json"
    kind: ClassVar[str] = "orders"
    description: ClassVar[str] = "CAT-style NDJSON order events (MENO/MEOM/MEOC/MEOT/...)"
    version: ClassVar[str] = "2"

    def read(self, path: Path, source: str, carry: CatCarry | dict | None = None) -> ReadResult:
        """Read ``path``; with ``carry`` (``CatCarry.empty()`` — or ``{}`` — for the first chunk
        of a log, then the previous chunk's ``result.carry``) the file is a chunk of a longer log:
        orders, cancellations and ``firmROEID``s of earlier chunks are known, and
        ``result.carry.delta`` is what this chunk added. Every effect is forward in file order,
        so a log read in chunks gives the same rows as read whole. The carry is updated in
        place: a caller that may retry a chunk rebuilds it (``CatCarry.replay``)."""
        data = Path(path).read_bytes()
        lines = scan_lines(data, b"\x00")  # no field splitting: quotes are JSON's business
        rows: list[dict] = []
        offsets: list[int] = []
        line_nos: list[int] = []
        q: list[tuple[int, str, str | None, str]] = []
        ignored = 0
        if isinstance(carry, dict):
            if carry:
                raise TypeError("a cat-json carry is a CatCarry (or {} for the first chunk)")
            carry = CatCarry.empty()
        state = carry if carry is not None else CatCarry.empty()
        state.begin()
        seen, new_seen = state.seen, state._new_seen
        starts, ends = lines.starts, lines.ends
        for k in range(lines.count):
            a, b = int(starts[k]), int(ends[k])
            if a == b or not data[a:b].strip():
                ignored += 1
                continue
            raw = data[a:b]
            try:
                if not _utf8(raw):
                    raise Reject("invalid_utf8", None)
                try:
                    rec = _loads(raw.decode())
                except Reject:
                    raise
                except (ValueError, RecursionError) as exc:
                    raise Reject("malformed", None) from exc
                if not isinstance(rec, dict):
                    raise Reject("malformed", None)
                roe = _str(rec, "firmROEID")
                key = _digest(b"roe", roe.encode()) if roe is not None else _digest(b"raw", raw)
                if key in seen:
                    raise Reject("duplicate", "firmROEID" if roe is not None else None, "stitch")
                typ = rec.get("type")
                if not isinstance(typ, str) or not typ:
                    raise Reject("missing_value", "type")
                row = self._event(rec, typ, state)
            except Reject as rj:
                q.append((k, rj.reason, rj.field, f"cat-json:{rj.step}"))
                continue
            seen.add(key)
            new_seen.append(key)
            if row is None:
                ignored += 1
                continue
            rows.append(row)
            offsets.append(a)
            line_nos.append(k + 1)
        cols: dict[str, Any] = {"source": [source] * len(rows), "offset": offsets,
                                "line": line_nos}  # fmt: skip
        events = pa.table(
            {f.name: pa.array(cols[f.name] if f.name in cols else [r.get(f.name) for r in rows],
                              pa.int64() if f.name == "ts" else f.type)
             for f in ORDER_EVENTS}
        )  # fmt: skip
        events = events.set_column(0, "ts", events.column("ts").cast(TIMESTAMP)).cast(ORDER_EVENTS)
        quarantine, reasons = self._quarantine(source, path, lines, q)
        result = ReadResult(events=events, quarantine=quarantine, rows=lines.count,
                            ignored=ignored, reasons=reasons)  # fmt: skip
        if carry is not None:
            state.finish()
            result.carry = state  # type: ignore[attr-defined]
        result.check_balance()
        return result

    def _event(self, rec: dict, typ: str, state: CatCarry) -> dict | None:
        """One record's canonical row (None: no event), updating ``state`` and its journal."""
        root, origin, cancelled = state.root, state.origin, state.cancelled
        if typ in IGNORED_TYPES:
            return None
        if typ in NEW_TYPES:
            event = "NEW"
        elif typ in MODIFY_TYPES:
            event = "MODIFY"
        elif typ in CANCEL_TYPES:
            event = "CANCEL"
        elif typ in FILL_TYPES:
            event = "FILL"
        else:
            raise Reject("unknown_token", "type")
        ts = parse_cat_ts(rec.get("eventTimestamp"), "eventTimestamp")
        details = None
        oid = _str(rec, "orderID")
        if event == "FILL" and oid is None:  # trade with buy/sell details
            for side_key in ("buyDetails", "sellDetails"):
                d = rec.get(side_key)
                if isinstance(d, dict) and _str(d, "orderID") in root:
                    details, oid = d, _str(d, "orderID")
                    break
            else:
                if any(isinstance(rec.get(s), dict) for s in ("buyDetails", "sellDetails")):
                    raise Reject("orphan_reference", "orderID", "stitch")
        if oid is None:
            raise Reject("missing_value", "orderID")
        if event == "NEW":
            if oid in root:  # MENO and MEOA (or a repeat) of the same order: one NEW
                return None
            stable = oid
        else:
            prior = _str(rec, "priorOrderID")
            stable = root.get(oid) or (root.get(prior) if prior else None)
            if stable is None:
                raise Reject("orphan_reference", "priorOrderID" if prior else "orderID", "stitch")
        src = details if details is not None else rec
        first = origin.get(stable, _NO_ORIGIN)
        side_tok = _str(src, "side") or _str(rec, "side")
        if side_tok is None:
            side = first.side
            if side is None:
                raise Reject("missing_value", "side", "convert")
        else:
            side = CAT_SIDES.get(side_tok.upper())
            if side is None:
                raise Reject("unknown_token", "side", "convert")
        symbol = _str(rec, "symbol") or first.symbol
        if symbol is None:
            raise Reject("missing_value", "symbol", "convert")
        fdid = _str(src, "firmDesignatedID") or _str(rec, "firmDesignatedID")
        trader = _str(rec, "traderID") or fdid or first.trader
        if trader is None:
            raise Reject("missing_value", "firmDesignatedID", "convert")
        price = _num(rec, "price")
        qty = _num(rec, "quantity", required=event in ("NEW", "FILL"))
        leaves = _num(src, "leavesQty")
        if event == "CANCEL":
            if leaves is not None and leaves > 0:
                event = "MODIFY"  # partial cancel: the order stays with fewer shares
                cancel_qty = _num(rec, "cancelQty")
                before = first.qty
                qty = before - cancel_qty if before is not None and cancel_qty else leaves
            elif stable in cancelled:
                return None
            else:
                cancelled.add(stable)
                state._new_cancelled.append(stable)
        row = {
            "ts": ts, "firm": _str(rec, "CATReporterIMID") or first.firm,
            "trader": trader, "account": fdid or first.account, "symbol": symbol,
            "instrument": symbol, "side": side, "event": event, "order_id": stable,
            # price and quantity after the event: the order's when the record does not say
            "price": first.price if event == "FILL" or price is None else price,
            "qty": first.qty if event == "FILL" or qty is None else qty,
            "leaves_qty": leaves,
            "exec_qty": qty if event == "FILL" else None,
            "exec_price": price if event == "FILL" else None,
            "venue": _str(rec, "destination", "exchange", "marketCenterID"),
        }  # fmt: skip
        if event == "FILL" and (price is None):
            raise Reject("missing_value", "price", "convert")
        if event == "FILL" and qty == 0:
            raise Reject("impossible_value", "quantity", "convert")
        root[oid] = stable  # insert-only (an id never changes its order): see CatCarry.finish
        if event == "NEW":
            origin[stable] = _Origin(side, symbol, trader, row["firm"], row["account"],
                                     row["price"], row["qty"])  # fmt: skip
            state._touched.add(stable)
        elif event == "MODIFY":
            origin[stable] = first._replace(price=row["price"], qty=row["qty"])
            state._touched.add(stable)
        return row

    @staticmethod
    def _quarantine(source, path, lines, q):
        reasons: Counter[str] = Counter(r for _, r, _, _ in q)
        if not q:
            return QUARANTINE.empty_table(), reasons
        idx = np.array([k for k, _, _, _ in q], np.int64)
        table = pa.table({
            "source": pa.array([source] * len(q), pa.string()),
            "path": pa.array([str(path)] * len(q), pa.string()),
            "line": pa.array(idx + 1, pa.int64()),
            "offset": pa.array(lines.starts[idx], pa.int64()),
            "step": pa.array([s for _, _, _, s in q], pa.string()),
            "field": pa.array([f for _, _, f, _ in q], pa.string()),
            "reason": pa.array([r for _, r, _, _ in q], pa.string()),
            "raw": raw_slices(lines.buf, lines.starts[idx], lines.ends[idx]),
        }, schema=QUARANTINE)  # fmt: skip
        return table, reasons


def _utf8(raw: bytes) -> bool:
    if b"\x00" in raw:
        return False
    try:
        raw.decode()
    except UnicodeDecodeError:
        return False
    return True
