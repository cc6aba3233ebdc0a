"""What every connector is: a name, the kind of data it yields, and ``read(path, source)``.

A connector turns one raw file into canonical Arrow rows plus quarantine rows, and accounts for
every record: ``rows == accepted + quarantined + ignored`` always holds (``ignored`` counts records
that carry no event, such as blank lines or FIX session messages).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal, Protocol

import numpy as np
import pyarrow as pa
from numba import njit

from appliance.schema import QUARANTINE

Kind = Literal["orders", "market"]


class InputRefused(Exception):
    """The whole file is refused (e.g. a required column is missing). Exit code INPUT_ERROR."""

    def __init__(self, path: str | Path, where: str, reason: str, hint: str = "") -> None:
        self.path = str(path)
        self.where = where
        self.reason = reason
        self.hint = hint
        msg = f"{path}: {where}: {reason}"
        super().__init__(f"{msg} ({hint})" if hint else msg)


@dataclass
class ReadResult:
    """The outcome of reading one file.

    ``events`` follows the connector's canonical schema (ORDER_EVENTS or MARKET_DATA) and
    ``quarantine`` follows QUARANTINE. ``reasons`` counts quarantined records per reason.
    """

    events: pa.Table
    quarantine: pa.Table
    rows: int
    ignored: int = 0
    reasons: Counter[str] = field(default_factory=Counter)

    @property
    def accepted(self) -> int:
        return self.events.num_rows

    @property
    def quarantined(self) -> int:
        return self.quarantine.num_rows

    def check_balance(self) -> None:
        """Raise AssertionError when a record went unaccounted for (a connector bug)."""
        total = self.accepted + self.quarantined + self.ignored
        if total != self.rows:
            raise AssertionError(
                f"record balance broken: rows={self.rows} accepted={self.accepted} "
                f"quarantined={self.quarantined} ignored={self.ignored}"
            )


class Connector(Protocol):
    """One input format. Implementations live one per module and are listed in the registry."""

    name: ClassVar[str]
    kind: ClassVar[Kind]
    description: ClassVar[str]
    version: ClassVar[str]

    def read(self, path: Path, source: str) -> ReadResult:
        """Parse ``path`` (whose file id is ``source``) into canonical and quarantine rows."""
        ...


def quarantine_table(
    source: str,
    path: str,
    lines: list[int],
    offsets: list[int],
    steps: list[str],
    fields: list[str | None],
    reasons: list[str],
    raws: list[bytes],
) -> pa.Table:
    """Build a QUARANTINE table from parallel column lists (only for the rejected minority)."""
    n = len(lines)
    return pa.table(
        {
            "source": pa.array([source] * n, pa.string()),
            "path": pa.array([path] * n, pa.string()),
            "line": pa.array(lines, pa.int64()),
            "offset": pa.array(offsets, pa.int64()),
            "step": pa.array(steps, pa.string()),
            "field": pa.array(fields, pa.string()),
            "reason": pa.array(reasons, pa.string()),
            "raw": pa.array(raws, pa.binary()),
        },
        schema=QUARANTINE,
    )


@njit(cache=True)
def _attrs_sizes(offsets, valid, name_len):  # pragma: no cover - numba
    """Entries, key bytes and value bytes of the map built by ``_attrs_fill``."""
    k, n = valid.shape
    count = 0
    kbytes = 0
    vbytes = 0
    for j in range(k):
        for r in range(n):
            if valid[j, r]:
                count += 1
                kbytes += name_len[j]
                vbytes += offsets[j, r + 1] - offsets[j, r]
    return count, kbytes, vbytes


@njit(cache=True)
def _attrs_fill(data, base, offsets, valid, names, name_off, moff, koff, kdata, voff,
                vdata):  # pragma: no cover - numba
    """Row by row, each valid column j in order: key ``names[j]``, value the column's bytes."""
    k, n = valid.shape
    e = 0
    kp = 0
    vp = 0
    for r in range(n):
        moff[r] = e
        for j in range(k):
            if not valid[j, r]:
                continue
            koff[e] = kp
            voff[e] = vp
            for q in range(name_off[j], name_off[j + 1]):
                kdata[kp] = names[q]
                kp += 1
            a = base[j] + offsets[j, r]
            for q in range(offsets[j, r + 1] - offsets[j, r]):
                vdata[vp] = data[a + q]
                vp += 1
            e += 1
    moff[n] = e
    koff[e] = kp
    voff[e] = vp


