"""Token tables: the many spellings vendors use for a side or an event, mapped to canonical values.

These tables are data, part of the ETL version: changing one changes every output's etl_version.
Matching is case-insensitive after trimming spaces.
"""

from __future__ import annotations

SIDE_TOKENS: dict[str, str] = {
    # buy: FIX 54=1, German "Kauf", bought
    "B": "BUY", "BUY": "BUY", "BOT": "BUY", "BY": "BUY", "1": "BUY", "K": "BUY", "BID": "BUY",
    # sell: FIX 54=2/5/6 (short, short exempt), German "Verkauf", sold
    "S": "SELL", "SELL": "SELL", "SLD": "SELL", "SL": "SELL", "2": "SELL", "5": "SELL",
    "6": "SELL", "SS": "SELL", "SSE": "SELL", "V": "SELL", "ASK": "SELL", "OFFER": "SELL",
}  # fmt: skip

EVENT_TOKENS: dict[str, str] = {
    "NEW": "NEW", "N": "NEW", "ADD": "NEW", "ENTER": "NEW", "ENTRY": "NEW", "D": "NEW",
    "MODIFY": "MODIFY", "MOD": "MODIFY", "M": "MODIFY", "REPLACE": "MODIFY", "AMEND": "MODIFY",
    "G": "MODIFY", "CXLREP": "MODIFY",
    "CANCEL": "CANCEL", "CXL": "CANCEL", "C": "CANCEL", "X": "CANCEL", "CANCELLED": "CANCEL",
    "FILL": "FILL", "F": "FILL", "TRADE": "FILL", "EXEC": "FILL", "PARTIAL": "FILL",
    "PARTIAL_FILL": "FILL", "PF": "FILL", "T": "FILL",
    "REJECT": "REJECT", "REJ": "REJECT", "J": "REJECT", "REJECTED": "REJECT",
}  # fmt: skip
