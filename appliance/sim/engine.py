# ruff: noqa: E741, SIM102, SIM108, SIM109
"""Numba kernel: one price-time-priority limit order book per instrument plus every agent.

All state lives in NumPy arrays so a session can be run in time chunks (``run`` returns when the
chunk end is reached or an output buffer is nearly full) and streamed to disk. Prices are integer
tick *levels* on a grid of ``NL`` levels; the writer turns them into decimals. Randomness comes
from two splitmix64 streams held in ``R`` (0: background market, 1: firm agents), so a run is a
pure function of its seed.

Array bundle passed to every routine (always in this order)::

    I   int64 scalars        F   float64 scalars + parameters   R  uint64 RNG states
    OP  order pool           LV  level lists (head, tail, depth) x side x level
    BG  background order list  FREE free-handle stack            H  event heap (t, agent, act, arg)
    AI  agent ints           AF  agent floats
    OO  firm order events    MO  market data rows   TL truth links   EPT episodes   ST stop orders
"""

from __future__ import annotations

import numpy as np
from numba import njit
from numba import types as nt

NL = 8192  # price levels per book
MID0 = NL // 2
MAXO = 1 << 16  # live orders per book
HCAP = 1 << 16
NSTOPMAX = 256
BIG = np.int64(1) << np.int64(62)
NS = 1_000_000_000

# --- I (int scalars)
NOW, BB, BA, NFREE, NBG, NO, NM, HN, OIDC, TNEXT = range(10)
QBB, QBS, QBA, QBAS, IMBST, LASTL, NST, NEP, INST, NTL = range(10, 20)
TSESS, TCLOSE, NAG, OIDBASE, NEWSC, CANCELLED, LASTFILLT = range(20, 27)
NI = 32
# --- F (floats): state then parameters
FUND, EMAF, EMAS, TLAST, CPV, CV, MU0, DAYV, LASTMID, LASTNEWS = range(10)
LAM, PLIM, PMKT, PVAL, PMOM, PIMB, NTARGET, GEOM, SZMU, SZSIG = range(32, 42)
KAPPA, FSIG, THETA, NREACT, REACTLAT, VALTHR, MOMTF, MOMTS, MOMTHR, NEWSRATE = range(42, 52)
NEWSJUMP, UAMP, MEDSZ, PCANC, IMBTAKE, PSTOP = range(52, 58)
NF = 64
# --- order pool fields
O_SIDE, O_LVL, O_QTY, O_ORIG, O_AG, O_NXT, O_PRV, O_OID, O_ROLE, O_EP, O_BGI, O_T = range(12)
O_ACC, O_SLOT = 12, 13
OPW = 14
# --- firm order event rows
E_TS, E_TRD, E_ACC, E_SIDE, E_EV, E_OID, E_LVL, E_QTY, E_LEAVES, E_EXQ, E_EXLVL = range(11)
E_EP, E_ROLE, E_INST = 11, 12, 13
OOW = 14
# --- market rows
M_TS, M_KIND, M_BL, M_BS, M_AL, M_AS, M_LL, M_LS, M_INST = range(9)
MOW = 9
# --- truth links, episodes
TL_EP, TL_OID, TL_ROLE, TL_ACC, TL_INST = range(5)
TLW = 5
EP_PAT, EP_LABEL, EP_AG, EP_START, EP_END, EP_TRD = range(6)
EPW = 6
MAXEP = 1 << 14
# events
EV_NEW, EV_MODIFY, EV_CANCEL, EV_FILL, EV_REJECT = range(5)
# roles
R_NONE, R_GENUINE, R_BAIT, R_QUOTE, R_LEG, R_CHILD, R_AGGR, R_EXIT, R_HEDGE, R_EXPO = range(10)
ROLE_NAMES = ("", "genuine", "bait", "quote", "leg", "child", "aggressive", "exit", "hedge",
              "exposure")
# patterns
P_SPOOF, P_LAYER, P_WASH, P_QSTUFF, P_FRONT, P_MARK, P_IGNITE = range(7)
PATTERNS = ("spoofing", "layering", "wash_trade", "quote_stuffing", "front_running",
            "marking_the_close", "momentum_ignition")
# agent kinds
(K_MM, K_SPOOF, K_REEVAL, K_HEDGER, K_PROP, K_LAYER, K_WASH, K_WASHNEG, K_QSTUFF, K_QSNEG,
 K_EXEC, K_FRONT, K_FRNEG, K_MARK, K_MARKNEG, K_IGNITE, K_IGNNEG, K_JOCKEY) = range(1, 19)
KIND_NAMES = {K_MM: "market_maker", K_SPOOF: "spoofer", K_REEVAL: "re_evaluator",
              K_HEDGER: "hedger", K_PROP: "prop", K_LAYER: "layerer", K_WASH: "wash_trader",
              K_WASHNEG: "independent_algo", K_QSTUFF: "quote_stuffer",
              K_QSNEG: "requote_storm", K_EXEC: "exec_algo", K_FRONT: "front_runner",
              K_FRNEG: "pre_hedger", K_MARK: "close_marker", K_MARKNEG: "close_hedger",
              K_IGNITE: "momentum_igniter", K_IGNNEG: "liquidator", K_JOCKEY: "queue_jockey"}
# agent int fields
A_KIND, A_TRD, A_ACC, A_ACC2, A_STATE, A_POS, A_CNT, A_EP, A_SIDE, A_PEND = range(10)
A_CENTER2, A_NCYC, A_OWNER, A_I0, A_I1, A_I2, A_I3, A_TEND, A_T0, A_PAT = range(10, 20)
A_LABEL, A_QTY, A_DONE, A_NSL, A_X0, A_X1 = range(20, 26)
A_H = 32
NSLOT = 24
AIW = A_H + NSLOT
AFW = 16
# actions
(ACT_START, ACT_REQUOTE, ACT_CYCLE, ACT_BAIT, ACT_TIMEOUT, ACT_CANCELBAIT, ACT_STEP, ACT_END,
 ACT_SMALL, ACT_NEWSREACT, ACT_PARENT, ACT_UNWIND, ACT_CLOSE, ACT_EXITCHK, ACT_PULL) = range(1, 16)
ACT_IMB, ACT_STOPFIRE, ACT_NEWS, ACT_NOTIFY = 101, 102, 103, 104


# Explicit signatures: numba would otherwise compile one specialisation per literal argument
# (hundreds of call sites), which multiplies the cold compile time.
A1 = nt.int64[::1]
F1 = nt.float64[::1]
U1 = nt.uint64[::1]
A2 = nt.int64[:, ::1]
F2 = nt.float64[:, ::1]
A3 = nt.int64[:, :, ::1]
i8 = nt.int64
f8 = nt.float64
b1 = nt.boolean
vo = nt.void
BUNDLE = (A1, F1, U1, A2, A3, A1, A1, A2, A2, F2, A2, A2, A2, A2, A2)
SIG = {
    "rnd": f8(U1, i8), "rexp": f8(U1, i8, f8), "rnorm": f8(U1, i8), "runi": f8(U1, i8, f8, f8),
    "rint": i8(U1, i8, i8, i8), "rgeom": i8(U1, i8, f8), "rpois": i8(U1, i8, f8),
    "rsize": i8(F1, U1, i8), "hpush": vo(A1, A2, i8, i8, i8, i8), "hpop": vo(A1, A2),
    "emit_order": vo(A1, A2, A2, A2, A2, i8, i8, i8, i8), "emit_trade": vo(A1, A2, i8, i8),
    "emit_quote_if_changed": vo(A1, A3, A2), "new_episode": i8(A1, A2, A2, i8, i8, i8),
    "link": vo(A1, A2, i8, i8, i8, i8), "lvl_append": vo(A1, A2, A3, i8),
    "lvl_unlink": vo(A1, A2, A3, i8), "order_gone": vo(A1, A2, A1, A1, A2, i8),
    "mid2": i8(A1, F1), "imbalance": f8(A1, A3, i8), "check_stops": vo(A1, U1, A2, A2, i8),
    "add_order": i8(*BUNDLE, i8, i8, i8, i8, i8, i8, i8, i8, b1),
    "match_rest": i8(*BUNDLE, i8, b1),
    "cancel_order": vo(A1, A2, A3, A1, A1, A2, A2, A2, i8),
    "modify_order": i8(*BUNDLE, i8, i8, i8), "self_match": vo(A1, A2, A2, A2, A2, i8, i8),
    "free_slot": i8(A2, i8), "queue_ahead": i8(A2, A3, i8),
    "cancel_slot": vo(A1, A2, A3, A1, A1, A2, A2, A2, i8, i8),
    "cancel_all": vo(A1, A2, A3, A1, A1, A2, A2, A2, i8), "live_qty": i8(A2, A2, i8, i8),
    "touch": i8(A1, F1, i8), "sgn": i8(i8), "after": i8(A1, U1, f8),
    "on_fill": vo(A1, F1, U1, A2, A2, F2, i8, i8, i8, i8, i8, i8, i8, i8),
    "bg_limit": vo(*BUNDLE, i8, i8), "bg_take": vo(*BUNDLE, i8, i8),
    "bg_join": vo(*BUNDLE, i8, i8), "imb_react": b1(*BUNDLE), "update_signals": vo(A1, F1, U1),
    "bg_event": vo(*BUNDLE), "place": i8(*BUNDLE, i8, i8, i8, i8, i8, i8, i8, b1),
    "mm_requote": vo(*BUNDLE, i8), "sched_next_burst": vo(A1, U1, A2, A2, F2, i8, f8, f8),
    "agent_act": vo(*BUNDLE, i8, i8, i8), "notify_parent": vo(A1, U1, A2, A2, i8, i8, i8, i8),
    "agent_act2": vo(*BUNDLE, i8, i8, i8),
    "after_event": vo(A1, F1, U1, A2, A3, A2, A2, F2, A2, A1), "news": vo(A1, F1, U1, A2, A2),
    "run": i8(i8, *BUNDLE, A1),
}


