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


def attrs_map(columns: dict[str, pa.Array], n: int) -> pa.MapArray:
    """Row-aligned string columns → one ``map<string, string>`` array holding, per row, the
    non-null columns as key → value (vectorised: no per-row Python)."""
    rows, keys, values = [], [], []
    for j, col in enumerate(columns.values()):
        col = col.cast(pa.string())
        valid = np.flatnonzero(np.asarray(col.is_valid().to_numpy(zero_copy_only=False)))
        rows.append(valid)
        keys.append(np.full(valid.size, j))
        values.append(col.take(pa.array(valid)))
    if not rows:
        return pa.MapArray.from_arrays(pa.array(np.zeros(n + 1, np.int32)),
                                       pa.array([], pa.string()), pa.array([], pa.string()))
    row = np.concatenate(rows)
    key = np.concatenate(keys)
    order = np.lexsort((key, row))
    names = pa.array(list(columns), pa.string())
    offsets = np.zeros(n + 1, np.int32)
    np.cumsum(np.bincount(row, minlength=n), out=offsets[1:])
    return pa.MapArray.from_arrays(
        pa.array(offsets), names.take(pa.array(key[order])),
        pa.concat_arrays([v.combine_chunks() if isinstance(v, pa.ChunkedArray) else v
                          for v in values]).take(pa.array(order)),
    )
