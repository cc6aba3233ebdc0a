"""What a detector is: a clustering rule, a numba feature kernel, feature names with units, and a
score with an explanation. ``KernelInputs`` turns clustered Arrow events into the plain NumPy
arrays every kernel walks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from appliance.cluster import Clusters
from appliance.schema import EVENTS, SIDES


@dataclass(frozen=True)
class Feature:
    name: str
    unit: str
    description: str


@dataclass(frozen=True)
class Scores:
    """Per-cluster outputs: integer score 200–800, probability, and the log2-odds it came from."""

    score: np.ndarray
    confidence: np.ndarray
    log2_odds: np.ndarray


class Detector(Protocol):
    """One manipulation pattern. Register an instance in ``appliance.detectors.REGISTRY``."""

    name: ClassVar[str]
    model_version: ClassVar[str]
    description: ClassVar[str]
    cluster_keys: ClassVar[tuple[str, ...]]
    features: ClassVar[tuple[Feature, ...]]

    def compute(self, clusters: Clusters, inputs: KernelInputs) -> np.ndarray:
        """Return an ``(n_clusters, len(features))`` float64 matrix."""
        ...

    def score(self, matrix: np.ndarray) -> Scores:
        """Score every cluster."""
        ...

    def explain(self, row: np.ndarray) -> list[str]:
        """Plain-language reasons for one cluster's score (regulator-facing wording)."""
        ...


def _codes(col: pa.ChunkedArray, values: tuple[str, ...]) -> np.ndarray:
    idx = pc.index_in(col, value_set=pa.array(values, pa.string()))
    return np.asarray(pc.fill_null(idx, -1).to_numpy(), dtype=np.int8)


def _floats(col: pa.ChunkedArray) -> np.ndarray:
    return np.asarray(pc.fill_null(col.cast(pa.float64()), np.nan).to_numpy(), dtype=np.float64)


@dataclass(frozen=True)
class KernelInputs:
    """Columns of clustered events as NumPy arrays (NaN for missing numbers, -1 for codes)."""

    starts: np.ndarray
    key: np.ndarray
    ts: np.ndarray
    side: np.ndarray
    event: np.ndarray
    order: np.ndarray
    n_orders: int
    price: np.ndarray
    qty: np.ndarray
    leaves: np.ndarray
    exec_qty: np.ndarray

    @classmethod
    def build(cls, clusters: Clusters, keys: tuple[str, ...]) -> KernelInputs:
        ev = clusters.events
        from appliance.cluster import key_codes

        key = key_codes(ev, keys) if ev.num_rows else np.zeros(0, np.int64)
        order_key = pc.binary_join_element_wise(
            *[pc.fill_null(ev.column(k), "") for k in (*keys, "order_id")], "\x1f"
        )
        encoded = pc.dictionary_encode(order_key).combine_chunks() if ev.num_rows else None
        order = (np.asarray(encoded.indices.to_numpy(), dtype=np.int64) if encoded is not None
                 else np.zeros(0, np.int64))  # fmt: skip
        return cls(
            starts=clusters.starts,
            key=np.asarray(key, dtype=np.int64),
            ts=np.asarray(ev.column("ts").cast(pa.int64()).to_numpy(), dtype=np.int64),
            side=_codes(ev.column("side"), SIDES),
            event=_codes(ev.column("event"), EVENTS),
            order=order,
            n_orders=len(encoded.dictionary) if encoded is not None else 0,
            price=_floats(ev.column("price")),
            qty=_floats(ev.column("qty")),
            leaves=_floats(ev.column("leaves_qty")),
            exec_qty=_floats(ev.column("exec_qty")),
        )