# ---------------------------------------------------------------------------------------------
# random numbers (splitmix64)
@njit(SIG["rnd"], cache=True)
def rnd(R, k):
    R[k] += np.uint64(0x9E3779B97F4A7C15)
    z = R[k]
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return np.float64(z >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@njit(SIG["rexp"], cache=True)
def rexp(R, k, mean):
    return -mean * np.log(1.0 - rnd(R, k))


@njit(SIG["rnorm"], cache=True)
def rnorm(R, k):
    u1 = rnd(R, k)
    u2 = rnd(R, k)
    return np.sqrt(-2.0 * np.log(1.0 - u1)) * np.cos(2.0 * np.pi * u2)


@njit(SIG["runi"], cache=True)
def runi(R, k, a, b):
    return a + (b - a) * rnd(R, k)


@njit(SIG["rint"], cache=True)
def rint(R, k, a, b):
    """Integer uniform in [a, b]."""
    return a + np.int64(rnd(R, k) * (b - a + 1))


@njit(SIG["rgeom"], cache=True)
def rgeom(R, k, p):
    return np.int64(np.log(1.0 - rnd(R, k)) / np.log(1.0 - p))


@njit(SIG["rpois"], cache=True)
def rpois(R, k, lam):
    L = np.exp(-lam)
    n = 0
    p = rnd(R, k)
    while p > L and n < 50:
        n += 1
        p *= rnd(R, k)
    return n


@njit(SIG["rsize"], cache=True)
def rsize(F, R, k):
    """Heavy-tailed order size with round-lot clustering."""
    s = np.exp(F[SZMU] + F[SZSIG] * rnorm(R, k))
    q = np.int64(np.ceil(s))
    if q > 5 and rnd(R, k) < 0.35:
        q = ((q + 2) // 5) * 5
    if q < 1:
        q = 1
    if q > 500:
        q = 500
    return q


# ---------------------------------------------------------------------------------------------
# event heap


@njit(SIG["hpush"], cache=True)
def hpush(I, H, t, ag, act, arg):
    n = I[HN]
    if n >= H.shape[0]:
        raise RuntimeError("sim: event heap overflow")
    i = n
    I[HN] = n + 1
    while i > 0:
        p = (i - 1) >> 1
        if H[p, 0] <= t:
            break
        H[i, 0] = H[p, 0]
        H[i, 1] = H[p, 1]
        H[i, 2] = H[p, 2]
        H[i, 3] = H[p, 3]
        i = p
    H[i, 0] = t
    H[i, 1] = ag
    H[i, 2] = act
    H[i, 3] = arg


@njit(SIG["hpop"], cache=True)
def hpop(I, H):
    n = I[HN] - 1
    I[HN] = n
    t = H[n, 0]
    ag = H[n, 1]
    act = H[n, 2]
    arg = H[n, 3]
    i = 0
    while True:
        c = 2 * i + 1
        if c >= n:
            break
        if c + 1 < n and H[c + 1, 0] < H[c, 0]:
            c += 1
        if H[c, 0] >= t:
            break
        H[i, 0] = H[c, 0]
        H[i, 1] = H[c, 1]
        H[i, 2] = H[c, 2]
        H[i, 3] = H[c, 3]
        i = c
    H[i, 0] = t
    H[i, 1] = ag
    H[i, 2] = act
    H[i, 3] = arg


# ---------------------------------------------------------------------------------------------
# output rows


@njit(SIG["emit_order"], cache=True)
def emit_order(I, OP, AI, OO, EPT, h, ev, exq, exlvl):
    n = I[NO]
    I[NO] = n + 1
    ag = OP[h, O_AG]
    OO[n, E_TS] = I[NOW]
    OO[n, E_TRD] = AI[ag, A_TRD]
    OO[n, E_ACC] = OP[h, O_ACC]
    OO[n, E_SIDE] = OP[h, O_SIDE]
    OO[n, E_EV] = ev
    OO[n, E_OID] = OP[h, O_OID]
    OO[n, E_LVL] = OP[h, O_LVL]
    OO[n, E_QTY] = OP[h, O_ORIG]
    OO[n, E_LEAVES] = OP[h, O_QTY] if ev != EV_CANCEL else 0
    OO[n, E_EXQ] = exq
    OO[n, E_EXLVL] = exlvl
    ep = OP[h, O_EP]
    OO[n, E_EP] = ep
    OO[n, E_ROLE] = OP[h, O_ROLE]
    OO[n, E_INST] = I[INST]
    if ep >= 0:
        if EPT[ep, EP_START] < 0:
            EPT[ep, EP_START] = I[NOW]
        EPT[ep, EP_END] = I[NOW]


@njit(SIG["emit_trade"], cache=True)
def emit_trade(I, MO, lvl, q):
    n = I[NM]
    I[NM] = n + 1
    MO[n, M_TS] = I[NOW]
    MO[n, M_KIND] = 1
    MO[n, M_BL] = -1
    MO[n, M_AL] = -1
    MO[n, M_LL] = lvl
    MO[n, M_LS] = q
    MO[n, M_INST] = I[INST]


@njit(SIG["emit_quote_if_changed"], cache=True)
def emit_quote_if_changed(I, LV, MO):
    bb = I[BB]
    ba = I[BA]
    bs = LV[2, 0, bb] if bb >= 0 else 0
    as_ = LV[2, 1, ba] if ba < NL else 0
    if bb == I[QBB] and bs == I[QBS] and ba == I[QBA] and as_ == I[QBAS]:
        return
    I[QBB] = bb
    I[QBS] = bs
    I[QBA] = ba
    I[QBAS] = as_
    n = I[NM]
    I[NM] = n + 1
    MO[n, M_TS] = I[NOW]
    MO[n, M_KIND] = 0
    MO[n, M_BL] = bb
    MO[n, M_BS] = bs
    MO[n, M_AL] = ba if ba < NL else -1
    MO[n, M_AS] = as_
    MO[n, M_LL] = -1
    MO[n, M_LS] = 0
    MO[n, M_INST] = I[INST]


@njit(SIG["new_episode"], cache=True)
def new_episode(I, AI, EPT, ag, pat, label):
    e = I[NEP]
    if e >= EPT.shape[0]:
        return -1
    I[NEP] = e + 1
    EPT[e, EP_PAT] = pat
    EPT[e, EP_LABEL] = label
    EPT[e, EP_AG] = ag
    EPT[e, EP_START] = -1
    EPT[e, EP_END] = -1
    EPT[e, EP_TRD] = AI[ag, A_TRD]
    return e


@njit(SIG["link"], cache=True)
def link(I, TL, ep, oid, role, acc):
    if ep < 0:
        return
    n = I[NTL]
    if n >= TL.shape[0]:
        raise RuntimeError("sim: truth-link buffer overflow")
    I[NTL] = n + 1
    TL[n, TL_EP] = ep
    TL[n, TL_OID] = oid
    TL[n, TL_ROLE] = role
    TL[n, TL_ACC] = acc
    TL[n, TL_INST] = I[INST]


# ---------------------------------------------------------------------------------------------
# book primitives


@njit(SIG["lvl_append"], cache=True)
def lvl_append(I, OP, LV, h):
    s = OP[h, O_SIDE]
    lv = OP[h, O_LVL]
    t = LV[1, s, lv]
    OP[h, O_PRV] = t
    OP[h, O_NXT] = -1
    if t >= 0:
        OP[t, O_NXT] = h
    else:
        LV[0, s, lv] = h
    LV[1, s, lv] = h
    LV[2, s, lv] += OP[h, O_QTY]
    if s == 0:
        if lv > I[BB]:
            I[BB] = lv
    elif lv < I[BA]:
        I[BA] = lv


@njit(SIG["lvl_unlink"], cache=True)
def lvl_unlink(I, OP, LV, h):
    s = OP[h, O_SIDE]
    lv = OP[h, O_LVL]
    p = OP[h, O_PRV]
    n = OP[h, O_NXT]
    if p >= 0:
        OP[p, O_NXT] = n
    else:
        LV[0, s, lv] = n
    if n >= 0:
        OP[n, O_PRV] = p
    else:
        LV[1, s, lv] = p
    LV[2, s, lv] -= OP[h, O_QTY]
    if LV[0, s, lv] < 0:
        if s == 0 and lv == I[BB]:
            x = lv - 1
            while x >= 0 and LV[0, 0, x] < 0:
                x -= 1
            I[BB] = x
        elif s == 1 and lv == I[BA]:
            x = lv + 1
            while x < NL and LV[0, 1, x] < 0:
                x += 1
            I[BA] = x


@njit(SIG["order_gone"], cache=True)
def order_gone(I, OP, BG, FREE, AI, h):
    ag = OP[h, O_AG]
    if ag < 0:
        i = OP[h, O_BGI]
        last = I[NBG] - 1
        hl = BG[last]
        BG[i] = hl
        OP[hl, O_BGI] = i
        I[NBG] = last
    else:
        sl = OP[h, O_SLOT]
        if sl >= 0 and AI[ag, A_H + sl] == h:
            AI[ag, A_H + sl] = -1
    OP[h, O_QTY] = -1
    FREE[I[NFREE]] = h
    I[NFREE] += 1


@njit(SIG["mid2"], cache=True)
def mid2(I, F):
    """Twice the mid in levels (falls back on the last known mid)."""
    bb = I[BB]
    ba = I[BA]
    if bb >= 0 and ba < NL:
        return bb + ba
    return np.int64(2.0 * F[LASTMID])


@njit(SIG["imbalance"], cache=True)
def imbalance(I, LV, K):
    bb = I[BB]
    ba = I[BA]
    b = 0.0
    a = 0.0
    for k in range(K):
        w = 1.0 / (1.0 + k)
        if bb - k >= 0:
            b += w * LV[2, 0, bb - k]
        if ba + k < NL:
            a += w * LV[2, 1, ba + k]
    if a + b <= 0.0:
        return 0.0
    return (b - a) / (b + a)


@njit(SIG["check_stops"], cache=True)
def check_stops(I, R, H, ST, lvl):
    n = I[NST]
    i = 0
    while i < n:
        fire = (ST[i, 1] == 0 and lvl >= ST[i, 0]) or (ST[i, 1] == 1 and lvl <= ST[i, 0])
        if fire:
            t = I[NOW] + np.int64(runi(R, 0, 1e5, 2e6))
            hpush(I, H, t, -1, ACT_STOPFIRE, ST[i, 2] * 2 + ST[i, 1])
            n -= 1
            ST[i, 0] = ST[n, 0]
            ST[i, 1] = ST[n, 1]
            ST[i, 2] = ST[n, 2]
        else:
            i += 1
    I[NST] = n


@njit(SIG["cancel_order"], cache=True)
def cancel_order(I, OP, LV, BG, FREE, AI, OO, EPT, h):
    if h < 0 or OP[h, O_QTY] <= 0:
        return
    lvl_unlink(I, OP, LV, h)
    if OP[h, O_AG] >= 0:
        emit_order(I, OP, AI, OO, EPT, h, EV_CANCEL, 0, -1)
        I[CANCELLED] += 1
    order_gone(I, OP, BG, FREE, AI, h)


@njit(SIG["self_match"], cache=True)
def self_match(I, OP, AI, EPT, TL, h, r):
    """Two firm orders traded with each other; an independent algo crossing a same-owner desk
    is a labelled hard negative for wash trading."""
    a1 = OP[h, O_AG]
    a2 = OP[r, O_AG]
    if a1 == a2:
        return
    if AI[a1, A_KIND] == K_WASHNEG and AI[a1, A_OWNER] == AI[a2, A_OWNER]:
        e = new_episode(I, AI, EPT, a1, P_WASH, 1)
        if e < 0:
            return
        EPT[e, EP_START] = OP[h, O_T]
        EPT[e, EP_END] = I[NOW]
        link(I, TL, e, OP[h, O_OID], R_LEG, OP[h, O_ACC])
        link(I, TL, e, OP[r, O_OID], R_LEG, OP[r, O_ACC])


# ---------------------------------------------------------------------------------------------
# agent helpers


@njit(SIG["queue_ahead"], cache=True)
def queue_ahead(OP, LV, h):
    """Quantity queued ahead of order ``h`` at its level (bounded walk)."""
    x = LV[0, OP[h, O_SIDE], OP[h, O_LVL]]
    tot = 0
    n = 0
    while x >= 0 and x != h and n < 64:
        tot += OP[x, O_QTY]
        x = OP[x, O_NXT]
        n += 1
    return tot


@njit(SIG["free_slot"], cache=True)
def free_slot(AI, ag):
    for s in range(NSLOT):
        if AI[ag, A_H + s] < 0:
            return s
    return -1


@njit(SIG["cancel_slot"], cache=True)
def cancel_slot(I, OP, LV, BG, FREE, AI, OO, EPT, ag, s):
    h = AI[ag, A_H + s]
    if h >= 0:
        cancel_order(I, OP, LV, BG, FREE, AI, OO, EPT, h)
    AI[ag, A_H + s] = -1


@njit(SIG["cancel_all"], cache=True)
def cancel_all(I, OP, LV, BG, FREE, AI, OO, EPT, ag):
    for s in range(NSLOT):
        cancel_slot(I, OP, LV, BG, FREE, AI, OO, EPT, ag, s)


@njit(SIG["live_qty"], cache=True)
def live_qty(OP, AI, ag, s):
    h = AI[ag, A_H + s]
    if h < 0:
        return 0
    return OP[h, O_QTY]


@njit(SIG["touch"], cache=True)
def touch(I, F, side):
    """Best price on ``side`` (0 bid, 1 ask), inferred from the mid when that side is empty."""
    if side == 0:
        if I[BB] >= 0:
            return I[BB]
        return np.int64(F[LASTMID]) - 1
    if I[BA] < NL:
        return I[BA]
    return np.int64(F[LASTMID]) + 1


@njit(SIG["sgn"], cache=True)
def sgn(side):
    return 1 if side == 0 else -1


@njit(SIG["after"], cache=True)
def after(I, R, sec):
    return I[NOW] + np.int64(sec * NS)


@njit(SIG["on_fill"], cache=True)
def on_fill(I, F, R, H, AI, AF, ag, slot, role, side, q, leaves, lvl, oid):
    """Agent callback on a fill. Never acts directly: it only schedules events."""
    k = AI[ag, A_KIND]
    AI[ag, A_POS] += q if side == 0 else -q
    if k == K_MM:
        if AI[ag, A_PEND] == 0:
            AI[ag, A_PEND] = 1
            hpush(I, H, after(I, R, rexp(R, 1, AF[ag, 1])), ag, ACT_REQUOTE, 0)
    elif k == K_SPOOF:
        if slot == 0 and leaves == 0 and AI[ag, A_STATE] == 1:
            if rnd(R, 1) < AF[ag, 3]:
                lat = rexp(R, 1, AF[ag, 5]) + 0.0005
                hpush(I, H, after(I, R, lat), ag, ACT_CANCELBAIT, AI[ag, A_CNT])
    elif k == K_REEVAL:
        if slot == 1 and AI[ag, A_STATE] == 1:
            AI[ag, A_STATE] = 2
            hpush(I, H, after(I, R, runi(R, 1, 0.1, 1.0)), ag, ACT_CANCELBAIT, AI[ag, A_CNT])
    elif k == K_LAYER:
        if slot == 0 and leaves == 0 and AI[ag, A_STATE] == 1:
            hpush(I, H, after(I, R, runi(R, 1, 0.3, 2.0)), ag, ACT_SMALL, AI[ag, A_CNT])
    elif k == K_EXEC:
        AI[ag, A_DONE] += q


# ---------------------------------------------------------------------------------------------
# background market


@njit(SIG["match_rest"], cache=True)
def match_rest(I, F, R, OP, LV, BG, FREE, H, AI, AF, OO, MO, TL, EPT, ST, h, ioc):
    side = OP[h, O_SIDE]
    lvl = OP[h, O_LVL]
    os = 1 - side
    ag = OP[h, O_AG]
    nmatch = 0
    traded = False
    lastl = -1
    while OP[h, O_QTY] > 0 and nmatch < 2000:
        if side == 0:
            best = I[BA]
            if best >= NL or best > lvl:
                break
        else:
            best = I[BB]
            if best < 0 or best < lvl:
                break
        r = LV[0, os, best]
        rq = OP[r, O_QTY]
        q = min(OP[h, O_QTY], rq)
        OP[r, O_QTY] = rq - q
        LV[2, os, best] -= q
        OP[h, O_QTY] -= q
        nmatch += 1
        traded = True
        lastl = best
        emit_trade(I, MO, best, q)
        F[DAYV] += q
        if I[NOW] >= I[TCLOSE]:
            F[CPV] += q * best
            F[CV] += q
        rag = OP[r, O_AG]
        if rag >= 0:
            emit_order(I, OP, AI, OO, EPT, r, EV_FILL, q, best)
        if ag >= 0:
            emit_order(I, OP, AI, OO, EPT, h, EV_FILL, q, best)
        if rag >= 0 and ag >= 0:
            self_match(I, OP, AI, EPT, TL, h, r)
        rslot = OP[r, O_SLOT]
        rrole = OP[r, O_ROLE]
        rleft = OP[r, O_QTY]
        roid = OP[r, O_OID]
        if rleft == 0:
            lvl_unlink(I, OP, LV, r)
            order_gone(I, OP, BG, FREE, AI, r)
        if rag >= 0:
            on_fill(I, F, R, H, AI, AF, rag, rslot, rrole, os, q, rleft, best, roid)
        if ag >= 0:
            on_fill(I, F, R, H, AI, AF, ag, OP[h, O_SLOT], OP[h, O_ROLE], side, q,
                    OP[h, O_QTY], best, OP[h, O_OID])
    if traded:
        I[LASTL] = lastl
        I[LASTFILLT] = I[NOW]
        check_stops(I, R, H, ST, lastl)
    if OP[h, O_QTY] > 0:
        if ioc:
            if ag >= 0:
                emit_order(I, OP, AI, OO, EPT, h, EV_CANCEL, 0, -1)
            order_gone(I, OP, BG, FREE, AI, h)
            return -1
        lvl_append(I, OP, LV, h)
        return h
    order_gone(I, OP, BG, FREE, AI, h)
    return -1


@njit(SIG["add_order"], cache=True)
def add_order(I, F, R, OP, LV, BG, FREE, H, AI, AF, OO, MO, TL, EPT, ST,
              ag, slot, side, lvl, qty, role, ep, acc, ioc):
    """Enter an order; match it; rest the remainder unless IOC. Returns the handle or -1."""
    if qty <= 0:
        return -1
    if lvl < 1:
        lvl = 1
    if lvl > NL - 2:
        lvl = NL - 2
    if I[NFREE] == 0:
        raise RuntimeError("sim: order pool exhausted")
    I[NFREE] -= 1
    h = FREE[I[NFREE]]
    OP[h, O_SIDE] = side
    OP[h, O_LVL] = lvl
    OP[h, O_QTY] = qty
    OP[h, O_ORIG] = qty
    OP[h, O_AG] = ag
    OP[h, O_ROLE] = role
    OP[h, O_EP] = ep
    OP[h, O_T] = I[NOW]
    OP[h, O_ACC] = acc
    OP[h, O_SLOT] = slot
    OP[h, O_NXT] = -1
    OP[h, O_PRV] = -1
    if ag >= 0:
        OP[h, O_OID] = I[OIDBASE] + I[OIDC]
        I[OIDC] += 1
        if slot >= 0:
            AI[ag, A_H + slot] = h
        emit_order(I, OP, AI, OO, EPT, h, EV_NEW, 0, -1)
        link(I, TL, ep, OP[h, O_OID], role, acc)
    else:
        OP[h, O_OID] = -1
        i = I[NBG]
        BG[i] = h
        OP[h, O_BGI] = i
        I[NBG] = i + 1
    return match_rest(I, F, R, OP, LV, BG, FREE, H, AI, AF, OO, MO, TL, EPT, ST, h, ioc)


@njit(SIG["modify_order"], cache=True)
def modify_order(I, F, R, OP, LV, BG, FREE, H, AI, AF, OO, MO, TL, EPT, ST, h, lvl, qty):
    """Cancel/replace keeping the order id (loses time priority). Returns the handle or -1."""
    if h < 0 or OP[h, O_QTY] <= 0:
        return -1
    lvl_unlink(I, OP, LV, h)
    if lvl < 1:
        lvl = 1
    if lvl > NL - 2:
        lvl = NL - 2
    OP[h, O_LVL] = lvl
    filled = OP[h, O_ORIG] - OP[h, O_QTY]
    OP[h, O_ORIG] = qty + filled
    OP[h, O_QTY] = qty
    emit_order(I, OP, AI, OO, EPT, h, EV_MODIFY, 0, -1)
    return match_rest(I, F, R, OP, LV, BG, FREE, H, AI, AF, OO, MO, TL, EPT, ST, h, False)


@njit(SIG["bg_limit"], cache=True)
def bg_limit(I, F, R, OP, LV, BG, FREE, H, AI, AF, OO, MO, TL, EPT, ST, side, q):
    off = rgeom(R, 0, F[GEOM])
    if side == 0:
        lv = touch(I, F, 1) - 1 - off
    else:
        lv = touch(I, F, 0) + 1 + off
    add_order(I, F, R, OP, LV, BG, FREE, H, AI, AF, OO, MO, TL, EPT, ST,
              -1, -1, side, lv, q, 0, -1, -1, False)


@njit(SIG["bg_take"], cache=True)
def bg_take(I, F, R, OP, LV, BG, FREE, H, AI, AF, OO, MO, TL, EPT, ST, side, q):
    if side == 0:
        lv = touch(I, F, 1) + 2
    else:
        lv = touch(I, F, 0) - 2
    add_order(I, F, R, OP, LV, BG, FREE, H, AI, AF, OO, MO, TL, EPT, ST,
              -1, -1, side, lv, q, 0, -1, -1, True)


@njit(SIG["bg_join"], cache=True)
def bg_join(I, F, R, OP, LV, BG, FREE, H, AI, AF, OO, MO, TL, EPT, ST, side, q):
    """Join (or improve by one tick when the spread allows) the touch on ``side``."""
    bb = touch(I, F, 0)
    ba = touch(I, F, 1)
    if side == 0:
        lv = bb + 1 if ba - bb > 1 else bb
    else:
        lv = ba - 1 if ba - bb > 1 else ba
    add_order(I, F, R, OP, LV, BG, FREE, H, AI, AF, OO, MO, TL, EPT, ST,
              -1, -1, side, lv, q, 0, -1, -1, False)


@njit(SIG["imb_react"], cache=True)
def imb_react(I, F, R, OP, LV, BG, FREE, H, AI, AF, OO, MO, TL, EPT, ST):
    """Book-imbalance reader: take or join on the heavy side's direction."""
    imb = imbalance(I, LV, 5)
    th = F[THETA]
    if abs(imb) < th:
        return False
    side = 0 if imb > 0 else 1
    q = max(1, rsize(F, R, 0) // 2)
    ptake = min(0.9, 0.15 + F[IMBTAKE] * (abs(imb) - th) / (1.0 - th))
    if rnd(R, 0) < ptake:
        bg_take(I, F, R, OP, LV, BG, FREE, H, AI, AF, OO, MO, TL, EPT, ST, side, q)
    else:
        bg_join(I, F, R, OP, LV, BG, FREE, H, AI, AF, OO, MO, TL, EPT, ST, side, q)
    return True


@njit(SIG["update_signals"], cache=True)
def update_signals(I, F, R):
    t = I[NOW] / NS
    dt = t - F[TLAST]
    if dt <= 0.0:
        return
    F[TLAST] = t
    k = F[KAPPA]
    e = np.exp(-k * dt)
    F[FUND] = F[MU0] + (F[FUND] - F[MU0]) * e + F[FSIG] * np.sqrt(
        (1.0 - e * e) / (2.0 * k)) * rnorm(R, 0)
    m = mid2(I, F) * 0.5
    F[LASTMID] = m
    F[EMAF] += (1.0 - np.exp(-dt / F[MOMTF])) * (m - F[EMAF])
    F[EMAS] += (1.0 - np.exp(-dt / F[MOMTS])) * (m - F[EMAS])


@njit(SIG["bg_event"], cache=True)
def bg_event(I, F, R, OP, LV, BG, FREE, H, AI, AF, OO, MO, TL, EPT, ST):
    update_signals(I, F, R)
    nbg = I[NBG]
    pc = min(0.8, F[PCANC] * nbg / F[NTARGET])
    if nbg > 0 and rnd(R, 0) < pc:
        h = BG[np.int64(rnd(R, 0) * nbg)]
        cancel_order(I, OP, LV, BG, FREE, AI, OO, EPT, h)
        return
    u = rnd(R, 0) * (F[PLIM] + F[PMKT] + F[PVAL] + F[PMOM] + F[PIMB])
    side = 0 if rnd(R, 0) < 0.5 else 1
    q = rsize(F, R, 0)
    if u < F[PLIM]:
        bg_limit(I, F, R, OP, LV, BG, FREE, H, AI, AF, OO, MO, TL, EPT, ST, side, q)
        return
    u -= F[PLIM]
    if u < F[PMKT]:
        bg_take(I, F, R, OP, LV, BG, FREE, H, AI, AF, OO, MO, TL, EPT, ST, side, max(1, q // 2))
        return
    u -= F[PMKT]
    if u < F[PVAL]:
        d = F[FUND] - F[LASTMID]
        if abs(d) > F[VALTHR]:
            side = 0 if d > 0 else 1
            if rnd(R, 0) < 0.4:
                bg_take(I, F, R, OP, LV, BG, FREE, H, AI, AF, OO, MO, TL, EPT, ST, side, q)
            else:
                bg_join(I, F, R, OP, LV, BG, FREE, H, AI, AF, OO, MO, TL, EPT, ST, side, q)
        else:
            bg_limit(I, F, R, OP, LV, BG, FREE, H, AI, AF, OO, MO, TL, EPT, ST, side, q)
        return
    u -= F[PVAL]
    if u < F[PMOM]:
        d = F[EMAF] - F[EMAS]
        if abs(d) > F[MOMTHR]:
            side = 0 if d > 0 else 1
            bg_take(I, F, R, OP, LV, BG, FREE, H, AI, AF, OO, MO, TL, EPT, ST, side, q)
            # protective stop at a round level behind the entry
            if I[NST] < ST.shape[0] and rnd(R, 0) < F[PSTOP]:
                ref = np.int64(F[LASTMID])
                dist = 3 + rgeom(R, 0, 0.3)
                if side == 0:
                    sl = ((ref - dist) // 10) * 10
                    sside = 1
                else:
                    sl = ((ref + dist) // 10 + 1) * 10
                    sside = 0
                n = I[NST]
                ST[n, 0] = sl
                ST[n, 1] = sside
                ST[n, 2] = q
                I[NST] = n + 1
        else:
            bg_limit(I, F, R, OP, LV, BG, FREE, H, AI, AF, OO, MO, TL, EPT, ST, side, q)
        return
    if not imb_react(I, F, R, OP, LV, BG, FREE, H, AI, AF, OO, MO, TL, EPT, ST):
        bg_limit(I, F, R, OP, LV, BG, FREE, H, AI, AF, OO, MO, TL, EPT, ST, side, q)


# ---------------------------------------------------------------------------------------------
# firm agents


@njit(SIG["place"], cache=True)
def place(I, F, R, OP, LV, BG, FREE, H, AI, AF, OO, MO, TL, EPT, ST, ag, slot, side, lvl, qty,
          role, acc, ioc):
    if slot < 0:
        slot = free_slot(AI, ag)
        if slot < 0:
            return -1
    return add_order(I, F, R, OP, LV, BG, FREE, H, AI, AF, OO, MO, TL, EPT, ST,
                     ag, slot, side, lvl, qty, role, AI[ag, A_EP], acc, ioc)


@njit(SIG["mm_requote"], cache=True)
def mm_requote(I, F, R, OP, LV, BG, FREE, H, AI, AF, OO, MO, TL, EPT, ST, ag):
    AI[ag, A_PEND] = 0
    if I[NOW] >= I[TSESS]:
        cancel_all(I, OP, LV, BG, FREE, AI, OO, EPT, ag)
        return
    if I[NOW] >= AI[ag, A_TEND]:
        AI[ag, A_EP] = new_episode(I, AI, EPT, ag, AI[ag, A_PAT], 1)
        AI[ag, A_TEND] = I[NOW] + np.int64(60 * NS)
    c2 = mid2(I, F)
    AI[ag, A_CENTER2] = c2
    L = AI[ag, A_I0]
    half = AI[ag, A_I1]
    maxinv = AI[ag, A_I2]
    pos = AI[ag, A_POS]
    shift = -np.int64(pos * AF[ag, 2])
    if shift > 3:
        shift = 3
    if shift < -3:
        shift = -3
    btop = (c2 - 2 * half) // 2 + shift
    atop = (c2 + 2 * half + 1) // 2 + shift
    if I[BA] < NL and btop >= I[BA]:
        btop = I[BA] - 1
    if I[BB] >= 0 and atop <= I[BB]:
        atop = I[BB] + 1
    quote_b = pos < maxinv
    quote_a = pos > -maxinv
    # keep quotes already on a target level, cancel the rest
    have = np.zeros(2 * L, np.bool_)
    for s in range(NSLOT):
        h = AI[ag, A_H + s]
        if h < 0:
            continue
        sd = OP[h, O_SIDE]
        lv = OP[h, O_LVL]
        k = (btop - lv) if sd == 0 else (lv - atop)
        ok = (quote_b if sd == 0 else quote_a) and 0 <= k < L
        if ok and not have[sd * L + k]:
            have[sd * L + k] = True
        else:
            cancel_slot(I, OP, LV, BG, FREE, AI, OO, EPT, ag, s)
    for sd in range(2):
        if (sd == 0 and not quote_b) or (sd == 1 and not quote_a):
            continue
        for k in range(L):
            if have[sd * L + k]:
                continue
            lv = btop - k if sd == 0 else atop + k
            q = max(1, np.int64(AF[ag, 0] * runi(R, 1, 0.5, 1.5) * (1.0 + 0.5 * k)))
            place(I, F, R, OP, LV, BG, FREE, H, AI, AF, OO, MO, TL, EPT, ST, ag, -1, sd, lv, q,
                  R_QUOTE, AI[ag, A_ACC], False)


@njit(SIG["sched_next_burst"], cache=True)
def sched_next_burst(I, R, H, AI, AF, ag, gap_mean, gap_min):
    t = after(I, R, gap_min + rexp(R, 1, gap_mean))
    if t < I[TSESS]:
        hpush(I, H, t, ag, ACT_START, 0)


@njit(SIG["notify_parent"], cache=True)
def notify_parent(I, R, H, AI, ag, side, q, tend):
    """A client parent order arrived at the firm: tell the agents that watch client flow."""
    arg = side | (q << 1) | ((tend // 1_000_000) << 22)
    for a in range(I[NAG]):
        k = AI[a, A_KIND]
        if (k == K_FRONT or k == K_FRNEG) and AI[a, A_STATE] == 0:
            hpush(I, H, after(I, R, 0.001), a, ACT_PARENT, arg)


@njit(SIG["agent_act2"], cache=True)
def agent_act2(I, F, R, OP, LV, BG, FREE, H, AI, AF, OO, MO, TL, EPT, ST, ag, act, arg):
    """Second-tier agents (layering, wash, stuffing, front running, close, ignition)."""
    k = AI[ag, A_KIND]
    now = I[NOW]
    late = now >= I[TSESS] - np.int64(15 * NS)
    acc = AI[ag, A_ACC]
    if k == K_LAYER:
        # I0 levels, I1 distance; AF0 size mult, AF1 duration s, AF2 re-peg period s,
        # AF3 p re-peg by cancel + new (else MODIFY), AF4 gap
        L = AI[ag, A_I0]
        d = AI[ag, A_I1]
        if act == ACT_START:
            if late:
                return
            AI[ag, A_CNT] += 1
            AI[ag, A_EP] = new_episode(I, AI, EPT, ag, P_LAYER, 0)
            b = 0 if rnd(R, 1) < 0.5 else 1
            AI[ag, A_SIDE] = b
            AI[ag, A_STATE] = 1
            AI[ag, A_TEND] = after(I, R, AF[ag, 1] * runi(R, 1, 0.7, 1.3))
            t0 = touch(I, F, b)
            for j in range(L):
                q = max(1, np.int64(F[MEDSZ] * AF[ag, 0] * 4.0 * runi(R, 1, 0.9, 1.1)))
                place(I, F, R, OP, LV, BG, FREE, H, AI, AF, OO, MO, TL, EPT, ST, ag, 1 + j, b,
                      t0 - sgn(b) * (d + j), q, R_BAIT, acc, False)
            g = 1 - b
            place(I, F, R, OP, LV, BG, FREE, H, AI, AF, OO, MO, TL, EPT, ST, ag, 0, g,
                  touch(I, F, g), max(1, np.int64(F[MEDSZ] * runi(R, 1, 1.0, 2.0))),
                  R_GENUINE, acc, False)
            hpush(I, H, after(I, R, AF[ag, 2] * runi(R, 1, 0.5, 1.5)), ag, ACT_STEP,
                  AI[ag, A_CNT])
            return
        if arg != AI[ag, A_CNT] or AI[ag, A_STATE] != 1:
            return
        b = AI[ag, A_SIDE]
        if act == ACT_STEP:
            if now >= AI[ag, A_TEND] or late:
                cancel_all(I, OP, LV, BG, FREE, AI, OO, EPT, ag)
                AI[ag, A_STATE] = 0
                sched_next_burst(I, R, H, AI, AF, ag, AF[ag, 4], 10.0)
                return
            t0 = touch(I, F, b)
            for j in range(L):
                h = AI[ag, A_H + 1 + j]
                tgt = t0 - sgn(b) * (d + j)
                if h >= 0 and OP[h, O_LVL] != tgt:
                    if rnd(R, 1) < AF[ag, 3]:
                        # re-peg by cancel + new order (a new order id) instead of MODIFY
                        q = OP[h, O_QTY]
                        cancel_slot(I, OP, LV, BG, FREE, AI, OO, EPT, ag, 1 + j)
                        place(I, F, R, OP, LV, BG, FREE, H, AI, AF, OO, MO, TL, EPT, ST, ag,
                              1 + j, b, tgt, q, R_BAIT, acc, False)
                    else:
                        modify_order(I, F, R, OP, LV, BG, FREE, H, AI, AF, OO, MO, TL, EPT, ST,
                                     h, tgt, OP[h, O_QTY])
            hpush(I, H, after(I, R, AF[ag, 2] * runi(R, 1, 0.5, 1.5)), ag, ACT_STEP,
                  AI[ag, A_CNT])
        elif act == ACT_SMALL:
            g = 1 - b
            if AI[ag, A_H] < 0:
                place(I, F, R, OP, LV, BG, FREE, H, AI, AF, OO, MO, TL, EPT, ST, ag, 0, g,
                      touch(I, F, g), max(1, np.int64(F[MEDSZ] * runi(R, 1, 1.0, 2.0))),
                      R_GENUINE, acc, False)
        return
    if k == K_WASH:
        # AF0 size mult, AF1 max leg gap s, AF4 gap; I0 pairs per episode
        if act == ACT_START:
            if late:
                return
            AI[ag, A_EP] = new_episode(I, AI, EPT, ag, P_WASH, 0)
            AI[ag, A_NCYC] = rint(R, 1, 2, max(2, AI[ag, A_I0]))
            act = ACT_CYCLE
        if act == ACT_CYCLE:
            bb = touch(I, F, 0)
            ba = touch(I, F, 1)
            if ba - bb <= 1 and AI[ag, A_X1] < 40:
                # No room inside the spread: the legs must meet each other, not the book, so
                # wait for the spread to open (after 40 tries the attempt goes ahead and fails).
                AI[ag, A_X1] += 1
                hpush(I, H, after(I, R, runi(R, 1, 0.02, 0.15)), ag, ACT_CYCLE, 0)
                return
            AI[ag, A_X1] = 0
            AI[ag, A_CNT] += 1
            s = 0 if rnd(R, 1) < 0.5 else 1
            AI[ag, A_SIDE] = s
            lv = (bb + 1 if s == 0 else ba - 1) if ba - bb > 1 else touch(I, F, 1 - s)
            q = max(1, np.int64(F[MEDSZ] * AF[ag, 0] * runi(R, 1, 0.7, 1.3)))
            AI[ag, A_QTY] = q
            AI[ag, A_X0] = lv
            place(I, F, R, OP, LV, BG, FREE, H, AI, AF, OO, MO, TL, EPT, ST, ag, 0, s, lv, q,
                  R_LEG, acc, False)
            hpush(I, H, after(I, R, runi(R, 1, 0.0, AF[ag, 1])), ag, ACT_STEP, AI[ag, A_CNT])
            return
        if arg != AI[ag, A_CNT]:
            return
        if act == ACT_STEP:
            s = 1 - AI[ag, A_SIDE]
            q = max(1, np.int64(AI[ag, A_QTY] * runi(R, 1, 0.95, 1.05) + 0.5))
            lv = AI[ag, A_X0] - sgn(s) * (1 if rnd(R, 1) < 0.2 else 0)
            lv = AI[ag, A_X0] if rnd(R, 1) < 0.8 else lv
            place(I, F, R, OP, LV, BG, FREE, H, AI, AF, OO, MO, TL, EPT, ST, ag, 1, s, lv, q,
                  R_LEG, AI[ag, A_ACC2], True)
            hpush(I, H, after(I, R, runi(R, 1, 0.3, 1.0)), ag, ACT_END, AI[ag, A_CNT])
        elif act == ACT_END:
            cancel_all(I, OP, LV, BG, FREE, AI, OO, EPT, ag)
            AI[ag, A_NCYC] -= 1
            if AI[ag, A_NCYC] > 0 and not late:
                hpush(I, H, after(I, R, runi(R, 1, 0.2, 2.5)), ag, ACT_CYCLE, 0)
            else:
                sched_next_burst(I, R, H, AI, AF, ag, AF[ag, 4], 10.0)
        return
    if k == K_WASHNEG:
        if late:
            return
        s = 0 if rnd(R, 1) < 0.5 else 1
        q = max(1, np.int64(F[MEDSZ] * runi(R, 1, 0.5, 2.0)))
        place(I, F, R, OP, LV, BG, FREE, H, AI, AF, OO, MO, TL, EPT, ST, ag, -1, s,
              touch(I, F, 1 - s), q, R_AGGR, acc, True)
        hpush(I, H, after(I, R, rexp(R, 1, AF[ag, 0])), ag, ACT_STEP, 0)
        return
    if k == K_QSTUFF or k == K_QSNEG:
        # AF0 message rate /s, AF1 burst duration s, AF4 gap; I0 max ticks off the touch
        if act == ACT_START and k == K_QSTUFF:
            if late:
                return
            AI[ag, A_CNT] += 1
            AI[ag, A_EP] = new_episode(I, AI, EPT, ag, P_QSTUFF, 0)
            AI[ag, A_STATE] = 1
            AI[ag, A_TEND] = after(I, R, AF[ag, 1] * runi(R, 1, 0.5, 1.5))
            act = ACT_STEP
            arg = AI[ag, A_CNT]
        elif act == ACT_NEWSREACT and k == K_QSNEG:
            if late or AI[ag, A_STATE] == 1:
                return
            AI[ag, A_CNT] += 1
            AI[ag, A_EP] = new_episode(I, AI, EPT, ag, P_QSTUFF, 1)
            AI[ag, A_STATE] = 1
            AI[ag, A_TEND] = after(I, R, AF[ag, 1] * runi(R, 1, 0.5, 1.5))
            act = ACT_STEP
            arg = AI[ag, A_CNT]
        if act != ACT_STEP or arg != AI[ag, A_CNT] or AI[ag, A_STATE] != 1:
            return
        if now >= AI[ag, A_TEND]:
            cancel_all(I, OP, LV, BG, FREE, AI, OO, EPT, ag)
            AI[ag, A_STATE] = 0
            if k == K_QSTUFF:
                sched_next_burst(I, R, H, AI, AF, ag, AF[ag, 4], 10.0)
            return
        s = free_slot(AI, ag)
        if s >= 0 and (rnd(R, 1) < 0.55 or AI[ag, A_H + (s + 1) % NSLOT] < 0):
            sd = 0 if rnd(R, 1) < 0.5 else 1
            if k == K_QSTUFF:
                lv = touch(I, F, sd) - sgn(sd) * rint(R, 1, 1, AI[ag, A_I0])
                q = 1
            else:
                lv = touch(I, F, sd) - sgn(sd) * rint(R, 1, 0, 2)
                q = rint(R, 1, 1, 5)
            place(I, F, R, OP, LV, BG, FREE, H, AI, AF, OO, MO, TL, EPT, ST, ag, s, sd, lv, q,
                  R_QUOTE, acc, False)
        else:
            j0 = rint(R, 1, 0, NSLOT - 1)
            for j in range(NSLOT):
                sl = (j0 + j) % NSLOT
                if AI[ag, A_H + sl] >= 0:
                    cancel_slot(I, OP, LV, BG, FREE, AI, OO, EPT, ag, sl)
                    break
        hpush(I, H, now + 1 + np.int64(rexp(R, 1, 1.0 / AF[ag, 0]) * NS), ag, ACT_STEP, arg)
        return
    if k == K_EXEC:
        # AF0 parent duration s, AF2 slice interval s, AF4 gap between parents; I0 ladder mode
        if act == ACT_START:
            cancel_all(I, OP, LV, BG, FREE, AI, OO, EPT, ag)
            if now > I[TSESS] - np.int64(AF[ag, 0] * 0.5 * NS):
                return
            AI[ag, A_CNT] += 1
            s = 0 if rnd(R, 1) < 0.5 else 1
            q = np.int64(F[MEDSZ] * runi(R, 1, 40.0, 150.0))
            AI[ag, A_SIDE] = s
            AI[ag, A_QTY] = q
            AI[ag, A_DONE] = 0
            AI[ag, A_T0] = now
            AI[ag, A_TEND] = min(after(I, R, AF[ag, 0] * runi(R, 1, 0.7, 1.3)), I[TSESS])
            AI[ag, A_X0] = AI[ag, A_ACC] if rnd(R, 1) < 0.5 else AI[ag, A_ACC2]
            AI[ag, A_STATE] = 1
            AI[ag, A_EP] = new_episode(I, AI, EPT, ag, P_LAYER, 1) if AI[ag, A_I0] == 1 else -1
            notify_parent(I, R, H, AI, ag, s, q, AI[ag, A_TEND])
            act = ACT_STEP
            arg = AI[ag, A_CNT]
        if act != ACT_STEP or arg != AI[ag, A_CNT] or AI[ag, A_STATE] != 1:
            return
        cancel_all(I, OP, LV, BG, FREE, AI, OO, EPT, ag)
        s = AI[ag, A_SIDE]
        rem = AI[ag, A_QTY] - AI[ag, A_DONE]
        if now >= AI[ag, A_TEND] or rem <= 0:
            AI[ag, A_STATE] = 0
            sched_next_burst(I, R, H, AI, AF, ag, AF[ag, 4], 10.0)
            return
        dur = AI[ag, A_TEND] - AI[ag, A_T0]
        sl = AF[ag, 2]
        child = max(1, np.int64(AI[ag, A_QTY] * sl * NS / dur * runi(R, 1, 0.7, 1.3)))
        child = min(child, rem)
        target = AI[ag, A_QTY] * (now - AI[ag, A_T0]) / dur
        cacc = AI[ag, A_X0]
        if AI[ag, A_DONE] + 2 * child < target:
            place(I, F, R, OP, LV, BG, FREE, H, AI, AF, OO, MO, TL, EPT, ST, ag, -1, s,
                  touch(I, F, 1 - s), child, R_CHILD, cacc, True)
        elif AI[ag, A_I0] == 1:
            for j in range(3):
                place(I, F, R, OP, LV, BG, FREE, H, AI, AF, OO, MO, TL, EPT, ST, ag, -1, s,
                      touch(I, F, s) - sgn(s) * j, max(1, child // 3), R_CHILD, cacc, False)
        else:
            place(I, F, R, OP, LV, BG, FREE, H, AI, AF, OO, MO, TL, EPT, ST, ag, -1, s,
                  touch(I, F, s), child, R_CHILD, cacc, False)
        hpush(I, H, after(I, R, sl * runi(R, 1, 0.7, 1.3)), ag, ACT_STEP, arg)
        return
    if k == K_FRONT or k == K_FRNEG:
        # AF0 size as a share of the client parent, AF1 lag s, AF2 unwind delay s
        if act == ACT_PARENT:
            if AI[ag, A_STATE] != 0 or late or rnd(R, 1) < 0.3:
                return
            AI[ag, A_CNT] += 1
            AI[ag, A_STATE] = 1
            AI[ag, A_EP] = new_episode(I, AI, EPT, ag, P_FRONT, 0 if k == K_FRONT else 1)
            AI[ag, A_SIDE] = arg & 1
            AI[ag, A_QTY] = max(1, np.int64(((arg >> 1) & ((1 << 21) - 1)) * AF[ag, 0]))
            AI[ag, A_TEND] = (arg >> 22) * 1_000_000
            AI[ag, A_NCYC] = rint(R, 1, 1, 4)
            AI[ag, A_POS] = 0
            hpush(I, H, after(I, R, AF[ag, 1] * runi(R, 1, 0.5, 1.5)), ag, ACT_STEP,
                  AI[ag, A_CNT])
            return
        if arg != AI[ag, A_CNT] or AI[ag, A_STATE] != 1:
            return
        if act == ACT_STEP:
            s = AI[ag, A_SIDE]
            q = max(1, AI[ag, A_QTY] // 4)
            place(I, F, R, OP, LV, BG, FREE, H, AI, AF, OO, MO, TL, EPT, ST, ag, -1, s,
                  touch(I, F, 1 - s) - sgn(1 - s), q, R_AGGR, acc, True)
            AI[ag, A_NCYC] -= 1
            if AI[ag, A_NCYC] > 0:
                hpush(I, H, after(I, R, runi(R, 1, 0.2, 3.0)), ag, ACT_STEP, arg)
            else:
                t = max(AI[ag, A_TEND], now) + np.int64(AF[ag, 2] * runi(R, 1, 0.3, 1.0) * NS)
                hpush(I, H, min(t, I[TSESS] - np.int64(2 * NS)), ag, ACT_UNWIND, arg)
        elif act == ACT_UNWIND:
            pos = AI[ag, A_POS]
            if pos != 0:
                s = 1 if pos > 0 else 0
                place(I, F, R, OP, LV, BG, FREE, H, AI, AF, OO, MO, TL, EPT, ST, ag, -1, s,
                      touch(I, F, 1 - s) - sgn(1 - s) * 2, abs(pos), R_EXIT, acc, True)
            AI[ag, A_STATE] = 0
        return
    if k == K_MARK or k == K_MARKNEG:
        # AF0 size mult, AF1 window s (before the close), AF2 number of window orders
        if act == ACT_START:
            AI[ag, A_CNT] += 1
            s = 0 if rnd(R, 1) < 0.5 else 1
            AI[ag, A_SIDE] = s
            AI[ag, A_EP] = new_episode(I, AI, EPT, ag, P_MARK, 0 if k == K_MARK else 1)
            if k == K_MARK:
                # build the exposure that benefits from the settlement price
                q = max(1, np.int64(F[MEDSZ] * 10 * AF[ag, 0]))
                place(I, F, R, OP, LV, BG, FREE, H, AI, AF, OO, MO, TL, EPT, ST, ag, -1, s,
                      touch(I, F, s), q, R_EXPO, acc, False)
            w = min(AF[ag, 1], (I[TSESS] - I[TCLOSE]) / NS)
            t = I[TSESS] - np.int64(w * NS)
            if t > now:
                hpush(I, H, t, ag, ACT_CLOSE, AI[ag, A_CNT])
            return
        if arg != AI[ag, A_CNT]:
            return
        if act == ACT_CLOSE:
            cancel_all(I, OP, LV, BG, FREE, AI, OO, EPT, ag)
            AI[ag, A_NCYC] = max(2, np.int64(AF[ag, 2]))
            AI[ag, A_STATE] = 2
            act = ACT_STEP
        if act == ACT_STEP and AI[ag, A_STATE] == 2:
            s = AI[ag, A_SIDE]
            w = min(AF[ag, 1], (I[TSESS] - I[TCLOSE]) / NS)
            if k == K_MARK:
                dep = LV[2, 1 - s, touch(I, F, 1 - s)]
                # AF3: target share of the window's volume
                vrate = F[DAYV] / max(1.0, now / NS)
                q = max(1, np.int64(max(dep * AF[ag, 0], AF[ag, 3] * vrate * w / AI[ag, A_NCYC])
                                    * runi(R, 1, 0.6, 1.2)))
                place(I, F, R, OP, LV, BG, FREE, H, AI, AF, OO, MO, TL, EPT, ST, ag, -1, s,
                      touch(I, F, 1 - s) - sgn(1 - s) * 2, q, R_AGGR, acc, True)
            else:
                cancel_all(I, OP, LV, BG, FREE, AI, OO, EPT, ag)
                q = max(1, np.int64(F[MEDSZ] * AF[ag, 0] * 2))
                place(I, F, R, OP, LV, BG, FREE, H, AI, AF, OO, MO, TL, EPT, ST, ag, -1, s,
                      touch(I, F, s), q, R_HEDGE, acc, False)
            hpush(I, H, after(I, R, w / AI[ag, A_NCYC] * runi(R, 1, 0.5, 1.2)), ag, ACT_STEP,
                  arg)
        return
    if k == K_IGNITE or k == K_IGNNEG:
        # AF0 burst size (x touch depth), AF1 burst duration s, AF2 exit wait s, AF4 gap;
        # I0 sweeping orders per burst
        if act == ACT_START:
            if late:
                return
            AI[ag, A_CNT] += 1
            AI[ag, A_STATE] = 1
            AI[ag, A_EP] = new_episode(I, AI, EPT, ag, P_IGNITE, 0 if k == K_IGNITE else 1)
            s = 0 if rnd(R, 1) < 0.5 else 1
            AI[ag, A_SIDE] = s
            AI[ag, A_NCYC] = AI[ag, A_I0]
            AI[ag, A_POS] = 0
            if k == K_IGNITE:
                t0 = touch(I, F, 1 - s)
                for j in range(2):
                    place(I, F, R, OP, LV, BG, FREE, H, AI, AF, OO, MO, TL, EPT, ST, ag, j,
                          1 - s, t0 - sgn(1 - s) * (2 + j),
                          max(1, np.int64(F[MEDSZ] * runi(R, 1, 3.0, 6.0))), R_EXIT, acc, False)
            hpush(I, H, after(I, R, runi(R, 1, 0.5, 3.0)), ag, ACT_STEP, AI[ag, A_CNT])
            return
        if arg != AI[ag, A_CNT] or AI[ag, A_STATE] != 1:
            return
        s = AI[ag, A_SIDE]
        if act == ACT_STEP:
            t1 = touch(I, F, 1 - s)
            dep = LV[2, 1 - s, t1]
            q = max(1, np.int64(dep * AF[ag, 0] * runi(R, 1, 0.7, 1.3)))
            place(I, F, R, OP, LV, BG, FREE, H, AI, AF, OO, MO, TL, EPT, ST, ag, 10, s,
                  t1 - sgn(1 - s) * rint(R, 1, 0, 2), q, R_AGGR, acc, True)
            AI[ag, A_NCYC] -= 1
            if AI[ag, A_NCYC] > 0:
                gap = AF[ag, 1] / AI[ag, A_I0] * runi(R, 1, 0.5, 1.5)
                hpush(I, H, after(I, R, gap), ag, ACT_STEP, arg)
            elif k == K_IGNITE:
                hpush(I, H, after(I, R, min(4.5, AF[ag, 2] * runi(R, 1, 0.2, 0.4))), ag,
                      ACT_EXITCHK, arg)
            else:
                AI[ag, A_STATE] = 0
                sched_next_burst(I, R, H, AI, AF, ag, AF[ag, 4], 10.0)
        elif act == ACT_EXITCHK:
            cancel_all(I, OP, LV, BG, FREE, AI, OO, EPT, ag)
            pos = AI[ag, A_POS]
            if pos != 0:
                s2 = 1 if pos > 0 else 0
                place(I, F, R, OP, LV, BG, FREE, H, AI, AF, OO, MO, TL, EPT, ST, ag, -1, s2,
                      touch(I, F, 1 - s2) - sgn(1 - s2) * 3, abs(pos), R_EXIT, acc, True)
            AI[ag, A_STATE] = 0
            sched_next_burst(I, R, H, AI, AF, ag, AF[ag, 4], 10.0)
        return


# ---------------------------------------------------------------------------------------------


@njit(SIG["agent_act"], cache=True)
def agent_act(I, F, R, OP, LV, BG, FREE, H, AI, AF, OO, MO, TL, EPT, ST, ag, act, arg):
    k = AI[ag, A_KIND]
    now = I[NOW]
    closing = now >= I[TSESS]
    if k == K_MM:
        if act == ACT_REQUOTE or act == ACT_START:
            mm_requote(I, F, R, OP, LV, BG, FREE, H, AI, AF, OO, MO, TL, EPT, ST, ag)
            if act == ACT_START:
                hpush(I, H, after(I, R, rexp(R, 1, AF[ag, 3])), ag, ACT_STEP, 0)
        elif act == ACT_STEP:
            # re-size one resting quote (cancel + new at the same level)
            s = rint(R, 1, 0, NSLOT - 1)
            for j in range(NSLOT):
                h = AI[ag, A_H + (s + j) % NSLOT]
                if h >= 0:
                    sd = OP[h, O_SIDE]
                    lv = OP[h, O_LVL]
                    cancel_order(I, OP, LV, BG, FREE, AI, OO, EPT, h)
                    q = max(1, np.int64(AF[ag, 0] * runi(R, 1, 0.5, 2.0)))
                    place(I, F, R, OP, LV, BG, FREE, H, AI, AF, OO, MO, TL, EPT, ST, ag, -1, sd,
                          lv, q, R_QUOTE, AI[ag, A_ACC], False)
                    break
            hpush(I, H, after(I, R, rexp(R, 1, AF[ag, 3])), ag, ACT_STEP, 0)
        return
    if k == K_SPOOF:
        # AF: 0 genuine mult, 1 bait mult, 2 lifetime mean s, 3 p cancel-on-fill,
        #     4 burst gap mean s, 5 cancel latency s, 6 p alternate side
        # AI: I0 bait orders, I1 bait offset, I2..I3 cycles per burst
        if act == ACT_START:
            if closing:
                return
            AI[ag, A_EP] = new_episode(I, AI, EPT, ag, P_SPOOF, 0)
            AI[ag, A_NCYC] = rint(R, 1, AI[ag, A_I2], AI[ag, A_I3])
            AI[ag, A_SIDE] = 0 if rnd(R, 1) < 0.5 else 1
            act = ACT_CYCLE
        if act == ACT_CYCLE:
            AI[ag, A_CNT] += 1
            AI[ag, A_STATE] = 1
            AI[ag, A_PEND] = 0
            g = AI[ag, A_SIDE]
            q = max(1, np.int64(F[MEDSZ] * AF[ag, 0] * runi(R, 1, 0.7, 1.3)))
            AI[ag, A_QTY] = q
            bb = touch(I, F, 0)
            ba = touch(I, F, 1)
            if g == 0:
                lv = bb + 1 if (ba - bb > 1 and rnd(R, 1) < 0.2) else bb
            else:
                lv = ba - 1 if (ba - bb > 1 and rnd(R, 1) < 0.2) else ba
            place(I, F, R, OP, LV, BG, FREE, H, AI, AF, OO, MO, TL, EPT, ST, ag, 0, g, lv, q,
                  R_GENUINE, AI[ag, A_ACC], False)
            hpush(I, H, after(I, R, runi(R, 1, 0.0002, 0.003)), ag, ACT_BAIT, AI[ag, A_CNT])
            life = AF[ag, 2] * np.exp(0.35 * rnorm(R, 1))
            hpush(I, H, after(I, R, life), ag, ACT_TIMEOUT, AI[ag, A_CNT])
            return
        if arg != AI[ag, A_CNT] or AI[ag, A_STATE] == 0:
            return
        if act == ACT_BAIT:
            g = AI[ag, A_SIDE]
            b = 1 - g
            nb = rint(R, 1, 2, AI[ag, A_I0])
            tot = AI[ag, A_QTY] * AF[ag, 1] * runi(R, 1, 0.8, 1.2)
            t0 = touch(I, F, b)
            off0 = AI[ag, A_I1] if rnd(R, 1) < 0.95 else 0
            wsum = 0.0
            for j in range(nb):
                wsum += 1.0 + 0.5 * j
            for j in range(nb):
                qj = max(1, np.int64(tot * (1.0 + 0.5 * (nb - 1 - j)) / wsum))
                lv = t0 + (off0 + j) * (1 if b == 1 else -1)
                place(I, F, R, OP, LV, BG, FREE, H, AI, AF, OO, MO, TL, EPT, ST, ag, 1 + j, b,
                      lv, qj, R_BAIT, AI[ag, A_ACC], False)
            return
        if (act == ACT_CANCELBAIT or act == ACT_TIMEOUT) and AI[ag, A_STATE] == 1:
            for s in range(1, 5):
                cancel_slot(I, OP, LV, BG, FREE, AI, OO, EPT, ag, s)
            success = live_qty(OP, AI, ag, 0) == 0
            if act == ACT_TIMEOUT:
                hpush(I, H, after(I, R, runi(R, 1, 0.0005, 0.05)), ag, ACT_END, AI[ag, A_CNT])
            AI[ag, A_STATE] = 2 if act == ACT_TIMEOUT else 0
            if success and rnd(R, 1) < AF[ag, 6]:
                AI[ag, A_SIDE] = 1 - AI[ag, A_SIDE]
            AI[ag, A_NCYC] -= 1
            if AI[ag, A_NCYC] > 0 and not closing:
                hpush(I, H, after(I, R, runi(R, 1, 0.15, 1.5)), ag, ACT_CYCLE, 0)
            else:
                sched_next_burst(I, R, H, AI, AF, ag, AF[ag, 4], 8.0)
            return
        if act == ACT_END and AI[ag, A_STATE] == 2:
            cancel_slot(I, OP, LV, BG, FREE, AI, OO, EPT, ag, 0)
            AI[ag, A_STATE] = 0
        elif act == ACT_PULL and AI[ag, A_STATE] == 1:
            for s in range(1, 5):
                h = AI[ag, A_H + s]
                if h >= 0 and OP[h, O_LVL] == touch(I, F, OP[h, O_SIDE]) and \
                        queue_ahead(OP, LV, h) < 3.0 * F[MEDSZ]:
                    cancel_slot(I, OP, LV, BG, FREE, AI, OO, EPT, ag, s)
            AI[ag, A_PEND] = 0
        return
    if k == K_REEVAL:
        # a large order, then a small opposite one; the small fill changes the trader's view
        if act == ACT_START:
            if closing:
                return
            AI[ag, A_CNT] += 1
            AI[ag, A_EP] = new_episode(I, AI, EPT, ag, P_SPOOF, 1)
            AI[ag, A_STATE] = 1
            b = 0 if rnd(R, 1) < 0.5 else 1
            AI[ag, A_SIDE] = b
            g = max(1, np.int64(F[MEDSZ] * AF[ag, 0]))
            AI[ag, A_QTY] = g
            q = max(1, np.int64(g * AF[ag, 1]))
            place(I, F, R, OP, LV, BG, FREE, H, AI, AF, OO, MO, TL, EPT, ST, ag, 0, b,
                  touch(I, F, b), q, R_BAIT, AI[ag, A_ACC], False)
            hpush(I, H, after(I, R, runi(R, 1, 0.3, 3.0)), ag, ACT_SMALL, AI[ag, A_CNT])
            hpush(I, H, after(I, R, runi(R, 1, 3.5, 4.5)), ag, ACT_TIMEOUT, AI[ag, A_CNT])
            return
        if arg != AI[ag, A_CNT]:
            return
        if act == ACT_SMALL and AI[ag, A_STATE] == 1:
            g = 1 - AI[ag, A_SIDE]
            place(I, F, R, OP, LV, BG, FREE, H, AI, AF, OO, MO, TL, EPT, ST, ag, 1, g,
                  touch(I, F, g), AI[ag, A_QTY], R_GENUINE, AI[ag, A_ACC], False)
            return
        if act == ACT_CANCELBAIT or act == ACT_TIMEOUT:
            if AI[ag, A_STATE] == 0:
                return
            cancel_all(I, OP, LV, BG, FREE, AI, OO, EPT, ag)
            AI[ag, A_STATE] = 0
            sched_next_burst(I, R, H, AI, AF, ag, AF[ag, 4], 60.0)
        return
    if k == K_HEDGER:
        # AF0 size mult, AF1 rest mean s, AF4 gap mean s
        if act == ACT_START:
            cancel_all(I, OP, LV, BG, FREE, AI, OO, EPT, ag)
            if closing:
                return
            AI[ag, A_CNT] += 1
            AI[ag, A_EP] = new_episode(I, AI, EPT, ag, P_SPOOF, 1)
            b = 0 if rnd(R, 1) < 0.5 else 1
            q = max(1, np.int64(F[MEDSZ] * AF[ag, 0] * runi(R, 1, 0.6, 1.4)))
            lv = touch(I, F, b) - sgn(b) * rint(R, 1, 0, 2)
            place(I, F, R, OP, LV, BG, FREE, H, AI, AF, OO, MO, TL, EPT, ST, ag, 0, b, lv, q,
                  R_HEDGE, AI[ag, A_ACC], False)
            AI[ag, A_STATE] = 1
            hpush(I, H, after(I, R, 5.0 + rexp(R, 1, AF[ag, 1])), ag, ACT_TIMEOUT, AI[ag, A_CNT])
            return
        if act == ACT_NEWSREACT and AI[ag, A_STATE] == 1:
            # news arrived: the hedge need changed; pull the order
            cancel_all(I, OP, LV, BG, FREE, AI, OO, EPT, ag)
            AI[ag, A_STATE] = 0
            sched_next_burst(I, R, H, AI, AF, ag, AF[ag, 4], 10.0)
            return
        if act == ACT_TIMEOUT and arg == AI[ag, A_CNT] and AI[ag, A_STATE] == 1:
            cancel_all(I, OP, LV, BG, FREE, AI, OO, EPT, ag)
            AI[ag, A_STATE] = 0
            sched_next_burst(I, R, H, AI, AF, ag, AF[ag, 4], 10.0)
        return
    if k == K_JOCKEY:
        # legitimate directional trader working a parent with one passive child pegged I1
        # ticks behind its touch; when the touch moves it cancels and re-enters at the new
        # peg (pegged / queue-jockeying orders, patterns.md 2.1 hard negatives). AF0 child
        # size mult, AF1 parent duration s, AF2 check period s, AF3 p chase per check, AF4
        # gap mean s; I0 max children per parent, I1 max peg offset in ticks (drawn per parent)
        if act == ACT_START:
            if now >= I[TSESS] - np.int64(15 * NS):
                return
            AI[ag, A_CNT] += 1
            AI[ag, A_EP] = new_episode(I, AI, EPT, ag, P_SPOOF, 1)
            AI[ag, A_STATE] = 1
            s = 0 if rnd(R, 1) < 0.5 else 1
            AI[ag, A_SIDE] = s
            AI[ag, A_NCYC] = rint(R, 1, 1, AI[ag, A_I0])
            AI[ag, A_X0] = rint(R, 1, 0, AI[ag, A_I1])  # this parent's peg offset
            AI[ag, A_TEND] = after(I, R, AF[ag, 1] * runi(R, 1, 0.5, 1.5))
            q = max(1, np.int64(F[MEDSZ] * AF[ag, 0] * runi(R, 1, 0.7, 1.3)))
            place(I, F, R, OP, LV, BG, FREE, H, AI, AF, OO, MO, TL, EPT, ST, ag, 0, s,
                  touch(I, F, s) - sgn(s) * AI[ag, A_X0], q, R_CHILD, AI[ag, A_ACC], False)
            hpush(I, H, after(I, R, AF[ag, 2] * runi(R, 1, 0.5, 1.5)), ag, ACT_STEP,
                  AI[ag, A_CNT])
            return
        if act != ACT_STEP or arg != AI[ag, A_CNT] or AI[ag, A_STATE] != 1:
            return
        s = AI[ag, A_SIDE]
        h = AI[ag, A_H]
        peg = touch(I, F, s) - sgn(s) * AI[ag, A_X0]
        done = False
        if now >= AI[ag, A_TEND] or closing:
            done = True
        elif h < 0:
            AI[ag, A_NCYC] -= 1
            done = AI[ag, A_NCYC] <= 0
            if not done:
                q = max(1, np.int64(F[MEDSZ] * AF[ag, 0] * runi(R, 1, 0.7, 1.3)))
                place(I, F, R, OP, LV, BG, FREE, H, AI, AF, OO, MO, TL, EPT, ST, ag, 0, s,
                      peg, q, R_CHILD, AI[ag, A_ACC], False)
        elif OP[h, O_LVL] != peg and rnd(R, 1) < AF[ag, 3]:
            q = OP[h, O_QTY]
            cancel_slot(I, OP, LV, BG, FREE, AI, OO, EPT, ag, 0)
            place(I, F, R, OP, LV, BG, FREE, H, AI, AF, OO, MO, TL, EPT, ST, ag, 0, s,
                  peg, q, R_CHILD, AI[ag, A_ACC], False)
        if done:
            cancel_all(I, OP, LV, BG, FREE, AI, OO, EPT, ag)
            AI[ag, A_STATE] = 0
            sched_next_burst(I, R, H, AI, AF, ag, AF[ag, 4], 5.0)
            return
        hpush(I, H, after(I, R, AF[ag, 2] * runi(R, 1, 0.5, 1.5)), ag, ACT_STEP, arg)
        return
    if k == K_PROP:
        # legitimate prop trader: occasional passive or aggressive orders, cancels stale ones
        if closing:
            cancel_all(I, OP, LV, BG, FREE, AI, OO, EPT, ag)
            return
        s = free_slot(AI, ag)
        if s < 0 or rnd(R, 1) < 0.4:
            for j in range(NSLOT):
                h = AI[ag, A_H + j]
                if h >= 0 and now - OP[h, O_T] > np.int64(2 * NS):
                    cancel_slot(I, OP, LV, BG, FREE, AI, OO, EPT, ag, j)
                    break
        else:
            sd = 0 if rnd(R, 1) < 0.5 else 1
            q = max(1, np.int64(F[MEDSZ] * runi(R, 1, 0.5, 3.0)))
            if rnd(R, 1) < 0.25:
                place(I, F, R, OP, LV, BG, FREE, H, AI, AF, OO, MO, TL, EPT, ST, ag, s, sd,
                      touch(I, F, 1 - sd), q, R_AGGR, AI[ag, A_ACC], True)
            else:
                lv = touch(I, F, sd) - sgn(sd) * rgeom(R, 1, 0.5)
                place(I, F, R, OP, LV, BG, FREE, H, AI, AF, OO, MO, TL, EPT, ST, ag, s, sd, lv,
                      q, R_NONE, AI[ag, A_ACC], False)
        hpush(I, H, after(I, R, rexp(R, 1, AF[ag, 0])), ag, ACT_STEP, 0)
        return
    agent_act2(I, F, R, OP, LV, BG, FREE, H, AI, AF, OO, MO, TL, EPT, ST, ag, act, arg)


@njit(SIG["after_event"], cache=True)
def after_event(I, F, R, OP, LV, H, AI, AF, MO, MML):
    emit_quote_if_changed(I, LV, MO)
    imb = imbalance(I, LV, 5)
    st = 0
    if imb > F[THETA]:
        st = 1
    elif imb < -F[THETA]:
        st = -1
    if st != I[IMBST]:
        I[IMBST] = st
        if st != 0:
            n = rpois(R, 0, F[NREACT])
            for _ in range(n):
                hpush(I, H, after(I, R, 0.0003 + rexp(R, 0, F[REACTLAT])), -1, ACT_IMB, 0)
    c2 = mid2(I, F)
    for i in range(MML.shape[0]):
        m = MML[i]
        if AI[m, A_KIND] == K_SPOOF:
            # bait that became the touch is at risk of a fill: pull it
            if AI[m, A_STATE] == 1 and AI[m, A_PEND] == 0:
                for s in range(1, 5):
                    h = AI[m, A_H + s]
                    if h >= 0 and OP[h, O_LVL] == touch(I, F, OP[h, O_SIDE]) and \
                            queue_ahead(OP, LV, h) < 3.0 * F[MEDSZ]:
                        AI[m, A_PEND] = 1
                        hpush(I, H, after(I, R, 0.0003 + rexp(R, 1, 0.002)), m, ACT_PULL,
                              AI[m, A_CNT])
                        break
        elif AI[m, A_PEND] == 0 and c2 != AI[m, A_CENTER2]:
            AI[m, A_PEND] = 1
            hpush(I, H, after(I, R, 0.0002 + rexp(R, 1, AF[m, 1])), m, ACT_REQUOTE, 0)


@njit(SIG["news"], cache=True)
def news(I, F, R, H, AI):
    j = F[NEWSJUMP] * (1.0 + rexp(R, 0, 1.0))
    F[FUND] += j if rnd(R, 0) < 0.5 else -j
    F[LASTNEWS] = I[NOW] / NS
    I[NEWSC] += 1
    for a in range(I[NAG]):
        k = AI[a, A_KIND]
        if k == K_HEDGER and AI[a, A_STATE] == 1 and rnd(R, 1) < 0.8:
            hpush(I, H, after(I, R, runi(R, 1, 0.2, 2.0)), a, ACT_NEWSREACT, 0)
        elif k == K_QSNEG:
            hpush(I, H, after(I, R, runi(R, 1, 0.001, 0.02)), a, ACT_NEWSREACT, 0)
    t = after(I, R, rexp(R, 0, 1.0 / F[NEWSRATE]))
    hpush(I, H, t, -2, ACT_NEWS, 0)


@njit(SIG["run"], cache=True)
def run(t_end, I, F, R, OP, LV, BG, FREE, H, AI, AF, OO, MO, TL, EPT, ST, MML):
    """Advance the book to ``t_end`` (ns). Returns 1 if stopped early on a full buffer."""
    capo = OO.shape[0] - 8192
    capm = MO.shape[0] - 8192
    while True:
        if I[NO] > capo or I[NM] > capm or I[NTL] > TL.shape[0] - 8192:
            return 1
        tb = I[TNEXT]
        th = H[0, 0] if I[HN] > 0 else BIG
        t = min(tb, th)
        if t >= t_end:
            I[NOW] = t_end
            return 0
        I[NOW] = t
        if th <= tb:
            ag = H[0, 1]
            act = H[0, 2]
            arg = H[0, 3]
            hpop(I, H)
            if ag >= 0:
                agent_act(I, F, R, OP, LV, BG, FREE, H, AI, AF, OO, MO, TL, EPT, ST, ag, act, arg)
            elif act == ACT_IMB:
                update_signals(I, F, R)
                imb_react(I, F, R, OP, LV, BG, FREE, H, AI, AF, OO, MO, TL, EPT, ST)
            elif act == ACT_STOPFIRE:
                side = arg & 1
                bg_take(I, F, R, OP, LV, BG, FREE, H, AI, AF, OO, MO, TL, EPT, ST, side, arg >> 1)
            elif act == ACT_NEWS:
                news(I, F, R, H, AI)
        else:
            bg_event(I, F, R, OP, LV, BG, FREE, H, AI, AF, OO, MO, TL, EPT, ST)
            ts = t / NS
            T = I[TSESS] / NS
            tau = max(T / 12.0, 1.0)
            rate = F[LAM] * (1.0 + F[UAMP] * (np.exp(-ts / tau) + np.exp(-(T - ts) / tau)))
            I[TNEXT] = t + np.int64(rexp(R, 0, 1.0 / rate) * NS) + 1
        after_event(I, F, R, OP, LV, H, AI, AF, MO, MML)
