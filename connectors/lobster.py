"""``lobster``: a LOBSTER message file plus its orderbook sibling to top-of-book market data.

``read(path)`` takes the message file ``TICKER_YYYY-MM-DD_start_end_message_LEVEL.csv`` and finds
``..._orderbook_LEVEL.csv`` next to it (same stem, ``message`` -> ``orderbook``); line *k* of one
describes the book after message *k* of the other. A header line (as in some exports) is skipped.

* message columns: Time (seconds after midnight, New York local time, up to ns decimals), Type
  (1 submit, 2 partial cancel, 3 delete, 4 visible execution, 5 hidden execution, 7 halt),
  OrderId, Size, Price (dollars x 10000), Direction (1 buy, -1 sell);
* orderbook columns, per level: AskPrice, AskSize, BidPrice, BidSize (level 1 is used).

A row is emitted for every execution (types 4 and 5: ``last``/``last_size`` plus the book) and for
every message that changes the top of book (a quote); messages that leave the top unchanged and
halt messages (type 7) are ``ignored``. Empty levels (LOBSTER dummy prices +-9999999999) give null
prices. The trading date comes from the file name; the symbol is the file name's ticker.
"""

from __future__ import annotations

import functools
import io
import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from appliance.schema import MARKET_DATA, TIMESTAMP
from connectors.base import InputRefused, ReadResult
from connectors.lines import join_lines, quarantine_lines, scan_lines
from connectors.parse import parse_number

NAME_RE = re.compile(
    r"^(?P<ticker>.+?)_(?P<date>\d{4}-\d{2}-\d{2})_(?P<start>\d+)_(?P<end>\d+)_message_(?P<level>\d+)"
    r"\.csv$", re.IGNORECASE,
)  # fmt: skip
MESSAGE_COLUMNS = ("time", "type", "order_id", "size", "price", "direction")
DUMMY = 9999999999
PRICE_SCALE = 10000.0


@functools.lru_cache(maxsize=4096)
def new_york_offset(day: date) -> timedelta:
    """UTC offset of New York at noon on ``day`` (no DST switch happens during a session)."""
    try:
        from zoneinfo import ZoneInfo

        noon = datetime(day.year, day.month, day.day, 12, tzinfo=ZoneInfo("America/New_York"))
        return noon.utcoffset()  # type: ignore[return-value]
    except Exception:  # no tz database (frozen bundle): US rules since 2007
        march = date(day.year, 3, 8)
        start = march + timedelta(days=(6 - march.weekday()) % 7)  # second Sunday of March
        nov = date(day.year, 11, 1)
        end = nov + timedelta(days=(6 - nov.weekday()) % 7)  # first Sunday of November
        return timedelta(hours=-4 if start <= day < end else -5)


def orderbook_sibling(path: Path) -> Path:
    name = re.sub(r"_message_(\d+)\.csv$", r"_orderbook_\1.csv", path.name, flags=re.IGNORECASE)
    return path.with_name(name)


