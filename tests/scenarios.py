"""Tiny hand-written order-event scenarios for tests (the simulator gives volume; these give
values that can be computed by hand)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

HEADER = ("ts,firm,trader,account,symbol,side,event,order_id,price,qty,leaves_qty,exec_qty,"
          "exec_price,venue")
BASE = "2026-11-23T14:30:"


def ts(seconds: float) -> str:
    """Seconds after 14:30:00 on 2026-11-23 as canonical ISO-8601 UTC."""
    whole = int(seconds)
    nanos = round((seconds - whole) * 1e9)
    minutes, sec = divmod(whole, 60)
    return f"2026-11-23T14:{30 + minutes:02d}:{sec:02d}.{nanos:09d}Z"


@dataclass
class Book:
    """Accumulates canonical CSV rows for one scenario."""

    rows: list[str] = field(default_factory=list)

    def add(self, t, trader, side, event, oid, price="", qty="", leaves="", exec_qty="",
            exec_price="", symbol="ESZ6", account=None):
        account = account or f"A-{trader}"
        self.rows.append(",".join(str(x) for x in (
            ts(t), "F1", trader, account, symbol, side, event, oid, price, qty, leaves,
            exec_qty, exec_price, "CME")))
        return self

    def spoof_cycle(self, t0, trader, oid, bait_side="SELL", genuine_qty=2, bait_qty=40,
                    symbol="ESZ6"):
        """Genuine small order, big bait opposite, genuine fills, bait cancelled 150 ms later."""
        gen_side = "BUY" if bait_side == "SELL" else "SELL"
        self.add(t0, trader, gen_side, "NEW", f"{oid}g", 100.0, genuine_qty, genuine_qty,
                 symbol=symbol)
        self.add(t0 + 0.05, trader, bait_side, "NEW", f"{oid}b", 100.5, bait_qty, bait_qty,
                 symbol=symbol)
        self.add(t0 + 0.30, trader, gen_side, "FILL", f"{oid}g", 100.0, genuine_qty, 0,
                 genuine_qty, 100.0, symbol=symbol)
        self.add(t0 + 0.45, trader, bait_side, "CANCEL", f"{oid}b", 100.5, bait_qty, 0,
                 symbol=symbol)
        return self

    def market_maker(self, t0, trader, n, symbol="ESZ6"):
        """Two-sided quotes of equal size, requoted; an occasional fill, then a requote."""
        for k in range(n):
            t = t0 + k * 0.5
            self.add(t, trader, "BUY", "NEW", f"{trader}b{k}", 99.75, 5, 5, symbol=symbol)
            self.add(t + 0.01, trader, "SELL", "NEW", f"{trader}s{k}", 100.25, 5, 5,
                     symbol=symbol)
            if k % 4 == 0:
                self.add(t + 0.2, trader, "BUY", "FILL", f"{trader}b{k}", 99.75, 5, 4, 1, 99.75,
                         symbol=symbol)
            self.add(t + 0.4, trader, "BUY", "CANCEL", f"{trader}b{k}", 99.75, 5, 0,
                     symbol=symbol)
            self.add(t + 0.41, trader, "SELL", "CANCEL", f"{trader}s{k}", 100.25, 5, 0,
                     symbol=symbol)
        return self

    def write(self, path: Path) -> Path:
        path.write_text(HEADER + "\n" + "\n".join(self.rows) + "\n", encoding="utf-8")
        return path
