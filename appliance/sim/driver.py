"""Run the kernel in time chunks, merge instruments in time order, stream files to disk."""

from __future__ import annotations

import csv
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from . import engine as E
from . import fmt as FM
from .config import SimConfig, SimResult
from .population import Population, make_population

OO_CAP = 1 << 17
MO_CAP = 1 << 18
TL_CAP = 1 << 17


def _iso(ns: int) -> str:
    s, frac = divmod(int(ns), 1_000_000_000)
    return datetime.fromtimestamp(s, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{frac:09d}Z"


def session_t0(cfg: SimConfig) -> int:
    d = datetime.strptime(f"{cfg.date} {cfg.open_utc}", "%Y-%m-%d %H:%M").replace(tzinfo=UTC)
    return int(d.timestamp()) * 1_000_000_000


class Book:
    """All kernel arrays for one instrument."""

    def __init__(self, inst: int, cfg: SimConfig, agents: list[dict], seed: np.random.SeedSequence):
        s0, s1 = seed.generate_state(2, np.uint64)
        self.inst = inst
        I = np.zeros(E.NI, np.int64)  # noqa: E741
        F = np.zeros(E.NF, np.float64)
        self.R = np.array([s0, s1], np.uint64)
        self.OP = np.zeros((E.MAXO, E.OPW), np.int64)
        self.OP[:, E.O_QTY] = -1
        self.LV = np.zeros((3, 2, E.NL), np.int64)
        self.LV[0:2] = -1
        self.BG = np.zeros(E.MAXO, np.int64)
        self.FREE = np.arange(E.MAXO - 1, -1, -1, dtype=np.int64)
        self.H = np.zeros((E.HCAP, 4), np.int64)
        na = max(1, len(agents))
        self.AI = np.zeros((na, E.AIW), np.int64)
        self.AI[:, E.A_H:] = -1
        self.AI[:, E.A_EP] = -1
        self.AF = np.zeros((na, E.AFW), np.float64)
        self.OO = np.zeros((OO_CAP, E.OOW), np.int64)
        self.MO = np.zeros((MO_CAP, E.MOW), np.int64)
        self.TL = np.zeros((TL_CAP, E.TLW), np.int64)
        self.EPT = np.zeros((E.MAXEP, E.EPW), np.int64)
        self.ST = np.zeros((E.NSTOPMAX, 3), np.int64)
        T = int(cfg.minutes * 60 * E.NS)
        cw = min(cfg.close_window_s, cfg.minutes * 6.0)
        I[E.NFREE] = E.MAXO
        I[E.BB] = -1
        I[E.BA] = E.NL
        I[E.QBB] = -2
        I[E.INST] = inst
        I[E.TSESS] = T
        I[E.TCLOSE] = T - int(cw * E.NS)
        I[E.NAG] = len(agents)
        I[E.OIDBASE] = inst * 10**10 + 1
        I[E.LASTL] = E.MID0
        F[E.FUND] = F[E.MU0] = F[E.LASTMID] = F[E.EMAF] = F[E.EMAS] = E.MID0
        F[E.LAM] = cfg.bg_rate
        F[E.PLIM], F[E.PMKT], F[E.PVAL], F[E.PMOM], F[E.PIMB] = 0.55, 0.08, 0.12, 0.08, 0.17
        F[E.NTARGET] = 120.0
        F[E.GEOM] = 0.12
        F[E.SZMU], F[E.SZSIG] = np.log(3.0), 0.8
        F[E.MEDSZ] = 3.0
        F[E.KAPPA], F[E.FSIG] = 1.0 / 600.0, 0.5
        F[E.THETA], F[E.NREACT], F[E.REACTLAT], F[E.IMBTAKE] = 0.25, 4.0, 0.02, 0.6
        F[E.VALTHR], F[E.MOMTF], F[E.MOMTS], F[E.MOMTHR] = 2.0, 5.0, 30.0, 1.0
        F[E.NEWSRATE], F[E.NEWSJUMP] = 1.0 / 300.0, 3.0
        F[E.UAMP], F[E.PCANC], F[E.PSTOP] = 1.0, 0.45, 0.3
        self.I, self.F = I, F
        mml = []
        for a, spec in enumerate(agents):
            for key, v in spec["ai"].items():
                self.AI[a, key] = v
            for key, v in spec["af"].items():
                self.AF[a, key] = v
            if E.KIND_NAMES[spec["ai"][E.A_KIND]] in cfg.disable:
                self.AI[a, E.A_KIND] = 0
                continue
            if spec["ai"][E.A_KIND] in (E.K_MM, E.K_SPOOF):
                mml.append(a)
            start = spec["start"] if spec["start"] >= 0 else -spec["start"] * T / E.NS
            E.hpush(I, self.H, int(start * E.NS), a, E.ACT_START, 0)
        self.MML = np.array(mml, np.int64)
        E.hpush(I, self.H, int(np.random.default_rng(int(s0 % 2**31)).exponential(300) * E.NS),
                -2, E.ACT_NEWS, 0)
        # opening book
        rng = np.random.default_rng(int(s1 % 2**31))
        for _ in range(int(F[E.NTARGET])):
            side = int(rng.integers(2))
            off = int(rng.geometric(0.15)) - 1
            lvl = E.MID0 - 1 - off if side == 0 else E.MID0 + 1 + off
            q = max(1, int(np.ceil(np.exp(np.log(3.0) + 0.8 * rng.standard_normal()))))
            self.call(E.add_order, -1, -1, side, lvl, q, 0, -1, -1, False)
        I[E.TNEXT] = 1

    def arrays(self):
        return (self.I, self.F, self.R, self.OP, self.LV, self.BG, self.FREE, self.H, self.AI,
                self.AF, self.OO, self.MO, self.TL, self.EPT, self.ST)

    def call(self, fn, *args):
        return fn(*self.arrays(), *args)

    def run_to(self, t_end: int):
        """Yield (orders, market, links) row blocks until ``t_end`` is reached."""
        while True:
            rc = E.run(t_end, *self.arrays(), self.MML)
            I = self.I  # noqa: E741
            yield (self.OO[: I[E.NO]].copy(), self.MO[: I[E.NM]].copy(),
                   self.TL[: I[E.NTL]].copy())
            I[E.NO] = I[E.NM] = I[E.NTL] = 0
            if rc == 0:
                return


def _tables(pop: Population, firm: str):
    """String table: traders, accounts, symbols, venues, firm, sides, events."""
    strings: list[str] = []
    bases = {}
    bases["trd"] = len(strings)
    strings += [t.name for t in pop.traders]
    bases["acc"] = len(strings)
    strings += [a[0] for a in pop.accounts]
    bases["sym"] = len(strings)
    strings += [i.symbol for i in pop.instruments]
    bases["ven"] = len(strings)
    strings += [i.venue for i in pop.instruments]
    bases["firm"] = len(strings)
    strings.append(firm)
    bases["side"] = len(strings)
    strings += ["BUY", "SELL"]
    bases["ev"] = len(strings)
    strings += ["NEW", "MODIFY", "CANCEL", "FILL", "REJECT"]
    blob, off = FM.string_table(strings)
    return blob, off, bases


ORDERS_HEADER = ("ts,firm,trader,account,symbol,side,event,order_id,price,qty,leaves_qty,"
                 "exec_qty,exec_price,venue\n")
MARKET_HEADER = "ts,symbol,bid,bid_size,ask,ask_size,last,last_size\n"
FIRM = "ACMEFUT"


def simulate(cfg: SimConfig, out_dir) -> SimResult:
    t_start = time.perf_counter()
    out = Path(out_dir)
    (out / "reference").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(cfg.seed)
    pop = make_population(cfg.traders, cfg.instruments, rng)
    seeds = np.random.SeedSequence(cfg.seed).spawn(cfg.instruments)
    books = [Book(k, cfg, pop.agents[k], seeds[k]) for k in range(cfg.instruments)]
    t0 = session_t0(cfg)
    T = int(cfg.minutes * 60 * E.NS)
    chunk = int(cfg.chunk_s * E.NS)
    blob, off, b = _tables(pop, FIRM)
    pbase = np.array([i.pbase for i in pop.instruments], np.int64)
    tickq = np.array([i.tickq for i in pop.instruments], np.int64)
    dec = np.array([i.dec for i in pop.instruments], np.int64)

    renderer = None
    if cfg.fmt == "canonical":
        orders_path = out / "orders.csv"
        clean_path = orders_path
    else:
        from .render import make_renderer

        (out / "clean").mkdir(exist_ok=True)
        clean_path = out / "clean" / "orders.csv"
        renderer = make_renderer(cfg, pop, out, t0, FIRM)
        orders_path = renderer.path
    market_path = out / "market.csv"
    links: list[np.ndarray] = []
    n_o = n_m = 0
    with open(clean_path, "wb") as fo, open(market_path, "wb") as fm:
        fo.write(ORDERS_HEADER.encode())
        fm.write(MARKET_HEADER.encode())
        t = 0
        while t < T:
            t1 = min(t + chunk, T)
            po, pm = [], []
            for bk in books:
                for oo, mo, tl in bk.run_to(t1):
                    po.append(oo)
                    pm.append(mo)
                    if len(tl):
                        links.append(tl)
            oo = np.concatenate(po) if po else np.zeros((0, E.OOW), np.int64)
            mo = np.concatenate(pm) if pm else np.zeros((0, E.MOW), np.int64)
            if len(books) > 1:
                oo = oo[np.argsort(oo[:, E.E_TS], kind="stable")]
                mo = mo[np.argsort(mo[:, E.M_TS], kind="stable")]
            if len(oo):
                fo.write(FM.format_orders(oo, t0, blob, off, b["trd"], b["acc"], b["sym"],
                                          b["ven"], b["firm"], b["side"], b["ev"], pbase, tickq,
                                          dec).tobytes())
                if renderer is not None:
                    renderer.write(oo)
            if len(mo):
                fm.write(FM.format_market(mo, t0, blob, off, b["sym"], pbase, tickq,
                                          dec).tobytes())
            n_o += len(oo)
            n_m += len(mo)
            t = t1
    defects_path = None
    if renderer is not None:
        defects_path = renderer.close()
    settlement = _write_reference(out / "reference", pop, books, t0, T, cfg)
    episodes, hidden = _write_truth(out, pop, books, links, t0, cfg)
    return SimResult(out, orders_path, market_path, out / "truth.csv", out / "reference",
                     n_o + n_m, n_o, n_m, episodes, settlement, defects_path,
                     clean_path if renderer is not None else None,
                     time.perf_counter() - t_start, hidden)


def _price(inst, lvl: float) -> float:
    return round((inst.pbase + lvl) * inst.tickq / 10**inst.dec, inst.dec + 2)


def _write_reference(ref: Path, pop: Population, books, t0: int, T: int, cfg) -> dict:
    with open(ref / "accounts.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["account", "owner", "type"])
        w.writerows(pop.accounts)
    with open(ref / "traders.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["alias", "trader"])
        for t in pop.traders:
            w.writerow([t.name, t.name])
            for a in t.aliases:
                w.writerow([a, t.name])
    with open(ref / "symbology.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["symbol", "instrument", "valid_from", "valid_to"])
        # effective-dated: valid_from inclusive, valid_to exclusive (the session day); each
        # contract under its exchange symbol and its two-digit-year spelling (vendors use both)
        from .render import alt_symbol

        day = datetime.strptime(cfg.date, "%Y-%m-%d")
        valid_to = (day + timedelta(days=1)).strftime("%Y-%m-%d")
        for i in pop.instruments:
            w.writerow([i.symbol, i.name, cfg.date, valid_to])
            w.writerow([alt_symbol(i.symbol), i.name, cfg.date, valid_to])
    with open(ref / "instruments.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["instrument", "symbol", "venue", "tick_size"])
        for i in pop.instruments:
            w.writerow([i.name, i.symbol, i.venue, i.tick])
    settle = {}
    with open(ref / "settlement.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["symbol", "window_start", "window_end", "settlement_price", "window_volume"])
        for bk, inst in zip(books, pop.instruments, strict=True):
            F, I = bk.F, bk.I  # noqa: E741
            lvl = F[E.CPV] / F[E.CV] if F[E.CV] > 0 else float(I[E.LASTL])
            px = _price(inst, lvl)
            px = round(round(px / float(inst.tick)) * float(inst.tick), inst.dec)
            settle[inst.symbol] = px
            w.writerow([inst.symbol, _iso(t0 + int(I[E.TCLOSE])), _iso(t0 + T),
                        f"{px:.{inst.dec}f}", int(F[E.CV])])
    with open(ref / "traders_roles.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["trader", "role", "accounts", "symbols"])
        for t in pop.traders:
            w.writerow([t.name, E.KIND_NAMES[t.kind], ";".join(pop.accounts[a][0]
                        for a in t.accounts), ";".join(pop.instruments[k].symbol
                                                       for k in t.insts)])
    return settle


def _hide(eps: list[dict], cfg: SimConfig) -> set[str]:
    """Episode ids left unlabelled: floor(unlabelled × n) of each pattern's n positives, drawn
    with the run's seed (PU realism: some manipulations are never labelled)."""
    rng = np.random.default_rng([cfg.seed, 4343])
    hidden: set[str] = set()
    for pat in sorted({d["pattern"] for d in eps}):
        ids = [d["episode_id"] for d in eps if d["pattern"] == pat and d["label"] == "positive"]
        k = int(cfg.unlabelled * len(ids))
        if k:
            hidden.update(ids[i] for i in rng.choice(len(ids), k, replace=False).tolist())
    return hidden


def _write_truth(out: Path, pop: Population, books, links, t0: int,
                 cfg: SimConfig) -> tuple[list[dict], list[dict]]:
    tl = np.concatenate(links) if links else np.zeros((0, E.TLW), np.int64)
    order = np.lexsort((tl[:, E.TL_OID], tl[:, E.TL_EP], tl[:, E.TL_INST]))
    tl = tl[order]
    eps = []
    key = tl[:, E.TL_INST] * (1 << 32) + tl[:, E.TL_EP]
    uk, starts = np.unique(key, return_index=True)
    ends = np.append(starts[1:], len(tl))
    bounds = {int(k): (int(s), int(e)) for k, s, e in zip(uk, starts, ends, strict=True)}
    for bk, inst in zip(books, pop.instruments, strict=True):
        EPT = bk.EPT
        for e in range(int(bk.I[E.NEP])):
            if EPT[e, E.EP_START] < 0:
                continue
            s, en = bounds.get(bk.inst * (1 << 32) + e, (0, 0))
            if en <= s:
                continue
            rows = tl[s:en]
            oids = [f"O{o:012d}" for o in dict.fromkeys(rows[:, E.TL_OID].tolist())]
            accs = sorted({pop.accounts[a][0] for a in rows[:, E.TL_ACC].tolist()})
            roles = {f"O{o:012d}": E.ROLE_NAMES[r] for o, r in
                     zip(rows[:, E.TL_OID].tolist(), rows[:, E.TL_ROLE].tolist(), strict=True)}
            eps.append({
                "start_ns": int(EPT[e, E.EP_START]),
                "episode_id": f"EP{bk.inst:02d}{e:05d}",
                "pattern": E.PATTERNS[EPT[e, E.EP_PAT]],
                "label": "positive" if EPT[e, E.EP_LABEL] == 0 else "hard_negative",
                "trader": pop.traders[EPT[e, E.EP_TRD]].name,
                "role": E.KIND_NAMES[pop.traders[EPT[e, E.EP_TRD]].kind],
                "accounts": accs,
                "symbol": inst.symbol,
                "start_ts": _iso(t0 + int(EPT[e, E.EP_START])),
                "end_ts": _iso(t0 + int(EPT[e, E.EP_END])),
                "order_ids": oids,
                "order_roles": roles,
            })
    eps.sort(key=lambda d: (d["start_ns"], d["episode_id"]))
    hide = _hide(eps, cfg)
    shown = [d for d in eps if d["episode_id"] not in hide]
    hidden = [d for d in eps if d["episode_id"] in hide]
    for name, part in (("truth", shown), ("truth_hidden", hidden)):
        with open(out / f"{name}.csv", "w", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(["episode_id", "pattern", "label", "trader", "accounts", "symbol",
                        "start_ts", "end_ts", "order_ids"])
            for d in part:
                w.writerow([d["episode_id"], d["pattern"], d["label"], d["trader"],
                            ";".join(d["accounts"]), d["symbol"], d["start_ts"], d["end_ts"],
                            ";".join(d["order_ids"])])
        with open(out / f"{name}_orders.csv", "w", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(["episode_id", "order_id", "role"])
            for d in part:
                for o, r in d["order_roles"].items():
                    w.writerow([d["episode_id"], o, r])
    for d in eps:
        del d["order_roles"]
    return shown, hidden
