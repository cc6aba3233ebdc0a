"""Clustering: group one key's events (e.g. trader × instrument) into bursts split by time gaps.

The output is the events sorted by (key, ts) plus cluster boundaries, which is exactly what the
feature kernels walk: cluster ``c`` is rows ``starts[c]:starts[c + 1]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


@dataclass(frozen=True)
class Clusters:
    """Events sorted by key then time, and the row where each cluster starts (plus an end)."""

    events: pa.Table
    starts: np.ndarray  # int64, length n_clusters + 1

    @property
    def count(self) -> int:
        return int(self.starts.shape[0] - 1)

    def ids(self) -> np.ndarray:
        """Cluster index of every event row."""
        return np.repeat(np.arange(self.count), np.diff(self.starts))


def key_codes(table: pa.Table, keys: tuple[str, ...]) -> np.ndarray:
    """Dense int codes of the composite key, ordered like the sorted key values."""
    joined = pc.binary_join_element_wise(*[pc.fill_null(table.column(k), "") for k in keys], "\x1f")
    encoded = pc.dictionary_encode(joined).combine_chunks()
    order = np.argsort(np.asarray(encoded.dictionary.to_pylist(), dtype=object), kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return rank[encoded.indices.to_numpy()]


def gap_clusters(table: pa.Table, keys: tuple[str, ...], gap_ns: int) -> Clusters:
    """Sort by (key, ts, line) and start a new cluster at every key change or pause > ``gap_ns``."""
    if table.num_rows == 0:
        return Clusters(table, np.zeros(1, np.int64))
    codes = key_codes(table, keys)
    ts = table.column("ts").cast(pa.int64()).to_numpy()
    tiebreak = np.arange(table.num_rows)  # rows arrive ts-sorted per file; keep that order
    order = np.lexsort((tiebreak, ts, codes))
    events = table.take(pa.array(order))
    codes, ts = codes[order], ts[order]
    boundary = np.empty(events.num_rows, bool)
    boundary[0] = True
    boundary[1:] = (codes[1:] != codes[:-1]) | (np.diff(ts) > gap_ns)
    starts = np.append(np.flatnonzero(boundary), events.num_rows).astype(np.int64)
    return Clusters(events, starts)
