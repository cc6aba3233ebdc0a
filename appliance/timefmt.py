"""Timestamps as the product shows them: ISO-8601 UTC with nanoseconds."""

from __future__ import annotations

from datetime import UTC, datetime


def iso_ns(ns: int) -> str:
    """``1795444200000000001`` → ``2026-11-23T14:30:00.000000001Z``."""
    seconds, frac = divmod(int(ns), 1_000_000_000)
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{frac:09d}Z"


def now_iso() -> str:
    """The current UTC time, microsecond precision."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
