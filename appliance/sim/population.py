"""Instruments, the firm's traders/accounts/owners, and the per-instrument agent tables."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import engine as E

# symbol, instrument, venue, tick, decimals, reference price
INSTRUMENTS = [
    ("ESZ6", "ES 2026-12 FUT", "XCME", "0.25", 6012.50),
    ("CLF7", "CL 2027-01 FUT", "XNYM", "0.01", 71.85),
    ("GCG7", "GC 2027-02 FUT", "XCEC", "0.1", 2651.30),
    ("ZNH7", "ZN 2027-03 FUT", "XCBT", "0.015625", 110.5),
    ("6EZ6", "6E 2026-12 FUT", "XCME", "0.00005", 1.0815),
    ("NQZ6", "NQ 2026-12 FUT", "XCME", "0.25", 21240.0),
    ("SIH7", "SI 2027-03 FUT", "XCEC", "0.005", 31.205),
    ("NGF7", "NG 2027-01 FUT", "XNYM", "0.001", 4.512),
]

FIRST = ["anna", "boris", "chen", "dana", "emil", "fatima", "gordon", "hana", "ivan", "julia",
         "kofi", "lena", "marco", "nadia", "oscar", "priya", "quinn", "rosa", "sven", "tariq",
         "uma", "victor", "wen", "ximena", "yusuf", "zoe"]
LAST = ["kowalski", "meyer", "tanaka", "okafor", "silva", "novak", "haddad", "larsen", "rossi",
        "ivanova", "dubois", "chang", "moreau", "petrov", "santos", "weber", "nakamura", "olsen"]

# role order: the first 20 give every pattern and every hard negative one trader
ROLES = [E.K_MM, E.K_SPOOF, E.K_MM, E.K_SPOOF, E.K_REEVAL, E.K_HEDGER, E.K_EXEC, E.K_LAYER,
         E.K_WASH, E.K_WASHNEG, E.K_QSTUFF, E.K_QSNEG, E.K_FRONT, E.K_FRNEG, E.K_MARK,
         E.K_MARKNEG, E.K_IGNITE, E.K_IGNNEG, E.K_SPOOF, E.K_JOCKEY]
EXTRA_ROLES = [E.K_PROP, E.K_JOCKEY, E.K_HEDGER, E.K_MM, E.K_EXEC, E.K_REEVAL, E.K_PROP, E.K_SPOOF,
               E.K_LAYER, E.K_MARKNEG, E.K_IGNNEG]
ON_ALL = {E.K_MM, E.K_EXEC, E.K_HEDGER, E.K_PROP, E.K_REEVAL, E.K_JOCKEY}


@dataclass
class Instrument:
    symbol: str
    name: str
    venue: str
    tick: str
    dec: int
    tickq: int
    pbase: int  # price in 10**-dec units = (pbase + level) * tickq


@dataclass
class Trader:
    name: str
    kind: int
    aliases: list[str]
    accounts: list[int]
    owner: str
    insts: list[int]


@dataclass
class Population:
    instruments: list[Instrument]
    traders: list[Trader]
    accounts: list[tuple[str, str, str]]  # (account, owner, type)
    agents: list[list[dict]] = field(default_factory=list)  # per instrument


def make_instruments(k: int, rng: np.random.Generator) -> list[Instrument]:
    out = []
    for i in range(k):
        if i < len(INSTRUMENTS):
            sym, name, venue, tick, ref = INSTRUMENTS[i]
        else:
            sym = f"EQ{i:03d}"
            name = f"EQUITY {i:03d}"
            venue = "XNAS"
            tick = "0.01"
            ref = float(np.round(rng.uniform(60, 400), 2))
        dec = len(tick.split(".")[1]) if "." in tick else 0
        tickq = int(round(float(tick) * 10**dec))
        ref_ticks = int(round(ref / float(tick)))
        out.append(Instrument(sym, name, venue, tick, dec, tickq, max(0, ref_ticks - E.MID0)))
    return out


def make_population(n_traders: int, n_inst: int, rng: np.random.Generator) -> Population:
    insts = make_instruments(n_inst, rng)
    roles = [ROLES[i] if i < len(ROLES) else EXTRA_ROLES[(i - len(ROLES)) % len(EXTRA_ROLES)]
             for i in range(n_traders)]
    accounts: list[tuple[str, str, str]] = []
    traders: list[Trader] = []
    used: set[str] = set()
    n_exec = 0
    for i, kind in enumerate(roles):
        if kind == E.K_EXEC:
            n_exec += 1
            name = f"algo-{'twap' if n_exec % 2 else 'vwap'}-{n_exec}"
            aliases = [name.upper(), f"ALG{n_exec:02d}"]
        else:
            while True:
                f = FIRST[int(rng.integers(len(FIRST)))]
                last = LAST[int(rng.integers(len(LAST)))]
                name = f[0] + last
                if name not in used:
                    break
            aliases = [name.upper(), f"{f[0].upper()}.{last.upper()}", f"{f[:2].upper()}{i:02d}"]
        used.add(name)
        if kind in (E.K_MM, E.K_WASHNEG):
            owner = "ACME MARKET MAKING DESK"
        elif kind == E.K_WASH:
            owner = f"{name.upper()} FAMILY HOLDINGS"
        elif kind == E.K_FRNEG:
            owner = "ACME RISK DESK"
        else:
            owner = f"ACME PROP {name.upper()}"
        accs = []
        if kind == E.K_EXEC:
            for _ in range(4):
                cid = len(accounts)
                accounts.append((f"C{70000 + cid * 7:06d}", f"CLIENT {cid:03d} FUND", "client"))
                accs.append(cid)
        else:
            nacc = 2 if kind == E.K_WASH else 1
            for j in range(nacc):
                aid = len(accounts)
                accounts.append((f"H{10000 + aid * 3 + j:05d}", owner, "house"))
                accs.append(aid)
        if kind in ON_ALL:
            tin = list(range(n_inst))
        elif kind == E.K_SPOOF:
            tin = sorted({int(rng.integers(n_inst)), i % n_inst})
        elif kind == E.K_FRNEG or kind == E.K_FRONT:
            tin = [int(rng.integers(n_inst))]
        else:
            tin = [int(rng.integers(n_inst))]
        traders.append(Trader(name, kind, aliases, accs, owner, tin))
    # an unrelated account that shares the wash trader's owner (partial overlap in the BO graph)
    for t in traders:
        if t.kind == E.K_WASH:
            accounts.append((f"H{90000 + len(accounts):05d}", t.owner, "house"))
    pop = Population(insts, traders, accounts)
    names = {a[1] for a in accounts} | {t.owner for t in traders}
    owners = {o: j for j, o in enumerate(sorted(names))}
    for k in range(n_inst):
        ags = []
        for ti, t in enumerate(traders):
            if k not in t.insts:
                continue
            ags.append(agent_params(t, ti, owners[t.owner], rng))
        pop.agents.append(ags)
    return pop


def agent_params(t: Trader, ti: int, owner: int, rng: np.random.Generator) -> dict:
    u = rng.uniform
    ai = {E.A_KIND: t.kind, E.A_TRD: ti, E.A_ACC: t.accounts[0],
          E.A_ACC2: t.accounts[1 % len(t.accounts)], E.A_OWNER: owner, E.A_EP: -1}
    af = {}
    k = t.kind
    start = u(1.0, 60.0)
    if k == E.K_MM:
        L = int(rng.integers(2, 6))
        ai.update({E.A_I0: L, E.A_I1: int(rng.integers(1, 3)), E.A_I2: int(rng.integers(20, 60)),
                   E.A_PAT: E.P_LAYER if L >= 3 else E.P_SPOOF})
        af.update({0: u(2.0, 5.0), 1: u(0.002, 0.02), 2: 1.0 / u(6.0, 15.0), 3: u(0.1, 0.4)})
        start = 0.0
    elif k == E.K_SPOOF:
        ai.update({E.A_I0: int(rng.integers(2, 5)), E.A_I1: int(rng.integers(0, 3)),
                   E.A_I2: int(rng.integers(3, 6)), E.A_I3: int(rng.integers(8, 20))})
        af.update({0: u(1.0, 3.0), 1: u(5.0, 20.0), 2: u(0.15, 0.8), 3: u(0.85, 0.95),
                   4: u(60.0, 200.0), 5: u(0.002, 0.03), 6: u(0.5, 0.9)})
        start = u(5.0, 90.0)
    elif k == E.K_REEVAL:
        af.update({0: u(1.0, 3.0), 1: u(5.0, 20.0), 4: u(500.0, 1500.0)})
        start = u(30.0, 600.0)
    elif k == E.K_HEDGER:
        af.update({0: u(10.0, 30.0), 1: u(20.0, 120.0), 4: u(30.0, 180.0)})
    elif k == E.K_PROP:
        af.update({0: u(0.5, 4.0)})
    elif k == E.K_JOCKEY:
        # matched to the spoofer's marginals: child size ~ genuine size, check period ~ bait
        # lifetime, a chase probability that spreads the cancel rate over the spoofers' range
        ai.update({E.A_I0: int(rng.integers(2, 8)), E.A_I1: int(rng.integers(1, 4))})
        af.update({0: u(1.0, 3.0), 1: u(10.0, 40.0), 2: u(0.15, 0.8), 3: u(0.5, 1.0),
                   4: u(10.0, 30.0)})
        start = u(1.0, 30.0)
    elif k == E.K_LAYER:
        ai.update({E.A_I0: int(rng.integers(3, 7)), E.A_I1: int(rng.integers(2, 5))})
        af.update({0: u(3.0, 8.0), 1: u(10.0, 60.0), 2: u(0.3, 2.0), 4: u(120.0, 400.0),
                   3: u(0.0, 0.9)})
    elif k == E.K_WASH:
        af.update({0: u(1.0, 4.0), 1: u(0.0005, 0.01), 4: u(90.0, 300.0)})
        ai.update({E.A_I0: int(rng.integers(2, 8))})
    elif k == E.K_WASHNEG:
        af.update({0: u(3.0, 12.0)})
    elif k == E.K_QSTUFF:
        af.update({0: u(1000.0, 8000.0), 1: u(0.05, 1.5), 4: u(60.0, 240.0)})
        ai.update({E.A_I0: int(rng.integers(1, 11))})
    elif k == E.K_QSNEG:
        af.update({0: u(500.0, 3000.0), 1: u(0.1, 1.0)})
    elif k == E.K_EXEC:
        af.update({0: u(120.0, 420.0), 1: u(0.03, 0.10), 2: u(5.0, 20.0), 4: u(60.0, 240.0)})
        ai.update({E.A_I0: int(rng.integers(0, 2))})  # 1: passive ladder mode
        start = u(10.0, 200.0)
    elif k in (E.K_FRONT, E.K_FRNEG):
        af.update({0: u(0.01, 0.2), 1: u(1.0, 20.0), 2: u(5.0, 60.0)})
    elif k in (E.K_MARK, E.K_MARKNEG):
        af.update({0: u(1.0, 2.5), 1: u(10.0, 90.0), 2: u(10.0, 30.0), 3: u(0.15, 0.5)})
        start = -u(0.3, 0.6)  # a fraction of the session
    elif k in (E.K_IGNITE, E.K_IGNNEG):
        af.update({0: u(0.5, 3.0), 1: u(0.01, 2.0), 2: u(5.0, 20.0), 4: u(150.0, 500.0)})
        ai.update({E.A_I0: int(rng.integers(3, 11))})
    return {"ai": ai, "af": af, "start": start}
