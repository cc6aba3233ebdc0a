"""Vectorised field parsers (pyarrow compute + NumPy): each returns values and a ``bad`` mask, so
that a connector can quarantine exactly the rows that failed and keep the rest."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from appliance.schema import TIMESTAMP

_ISO_UTC = r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$"
_NUMBER = r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d{1,3})?$"
_DAYS_IN_MONTH = np.array([0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])


def _as_mask(arr: pa.Array) -> np.ndarray:
    return np.asarray(arr.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)


def _digits(col: pa.Array, start: int, length: int) -> np.ndarray:
    part = pc.utf8_slice_codeunits(col, start, start + length)
    return np.asarray(pc.cast(part, pa.int32()).to_numpy(zero_copy_only=False))


def parse_iso_utc(col: pa.Array) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """Parse ISO-8601 UTC (``YYYY-MM-DDTHH:MM:SS[.f{1,9}]Z``) to ns timestamps.

    Returns ``(timestamps, missing, bad)``; rows that are missing or bad hold null.
    """
    col = pc.utf8_trim_whitespace(col)
    missing = _as_mask(pc.or_kleene(pc.is_null(col), pc.equal(col, "")))
    shaped = _as_mask(pc.match_substring_regex(col, _ISO_UTC))
    safe = pc.if_else(pa.array(shaped), col, "2000-01-01T00:00:00Z")
    year, month, day = _digits(safe, 0, 4), _digits(safe, 5, 2), _digits(safe, 8, 2)
    hour, minute, sec = _digits(safe, 11, 2), _digits(safe, 14, 2), _digits(safe, 17, 2)
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    max_day = _DAYS_IN_MONTH[np.clip(month, 0, 12)] - ((month == 2) & ~leap)
    sane = (
        (month >= 1) & (month <= 12) & (day >= 1) & (day <= max_day)
        & (hour < 24) & (minute < 60) & (sec < 60) & (year >= 1970)
    )  # fmt: skip
    ok = shaped & sane
    ts = pc.cast(pc.if_else(pa.array(ok), safe, None), TIMESTAMP)
    return ts, missing, ~ok & ~missing


def parse_number(col: pa.Array) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """Parse decimals to float64; NaN, inf and text are bad. Returns (values, missing, bad)."""
    col = pc.utf8_trim_whitespace(col)
    missing = _as_mask(pc.or_kleene(pc.is_null(col), pc.equal(col, "")))
    shaped = _as_mask(pc.match_substring_regex(col, _NUMBER))
    values = pc.cast(pc.if_else(pa.array(shaped), col, None), pa.float64())
    return values, missing, ~shaped & ~missing


def normalise_tokens(
    col: pa.Array, table: dict[str, str]
) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """Map vendor tokens to canonical values (case-insensitive). Returns (values, missing, bad)."""
    key = pc.utf8_upper(pc.utf8_trim_whitespace(col))
    missing = _as_mask(pc.or_kleene(pc.is_null(key), pc.equal(key, "")))
    tokens = pa.array(list(table), pa.string())
    canon = pa.array(list(table.values()), pa.string())
    idx = pc.index_in(key, value_set=tokens)
    values = pc.take(canon, idx)
    bad = _as_mask(pc.is_null(idx)) & ~missing
    return values, missing, bad


def clean_string(col: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """Trim spaces; empty becomes null. Returns (values, missing)."""
    col = pc.utf8_trim_whitespace(col)
    missing = _as_mask(pc.or_kleene(pc.is_null(col), pc.equal(col, "")))
    return pc.if_else(pa.array(missing), None, col), missing