class LobsterConnector:
    """LOBSTER message + orderbook CSV pair to top-of-book quotes and trades."""

    name: ClassVar[str] = "lobster"
    kind: ClassVar[str] = "market"
    description: ClassVar[str] = (
        "LOBSTER message file (+ orderbook sibling): top-of-book quotes and executions"
    )
    version: ClassVar[str] = "1"
    #: which files of a directory are inputs (the orderbook files are read through them)
    inputs: ClassVar[str] = "*_message_*.csv"

    def read(self, path: Path, source: str) -> ReadResult:
        path = Path(path)
        m = NAME_RE.match(path.name)
        if not m:
            raise InputRefused(
                path, "file name", "not a LOBSTER message file name",
                "expected TICKER_YYYY-MM-DD_start_end_message_LEVEL.csv",
            )  # fmt: skip
        try:
            day = date.fromisoformat(m["date"])
        except ValueError as exc:
            raise InputRefused(path, "file name", f"bad trading date {m['date']!r}") from exc
        book_path = orderbook_sibling(path)
        if not book_path.exists():
            raise InputRefused(path, "orderbook", f"orderbook sibling {book_path.name} not found",
                               "LOBSTER data comes in message/orderbook pairs")  # fmt: skip
        symbol = m["ticker"]
        data = path.read_bytes()
        book = book_path.read_bytes()
        ml = scan_lines(data)
        bl = scan_lines(book)
        mhead = self._has_header(data, ml)
        bhead = self._has_header(book, bl)
        mbody = np.arange(int(mhead), ml.count)
        bbody = np.arange(int(bhead), bl.count)
        if mbody.size != bbody.size:
            raise InputRefused(path, "orderbook", f"{mbody.size} messages but {bbody.size} "
                               f"orderbook lines in {book_path.name}")  # fmt: skip
        rejects: list[tuple[np.ndarray, str, str | None]] = []
        blank = ml.blank[mbody] & bl.blank[bbody]
        garbage = ~blank & ~(ml.valid_utf8[mbody] & bl.valid_utf8[bbody])
        rejects.append((mbody[garbage], "invalid_utf8", None))
        bwidth = bl.nfields[bbody]
        mwidth = ~blank & ~garbage & (ml.nfields[mbody] != 6)
        rejects.append((mbody[mwidth], "column_count", None))
        book_w = ~blank & ~garbage & ~mwidth & ((bwidth < 4) | (bwidth % 4 != 0))
        rejects.append((mbody[book_w], "column_count", "orderbook"))
        good = ~blank & ~garbage & ~mwidth & ~book_w
        gm, gb = mbody[good], bbody[good]

        msg = self._cells(path, join_lines(ml.buf, ml.starts[gm], ml.ends[gm]), 6,
                          list(MESSAGE_COLUMNS))  # fmt: skip
        width = int(bwidth[good][0]) if gm.size else 4
        same = bwidth[good] == width
        if not same.all():  # keep the dominant layout, refuse the rest line by line
            rejects.append((gm[~same], "column_count", "orderbook"))
            gm, gb = gm[same], gb[same]
            msg = msg.filter(pa.array(same))
        names = ["ask", "ask_size", "bid", "bid_size"] + [f"_x{i}" for i in range(width - 4)]
        bk = self._cells(book_path, join_lines(bl.buf, bl.starts[gb], bl.ends[gb]), width, names)

        n = len(gm)
        failed = np.zeros(n, bool)

        def num(table, col, field):
            vals, missing, bad = parse_number(table.column(col).combine_chunks())
            arr = vals.to_numpy(zero_copy_only=False).astype(float)
            for mask, why in ((bad, "non_numeric"), (missing, "missing_value")):
                new = mask & ~failed
                if new.any():
                    rejects.append((gm[new], why, field))
                    failed[:] |= new
            return arr

        def fail(mask, why, field):
            new = mask & ~failed
            if new.any():
                rejects.append((gm[new], why, field))
                failed[:] |= new

        t = num(msg, "time", "time")
        typ = num(msg, "type", "type")
        size = num(msg, "size", "size")
        price = num(msg, "price", "price")
        direction = num(msg, "direction", "direction")
        ask, ask_size = num(bk, "ask", "orderbook"), num(bk, "ask_size", "orderbook")
        bid, bid_size = num(bk, "bid", "orderbook"), num(bk, "bid_size", "orderbook")
        with np.errstate(invalid="ignore"):
            fail(~np.isin(typ, (1, 2, 3, 4, 5, 6, 7)), "unknown_token", "type")
            fail(~np.isin(direction, (1, -1)), "unknown_token", "direction")
            fail(~((t >= 0) & (t < 86400 * 2)), "impossible_value", "time")
            fail((size < 0) | (size > 1e12), "impossible_value", "size")
            fail((np.abs(price) > DUMMY) | ((price < 0) & (typ != 7)), "impossible_value",
                 "price")  # fmt: skip
            fail((ask_size < 0) | (bid_size < 0) | (np.abs(ask) > DUMMY) | (np.abs(bid) > DUMMY),
                 "impossible_value", "orderbook")  # fmt: skip

        empty_ask = (ask >= DUMMY) | (ask_size <= 0)
        empty_bid = (bid <= -DUMMY) | (bid_size <= 0)
        a = np.where(empty_ask, np.nan, ask / PRICE_SCALE)
        asz = np.where(empty_ask, np.nan, ask_size)
        b = np.where(empty_bid, np.nan, bid / PRICE_SCALE)
        bsz = np.where(empty_bid, np.nan, bid_size)
        trade = np.isin(typ, (4, 5))
        ok = ~failed & (typ != 7)
        # emit trades and top-of-book changes (compared with the previous emitted row)
        emit = np.zeros(n, bool)
        top = np.stack([a, asz, b, bsz], axis=1)
        idx = np.flatnonzero(ok)
        if idx.size:
            tops = top[idx]
            changed = np.ones(idx.size, bool)
            cur, prev = tops[1:], tops[:-1]
            same_as_prev = np.all((cur == prev) | (np.isnan(cur) & np.isnan(prev)), axis=1)
            changed[1:] = ~same_as_prev
            emit[idx] = changed | trade[idx]
        midnight = datetime(day.year, day.month, day.day, tzinfo=UTC) - new_york_offset(day)
        base = int(midnight.timestamp()) * 1_000_000_000
        ts = base + np.round(np.nan_to_num(t) * 1e9).astype(np.int64)
        k = np.flatnonzero(emit)
        rows = gm[k]
        events = pa.table(
            {
                "ts": pa.array(ts[k], pa.int64()).cast(TIMESTAMP),
                "symbol": pa.array([symbol] * k.size, pa.string()),
                "bid": pa.array(b[k], from_pandas=True),
                "bid_size": pa.array(bsz[k], from_pandas=True),
                "ask": pa.array(a[k], from_pandas=True),
                "ask_size": pa.array(asz[k], from_pandas=True),
                "last": pa.array(np.where(trade[k], price[k] / PRICE_SCALE, np.nan),
                                 from_pandas=True),  # fmt: skip
                "last_size": pa.array(np.where(trade[k], size[k], np.nan), from_pandas=True),
                "source": pa.array([source] * k.size, pa.string()),
                "offset": pa.array(ml.starts[rows], pa.int64()),
                "line": pa.array(rows + 1, pa.int64()),
            }
        ).cast(MARKET_DATA)
        quarantine, reasons = quarantine_lines(source, path, ml, rejects, "lobster:parse")
        rows_total = int(mbody.size)
        result = ReadResult(events=events, quarantine=quarantine, rows=rows_total,
                            ignored=rows_total - events.num_rows - quarantine.num_rows,
                            reasons=reasons)  # fmt: skip
        result.check_balance()
        return result

    @staticmethod
    def _has_header(data: bytes, lines) -> bool:
        nonblank = np.flatnonzero(~lines.blank)
        if nonblank.size == 0 or nonblank[0] != 0:
            return False
        first = data[lines.starts[0] : lines.ends[0]].split(b",")[0].strip()
        return not re.fullmatch(rb"[-+0-9.]+", first)

    @staticmethod
    def _cells(path: Path, text: bytes, width: int, names: list[str]) -> pa.Table:
        if not text:
            return pa.table({c: pa.array([], pa.string()) for c in names})
        try:
            return pacsv.read_csv(
                io.BytesIO(text),
                read_options=pacsv.ReadOptions(column_names=names, use_threads=False),
                convert_options=pacsv.ConvertOptions(
                    column_types={c: pa.string() for c in names}, strings_can_be_null=True,
                    null_values=[""],  # "NaN", "NULL", "N/A" stay text (and fail as numbers)
                ),
            )
        except pa.ArrowInvalid as exc:  # the pre-scan makes this unreachable
            raise InputRefused(path, "body", f"CSV structure error: {exc}") from exc