def string_array(offsets: np.ndarray, data: np.ndarray) -> pa.Array:
    """Arrow strings without nulls from offsets (int32, or int64 when large) and bytes."""
    n = offsets.shape[0] - 1
    if offsets.dtype == np.int32:
        return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data))
    return pa.LargeStringArray.from_buffers(n, pa.py_buffer(offsets),
                                            pa.py_buffer(data)).cast(pa.string())


def attrs_from_columns(names: list[str], data: np.ndarray, base: np.ndarray,
                       offsets: np.ndarray, valid: np.ndarray) -> pa.MapArray:
    """``map<string, string>`` over k row-aligned string columns held as one byte buffer: column
    j's row r is ``data[base[j] + offsets[j, r] : base[j] + offsets[j, r + 1]]`` when
    ``valid[j, r]``. Row r maps ``names[j]`` to it for each valid column, in column order (numba:
    map offsets, keys and values are written directly)."""
    n = valid.shape[1]
    encoded = [x.encode() for x in names]
    name_len = np.array([len(x) for x in encoded], np.int64)
    name_off = np.zeros(len(encoded) + 1, np.int64)
    np.cumsum(name_len, out=name_off[1:])
    name_bytes = np.frombuffer(b"".join(encoded), np.uint8).copy() if name_off[-1] else \
        np.zeros(0, np.uint8)
    count, kbytes, vbytes = _attrs_sizes(offsets, valid, name_len)
    off_type = np.int32 if max(kbytes, vbytes) < 2**31 - 1 else np.int64
    moff = np.empty(n + 1, np.int32)
    koff, voff = np.empty(count + 1, off_type), np.empty(count + 1, off_type)
    kdata, vdata = np.empty(kbytes, np.uint8), np.empty(vbytes, np.uint8)
    _attrs_fill(data, np.asarray(base, np.int64), offsets, valid, name_bytes, name_off, moff,
                koff, kdata, voff, vdata)
    return pa.MapArray.from_arrays(pa.array(moff), string_array(koff, kdata),
                                   string_array(voff, vdata))


def attrs_map(columns: dict[str, pa.Array], n: int) -> pa.MapArray:
    """Row-aligned string columns → one ``map<string, string>`` array holding, per row, the
    non-null columns as key → value (vectorised: no per-row Python)."""
    if not columns:
        return pa.MapArray.from_arrays(pa.array(np.zeros(n + 1, np.int32)),
                                       pa.array([], pa.string()), pa.array([], pa.string()))
    blocks, offsets, valids, base, pos = [], [], [], [], 0
    for col in columns.values():
        col = col.cast(pa.large_string())
        if isinstance(col, pa.ChunkedArray):
            col = col.combine_chunks()
        off = np.frombuffer(col.buffers()[1], np.int64)[col.offset : col.offset + len(col) + 1]
        data = col.buffers()[2]
        raw = np.frombuffer(data, np.uint8) if data is not None else np.zeros(0, np.uint8)
        blocks.append(raw[off[0] : off[-1]])
        offsets.append(off - off[0])
        valids.append(np.asarray(col.is_valid().to_numpy(zero_copy_only=False), bool))
        base.append(pos)
        pos += int(off[-1] - off[0])
    return attrs_from_columns(list(columns), np.concatenate(blocks), np.array(base, np.int64),
                              np.stack(offsets), np.stack(valids))
