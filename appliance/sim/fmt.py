"""Numba CSV formatting of kernel rows (bytes out, no per-row Python)."""

from __future__ import annotations

import numpy as np
from numba import njit
from numba import types as nt

from . import engine as E


def string_table(strings: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Concatenated UTF-8 blob plus offsets (len n+1)."""
    enc = [s.encode() for s in strings]
    off = np.zeros(len(enc) + 1, np.int64)
    off[1:] = np.cumsum([len(b) for b in enc]) if enc else []
    blob = np.frombuffer(b"".join(enc), np.uint8).copy() if enc else np.zeros(0, np.uint8)
    return blob, off


@njit(nt.int64(nt.uint8[::1], nt.int64, nt.uint8[::1], nt.int64[::1], nt.int64), cache=True)
def put_str(buf, p, blob, off, i):
    a = off[i]
    b = off[i + 1]
    for j in range(a, b):
        buf[p] = blob[j]
        p += 1
    return p


@njit(nt.int64(nt.uint8[::1], nt.int64, nt.int64, nt.int64), cache=True)
def put_int(buf, p, v, width):
    """Decimal integer, zero-padded to ``width`` digits (width 0: natural)."""
    if v < 0:
        buf[p] = 45
        p += 1
        v = -v
    n = 1
    x = v
    while x >= 10:
        x //= 10
        n += 1
    if n < width:
        n = width
    for j in range(n - 1, -1, -1):
        buf[p + j] = 48 + v % 10
        v //= 10
    return p + n


@njit(nt.int64(nt.uint8[::1], nt.int64, nt.int64, nt.int64), cache=True)
def put_price(buf, p, q, dec):
    """``q`` is the price in units of 10**-dec."""
    if dec == 0:
        return put_int(buf, p, q, 0)
    scale = np.int64(10) ** dec
    if q < 0:
        buf[p] = 45
        p += 1
        q = -q
    p = put_int(buf, p, q // scale, 0)
    buf[p] = 46
    p += 1
    return put_int(buf, p, q % scale, dec)


@njit(nt.UniTuple(nt.int64, 3)(nt.int64), cache=True)
def civil(days):
    """Days since 1970-01-01 -> (y, m, d) (H. Hinnant)."""
    z = days + 719468
    era = (z if z >= 0 else z - 146096) // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    y = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    if m <= 2:
        y += 1
    return y, m, d


@njit(nt.int64(nt.uint8[::1], nt.int64, nt.int64, nt.int64, nt.boolean, nt.int64), cache=True)
def put_ts(buf, p, ns, sep, zulu, digits):
    """ISO-8601: ``YYYY-MM-DD<sep>HH:MM:SS.fffffffff[Z]`` (``digits`` fractional digits)."""
    s = ns // 1_000_000_000
    frac = ns % 1_000_000_000
    days = s // 86400
    sod = s % 86400
    y, m, d = civil(days)
    p = put_int(buf, p, y, 4)
    buf[p] = 45
    p = put_int(buf, p + 1, m, 2)
    buf[p] = 45
    p = put_int(buf, p + 1, d, 2)
    buf[p] = sep
    p = put_int(buf, p + 1, sod // 3600, 2)
    buf[p] = 58
    p = put_int(buf, p + 1, (sod // 60) % 60, 2)
    buf[p] = 58
    p = put_int(buf, p + 1, sod % 60, 2)
    if digits > 0:
        buf[p] = 46
        p = put_int(buf, p + 1, frac // (10 ** (9 - digits)), digits)
    if zulu:
        buf[p] = 90
        p += 1
    return p


@njit(nt.int64(nt.uint8[::1], nt.int64, nt.int64), cache=True)
def put_oid(buf, p, oid):
    buf[p] = 79  # 'O'
    return put_int(buf, p + 1, oid, 12)


SIDE_TXT = ("BUY", "SELL")
EVENT_TXT = ("NEW", "MODIFY", "CANCEL", "FILL", "REJECT")


@njit(cache=True)
def format_orders(rows, t0, blob, off, trd_base, acc_base, sym_base, ven_base, firm_i,
                  side_base, ev_base, pbase, tickq, dec):
    """Canonical orders.csv lines for ``rows`` (kernel OO rows, sorted)."""
    n = rows.shape[0]
    buf = np.empty(n * 200 + 64, np.uint8)
    p = 0
    for i in range(n):
        r = rows[i]
        inst = r[E.E_INST]
        p = put_ts(buf, p, t0 + r[E.E_TS], 84, True, 9)
        buf[p] = 44
        p = put_str(buf, p + 1, blob, off, firm_i)
        buf[p] = 44
        p = put_str(buf, p + 1, blob, off, trd_base + r[E.E_TRD])
        buf[p] = 44
        p = put_str(buf, p + 1, blob, off, acc_base + r[E.E_ACC])
        buf[p] = 44
        p = put_str(buf, p + 1, blob, off, sym_base + inst)
        buf[p] = 44
        p = put_str(buf, p + 1, blob, off, side_base + r[E.E_SIDE])
        buf[p] = 44
        ev = r[E.E_EV]
        p = put_str(buf, p + 1, blob, off, ev_base + ev)
        buf[p] = 44
        p = put_oid(buf, p + 1, r[E.E_OID])
        buf[p] = 44
        p += 1
        p = put_price(buf, p, (pbase[inst] + r[E.E_LVL]) * tickq[inst], dec[inst])
        buf[p] = 44
        p = put_int(buf, p + 1, r[E.E_QTY], 0)
        buf[p] = 44
        p = put_int(buf, p + 1, r[E.E_LEAVES], 0)
        buf[p] = 44
        p += 1
        if ev == E.EV_FILL:
            p = put_int(buf, p, r[E.E_EXQ], 0)
            buf[p] = 44
            p = put_price(buf, p + 1, (pbase[inst] + r[E.E_EXLVL]) * tickq[inst], dec[inst])
        else:
            buf[p] = 44
            p += 1
        buf[p] = 44
        p = put_str(buf, p + 1, blob, off, ven_base + inst)
        buf[p] = 10
        p += 1
    return buf[:p]


@njit(cache=True)
def format_market(rows, t0, blob, off, sym_base, pbase, tickq, dec):
    n = rows.shape[0]
    buf = np.empty(n * 120 + 64, np.uint8)
    p = 0
    for i in range(n):
        r = rows[i]
        inst = r[E.M_INST]
        p = put_ts(buf, p, t0 + r[E.M_TS], 84, True, 9)
        buf[p] = 44
        p = put_str(buf, p + 1, blob, off, sym_base + inst)
        buf[p] = 44
        p += 1
        if r[E.M_KIND] == 0:
            if r[E.M_BL] >= 0:
                p = put_price(buf, p, (pbase[inst] + r[E.M_BL]) * tickq[inst], dec[inst])
                buf[p] = 44
                p = put_int(buf, p + 1, r[E.M_BS], 0)
            else:
                buf[p] = 44
                p += 1
            buf[p] = 44
            p += 1
            if r[E.M_AL] >= 0:
                p = put_price(buf, p, (pbase[inst] + r[E.M_AL]) * tickq[inst], dec[inst])
                buf[p] = 44
                p = put_int(buf, p + 1, r[E.M_AS], 0)
            else:
                buf[p] = 44
                p += 1
            buf[p] = 44
            buf[p + 1] = 44
            p += 2
        else:
            buf[p] = 44
            buf[p + 1] = 44
            buf[p + 2] = 44
            buf[p + 3] = 44
            p += 4
            p = put_price(buf, p, (pbase[inst] + r[E.M_LL]) * tickq[inst], dec[inst])
            buf[p] = 44
            p = put_int(buf, p + 1, r[E.M_LS], 0)
        buf[p] = 10
        p += 1
    return buf[:p]
