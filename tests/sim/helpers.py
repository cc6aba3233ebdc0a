"""Small readers for simulator output used by the tests."""

from __future__ import annotations

import csv
from collections import defaultdict
from datetime import datetime

import numpy as np


def ns(ts: str) -> int:
    d = datetime.strptime(ts[:19], "%Y-%m-%dT%H:%M:%S")
    from datetime import UTC

    return int(d.replace(tzinfo=UTC).timestamp()) * 10**9 + int(ts[20:29])


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def mids(market_rows, symbol):
    """(ts_ns array, mid array) of quote rows for ``symbol``."""
    t, m = [], []
    for r in market_rows:
        if r["symbol"] == symbol and r["bid"] and r["ask"]:
            t.append(ns(r["ts"]))
            m.append((float(r["bid"]) + float(r["ask"])) / 2)
    return np.array(t, np.int64), np.array(m)


def mid_at(t, m, when):
    i = np.searchsorted(t, when, side="right") - 1
    return m[max(i, 0)]


def orders_by_id(order_rows):
    d = defaultdict(list)
    for r in order_rows:
        d[r["order_id"]].append(r)
    return d
