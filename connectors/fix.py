"""``fix``: FIX 4.x / 5.0 tag=value order flow (session logs or raw messages) to order events.

Accepted layouts, line by line (LF or CRLF; a lone CR between messages is tolerated):

* QuickFIX file-log lines ``YYYYMMDD-HH:MM:SS.sss : 8=FIX.4.2<SOH>9=...<SOH>10=123<SOH>``
  (any text before ``8=FIX`` is kept as the record's prefix; a QuickFIX timestamp there is used);
* raw messages, one or several per line;
* field delimiter SOH (0x01), ``|`` or the two characters ``^A`` (detected per message).

Every message is verified: BodyLength(9) and CheckSum(10) are recomputed as if the delimiter were
SOH, so a ``|`` log whose checksums were computed on the wire verifies. A message that fails is
quarantined (``bad_body_length``, ``bad_checksum``, ``malformed``, ``invalid_utf8``).

Order lifecycles are stitched across NewOrderSingle (D), OrderCancelRequest (F),
OrderCancelReplaceRequest (G), ExecutionReport (8) and OrderCancelReject (9) through
ClOrdID(11) / OrigClOrdID(41) chains (OrderID(37) as a fallback). The stable ``order_id`` is the
ClOrdID that started the chain. Event semantics:

* one ``NEW`` per order: from the D when it is in the file (its ExecType=0 acknowledgement is
  stitched into it), else from the acknowledgement;
* one ``MODIFY`` per replace (G, or ExecType=5 without a G); a G rejected by a 35=9 yields none;
* one ``CANCEL`` per cancelled order (F, or ExecType=4/C without an F); a refused F yields none;
* one ``FILL`` per execution (ExecType 1/2 in FIX 4.2, F in 4.4+; OrdStatus when ExecType is
  absent), with ``exec_qty``=LastQty(32), ``exec_price``=LastPx(31), ``leaves_qty``=LeavesQty(151);
* ``REJECT`` for an order rejected by the venue (ExecType=8 answering a D).

Duplicates (PossDup(43)=Y / PossResend(97)=Y resends, or any repeated ExecID(17) or request
ClOrdID) are quarantined as ``duplicate``; references to an order not seen in the file are
quarantined as ``orphan_reference`` (their raw bytes allow a later cross-file pass).

Read in chunks (``FixCarry``: the chains carried from chunk to chunk, done orders pruned), a
chunk that is not the last stops before the tail the next chunk could change (``_cut``:
unanswered requests, messages that may follow a later-logged one in time); a refusal that
arrives after its request's CANCEL/MODIFY was committed anyway is quarantined ``late_answer``.

``ignored`` counts blank lines, session messages (Logon, Heartbeat, TestRequest, ResendRequest,
Reject, SequenceReset, Logout), business messages that carry no order event (OrderCancelReject,
pending/status/done-for-day/restated reports, trade busts) and acknowledgements stitched into the
request they confirm.

The timestamp is, in order of preference, the QuickFIX log timestamp (one clock for the whole
file), TransactTime(60), SendingTime(52); all are UTC. Trader: Parties(453) PartyID(448) with
PartyRole(452) 11/12/36, else SenderSubID(50) of a request / TargetSubID(57) of a report, else
SenderSubID(50) of a report (drop copies), else OnBehalfOfSubID(116), else inherited from the
order. Firm: Parties role 13/1/7, else the firm's CompID (49 of a request, 56 of a report).
Venue: LastMkt(30), SecurityExchange(207), else the counterparty CompID. Account: tag 1.
CME audit-trail tags (1028 manual flag, 9702 CTI code, 204 customer-or-firm, 107 security
description, 142 location) and the raw FIX identifiers are returned per event in
``ReadResult.extras`` (see ``EXTRA_TAGS``), aligned row for row with ``events``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numba import njit

from appliance.arrays import count_runs, distinct
from appliance.schema import ORDER_EVENTS, QUARANTINE, TIMESTAMP
from connectors.base import ReadResult, string_array
from connectors.lines import raw_slices, utf8_ok
from connectors.parse import parse_number

# ---------------------------------------------------------------------------------------------
# Tags extracted from every message (first occurrence wins); column index = position here.
TAGS = (
    8, 9, 35, 34, 43, 97, 49, 56, 50, 57, 116, 52, 60, 1, 11, 41, 37, 17, 20, 150, 39,
    54, 55, 44, 38, 151, 32, 31, 14, 30, 207, 107, 1028, 9702, 204, 142, 48, 58,
)  # fmt: skip
COL = {tag: i for i, tag in enumerate(TAGS)}
C_PARTY_TRADER = len(TAGS)  # PartyID with a trader role
C_PARTY_FIRM = len(TAGS) + 1  # PartyID with a firm role
C_PREFIX = len(TAGS) + 2  # text before 8=FIX (log timestamp)
NCOLS = len(TAGS) + 3
# column indices the kernels use
_C1, _C30, _C31, _C32, _C38, _C44, _C49, _C50, _C52, _C54, _C55, _C56, _C57, _C60, _C116, \
    _C151, _C207 = (COL[t] for t in (1, 30, 31, 32, 38, 44, 49, 50, 52, 54, 55, 56, 57, 60, 116,
                                      151, 207))
# event output columns resolved by ``_resolve``
(O_FIRM, O_TRADER, O_ACCOUNT, O_SYMBOL, O_VENUE, O_SIDE, O_PRICE, O_QTY, O_LEAVES, O_EXQTY,
 O_EXPX) = range(11)  # fmt: skip
N_OUT = 11
_CODE_COLS = np.array([COL[35], COL[150], COL[39], COL[20]], np.int64)  # single-byte codes
_POW10 = np.array([10.0**k for k in range(23)])
_TAG_INDEX = np.full(10000, -1, np.int32)
for _t, _i in COL.items():
    _TAG_INDEX[_t] = _i

#: Extra per-event columns (``ReadResult.extras``): audit-trail and identifier tags kept verbatim.
EXTRA_TAGS = {
    "cl_ord_id": 11, "orig_cl_ord_id": 41, "fix_order_id": 37, "exec_id": 17, "msg_type": 35,
    "exec_type": 150, "ord_status": 39, "msg_seq_num": 34, "sender_comp_id": 49,
    "target_comp_id": 56, "sender_sub_id": 50, "target_sub_id": 57, "security_desc": 107,
    "security_id": 48, "manual_order_indicator": 1028, "cti_code": 9702,
    "customer_or_firm": 204, "location_id": 142, "cum_qty": 14,
}  # fmt: skip

# Parse status codes (numba) and their quarantine reasons.
OK, BAD_UTF8, MALFORMED, BAD_CHECKSUM, BAD_BODYLEN = 0, 1, 2, 3, 4
_STATUS_REASON = {BAD_UTF8: "invalid_utf8", MALFORMED: "malformed",
                  BAD_CHECKSUM: "bad_checksum", BAD_BODYLEN: "bad_body_length"}  # fmt: skip

# Message classes.
M_NONE, M_D, M_F, M_G, M_ER, M_CXLREJ, M_SESSION, M_OTHER = 0, 1, 2, 3, 4, 5, 6, 7
# Stitching actions per message.
(A_QUAR, A_IGNORE, A_NEW, A_MODIFY, A_CANCEL, A_FILL, A_REJECT, A_STITCHED,
 A_DUP, A_ORPHAN, A_BADTOKEN, A_LATE) = range(12)  # fmt: skip
_ACTION_EVENT = {A_NEW: "NEW", A_MODIFY: "MODIFY", A_CANCEL: "CANCEL", A_FILL: "FILL",
                 A_REJECT: "REJECT"}  # fmt: skip
_EVENT_ARRAY = pa.array([_ACTION_EVENT.get(a, "") for a in range(A_LATE + 1)], pa.string())
FIX_SIDES = {"1": "BUY", "2": "SELL", "3": "BUY", "4": "SELL", "5": "SELL", "6": "SELL"}
_SIDE_VALUES = pa.array(list(FIX_SIDES.values()), pa.string())
_MAX_ABS = 1e15  # larger prices / quantities are impossible values (huge integers)

NAT = np.iinfo(np.int64).min


# ---------------------------------------------------------------------------------------------
# numba kernels
@njit(cache=True)
def _find_fix(buf, start, end):  # pragma: no cover - numba
    """Index of the next ``8=FIX`` at or after ``start`` (preceded by nothing, space or delim)."""
    i = start
    while i + 5 <= end:
        if (buf[i] == 56 and buf[i + 1] == 61 and buf[i + 2] == 70 and buf[i + 3] == 73
                and buf[i + 4] == 88):
            if i == start:
                return i
            p = buf[i - 1]
            if p == 32 or p == 9 or p == 1 or p == 124 or p == 13 or p == 65:
                return i
        i += 1
    return -1


@njit(cache=True)
def _days_from_civil(y, m, d):  # pragma: no cover - numba
    y -= m <= 2
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    mp = (m + 9) % 12
    doy = (153 * mp + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


@njit(cache=True)
def _num(buf, i, n):  # pragma: no cover - numba
    v = 0
    for k in range(i, i + n):
        c = buf[k] - 48
        if c < 0 or c > 9:
            return -1
        v = v * 10 + c
    return v


@njit(cache=True)
def _fix_ts(buf, s, e):  # pragma: no cover - numba
    """``YYYYMMDD-HH:MM:SS[.f{1,9}]`` (UTC) to ns since the epoch; NAT when malformed."""
    while e > s and buf[e - 1] == 32:
        e -= 1
    while s < e and buf[s] == 32:
        s += 1
    if e - s < 17 or buf[s + 8] != 45 or buf[s + 11] != 58 or buf[s + 14] != 58:
        return NAT
    y, mo, d = _num(buf, s, 4), _num(buf, s + 4, 2), _num(buf, s + 6, 2)
    h, mi, se = _num(buf, s + 9, 2), _num(buf, s + 12, 2), _num(buf, s + 15, 2)
    if y < 1970 or mo < 1 or mo > 12 or d < 1 or h > 23 or mi > 59 or se > 60 or h < 0:
        return NAT
    if mi < 0 or se < 0:
        return NAT
    mdays = 31
    if mo == 4 or mo == 6 or mo == 9 or mo == 11:
        mdays = 30
    elif mo == 2:
        leap = (y % 4 == 0) and ((y % 100 != 0) or (y % 400 == 0))
        mdays = 29 if leap else 28
    if d > mdays:
        return NAT
    frac = 0
    if e - s > 17:
        if buf[s + 17] != 46 or e - s - 18 < 1 or e - s - 18 > 9:
            return NAT
        nd = e - s - 18
        frac = _num(buf, s + 18, nd)
        if frac < 0:
            return NAT
        for _ in range(9 - nd):
            frac *= 10
    days = _days_from_civil(y, mo, d)
    return ((days * 24 + h) * 60 + mi) * 60_000_000_000 + se * 1_000_000_000 + frac


@njit(cache=True)
def _scan_fix(buf, tag_index, ncols, c_trader, c_firm, c_prefix, span_type,
              span_max):  # pragma: no cover - numba
    """Split ``buf`` into records (messages) and extract the value spans of the wanted tags.

    Returns per record: start, end (raw record bytes), line number, status, offending tag,
    delimiter-normalised value spans (vs, ve: -1 when absent), and the count of blank lines.
    """
    size = buf.shape[0]
    cap = 16
    for k in range(size):  # one record per line in the common case: size the arrays once
        if buf[k] == 10 or buf[k] == 13:
            cap += 1
    rstart = np.empty(cap, np.int64)
    rend = np.empty(cap, np.int64)
    rline = np.empty(cap, np.int64)
    rstat = np.empty(cap, np.int8)
    rfield = np.empty(cap, np.int32)
    # value start (relative to the record start) and length, one row per record: a record's
    # spans are contiguous (returned transposed: ``vs[col, record]``), in the dtype of
    # ``span_type``: a record longer than ``span_max`` bytes stops the scan (blanks -1)
    vs = np.full((cap, ncols), -1, span_type.dtype)
    vl = np.zeros((cap, ncols), span_type.dtype)
    n = 0
    blanks = 0
    pos = 3 if size >= 3 and buf[0] == 0xEF and buf[1] == 0xBB and buf[2] == 0xBF else 0
    lineno = 0
    while pos < size:
        lineno += 1
        le = pos  # a line ends at LF, or at a CR not followed by LF (CR-only files)
        plain = True  # no NUL and no byte >= 0x80 on the line: valid UTF-8 without a check
        while le < size:
            b = buf[le]
            if b == 10 or (b == 13 and (le + 1 == size or buf[le + 1] != 10)):
                break
            if b == 0 or b >= 128:
                plain = False
            le += 1
        nxt = le + 1
        end = le
        while end > pos and (buf[end - 1] == 13 or buf[end - 1] == 32 or buf[end - 1] == 9):
            end -= 1
        if end == pos:
            blanks += 1
            pos = nxt
            continue
        valid = plain or utf8_ok(buf, pos, end)
        rec = pos  # start of the current record
        first = True
        while rec < end:
            if n == cap:  # grow
                cap *= 2
                rstart = np.concatenate((rstart, np.empty(cap - n, np.int64)))
                rend = np.concatenate((rend, np.empty(cap - n, np.int64)))
                rline = np.concatenate((rline, np.empty(cap - n, np.int64)))
                rstat = np.concatenate((rstat, np.empty(cap - n, np.int8)))
                rfield = np.concatenate((rfield, np.empty(cap - n, np.int32)))
                vs = np.concatenate((vs, np.full((cap - n, ncols), -1, span_type.dtype)))
                vl = np.concatenate((vl, np.zeros((cap - n, ncols), span_type.dtype)))
            if end - rec > span_max:  # the spans' dtype is too narrow for this record
                return (rstart[:0], rend[:0], rline[:0], rstat[:0], rfield[:0], vs[:0].T,
                        vl[:0].T, -1)
            rstart[n] = rec
            rline[n] = lineno
            rfield[n] = 0
            rstat[n] = OK
            if not valid:
                rstat[n] = BAD_UTF8
                rend[n] = end
                n += 1
                break
            m = _find_fix(buf, rec, end)
            if m < 0:
                rstat[n] = MALFORMED
                rfield[n] = 8
                rend[n] = end
                n += 1
                break
            if first and m > rec:
                vs[n, c_prefix] = 0
                vl[n, c_prefix] = m - rec
            first = False
            # delimiter: the byte after the BeginString value
            j = m + 2
            while j < end and buf[j] != 1 and buf[j] != 124 and not (
                buf[j] == 94 and j + 1 < end and buf[j + 1] == 65
            ):
                j += 1
            if j >= end:
                rstat[n] = MALFORMED
                rfield[n] = 9
                rend[n] = end
                n += 1
                break
            delim = buf[j]
            dlen = 2 if delim == 94 else 1
            # walk the fields
            i = m
            csum = 0
            fieldno = 0
            body_start = -1
            body_len = -1
            measured_len = 0
            done = False
            status = OK
            bad_field = 0
            last_party = -1
            last_party_end = -1
            trader_rank = 99
            firm_rank = 99
            while i < end:
                # tag
                tag = 0
                fsum = 61  # the field's byte sum (for the checksum): tag, '=', value
                k = i
                while k < end and buf[k] >= 48 and buf[k] <= 57 and k - i < 9:
                    tag = tag * 10 + (buf[k] - 48)
                    fsum += buf[k]
                    k += 1
                if k == i or k >= end or buf[k] != 61:
                    status = MALFORMED
                    bad_field = tag if k > i else 0
                    break
                v0 = k + 1
                v1 = v0
                while v1 < end:
                    b = buf[v1]
                    if b == delim and (dlen == 1 or (v1 + 1 < end and buf[v1 + 1] == 65)):
                        break
                    fsum += b
                    v1 += 1
                fieldno += 1
                if tag == 10:
                    if v1 - v0 != 3 or _num(buf, v0, 3) < 0:
                        status = MALFORMED
                        bad_field = 10
                        break
                    if body_start < 0:
                        status = MALFORMED
                        bad_field = 9
                    elif measured_len != body_len:
                        status = BAD_BODYLEN
                        bad_field = 9
                    elif _num(buf, v0, 3) != csum % 256:
                        status = BAD_CHECKSUM
                        bad_field = 10
                    i = v1 + dlen if v1 < end else end
                    done = True
                    break
                # checksum / body length accounting (this field plus its delimiter)
                csum += fsum + 1
                if fieldno == 2:
                    if tag != 9:
                        status = MALFORMED
                        bad_field = 9
                        break
                    body_len = _num(buf, v0, v1 - v0) if 0 < v1 - v0 <= 9 else -1
                    if body_len < 0:
                        status = MALFORMED
                        bad_field = 9
                        break
                    body_start = 0
                    measured_len = 0
                elif fieldno == 1:
                    if tag != 8:
                        status = MALFORMED
                        bad_field = 8
                        break
                else:
                    measured_len += v1 - i + 1
                if tag < 10000:
                    idx = tag_index[tag]
                    if idx >= 0 and vs[n, idx] < 0:
                        vs[n, idx] = v0 - rec
                        vl[n, idx] = v1 - v0
                if tag == 448:
                    last_party = v0
                    last_party_end = v1
                elif tag == 452 and last_party >= 0:
                    role = _num(buf, v0, v1 - v0) if 0 < v1 - v0 <= 4 else -1
                    tr = 99
                    if role == 11:
                        tr = 0
                    elif role == 12:
                        tr = 1
                    elif role == 36:
                        tr = 2
                    fr = 99
                    if role == 13:
                        fr = 0
                    elif role == 1:
                        fr = 1
                    elif role == 7:
                        fr = 2
                    if tr < trader_rank:
                        trader_rank = tr
                        vs[n, c_trader] = last_party - rec
                        vl[n, c_trader] = last_party_end - last_party
                    if fr < firm_rank:
                        firm_rank = fr
                        vs[n, c_firm] = last_party - rec
                        vl[n, c_firm] = last_party_end - last_party
                    last_party = -1
                if v1 >= end:
                    i = end
                    break
                i = v1 + dlen
            if status == OK and not done:
                status = MALFORMED
                bad_field = 10
            rstat[n] = status
            rfield[n] = bad_field
            # another message on the same line?
            rest = i
            while rest < end and (buf[rest] == 32 or buf[rest] == 9 or buf[rest] == 13):
                rest += 1
            if done and rest < end:
                nm = _find_fix(buf, rest, end)
                if nm == rest:
                    rend[n] = i
                    n += 1
                    rec = rest
                    continue
                if status == OK:
                    rstat[n] = MALFORMED  # trailing junk after the checksum
                    rfield[n] = 0
            rend[n] = end
            n += 1
            break
        pos = nxt
    return rstart[:n], rend[:n], rline[:n], rstat[:n], rfield[:n], vs[:n].T, vl[:n].T, blanks


@njit(cache=True)
def _col_sizes(vs, vl, cols, rows):  # pragma: no cover - numba
    """Bytes and values present of each column of ``cols`` over ``rows``."""
    k = cols.shape[0]
    total = np.zeros(k, np.int64)
    count = np.zeros(k, np.int64)
    for r in range(rows.shape[0]):
        i = rows[r]
        for j in range(k):
            c = cols[j]
            if vs[c, i] >= 0:
                total[j] += vl[c, i]
                count[j] += 1
    return total, count


@njit(cache=True)
def _gather_cols(buf, rs, vs, vl, cols, rows, base, out, offsets, valid):  # pragma: no cover
    """Columns ``cols`` of ``rows``, row by row: column j's bytes go to ``out[base[j]:]``, its
    offsets (from 0) to ``offsets[j]`` and its validity to ``valid[j]``."""
    k, m = cols.shape[0], rows.shape[0]
    cur = np.zeros(k, np.int64)
    for r in range(m):
        i = rows[r]
        b = rs[i]
        for j in range(k):
            c = cols[j]
            offsets[j, r] = cur[j]
            rel = vs[c, i]
            valid[j, r] = rel >= 0
            if rel >= 0:
                a = b + rel
                p = base[j] + cur[j]
                n = vl[c, i]
                for q in range(n):
                    out[p + q] = buf[a + q]
                cur[j] += n
    for j in range(k):
        offsets[j, m] = cur[j]


@njit(cache=True)
def _gather_attrs(buf, rs, vs, vl, cols, rows, base, out, offsets, valid, names, name_off,
                  moff, koff, kdata, voff, vdata):  # pragma: no cover - numba
    """``_gather_cols`` that also writes the ``attrs`` map of the same columns (row r: name j →
    value for each present column j, in order; see ``connectors.base.attrs_from_columns``)."""
    k, m = cols.shape[0], rows.shape[0]
    cur = np.zeros(k, np.int64)
    e = 0
    kp = 0
    vp = 0
    for r in range(m):
        i = rows[r]
        b = rs[i]
        moff[r] = e
        for j in range(k):
            c = cols[j]
            offsets[j, r] = cur[j]
            rel = vs[c, i]
            valid[j, r] = rel >= 0
            if rel >= 0:
                a = b + rel
                p = base[j] + cur[j]
                n = vl[c, i]
                koff[e] = kp
                voff[e] = vp
                for q in range(n):
                    out[p + q] = buf[a + q]
                    vdata[vp + q] = buf[a + q]
                vp += n
                for q in range(name_off[j], name_off[j + 1]):
                    kdata[kp] = names[q]
                    kp += 1
                cur[j] += n
                e += 1
    for j in range(k):
        offsets[j, m] = cur[j]
    moff[m] = e
    koff[e] = kp
    voff[e] = vp


@njit(cache=True)
def _span_sizes(st, ln):  # pragma: no cover - numba
    k, m = st.shape
    total = np.zeros(k, np.int64)
    for j in range(k):
        for r in range(m):
            if st[j, r] >= 0:
                total[j] += ln[j, r]
    return total


@njit(cache=True)
def _gather_spans(buf, st, ln, base, out, offsets, valid):  # pragma: no cover - numba
    """Like ``_gather_cols`` for absolute spans (``st`` -1 where absent)."""
    k, m = st.shape
    cur = np.zeros(k, np.int64)
    for r in range(m):  # row by row: a row's values lie in the same message
        for j in range(k):
            offsets[j, r] = cur[j]
            a = st[j, r]
            valid[j, r] = a >= 0
            if a >= 0:
                n = ln[j, r]
                p = base[j] + cur[j]
                for q in range(n):
                    out[p + q] = buf[a + q]
                cur[j] += n
    for j in range(k):
        offsets[j, m] = cur[j]


class _Gathered:
    """k string columns of m rows in one byte buffer (column j from ``base[j]``), with their
    offsets (k, m + 1) and validity (k, m)."""

    def __init__(self, total: np.ndarray, m: int) -> None:
        k = total.shape[0]
        self.total = total
        self.attrs: pa.MapArray | None = None
        self.base = np.zeros(k, np.int64)
        if k:
            np.cumsum(total[:-1], out=self.base[1:])
        self.data = np.empty(int(total.sum()), np.uint8)
        big = k and int(total.max()) >= 2**31 - 1
        self.offsets = np.empty((k, m + 1), np.int64 if big else np.int32)
        self.valid = np.empty((k, m), np.bool_)

    def arrays(self) -> list[pa.Array]:
        out = []
        m = self.valid.shape[1]
        for j in range(self.total.shape[0]):
            valid = self.valid[j]
            mask = None if valid.all() else pa.py_buffer(np.packbits(valid, bitorder="little"))
            data = pa.py_buffer(self.data[self.base[j] : self.base[j] + self.total[j]])
            offsets = pa.py_buffer(self.offsets[j])
            if self.offsets.dtype == np.int32:  # the usual case: plain string offsets
                out.append(pa.StringArray.from_buffers(m, offsets, data, mask))
            else:
                out.append(pa.LargeStringArray.from_buffers(m, offsets, data, mask)
                           .cast(pa.string()))
        return out


def _gather_rows(buf, rs, vs, vl, cols, rows, names: list[str] | None = None) -> _Gathered:
    """Columns ``cols`` of ``rows`` in one pass; with ``names``, also their ``attrs`` map
    (``map<string, string>``, as ``connectors.base.attrs_map`` builds it)."""
    cols, rows = np.asarray(cols, np.int64), np.asarray(rows, np.int64)
    total, count = _col_sizes(vs, vl, cols, rows)
    g = _Gathered(total, rows.shape[0])
    if names is None:
        _gather_cols(buf, rs, vs, vl, cols, rows, g.base, g.data, g.offsets, g.valid)
        return g
    encoded = [x.encode() for x in names]
    name_len = np.array([len(x) for x in encoded], np.int64)
    name_off = np.zeros(len(encoded) + 1, np.int64)
    np.cumsum(name_len, out=name_off[1:])
    name_bytes = np.frombuffer(b"".join(encoded), np.uint8).copy()
    entries, kbytes, vbytes = int(count.sum()), int(count @ name_len), int(total.sum())
    off_type = np.int32 if max(kbytes, vbytes) < 2**31 - 1 else np.int64
    moff = np.empty(rows.shape[0] + 1, np.int32)
    koff, voff = np.empty(entries + 1, off_type), np.empty(entries + 1, off_type)
    kdata, vdata = np.empty(kbytes, np.uint8), np.empty(vbytes, np.uint8)
    _gather_attrs(buf, rs, vs, vl, cols, rows, g.base, g.data, g.offsets, g.valid, name_bytes,
                  name_off, moff, koff, kdata, voff, vdata)
    g.attrs = pa.MapArray.from_arrays(pa.array(moff), string_array(koff, kdata),
                                      string_array(voff, vdata))
    return g


def _string_arrays(buf: np.ndarray, st: np.ndarray, ln: np.ndarray) -> list[pa.Array]:
    """One Arrow string array per row of the (k, m) spans ``st``/``ln`` (null where st < 0)."""
    g = _Gathered(_span_sizes(st, ln), st.shape[1])
    _gather_spans(buf, st, ln, g.base, g.data, g.offsets, g.valid)
    return g.arrays()


@njit(cache=True)
def _times(buf, rs, vs, vl, n):  # pragma: no cover - numba
    """Per row: the message time (log prefix, else TransactTime(60), else SendingTime(52); NAT
    when none parses) and the first of 60 / 52 present but malformed (0 when none)."""
    key = np.full(n, NAT, np.int64)
    badtag = np.zeros(n, np.int32)
    for i in range(n):
        rel = vs[C_PREFIX, i]
        if rel >= 0:  # "YYYYMMDD-HH:MM:SS.sss : "
            a = rs[i] + rel
            b = a + vl[C_PREFIX, i]
            while b > a and (buf[b - 1] == 32 or buf[b - 1] == 58 or buf[b - 1] == 9):
                b -= 1
            key[i] = _fix_ts(buf, a, b)
        rel = vs[_C60, i]
        if rel >= 0:
            a = rs[i] + rel
            v = _fix_ts(buf, a, a + vl[_C60, i])
            if v == NAT:
                badtag[i] = 60
            elif key[i] == NAT:
                key[i] = v
        rel = vs[_C52, i]
        if rel >= 0:
            a = rs[i] + rel
            v = _fix_ts(buf, a, a + vl[_C52, i])
            if v == NAT:
                if badtag[i] == 0:
                    badtag[i] = 52
            elif key[i] == NAT:
                key[i] = v
    return key, badtag


# How ``_resolve`` fills each output column: steps (output, column, row, condition) tried in
# order until one finds a value. Rows: the event row, the order's origin, its latest NEW/MODIFY,
# the event's stitched confirmation. Conditions: always, the row is (not) a request, a fill.
_R_EV, _R_ORG, _R_LAST, _R_CONF = range(4)
_IF_ALWAYS, _IF_REQ, _IF_REPORT, _IF_FILL = range(4)


def _trader_steps(row: int) -> list[tuple[int, int, int, int]]:
    """Parties trader, else 50 of a request / 57 of a report, else 50 of a report (drop copies:
    the venue puts the trader in 50), else 116."""
    return [(O_TRADER, C_PARTY_TRADER, row, _IF_ALWAYS), (O_TRADER, _C57, row, _IF_REPORT),
            (O_TRADER, _C50, row, _IF_ALWAYS), (O_TRADER, _C116, row, _IF_ALWAYS)]


_RESOLVE_STEPS = np.array(
    _trader_steps(_R_EV) + _trader_steps(_R_ORG) + [
        (O_FIRM, C_PARTY_FIRM, _R_EV, _IF_ALWAYS), (O_FIRM, _C49, _R_EV, _IF_REQ),
        (O_FIRM, _C56, _R_EV, _IF_REPORT),
        (O_VENUE, _C30, _R_EV, _IF_ALWAYS), (O_VENUE, _C207, _R_EV, _IF_ALWAYS),
        (O_VENUE, _C56, _R_EV, _IF_REQ), (O_VENUE, _C49, _R_EV, _IF_REPORT),
        (O_ACCOUNT, _C1, _R_EV, _IF_ALWAYS), (O_ACCOUNT, _C1, _R_ORG, _IF_ALWAYS),
        (O_SYMBOL, _C55, _R_EV, _IF_ALWAYS), (O_SYMBOL, _C55, _R_ORG, _IF_ALWAYS),
        (O_SIDE, _C54, _R_EV, _IF_ALWAYS), (O_SIDE, _C54, _R_ORG, _IF_ALWAYS),
        (O_PRICE, _C44, _R_EV, _IF_ALWAYS), (O_PRICE, _C44, _R_LAST, _IF_ALWAYS),
        (O_QTY, _C38, _R_EV, _IF_ALWAYS), (O_QTY, _C38, _R_LAST, _IF_ALWAYS),
        (O_LEAVES, _C151, _R_EV, _IF_ALWAYS), (O_LEAVES, _C151, _R_CONF, _IF_ALWAYS),
        (O_EXQTY, _C32, _R_EV, _IF_FILL), (O_EXPX, _C31, _R_EV, _IF_FILL),
    ], np.int64)  # fmt: skip


@njit(cache=True)
def _resolve(rs, vs, vl, steps, rows, req, is_fill):  # pragma: no cover - numba
    """The value span of every output column (``O_*``) of each event: ``rows`` (4, m) holds the
    event's row, its order's origin, latest NEW/MODIFY and stitched confirmation (``_R_*``),
    ``req`` (2, m) whether the event row / origin row is a request; see ``_RESOLVE_STEPS``."""
    m = rows.shape[1]
    st = np.full((N_OUT, m), -1, np.int64)
    ln = np.zeros((N_OUT, m), np.int32)
    for k in range(m):
        for q in range(steps.shape[0]):
            out = steps[q, 0]
            if st[out, k] >= 0:
                continue
            which = steps[q, 2]
            cond = steps[q, 3]
            if cond != _IF_ALWAYS:
                if cond == _IF_FILL:
                    if not is_fill[k]:
                        continue
                else:  # a request (or a report) by the row's own message type
                    r = req[1, k] if which == _R_ORG else req[0, k]
                    if r != (cond == _IF_REQ):
                        continue
            row = rows[which, k]
            col = steps[q, 1]
            rel = vs[col, row]
            if rel >= 0:
                st[out, k] = rs[row] + rel
                ln[out, k] = vl[col, row]
    return st, ln


@njit(cache=True)
def _numbers(buf, st, ln):  # pragma: no cover - numba
    """Plain decimals (``[+-]?digits[.digits]``, at most 15 digits) to float64, exactly as a
    correctly rounded parse gives them (an integer below 2**53 divided by an exact power of
    ten). State per value: 0 parsed, 1 missing (absent or empty), 2 anything else (left to
    ``parse_number``)."""
    k, m = st.shape
    vals = np.full((k, m), np.nan)
    state = np.zeros((k, m), np.int8)
    for j in range(k):
        for r in range(m):
            a = st[j, r]
            n = ln[j, r]
            if a < 0 or n == 0:
                state[j, r] = 1
                continue
            p, e = a, a + n
            neg = buf[p] == 45
            if neg or buf[p] == 43:
                p += 1
            mant = 0
            ndig = 0
            nint = 0
            nfrac = 0
            dot = False
            ok = True
            while p < e:
                c = buf[p]
                if 48 <= c <= 57:
                    ndig += 1
                    if ndig > 15:
                        ok = False
                        break
                    mant = mant * 10 + (c - 48)
                    if dot:
                        nfrac += 1
                    else:
                        nint += 1
                elif c == 46 and not dot:
                    dot = True
                else:
                    ok = False
                    break
                p += 1
            if not ok or nint == 0 or (dot and nfrac == 0):
                state[j, r] = 2
                continue
            v = float(mant)
            if nfrac:
                v = v / _POW10[nfrac]
            vals[j, r] = -v if neg else v
    return vals, state


@njit(cache=True)
def _byte_codes(buf, rs, vs, vl, cols):  # pragma: no cover - numba
    """Single-character values as their byte (0 when absent, 255 when not one byte), per
    column of ``cols``."""
    n = rs.shape[0]
    out = np.zeros((cols.shape[0], n), np.uint8)
    for i in range(n):
        for j in range(cols.shape[0]):
            c = cols[j]
            rel = vs[c, i]
            if rel >= 0:
                out[j, i] = buf[rs[i] + rel] if vl[c, i] == 1 else 255
    return out


@njit(cache=True)
def _stitch(ok, mclass, et, ignore_et, c11, c41, c37, c17, mroot0, root, req_msg, req_open,
            by37, cancel_msg, origin, last, seen17):  # pragma: no cover
    """Stitch the rows in order. The chain state (per code: root, req_msg, req_open, by37,
    cancel_msg, origin, last; seen17 per ExecID code) is updated in place: it may start from a
    carried state whose rows are *virtual* (``ok`` False, ``mroot0`` their root), which is how
    chains continue across chunks (``FixCarry``). ``closed_by[p]`` is the row that closed the
    request ``p`` (its acknowledgement or refusal), -1 while it is open. A refusal of a carried
    (virtual, already committed) cancel/replace request is ``A_LATE``: the request's CANCEL or
    MODIFY was committed with an earlier range and stands, so the refusal is quarantined
    (``late_answer``) rather than silently ignored, and the chain keeps its CANCEL."""
    n = ok.shape[0]
    action = np.full(n, A_QUAR, np.int8)
    bad_field = np.zeros(n, np.int32)
    mroot = mroot0.copy()
    link = np.full(n, -1, np.int64)
    closed_by = np.full(n, -1, np.int64)
    for i in range(n):
        if not ok[i]:
            continue
        mc = mclass[i]
        a, b, o, x = c11[i], c41[i], c37[i], c17[i]
        if mc == M_SESSION or mc == M_OTHER:  # noqa: SIM109 (numba)
            action[i] = A_IGNORE
            continue
        if mc == M_CXLREJ:
            action[i] = A_IGNORE
            if a >= 0 and req_open[a]:
                p = req_msg[a]
                req_open[a] = False
                closed_by[p] = i
                if not ok[p]:  # committed with an earlier range: its event stands
                    action[i] = A_LATE
                    bad_field[i] = 11
                    continue
                action[p] = A_IGNORE
                r = mroot[p]
                if mclass[p] == M_F and cancel_msg[r] == p:
                    cancel_msg[r] = -1
            continue
        if mc == M_D or mc == M_F or mc == M_G:  # noqa: SIM109 (numba)
            if a < 0:
                action[i] = A_BADTOKEN
                bad_field[i] = 11
                continue
            if req_msg[a] >= 0:
                action[i] = A_DUP
                bad_field[i] = 11
                continue
            if mc == M_D:
                req_msg[a] = i
                if root[a] >= 0:  # acknowledged before the request was logged
                    action[i] = A_STITCHED
                    mroot[i] = root[a]
                    continue
                root[a] = a
                origin[a] = i
                mroot[i] = a
                req_open[a] = True
                action[i] = A_NEW
                continue
            r = -1
            if b >= 0:
                r = root[b]
            if r < 0 and o >= 0:
                r = by37[o]
            if r < 0:
                action[i] = A_ORPHAN
                bad_field[i] = 41
                continue
            req_msg[a] = i
            root[a] = r
            mroot[i] = r
            if mc == M_G:
                req_open[a] = True
                action[i] = A_MODIFY
            elif cancel_msg[r] >= 0:  # the order already has its CANCEL
                action[i] = A_STITCHED
                link[i] = cancel_msg[r]
            else:
                req_open[a] = True
                cancel_msg[r] = i
                action[i] = A_CANCEL
            continue
        # execution report
        if ignore_et[i]:
            action[i] = A_IGNORE
            continue
        if x >= 0:
            if seen17[x]:
                action[i] = A_DUP
                bad_field[i] = 17
                continue
            seen17[x] = True
        r = -1
        if a >= 0:
            r = root[a]
        if r < 0 and b >= 0:
            r = root[b]
        if r < 0 and o >= 0:
            r = by37[o]
        p = -1
        if a >= 0 and req_open[a]:
            p = req_msg[a]
        e = et[i]
        act = A_IGNORE
        if e == 48:  # 0 New
            if p >= 0 and mclass[p] == M_D:
                act = A_STITCHED
                req_open[a] = False
                closed_by[p] = i
            elif r >= 0:
                act = A_STITCHED
            elif a < 0:
                act = A_BADTOKEN
                bad_field[i] = 11
            else:
                r = a
                root[a] = a
                origin[a] = i
                act = A_NEW
        elif e == 53:  # 5 Replaced
            if p >= 0 and mclass[p] == M_G:
                act = A_STITCHED
                req_open[a] = False
                closed_by[p] = i
            elif r >= 0:
                act = A_MODIFY
            else:
                act = A_ORPHAN
                bad_field[i] = 41
        elif e == 52 or e == 67:  # 4 Canceled, C Expired
            if p >= 0 and mclass[p] == M_F:
                act = A_STITCHED
                req_open[a] = False
                closed_by[p] = i
            elif r >= 0:
                if cancel_msg[r] >= 0:
                    act = A_STITCHED
                    p = cancel_msg[r]
                else:
                    act = A_CANCEL
                    cancel_msg[r] = i
            else:
                act = A_ORPHAN
                bad_field[i] = 11
        elif e == 49 or e == 50 or e == 70:  # 1/2 partial/fill (4.2), F trade (4.4+)
            if r >= 0:
                act = A_FILL
            else:
                act = A_ORPHAN
                bad_field[i] = 11
        elif e == 56:  # 8 Rejected
            if p >= 0 and mclass[p] != M_D:  # a cancel/replace request refused
                req_open[a] = False
                closed_by[p] = i
                if not ok[p]:  # committed with an earlier range: its event stands
                    act = A_LATE
                    bad_field[i] = 11
                else:
                    action[p] = A_IGNORE
                    if mclass[p] == M_F and cancel_msg[mroot[p]] == p:
                        cancel_msg[mroot[p]] = -1
                    act = A_IGNORE
                p = -1
            elif p >= 0:
                req_open[a] = False
                closed_by[p] = i
                act = A_REJECT
                p = -1
            elif r >= 0:
                act = A_REJECT
            elif a < 0:
                act = A_BADTOKEN
                bad_field[i] = 11
            else:
                r = a
                root[a] = a
                origin[a] = i
                act = A_REJECT
        elif e == 0 or e == 255:
            act = A_BADTOKEN
            bad_field[i] = 150
        # other ExecTypes (3 6 7 9 A B D E G H I): no order event
        action[i] = act
        if act == A_STITCHED:
            link[i] = p
        if r >= 0:
            mroot[i] = r
            if a >= 0 and root[a] < 0:
                root[a] = r
            if o >= 0 and by37[o] < 0:
                by37[o] = r
    # with the actions final: the order's origin and its latest NEW/MODIFY (price and quantity
    # "after the event" for rows that do not carry them, e.g. a cancel request or a 4.4 trade)
    morigin = np.full(n, -1, np.int64)
    mlast = np.full(n, -1, np.int64)
    for i in range(n):
        r = mroot[i]
        if r >= 0 and ok[i]:
            morigin[i] = origin[r]
            if action[i] == A_NEW or action[i] == A_MODIFY:  # noqa: SIM109 (numba)
                last[r] = i
            mlast[i] = last[r]
    return action, bad_field, mroot, link, morigin, mlast, closed_by


# ---------------------------------------------------------------------------------------------
_EXEC_TYPES = set(b"0123456789ABCDEFGHI")
_SESSION = set(b"012345A")


class _Spans:
    """Value spans of every record; turns columns (for selected rows) into Arrow strings."""

    def __init__(self, buf, rs, vs, vl):
        self.buf, self.rs, self.vs, self.vl = buf, rs, vs, vl

    def gather(self, cols, rows: np.ndarray, names: list[str] | None = None) -> _Gathered:
        """Columns ``cols`` of ``rows`` gathered in one pass (with ``names``: and their attrs
        map)."""
        return _gather_rows(self.buf, self.rs, self.vs, self.vl, cols, rows, names)

    def columns(self, cols, rows: np.ndarray) -> list[pa.Array]:
        return self.gather(cols, rows).arrays()

    def strings(self, col: int, rows: np.ndarray) -> pa.Array:
        return self.columns([col], rows)[0]


def _encode(*arrays: pa.Array) -> tuple[list[np.ndarray], pa.Array]:
    """Jointly dictionary-encode string arrays: codes (-1 for null) and the dictionary."""
    if not arrays or sum(len(a) for a in arrays) == 0:
        return [np.full(len(a), -1, np.int64) for a in arrays], pa.array([], pa.string())
    enc = pc.dictionary_encode(pa.chunked_array(arrays, pa.string())).combine_chunks()
    codes = enc.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    out, pos = [], 0
    for a in arrays:
        out.append(codes[pos : pos + len(a)])
        pos += len(a)
    return out, enc.dictionary


#: How far back in time a message may be logged after later ones (a report written before the
#: request it answers, clocks of two senders): a chunk that is not the last keeps back a
#: suspect message this close to its latest time (``FixConnector._cut``).
REORDER_NS = 1_000_000_000


def _scan(buf: np.ndarray) -> tuple:
    """``_scan_fix`` with 16-bit value spans (half the memory), 32-bit for a record of 32 KiB
    or more."""
    scan = _scan_fix(buf, _TAG_INDEX, NCOLS, C_PARTY_TRADER, C_PARTY_FIRM, C_PREFIX,
                     np.zeros(0, np.int16), 2**15 - 1)
    if scan[7] < 0:
        scan = _scan_fix(buf, _TAG_INDEX, NCOLS, C_PARTY_TRADER, C_PARTY_FIRM, C_PREFIX,
                         np.zeros(0, np.int32), 2**31 - 1)
    return scan


def _time_key(times: np.ndarray) -> np.ndarray | None:
    """Each message's stitching time (log prefix, else 60, else 52: ``times``; a message
    without a time takes its predecessor's, the first ones the first time), None without any
    time."""
    n = times.shape[0]
    has = times != NAT
    if not has.any():
        return None
    last = np.maximum.accumulate(np.where(has, np.arange(n), -1))  # latest row with a time
    return np.where(last >= 0, times[np.maximum(last, 0)], times[has][0])


@dataclass
class _Stitched:
    """A chunk's messages stitched (``FixConnector._stitched``); per-row arrays in file order,
    those from ``_stitch`` followed by the carried virtual rows."""

    sp: _Spans
    ok: np.ndarray
    mclass: np.ndarray
    ordstatus: np.ndarray  # OrdStatus(39), one byte (0: absent)
    state: _StitchState
    times: np.ndarray
    tsbad: np.ndarray
    key: np.ndarray | None
    action: np.ndarray
    bad_field: np.ndarray
    mroot: np.ndarray
    link: np.ndarray
    morigin: np.ndarray
    mlast: np.ndarray
    closed_by: np.ndarray
    #: to stitch again without the rows from some cut on (``FixConnector._restitched``): the
    #: kernel's inputs, the chain state before it ran, the time order; and the real rows stitched
    rerun: tuple | None = None
    rows: int = -1


class FixConnector:
    """FIX tag=value order flow (QuickFIX logs or raw messages) to canonical order events."""

    name: ClassVar[str] = "fix"
    kind: ClassVar[str] = "orders"
    description: ClassVar[str] = (
        "FIX 4.2/4.4/5.0 tag=value (QuickFIX logs or raw; SOH, | or ^A): D/F/G/8 to order events"
    )
    version: ClassVar[str] = "3"

    def read(self, path: Path, source: str, carry: FixCarry | None = None,
             tail_limit: int | None = None, reorder_ns: int = REORDER_NS) -> ReadResult:
        """Read ``path``. With ``carry`` (the chain state after the previous chunks of the same
        log, ``FixCarry.empty()`` for the first) the file is a chunk: references to orders
        opened in earlier chunks are resolved, and ``result.carry`` is the state after it.

        ``tail_limit`` (only with ``carry``, for a chunk that is not the last): stop before the
        tail that the next chunk may still change (see ``_cut``: unanswered requests, and
        messages that may precede in time what the next chunk logs, within ``reorder_ns`` of
        the chunk's latest time), provided at most ``tail_limit`` bytes are left;
        ``result.consumed`` is then the number of bytes read (the rest is read again with the
        next chunk), so an acknowledgement or refusal is always stitched to its request and a
        pair logged out of time order across the boundary is stitched as in the whole file.
        """
        data = Path(path).read_bytes()
        buf = np.frombuffer(data, dtype=np.uint8)
        return self._read_scan(buf, _scan(buf), path, source, carry, tail_limit, reorder_ns)

    def hold_back(self, data: bytes, carry: FixCarry, tail_limit: int,
                  reorder_ns: int = REORDER_NS) -> int:
        """How many leading bytes of ``data`` (complete lines continuing ``carry``'s log) can be
        committed now when more may still be appended (the tee): ``len(data)`` when nothing is
        held back or the held tail is longer than ``tail_limit``; else where the held tail
        starts (0: all of it is held). The same cut as ``read(..., tail_limit)``, without
        converting anything."""
        buf = np.frombuffer(data, dtype=np.uint8)
        scan = _scan(buf)
        n = int(scan[0].shape[0])
        if not n:
            return len(data)
        stitched = self._stitched(buf, scan, carry, lambda *_: None)
        cut = self._cut(buf, scan, stitched, tail_limit, reorder_ns)
        return int(scan[0][cut]) if cut < n else len(data)

    def _cut(self, buf, scan, s: _Stitched, tail_limit: int, reorder_ns: int) -> int:
        """The row before which a chunk that is not the last stops (n: read it all).

        Held back: (1) from the first line after which a request is still unanswered (its
        acknowledgement's LeavesQty and a refusal act backwards: ``_safe_cut``); (2) from the
        first *suspect* message within ``reorder_ns`` of the chunk's latest time: one that may
        follow in time a message the next chunk logs (a log written out of time order is
        stitched in time order, ``_time_order``): a reference to an unknown order, a 35=9 that
        answers no request, and a report standing for a request not seen (NEW/MODIFY/CANCEL/
        REJECT from an ExecutionReport that answers none; also in a drop copy, where it costs a
        re-read: a chunk cannot tell a drop copy from a log whose requests come later). If the
        predecessor comes later in the log it can be at most ``reorder_ns`` older than the
        chunk's latest time, hence so is the suspect. Only when at most ``tail_limit`` bytes
        are held (else nothing is: bounded, never stalls)."""
        rs, rline = scan[0], scan[2]
        n = int(rs.shape[0])
        ok, mclass, action = s.ok, s.mclass, s.action[:n]
        stop = n
        if s.key is not None and reorder_ns >= 0:
            answered = np.zeros(n, bool)
            answered[s.closed_by[s.closed_by >= 0]] = True
            suspect = (action == A_ORPHAN) | (mclass == M_CXLREJ) | (
                (mclass == M_ER) & np.isin(action, (A_NEW, A_MODIFY, A_CANCEL, A_REJECT)))
            suspect &= ok & ~answered & (s.key >= s.key.max() - reorder_ns)
            hit = np.flatnonzero(suspect)
            if hit.size:
                stop = int(hit[0])
        cut = _safe_cut(ok, mclass, action, s.closed_by[:n], rline, stop)
        if cut < n and buf.shape[0] - rs[cut] <= tail_limit:
            return cut
        return n

    def _stitched(self, buf, scan, carry: FixCarry | None, reject,
                  rerun: bool = False) -> _Stitched:
        """Record verdicts, message classes and the stitched chains (from ``carry``); with
        ``rerun``, what ``_restitched`` needs is kept."""
        rs, re_, rline, rstat, rfield, vs, vl, blanks = scan
        n = int(rs.shape[0])
        # 1. record-level verdicts
        for code, reason in _STATUS_REASON.items():
            for tag in np.unique(rfield[rstat == code]):
                sel = np.flatnonzero((rstat == code) & (rfield == tag))
                reject(sel, reason, str(int(tag)) if tag else None, "fix:parse")
        sp = _Spans(buf, rs, vs, vl)
        allrows = np.arange(n)
        ok = rstat == OK
        c35 = COL[35]
        mt, et, st, etrans = _byte_codes(buf, rs, vs, vl, _CODE_COLS)
        no35 = ok & (vs[c35] < 0)
        reject(np.flatnonzero(no35), "missing_value", "35", "fix:parse")
        ok &= ~no35
        mclass = np.full(n, M_OTHER, np.int8)
        mclass[mt == ord("D")] = M_D
        mclass[mt == ord("F")] = M_F
        mclass[mt == ord("G")] = M_G
        mclass[mt == ord("8")] = M_ER
        mclass[mt == ord("9")] = M_CXLREJ
        mclass[np.isin(mt, list(_SESSION))] = M_SESSION

        # 2. exec type (150, else OrdStatus 39 for FIX 4.0/4.1), ExecTransType (20) != 0 ignored
        et = np.where(et == 0, st, et)
        et[(et != 0) & (et != 255) & ~np.isin(et, list(_EXEC_TYPES))] = 255
        ignore_et = (etrans != 0) & (etrans != ord("0"))

        # 3. identifiers and stitching (from the carried state of earlier chunks, if any)
        *ids, ex17 = sp.columns([COL[11], COL[41], COL[37], COL[17]], allrows)
        state = _StitchState.build(ids, ex17, carry, n)
        # stitched in time order: a log written out of order (a report before the acknowledgement
        # it follows) must not orphan the later message; file order among equal times
        times, tsbad = _times(buf, rs, vs, vl, n)
        key = _time_key(times)
        perm = self._time_order(key)
        if state.virtual:  # carried chains: virtual rows after the real ones (see FixCarry)
            sp = state.spans(buf, rs, vs, vl)
        ext = state.extend
        if perm is not None:
            perm = np.concatenate([perm, np.arange(n, n + state.virtual)])
        args = [ext(ok, False), ext(mclass, state.vclass), ext(et, 0), ext(ignore_et, False),
                ext(state.c11, state.vkey), ext(state.c41, -1), ext(state.c37, -1),
                ext(state.c17, -1), ext(np.full(n, -1, np.int64), state.vroot)]
        before = tuple(a.copy() for a in state.arrays) if rerun else None
        outs = self._chains(args, state, perm)
        return _Stitched(sp, ok, mclass, st, state, times, tsbad, key, *outs,
                         rerun=(args, before, perm) if rerun else None, rows=n)

    @staticmethod
    def _chains(args: list[np.ndarray], state: _StitchState,
                perm: np.ndarray | None) -> tuple[np.ndarray, ...]:
        """``_stitch`` over the rows (in time order ``perm``), from ``state``'s chain state
        (updated in place); per-row outputs and row numbers in file order."""
        if perm is None:
            return _stitch(*args, *state.arrays)
        res = _stitch(*(a[perm] for a in args), *state.arrays)
        outs = tuple(np.empty_like(x) for x in res)
        for dst, src in zip(outs, res, strict=True):
            dst[perm] = src
        for rows_ in (*outs[3:], *state.row_arrays):  # row numbers back to file order
            has = rows_ >= 0
            rows_[has] = perm[rows_[has]]
        return outs

    def _restitched(self, s: _Stitched, cut: int) -> _Stitched | None:
        """``s`` stitched again as if the chunk ended before row ``cut`` (what stitching only
        those rows gives: a row the kernel skips changes nothing, and the time order of the
        rows kept is theirs alone), without scanning, encoding or looking up the carry again.
        The carried rows relevant only to the rows dropped stay as virtual rows: untouched,
        they go back into the carry as they were. None when the rows kept hold no time while
        the chunk does (their time key would differ)."""
        if s.rerun is None or (s.key is not None and not (s.times[:cut] != NAT).any()):
            return None
        args, before, perm = s.rerun
        state = s.state
        state.arrays = before
        state.row_arrays = (before[1], before[4], before[5], before[6])
        ok = s.ok.copy()
        ok[cut:] = False
        outs = self._chains([state.extend(ok, False), *args[1:]], state, perm)
        return _Stitched(s.sp, ok, s.mclass, s.ordstatus, state, s.times, s.tsbad, s.key,
                         *outs, rows=cut)

    def _read_scan(self, buf, scan, path, source, carry, tail_limit,
                   reorder_ns: int = REORDER_NS) -> ReadResult:
        rs, re_, rline, rstat, rfield, vs, vl, blanks = scan
        n = int(rs.shape[0])
        q_idx: list[np.ndarray] = []
        q_reason: list[str] = []
        q_field: list[str | None] = []
        q_step: list[str] = []

        def reject(idx, reason, field, step):
            idx = np.asarray(idx, np.int64)
            if idx.size:
                q_idx.append(idx)
                q_reason.append(reason)
                q_field.append(field)
                q_step.append(step)

        cuttable = carry is not None and tail_limit is not None and n > 0
        s = self._stitched(buf, scan, carry, reject, rerun=cuttable)
        consumed = int(buf.shape[0])
        if cuttable:
            cut = self._cut(buf, scan, s, tail_limit, reorder_ns)
            if 0 < cut < n:
                kept_lines = int(rline[cut]) - 1
                blanks = kept_lines - count_runs(rline[:cut])
                again = self._restitched(s, cut)
                if again is None:
                    short = (rs[:cut], re_[:cut], rline[:cut], rstat[:cut], rfield[:cut],
                             vs[:, :cut], vl[:, :cut], blanks)
                    result = self._read_scan(buf[: rs[cut]], short, path, source, carry, None)
                    result.consumed = int(rs[cut])  # type: ignore[attr-defined]
                    return result
                s, n, consumed = again, cut, int(rs[cut])
                kept = [(i[i < cut], r, f, st) for i, r, f, st in
                        zip(q_idx, q_reason, q_field, q_step, strict=True)]
                kept = [k for k in kept if k[0].size]
                q_idx[:], q_reason[:], q_field[:], q_step[:] = (
                    [k[j] for k in kept] for j in range(4))
        sp, ok, mclass, state, times, tsbad = s.sp, s.ok, s.mclass, s.state, s.times, s.tsbad
        ext = state.extend
        action, bad_field, mroot, link, morigin, mlast = (s.action, s.bad_field, s.mroot, s.link,
                                                          s.morigin, s.mlast)
        action, bad_field = action[:n], bad_field[:n]
        for act, reason, step in (
            (A_DUP, "duplicate", "fix:stitch"),
            (A_ORPHAN, "orphan_reference", "fix:stitch"),
            (A_BADTOKEN, "unknown_token", "fix:stitch"),
            (A_LATE, "late_answer", "fix:stitch"),
        ):
            for tag in np.unique(bad_field[action == act]):
                sel = np.flatnonzero((action == act) & (bad_field == tag))
                why = "missing_value" if (act == A_BADTOKEN and tag == 11) else reason
                reject(sel, why, str(int(tag)), step)
        ignored = int(blanks) + int(np.isin(action[ok[:n]], (A_IGNORE, A_STITCHED)).sum())

        # 4. convert event rows
        full_class = ext(mclass, state.vclass)
        ev = np.flatnonzero(np.isin(action, list(_ACTION_EVENT)))
        events, extras_table = self._convert(sp, ev, action, full_class, mroot, morigin, mlast,
                                             link, state.dictionary, times, tsbad, reject)
        kept = events.pop("__rows")
        table = self._table(events, source, rs, rline, kept)

        quarantine, reasons = self._quarantine(source, path, buf, rs, re_, rline, q_idx, q_reason,
                                               q_field, q_step)  # fmt: skip
        result = ReadResult(
            events=table, quarantine=quarantine, rows=n + int(blanks), ignored=ignored,
            reasons=reasons,
        )  # fmt: skip
        result.extras = extras_table  # type: ignore[attr-defined]
        result.consumed = consumed  # type: ignore[attr-defined]
        if carry is not None:
            result.carry = state.carry_out(carry, sp, full_class, s)  # type: ignore[attr-defined]
        result.check_balance()
        return result

    @staticmethod
    def _time_order(key: np.ndarray | None) -> np.ndarray | None:
        """A stable permutation into time order (``_time_key``), or None when the file is in
        order."""
        if key is None or (np.diff(key) >= 0).all():
            return None
        return np.argsort(key, kind="stable")

    # -----------------------------------------------------------------------------------------
    def _convert(self, sp, ev, action, mclass, mroot, morigin, mlast, link, dictionary, times,
                 tsbad, reject):  # fmt: skip
        m = len(ev)
        failed = np.zeros(m, bool)

        def fail(mask, reason, field):
            new = mask & ~failed
            if new.any():
                reject(ev[new], reason, field, "fix:convert")
                failed[:] |= new

        # timestamps: log prefix > TransactTime(60) > SendingTime(52)
        best, bad_tag = times[ev], tsbad[ev]
        no_ts = best == NAT
        for tag in (60, 52):
            fail(no_ts & (bad_tag == tag), "bad_timestamp", str(tag))
        fail(no_ts, "missing_value", "52")

        # every output column's value span: the row's own, else the order's (see _resolve)
        req = np.isin(mclass[ev], (M_D, M_F, M_G))
        org = np.where(morigin[ev] >= 0, morigin[ev], ev)
        org_req = np.isin(mclass[org], (M_D, M_F, M_G))
        conf = np.full(len(mclass), -1, np.int64)  # the last stitched report of each event row
        has = link >= 0
        conf[link[has]] = np.flatnonzero(has)
        crow = np.where(conf[ev] >= 0, conf[ev], ev)
        lrow = np.where(mlast[ev] >= 0, mlast[ev], ev)
        acts = action[ev]
        is_fill = acts == A_FILL
        st, ln = _resolve(sp.rs, sp.vs, sp.vl, _RESOLVE_STEPS, np.stack([ev, org, lrow, crow]),
                          np.stack([req, org_req]), is_fill)
        fail(st[O_TRADER] < 0, "missing_value", "50")
        fail(st[O_SYMBOL] < 0, "missing_value", "55")
        side = self._sides(sp.buf, st[O_SIDE], ln[O_SIDE])
        fail(st[O_SIDE] < 0, "missing_value", "54")
        fail(side < 0, "unknown_token", "54")

        vals, state = _numbers(sp.buf, st[O_PRICE:], ln[O_PRICE:])
        nums = {}
        for j, (name, tag) in enumerate((("price", 44), ("qty", 38), ("leaves_qty", 151),
                                         ("exec_qty", 32), ("exec_price", 31))):  # fmt: skip
            arr, missing, bad = self._number(sp.buf, st[O_PRICE + j], ln[O_PRICE + j], vals[j],
                                             state[j])  # fmt: skip
            fail(bad, "non_numeric", str(tag))
            with np.errstate(invalid="ignore"):
                huge = ~np.isnan(arr) & ((np.abs(arr) > _MAX_ABS) | ((arr < 0) & (name != "price")))
            fail(huge, "impossible_value", str(tag))
            if name in ("exec_qty", "exec_price"):
                fail(missing & is_fill, "missing_value", str(tag))
            if name == "leaves_qty":  # LeavesQty is required in every ExecutionReport
                fail(missing & (mclass[ev] == M_ER), "missing_value", str(tag))
            nums[name] = arr
        fail(is_fill & (nums["exec_qty"] == 0), "impossible_value", "32")

        # the kept rows: every string column (and the attrs map) gathered once, from the spans
        keep = ~failed
        rows = ev[keep]
        text = [O_FIRM, O_TRADER, O_ACCOUNT, O_SYMBOL, O_VENUE]
        firm, trader, account, symbol, venue = _string_arrays(
            sp.buf, st[text][:, keep], ln[text][:, keep])
        gathered = sp.gather([COL[t] for t in EXTRA_TAGS.values()], rows, list(EXTRA_TAGS))
        extras = pa.table(dict(zip(EXTRA_TAGS, gathered.arrays(), strict=True)))
        cols = {
            "ts": pa.array(best[keep], pa.int64()).cast(TIMESTAMP),
            "firm": firm,
            "trader": trader,
            "account": account,
            "symbol": symbol,
            "instrument": symbol,
            "side": _SIDE_VALUES.take(pa.array(side[keep])),
            "event": _EVENT_ARRAY.take(pa.array(acts[keep])),
            "order_id": dictionary.take(pa.array(mroot[rows])) if rows.size else
            pa.array([], pa.string()),
            **{name: pa.array(v[keep], pa.float64(), mask=np.isnan(v[keep]))
               for name, v in nums.items()},
            "venue": venue,
            "attrs": gathered.attrs,
            "__rows": rows,
        }
        return cols, extras

    @staticmethod
    def _sides(buf, st, ln) -> np.ndarray:
        """Index of each side value (trimmed) in ``FIX_SIDES``; -1 when absent or unknown."""
        side = np.full(st.shape[0], -1, np.int64)
        one = (st >= 0) & (ln == 1)
        byte = buf[st[one]].astype(np.int64) - ord("1")
        side[one] = np.where((byte >= 0) & (byte < len(FIX_SIDES)), byte, -1)
        other = np.flatnonzero((st >= 0) & (ln != 1))
        if other.size:  # anything but one byte: trimmed and looked up by Arrow
            raw = _string_arrays(buf, st[None, other], ln[None, other])[0]
            idx = pc.index_in(pc.utf8_trim_whitespace(raw), value_set=pa.array(list(FIX_SIDES)))
            side[other] = idx.fill_null(-1).to_numpy(zero_copy_only=False)
        return side

    @staticmethod
    def _number(buf, st, ln, vals, state) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Values (NaN where null), missing and bad masks of one numeric column: plain decimals
        from ``_numbers``, the rest through ``parse_number``."""
        vals = vals.copy()
        missing = state == 1
        bad = np.zeros(st.shape[0], bool)
        other = np.flatnonzero(state == 2)
        if other.size:
            raw = _string_arrays(buf, st[None, other], ln[None, other])[0]
            v, miss, wrong = parse_number(raw)
            vals[other] = v.to_numpy(zero_copy_only=False).astype(float)
            missing[other] = miss
            bad[other] = wrong
        return vals, missing, bad

    def _table(self, cols, source, rs, rline, kept) -> pa.Table:
        k = len(kept)
        out = {}
        for f in ORDER_EVENTS:
            if f.name in cols:
                out[f.name] = cols[f.name]
            elif f.name == "source":
                out[f.name] = pa.repeat(pa.scalar(source, pa.string()), k)
            elif f.name == "offset":
                out[f.name] = pa.array(rs[kept], pa.int64())
            elif f.name == "line":
                out[f.name] = pa.array(rline[kept], pa.int64())
        return pa.table(out).cast(ORDER_EVENTS)

    def _quarantine(self, source, path, buf, rs, re_, rline, q_idx, q_reason, q_field, q_step):
        reasons: Counter[str] = Counter()
        if not q_idx:
            return QUARANTINE.empty_table(), reasons
        idx = np.concatenate(q_idx)
        sizes = [len(i) for i in q_idx]
        for r, c in zip(q_reason, sizes, strict=True):
            reasons[r] += c
        k = len(idx)
        table = pa.table(
            {
                "source": pa.array([source] * k, pa.string()),
                "path": pa.array([str(path)] * k, pa.string()),
                "line": pa.array(rline[idx], pa.int64()),
                "offset": pa.array(rs[idx], pa.int64()),
                "step": pa.array(np.repeat(np.array(q_step, object), sizes), pa.string()),
                "field": pa.array(np.repeat(np.array(q_field, object), sizes), pa.string()),
                "reason": pa.array(np.repeat(np.array(q_reason, object), sizes), pa.string()),
                "raw": raw_slices(buf, rs[idx], re_[idx]),
            },
            schema=QUARANTINE,
        )
        return table.sort_by([("offset", "ascending")]), reasons


# ---------------------------------------------------------------------------------------------
# Chains across chunks (a followed log, a large file read in chunks)

#: The chain state carried from chunk to chunk: one row per ClOrdID/OrderID (kind 0) with what
#: the stitcher knows about it, one row per ExecID already seen (kind 1), one row per key of a
#: pruned chain (kind 2, ``req_class`` kept: a reused request ClOrdID is a duplicate).
CARRY_SCHEMA = pa.schema([
    ("kind", pa.int8()),
    ("key", pa.string()),
    ("root", pa.string()),  # the chain's stable order id
    ("req_class", pa.int8()),  # M_D / M_F / M_G: a request with this ClOrdID was seen
    ("req_open", pa.bool_()),  # ... and is not answered yet
    ("by37", pa.string()),  # the chain this OrderID belongs to
    ("cancelled", pa.bool_()),  # a root whose order has its CANCEL ...
    ("cancel_key", pa.string()),  # ... from the F with this ClOrdID (null: from a report)
    ("origin", pa.bool_()),  # a root: the values every later message inherits
    ("o_trader", pa.string()),
    ("o_account", pa.string()),
    ("o_symbol", pa.string()),
    ("o_side", pa.string()),
    ("last", pa.bool_()),  # a root: price and quantity of its latest NEW / MODIFY
    ("l_price", pa.string()),
    ("l_qty", pa.string()),
    ("done_ns", pa.int64()),  # a root: log time its order was done (null: alive)
])  # fmt: skip
# virtual-row columns holding the carried values (the origin's resolved trader goes to the
# Parties trader column, which wins over every other trader source)
_VCOLS = (("o_trader", C_PARTY_TRADER), ("o_account", COL[1]), ("o_symbol", COL[55]),
          ("o_side", COL[54]), ("l_price", COL[44]), ("l_qty", COL[38]))  # fmt: skip


@dataclass
class FixCarry:
    """The stitcher's state after some chunks of one log and what the last chunk changed
    (``delta``: the rows to persist; replaying the deltas in order rebuilds the state).

    ``table`` holds the chains alive (kind 0 rows); ``execs`` the 64-bit hashes of every
    ExecID seen (sorted), so that a resend is still a ``duplicate``. A chain is pruned once its
    order is done (its latest ExecutionReport's OrdStatus is filled, cancelled, rejected or
    expired) for ``RETAIN_NS`` of log time and none of its requests is unanswered: it moves
    from ``table`` to ``pruned``, a compact store (``_Pruned``: no Arrow row, no Python object
    per order) from which a chunk that references one of its keys gets the chain's rows back
    exactly as they were. So pruning saves memory and per-chunk work (the table grows with the
    orders alive) but never changes a result: a "too late to cancel" or a late report about
    an order done long before is stitched to it as in the whole file, whatever the chunking.
    Persisted: kind 1 rows (an ExecID), kind 2 rows (a pruned chain's rows, in full)."""

    table: pa.Table
    delta: pa.Table
    execs: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))
    pruned: _Pruned = field(default_factory=lambda: _Pruned())

    @classmethod
    def empty(cls) -> FixCarry:
        return cls(CARRY_SCHEMA.empty_table(), CARRY_SCHEMA.empty_table())

    @classmethod
    def replay(cls, deltas: list[pa.Table]) -> FixCarry:
        """The state after the chunks whose deltas are given, in chunk order."""
        if not deltas:
            return cls.empty()
        both = pa.concat_tables([_conform(d) for d in deltas])
        kind = both.column("kind")
        execs = _hashes(both.column("key").filter(pc.equal(kind, 1)))
        chains = both.filter(pc.not_equal(kind, 1))
        chains = chains.append_column("__i", pa.array(np.arange(chains.num_rows)))
        latest = chains.group_by(["key"]).aggregate([("__i", "max")])
        keep = np.sort(latest.column("__i_max").to_numpy())
        chains = chains.take(pa.array(keep)).drop_columns(["__i"])
        alive = pc.equal(chains.column("kind"), 0)  # not pruned since
        return cls(chains.filter(alive), CARRY_SCHEMA.empty_table(), distinct(execs),
                   _Pruned().added(chains.filter(pc.invert(alive))))

    def merged(self, delta: pa.Table, prune_before: int | None = None,
               _new_execs: np.ndarray | None = None) -> FixCarry:
        """This state updated with a chunk's ``delta``; chains done before ``prune_before``
        (log time, ns) are pruned (their rows are added to the delta as kind 2 rows).
        ``_new_execs``: the hashes of the delta's ExecIDs when known to be none of ``execs``."""
        kind = delta.column("kind")
        chains = delta.filter(pc.equal(kind, 0))
        stale = pc.is_in(self.table.column("key"),
                         value_set=chains.column("key").combine_chunks())
        table = pa.concat_tables([self.table.filter(pc.invert(stale)), chains])
        if _new_execs is None:
            execs = _insert_sorted(self.execs, _hashes(delta.column("key").filter(
                pc.equal(kind, 1))))
        else:
            new = distinct(_new_execs)
            execs = np.insert(self.execs, np.searchsorted(self.execs, new), new)
        pruned = self.pruned
        if prune_before is not None and table.num_rows:
            table, dead = _prune(table, prune_before)
            if dead.num_rows:
                delta = pa.concat_tables([delta, dead])
                pruned = pruned.added(dead)
        return FixCarry(table, delta, execs, pruned)

    def relevant(self, ids: list[pa.Array], execs: pa.Array,
                 want: pa.Array | None = None) -> tuple[pa.Table, np.ndarray]:
        """The carried rows a chunk with these identifiers can touch (its ids, their chains'
        roots and open cancel requests; a pruned chain's rows restored from ``pruned`` when the
        chunk names one of its keys), and the positions in ``execs`` (the chunk's distinct
        ExecIDs, no null) of those already carried (hash lookups: log(carry) per id, not a
        scan of every ExecID or pruned key). ``want``: the distinct ids in order of first
        occurrence, when the caller has them."""
        t = self.table
        if want is None:
            want = pc.unique(pa.chunked_array(ids, pa.string()).combine_chunks()).drop_null()
        seen = np.flatnonzero(_in_sorted(self.execs, _hashes(execs)))
        if self.pruned.size and len(want):
            t = pa.concat_tables([t, self.pruned.restore(want, t.column("key"))])
        if not t.num_rows:
            return t, seen
        sel = pc.is_in(t.column("key"), value_set=want)
        roots = pa.concat_arrays([t.column("root").filter(sel).combine_chunks(),
                                  t.column("by37").filter(sel).combine_chunks()]).drop_null()
        sel = pc.or_(sel, pc.is_in(t.column("key"), value_set=roots))
        cancels = t.column("cancel_key").filter(sel).combine_chunks().drop_null()
        sel = pc.or_(sel, pc.is_in(t.column("key"), value_set=cancels))
        return t.filter(sel), seen


#: How long (log time) a done order's chain stays in the carry's table before it moves to the
#: compact ``_Pruned`` store (``FixCarry``): late answers usually come within it, and restoring
#: a chain from the store costs a little more than finding it in the table.
RETAIN_NS = 60_000_000_000
#: OrdStatus(39) of a done order: filled, cancelled, rejected, expired.
_DONE_STATUS = np.array([ord(c) for c in "248C"], np.uint8)


def _conform(delta: pa.Table) -> pa.Table:
    """A persisted delta in ``CARRY_SCHEMA`` (deltas written before ``done_ns``: null)."""
    if "done_ns" not in delta.column_names:
        delta = delta.append_column("done_ns", pa.nulls(delta.num_rows, pa.int64()))
    return delta.select(CARRY_SCHEMA.names).cast(CARRY_SCHEMA)


def _rows(keys: pa.Array, kind: int, req_class: int | pa.Array) -> pa.Table:
    """Carry rows with only ``kind``, ``key`` and ``req_class`` set."""
    k = len(keys)
    cols = {f.name: pa.nulls(k, f.type) for f in CARRY_SCHEMA}
    cols["kind"] = pa.array(np.full(k, kind, np.int8))
    cols["key"] = keys
    cols["req_class"] = (pa.array(np.full(k, req_class, np.int8)) if isinstance(req_class, int)
                         else req_class)
    return pa.table(cols, schema=CARRY_SCHEMA)


def _prune(table: pa.Table, before: int) -> tuple[pa.Table, pa.Table]:
    """(the chains alive, the pruned chains' rows as kind 2 rows): a chain goes when its root
    row was done before ``before`` and none of its requests is unanswered."""
    done = pc.less(table.column("done_ns").fill_null(before), before)
    roots = table.column("key").filter(done)
    if not len(roots):
        return table, CARRY_SCHEMA.empty_table()
    chain = pc.coalesce(table.column("root"), table.column("by37"))
    busy = chain.filter(table.column("req_open").fill_null(False)).combine_chunks()
    drop = pc.and_(pc.is_in(chain, value_set=roots.combine_chunks()),
                   pc.invert(pc.is_in(chain, value_set=busy)))
    drop = drop.fill_null(False)
    dead = table.filter(drop)
    dead = dead.set_column(0, CARRY_SCHEMA.field("kind"),
                           pa.array(np.full(dead.num_rows, 2, np.int8)))
    return table.filter(pc.invert(drop)), dead


@njit(cache=True)
def _hash64(raw, starts, lengths):  # pragma: no cover - numba
    """FNV-1a (64 bits) of each value, with a murmur3 finaliser to spread the bits."""
    out = np.empty(starts.shape[0], np.uint64)
    for i in range(starts.shape[0]):
        h = np.uint64(14695981039346656037)
        for k in range(starts[i], starts[i] + lengths[i]):
            h = (h ^ np.uint64(raw[k])) * np.uint64(1099511628211)
        h ^= h >> np.uint64(33)
        h *= np.uint64(0xFF51AFD7ED558CCD)
        h ^= h >> np.uint64(33)
        out[i] = h
    return out


def _hashes(arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """64-bit hashes of the non-null values of a string array."""
    if not len(arr):
        return np.zeros(0, np.uint64)
    raw, starts, lengths, valid = _flat(arr)
    return _hash64(raw, starts, lengths)[valid]


def _in_sorted(sorted_: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Which ``values`` are in the sorted array ``sorted_`` (binary search: log(carry) per
    value, not the carry's size)."""
    if not sorted_.size or not values.size:
        return np.zeros(values.shape[0], bool)
    if values.size < 1024:
        at = np.minimum(np.searchsorted(sorted_, values), sorted_.size - 1)
        return sorted_[at] == values
    order = np.argsort(values)  # sorted probes: a cache-friendly search, several times faster
    probes = values[order]
    at = np.minimum(np.searchsorted(sorted_, probes), sorted_.size - 1)
    out = np.empty(values.shape[0], bool)
    out[order] = sorted_[at] == probes
    return out


def _insert_sorted(sorted_: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``sorted_`` with ``values`` added (sorted, unique): a chunk's few new values inserted by
    binary search and one copy, not a sort of the whole set per chunk."""
    if not values.size:
        return sorted_
    values = distinct(values)
    values = values[~_in_sorted(sorted_, values)]
    return np.insert(sorted_, np.searchsorted(sorted_, values), values)


#: ``done_ns`` of a chain restored from ``_Pruned``: done long ago, so it is pruned again at the
#: end of the chunk that restored it unless that chunk leaves one of its requests unanswered or
#: reports on it (when a chain is pruned changes memory only, never a result).
_RESTORED_DONE = 0
#: Carried values of a pruned root, stored as codes of interned strings (``_Pruned.vals``).
_PRUNED_VALUES = ("o_trader", "o_account", "o_symbol", "o_side", "l_price", "l_qty")
_ORIGIN, _LAST, _CANCELLED = 1, 2, 4  # ``_Pruned.flags`` bits


class _Pruned:
    """The pruned chains of a ``FixCarry``, compactly, so that a later reference resolves as in
    the whole file. Per key, by 64-bit hash (sorted; binary search): its ``root`` and ``by37``
    (codes of interned strings, -1: none), request class and ``chain`` (-1: not a root); per
    chain (a root key): ``flags`` (origin, last, cancelled) and its carried values (``vals``,
    interned codes). About 100 bytes per pruned order (two or three keys; the root ClOrdID's
    bytes, since a late event's ``order_id`` is that string); the trader, account, symbol, side,
    price and quantity strings are stored once for all orders. A chain's cancel request key is
    not kept: the restored root is cancelled "by a report", which changes no event. Updates
    return a copy: a carry is never changed in place (``Tee._carry``)."""

    def __init__(self) -> None:
        self.hashes = np.zeros(0, np.uint64)
        self.root = np.zeros(0, np.int32)
        self.by37 = np.zeros(0, np.int32)
        self.req_class = np.zeros(0, np.int8)
        self.chain = np.zeros(0, np.int32)
        self.flags = np.zeros(0, np.uint8)
        self.vals = np.zeros((0, len(_PRUNED_VALUES)), np.int32)
        self.vhash = np.zeros(0, np.uint64)  # interned strings: sorted hashes, their codes,
        self.vcode = np.zeros(0, np.int32)
        self.strings: list[pa.Array] = []  # and the strings in code order (a few chunks)

    @property
    def size(self) -> int:
        """Keys stored."""
        return int(self.hashes.size)

    def nbytes(self) -> int:
        """Memory held (arrays and interned strings)."""
        arrays = (self.hashes, self.root, self.by37, self.req_class, self.chain, self.flags,
                  self.vals, self.vhash, self.vcode)
        return sum(a.nbytes for a in arrays) + sum(a.nbytes for a in self.strings)

    def added(self, dead: pa.Table) -> _Pruned:
        """A copy with the kind 2 rows ``dead`` added (a key already stored, from a chain that
        was restored and pruned again, is overwritten)."""
        out = _Pruned()
        out.__dict__.update(self.__dict__)
        informative = pc.or_(pc.greater(dead.column("req_class").fill_null(0), 0),
                             pc.or_(pc.is_valid(dead.column("root")),
                                    pc.is_valid(dead.column("by37"))))
        dead = dead.filter(informative)  # (rows persisted before pruned rows were full)
        if not dead.num_rows:
            return out
        codes = out._intern([dead.column(c).combine_chunks()
                             for c in ("root", "by37", *_PRUNED_VALUES)])
        key = dead.column("key").combine_chunks()
        is_root = np.asarray(pc.equal(key, dead.column("root").combine_chunks())
                             .fill_null(False).to_numpy(zero_copy_only=False), bool)

        def flag(col: str, bit: int) -> np.ndarray:
            v = dead.column(col).fill_null(False).to_numpy(zero_copy_only=False)
            return np.where(np.asarray(v, bool), bit, 0).astype(np.uint8)

        k = dead.num_rows
        chain = np.full(k, -1, np.int32)
        chain[is_root] = out.flags.size + np.arange(int(is_root.sum()), dtype=np.int32)
        flags = flag("origin", _ORIGIN) | flag("last", _LAST) | flag("cancelled", _CANCELLED)
        out.flags = np.concatenate([out.flags, flags[is_root]])
        out.vals = np.concatenate([out.vals, np.stack(codes[2:], axis=1)[is_root]])
        # one entry per key (the last row wins), in hash order
        h = _hashes(key)
        uh, first = np.unique(h[::-1], return_index=True)
        sel = k - 1 - first
        new = {"root": codes[0][sel], "by37": codes[1][sel],
               "req_class": dead.column("req_class").fill_null(0).to_numpy()[sel]
               .astype(np.int8), "chain": chain[sel]}
        at = np.searchsorted(out.hashes, uh)  # (uh sorted: one cache-friendly pass)
        found = (out.hashes[np.minimum(at, out.hashes.size - 1)] == uh if out.hashes.size
                 else np.zeros(uh.size, bool))
        for name, values in new.items():
            arr = getattr(out, name)
            if found.any():  # (np.insert copies: the stored arrays are never changed in place)
                arr = arr.copy()
                arr[at[found]] = values[found]
            setattr(out, name, np.insert(arr, at[~found], values[~found]))
        out.hashes = np.insert(out.hashes, at[~found], uh[~found])
        return out

    def _intern(self, arrays: list[pa.Array]) -> list[np.ndarray]:
        """Codes of the values of ``arrays`` (-1: null), new strings appended (in place: only
        on the copy ``added`` makes)."""
        cols, uniq = _encode(*arrays)  # one hash pass (first-occurrence order, no nulls)
        uh = _hashes(uniq)
        known = _in_sorted(self.vhash, uh)
        ucode = np.empty(len(uniq), np.int32)
        ucode[known] = self.vcode[np.searchsorted(self.vhash, uh[known])]
        fresh = np.flatnonzero(~known)
        if fresh.size:
            base = sum(len(a) for a in self.strings)
            ucode[fresh] = base + np.arange(fresh.size, dtype=np.int32)
            strings = [*self.strings, uniq.take(pa.array(fresh))]
            self.strings = [pa.concat_arrays(strings)] if len(strings) > 16 else strings
            order = np.argsort(uh[fresh])
            at = np.searchsorted(self.vhash, uh[fresh][order])
            self.vhash = np.insert(self.vhash, at, uh[fresh][order])
            self.vcode = np.insert(self.vcode, at, ucode[fresh][order])
        return [np.where(idx >= 0, ucode[np.maximum(idx, 0)], -1).astype(np.int32)
                for idx in cols]

    def _text(self, codes: np.ndarray) -> pa.Array:
        """The interned strings of ``codes`` (null for -1)."""
        if not self.strings or not codes.size:
            return pa.nulls(codes.size, pa.string())
        got = pa.chunked_array(self.strings, pa.string()).take(pa.array(np.maximum(codes, 0)))
        return pc.if_else(pa.array(codes >= 0), got.combine_chunks(),
                          pa.scalar(None, pa.string()))

    def _find(self, keys: pa.Array, alive: pa.ChunkedArray) -> tuple[pa.Array, np.ndarray]:
        """The ``keys`` stored and not alive (in ``alive``), with their entries."""
        h = _hashes(keys)
        hit = _in_sorted(self.hashes, h)
        if len(alive) and hit.any():
            hit &= ~np.asarray(pc.is_in(keys, value_set=alive.combine_chunks())
                               .to_numpy(zero_copy_only=False), bool)
        return keys.filter(pa.array(hit)), np.searchsorted(self.hashes, h[hit])

    def restore(self, want: pa.Array, alive: pa.ChunkedArray) -> pa.Table:
        """Kind 0 rows, as they were when pruned, for the keys in ``want`` that are stored and
        not alive, and for their chains' roots (a key's ``root`` and ``by37``)."""
        keys, pos = self._find(want, alive)
        if not len(keys):
            return CARRY_SCHEMA.empty_table()
        refs = distinct(np.concatenate([self.root[pos], self.by37[pos]]))
        refs = self._text(refs[refs >= 0])
        more, mpos = self._find(pc.filter(refs, pc.invert(pc.is_in(refs, value_set=keys))),
                                alive)
        keys = pa.concat_arrays([keys, more])
        pos = np.concatenate([pos, mpos])
        k = len(keys)
        ch = self.chain[pos]
        root = ch >= 0
        flags = np.zeros(k, np.uint8)
        vals = np.full((k, len(_PRUNED_VALUES)), -1, np.int32)
        flags[root] = self.flags[ch[root]]
        vals[root] = self.vals[ch[root]]
        cols = {
            "kind": pa.array(np.zeros(k, np.int8)),
            "key": keys,
            "root": self._text(self.root[pos]),
            "req_class": pa.array(self.req_class[pos]),
            "req_open": pa.array(np.zeros(k, bool)),
            "by37": self._text(self.by37[pos]),
            "cancelled": pa.array(flags & _CANCELLED > 0),
            "cancel_key": pa.nulls(k, pa.string()),
            "origin": pa.array(flags & _ORIGIN > 0),
            "last": pa.array(flags & _LAST > 0),
            "done_ns": pa.array(np.full(k, _RESTORED_DONE, np.int64), mask=~root),
        }
        for j, name in enumerate(_PRUNED_VALUES):
            cols[name] = self._text(vals[:, j])
        return pa.table(cols).select(CARRY_SCHEMA.names).cast(CARRY_SCHEMA)


def _flat(arr: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A string array's bytes, value starts and lengths (into those bytes), and validity."""
    arr = arr.cast(pa.large_string())
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    off = np.frombuffer(arr.buffers()[1], np.int64)[arr.offset : arr.offset + len(arr) + 1]
    data = arr.buffers()[2]
    raw = np.frombuffer(data, np.uint8) if data is not None else np.zeros(0, np.uint8)
    raw = raw[off[0] : off[-1]] if len(arr) else raw[:0]
    valid = np.asarray(arr.is_valid().to_numpy(zero_copy_only=False), bool)
    return raw, off[:-1] - off[0], np.diff(off), valid


class _StitchState:
    """The stitcher's state arrays for one chunk, seeded from a carry: each carried id is a
    *virtual row* after the chunk's real rows (never an event itself, but an origin, a latest
    NEW/MODIFY or an open request that real rows can point to)."""

    def __init__(self) -> None:
        self.virtual = 0

    @classmethod
    def build(cls, ids: list[pa.Array], ex17: pa.Array, carry: FixCarry | None,
              n: int) -> _StitchState:
        self = cls()
        self.n = n
        # the chunk's ids encoded once (their dictionary is also ``relevant``'s distinct ids);
        # the carried keys that are none of them are appended to the dictionary in key order
        (self.c11, self.c41, self.c37), self.dictionary = _encode(*ids)
        (self.c17,), self.d17 = _encode(ex17)
        if carry is None:
            rel, seen_codes = CARRY_SCHEMA.empty_table(), np.zeros(0, np.int64)
        else:
            rel, seen_codes = carry.relevant(ids, self.d17, want=self.dictionary)
        self.rel = rel
        v = self.virtual = rel.num_rows
        vkey = np.zeros(0, np.int64)
        if v:  # the carried key, root, by37 and cancel_key columns looked up in one pass
            refs = ("key", "root", "by37", "cancel_key")
            cols = [rel.column(c).combine_chunks() for c in refs]
            other = pc.is_null(pc.index_in(cols[0], value_set=self.dictionary))
            extra = pc.unique(cols[0].filter(other))
            if len(extra):
                self.dictionary = pa.concat_arrays([self.dictionary, extra])
            idx = pc.index_in(pa.chunked_array(cols, pa.string()), value_set=self.dictionary)
            idx = idx.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
            vkey, *parts = np.split(idx, [v, 2 * v, 3 * v])
            coded = dict(zip(refs[1:], parts, strict=True))
        ncodes, n17 = len(self.dictionary), len(self.d17)

        def code(col: str) -> np.ndarray:
            return coded[col]

        def flag(col: str) -> np.ndarray:
            return np.asarray(rel.column(col).fill_null(False).to_numpy(), bool)

        vrows = n + np.arange(v)
        self.vkey = vkey
        self.vroot = code("root") if v else np.zeros(0, np.int64)
        req_class = rel.column("req_class").fill_null(0).to_numpy() if v else np.zeros(0)
        self.vclass = np.where(req_class > 0, req_class, M_ER).astype(np.int8)
        root = np.full(ncodes, -1, np.int64)
        req_msg = np.full(ncodes, -1, np.int64)
        req_open = np.zeros(ncodes, np.bool_)
        by37 = np.full(ncodes, -1, np.int64)
        cancel_msg = np.full(ncodes, -1, np.int64)
        origin = np.full(ncodes, -1, np.int64)
        last = np.full(ncodes, -1, np.int64)
        seen17 = np.zeros(n17, np.bool_)
        if v:
            root[vkey] = self.vroot
            requested = req_class > 0
            req_msg[vkey[requested]] = vrows[requested]
            req_open[vkey] = flag("req_open")
            by37[vkey] = code("by37")
            has = flag("origin")
            origin[vkey[has]] = vrows[has]
            has = flag("last")
            last[vkey[has]] = vrows[has]
            cancelled = flag("cancelled")
            ck = code("cancel_key")  # the F's own virtual row, else the root's
            row_of_code = np.full(ncodes, -1, np.int64)
            row_of_code[vkey] = vrows
            cm = np.where(ck >= 0, row_of_code[np.maximum(ck, 0)], -1)
            cancel_msg[vkey[cancelled]] = np.where(cm >= 0, cm, vrows)[cancelled]
        # per code: when its order was done (carried; ``carry_out`` updates it), and whether
        # it is only a pruned request ClOrdID (a bare row that makes a reuse a duplicate)
        self.done = np.full(ncodes, NAT, np.int64)
        self.ghost = np.zeros(ncodes, np.bool_)
        if v:
            # (nulls filled first: through float64 a time would lose its last bits)
            self.done[vkey] = rel.column("done_ns").fill_null(NAT).to_numpy()
            self.ghost[vkey] = (self.vroot < 0) & (by37[vkey] < 0) & (req_class > 0)
        seen17[seen_codes] = True
        self.carried17 = np.zeros(n17, np.bool_)  # ExecIDs already in the carry (``relevant``)
        self.carried17[seen_codes] = True
        self.arrays = (root, req_msg, req_open, by37, cancel_msg, origin, last, seen17)
        self.row_arrays = (req_msg, cancel_msg, origin, last)
        return self

    def extend(self, real: np.ndarray, virtual) -> np.ndarray:
        """A per-row array for the real rows followed by the virtual rows."""
        if not self.virtual:
            return real
        tail = np.broadcast_to(np.asarray(virtual, real.dtype), (self.virtual,))
        return np.concatenate([real, tail])

    def spans(self, buf, rs, vs, vl) -> _Spans:
        """Value spans over the chunk's bytes followed by the carried values."""
        v, n = self.virtual, self.n
        blocks, pos = [buf], buf.shape[0]
        vs2 = np.concatenate([vs, np.full((vs.shape[0], v), -1, np.int32)], axis=1)
        vl2 = np.concatenate([vl, np.zeros((vl.shape[0], v), np.int32)], axis=1)
        for name, col in _VCOLS:
            raw, starts, lengths, valid = _flat(self.rel.column(name))
            vs2[col, n:] = np.where(valid, pos - buf.shape[0] + starts, -1)
            vl2[col, n:] = lengths
            blocks.append(raw)
            pos += raw.shape[0]
        rs2 = np.concatenate([rs, np.full(v, buf.shape[0], np.int64)])
        return _Spans(np.concatenate(blocks), rs2, vs2, vl2)

    def carry_out(self, carry: FixCarry, sp: _Spans, mclass: np.ndarray,
                  s: _Stitched) -> FixCarry:
        """The carry after this chunk: ``carry`` updated with every id the chunk touched, each
        chain's done time from its latest ExecutionReport (in time order), and the chains done
        ``RETAIN_NS`` before the chunk's latest time pruned."""
        root, req_msg, req_open, by37, cancel_msg, origin, last, seen17 = self.arrays
        d = self.dictionary
        codes = np.flatnonzero(((root >= 0) | (req_msg >= 0) | (by37 >= 0))
                               & ~(self.ghost & (root < 0) & (by37 < 0)))
        m = codes.size
        n = self.n
        done = self.done.copy()
        prune_before = None
        if s.key is not None:
            rows = np.flatnonzero(s.ok & (mclass[:n] == M_ER) & (s.mroot[:n] >= 0))
            if rows.size:
                rev = rows[np.argsort(s.key[rows], kind="stable")][::-1]
                roots, first = np.unique(s.mroot[rev], return_index=True)
                latest = rev[first]  # each chain's latest report
                fin = np.isin(s.ordstatus[latest], _DONE_STATUS)
                done[roots] = np.where(fin, s.key[latest], NAT)
            prune_before = int(s.key[: s.rows].max()) - RETAIN_NS

        def name(c: np.ndarray) -> pa.Array:
            if not len(d):
                return pa.nulls(len(c), pa.string())
            return d.take(pa.array(c, mask=c < 0))  # a null index: a null

        rq = req_msg[codes]
        req_class = np.where(rq >= 0, mclass[np.maximum(rq, 0)], 0).astype(np.int8)
        cm = cancel_msg[codes]
        c11 = np.concatenate([self.c11, self.vkey])
        is_f = (cm >= 0) & (mclass[np.maximum(cm, 0)] == M_F)
        cancel_key = np.where(is_f, c11[np.maximum(cm, 0)], -1)
        o, la = origin[codes], last[codes]
        has_o, has_l = o >= 0, la >= 0
        # the values are gathered only for the ids that have them (one pass per row set), then
        # spread to every id by one take with a null-masked index (null where there is none)
        orow = o[has_o]
        tp, s50, s57, s116, account, symbol, side = sp.columns(
            [C_PARTY_TRADER, COL[50], COL[57], COL[116], COL[1], COL[55], COL[54]], orow)
        is_req = pa.array(np.isin(mclass[orow], (M_D, M_F, M_G)))
        trader = pc.coalesce(tp, pc.if_else(is_req, s50, s57), s50, s116)
        price, qty = sp.columns([COL[44], COL[38]], la[has_l])
        at_o = pa.array(np.cumsum(has_o) - 1, mask=~has_o)
        at_l = pa.array(np.cumsum(has_l) - 1, mask=~has_l)

        def only(at: pa.Array, arr: pa.Array) -> pa.Array:
            return arr.take(at)

        delta = pa.table({
            "kind": pa.array(np.zeros(m, np.int8)),
            "key": name(codes),
            "root": name(root[codes]),
            "req_class": pa.array(req_class),
            "req_open": pa.array(req_open[codes]),
            "by37": name(by37[codes]),
            "cancelled": pa.array(cm >= 0),
            "cancel_key": name(cancel_key),
            "origin": pa.array(has_o),
            "o_trader": only(at_o, trader),
            "o_account": only(at_o, account),
            "o_symbol": only(at_o, symbol),
            "o_side": only(at_o, side),
            "last": pa.array(has_l),
            "l_price": only(at_l, price),
            "l_qty": only(at_l, qty),
            "done_ns": pa.array(done[codes], mask=done[codes] == NAT),
        }, schema=CARRY_SCHEMA)  # fmt: skip
        new17 = seen17 & ~self.carried17
        execs = _rows(self.d17.filter(pa.array(new17)), kind=1, req_class=0)
        return carry.merged(pa.concat_tables([delta, execs]), prune_before,
                            _new_execs=_hashes(execs.column("key")))


@njit(cache=True)
def _safe_cut(ok, mclass, action, closed_by, rline, stop):  # pragma: no cover - numba
    """The last row L <= ``stop`` starting a line such that every request before L was answered
    before L (n when none is left open and ``stop`` is n; 0 when no such line exists)."""
    n = ok.shape[0]
    reach = -1
    best = 0
    for p in range(n):
        if p > 0 and rline[p] != rline[p - 1] and reach < p:
            best = p
        if p >= stop:
            return best
        if ok[p] and (mclass[p] == M_D or mclass[p] == M_F or mclass[p] == M_G):
            c = closed_by[p]
            if c < 0 and (action[p] == A_NEW or action[p] == A_MODIFY
                          or action[p] == A_CANCEL):
                c = n
            if c > reach:
                reach = c
    if reach < n:
        return n
    return best
