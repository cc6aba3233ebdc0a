"""Dirty renderer: the firm's order events the way real vendors write them, plus every defect.

Formats: ``fix`` (QuickFIX file-log lines, FIX 4.2/4.4, SOH or ``|``), ``vendor-a`` (``;``
delimited, US/Central local time, B/S), ``vendor-b`` (tab delimited, shuffled columns,
Europe/Berlin local time, K/V sides, day-first dates, decimal commas) and ``fixed-width``
(103-character records, US/Eastern local time, implied decimals). With ``dirty`` > 0 the renderer
injects defects at that rate per row and lists each one in ``defects.csv`` (line in the rendered
file, kind, field, canonical row index in ``clean/orders.csv``, detail).

Every defect is one a reader can repair or must quarantine (``tests/test_dirty_roundtrip.py``):
repaired: ``duplicate`` (a resend: quarantined as ``duplicate``, the event itself is kept),
``reordered``, ``bad_symbol`` (a spelling the symbology resolves), ``extra_field`` in FIX (an
unknown user-defined tag); quarantined: ``garbage``, ``truncated``, ``missing_field`` (a field the
event needs; in FIX a required ExecutionReport tag, which the reader may also inherit from the
order), ``extra_field`` in the text dialects (one column too many / a record longer than LRECL).
"""

from __future__ import annotations

import csv
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np

from . import engine as E

EXEC_TYPE_44 = {E.EV_NEW: "0", E.EV_MODIFY: "5", E.EV_CANCEL: "4", E.EV_FILL: "F",
                E.EV_REJECT: "8"}
ORD_STATUS = {E.EV_NEW: "0", E.EV_MODIFY: "5", E.EV_CANCEL: "4", E.EV_REJECT: "8"}
EXT = {"fix": "fix.log", "vendor-a": "vendor_a.csv", "vendor-b": "vendor_b.tsv",
       "fixed-width": "fixed_width.txt"}
TZ = {"vendor-a": "America/Chicago", "vendor-b": "Europe/Berlin", "fixed-width": "America/New_York"}
DEFECT_KINDS = ("garbage", "truncated", "duplicate", "reordered", "missing_field", "bad_symbol",
                "extra_field")
#: fixed-width record length without the newline (the banner's LRECL counts the newline)
FW_LEN = 103
#: FIX tags a missing_field defect may remove: required in every ExecutionReport, or the trader
FIX_NEEDED = ("50", "37", "17", "150", "39", "54", "55", "151")
FIX_NEEDED_FILL = ("32", "31")


def make_renderer(cfg, pop, out: Path, t0: int, firm: str) -> Renderer:
    return Renderer(cfg, pop, out, t0, firm)


class Renderer:
    def __init__(self, cfg, pop, out: Path, t0: int, firm: str):
        self.cfg = cfg
        self.fmt = cfg.fmt
        self.pop = pop
        self.t0 = t0
        self.firm = firm
        self.path = out / f"orders.{EXT[self.fmt]}"
        self.f = open(self.path, "wb")  # noqa: SIM115
        self.rng = np.random.default_rng([cfg.seed, 4242])
        self.line = 0
        self.row = 0
        self.seq = 0
        self.defects: list[tuple] = []
        self.prev: bytes | None = None
        self.held: tuple[bytes, int] | None = None
        self.sep = "\x01" if cfg.fix_sep == "soh" else "|"
        self.fixv = "FIX.4.2" if cfg.fix_version == "4.2" else "FIX.4.4"
        tz = TZ.get(self.fmt)
        self.off_ns = 0
        if tz:
            d = datetime.fromtimestamp(t0 // 10**9, UTC).astimezone(ZoneInfo(tz))
            self.off_ns = int(d.utcoffset().total_seconds()) * 10**9
        # one alias per trader (vendors rarely use the canonical id)
        self.alias = [t.aliases[(i + cfg.seed) % len(t.aliases)] for i, t in enumerate(pop.traders)]
        if self.fmt == "fixed-width":  # 8-character user ids on the mainframe: the short alias
            self.alias = [min(t.aliases, key=len) for t in pop.traders]
        self.alt = {i.symbol: alt_symbol(i.symbol) for i in pop.instruments}
        self.syms = [i.symbol for i in pop.instruments]
        self.header()

    # -- helpers
    def px(self, inst: int, lvl: int) -> str:
        i = self.pop.instruments[inst]
        q = (i.pbase + lvl) * i.tickq
        if i.dec == 0:
            return str(q)
        return f"{q // 10**i.dec}.{q % 10**i.dec:0{i.dec}d}"

    def emit(self, b: bytes) -> None:
        self.f.write(b)
        self.line += 1

    def header(self) -> None:
        if self.fmt == "vendor-a":
            self.emit(b"TradeDate;Time;Trader;Acct;Sym;B/S;Action;OrdId;Px;Qty;Leaves;FillQty;"
                      b"FillPx;Exch;Desk\n")
        elif self.fmt == "vendor-b":
            self.emit(b"Zeit\tAuftrag\tSeite\tArt\tKonto\tHaendler\tWP\tMenge\tLimit\tRest\t"
                      b"AusfMenge\tAusfKurs\n")
        elif self.fmt == "fixed-width":
            self.emit(b"*ORDLOG V2.1  RECFMT=FB LRECL=104 FIRM=" + self.firm.encode() + b"\n")

    # -- one canonical row -> list of fields / one line
    def fields(self, r) -> list[str]:
        inst = int(r[E.E_INST])
        ts = self.t0 + int(r[E.E_TS])
        ev = int(r[E.E_EV])
        side = int(r[E.E_SIDE])
        oid = f"O{int(r[E.E_OID]):012d}"
        acc = self.pop.accounts[int(r[E.E_ACC])][0]
        trd = self.alias[int(r[E.E_TRD])]
        sym = self.syms[inst]
        price = self.px(inst, int(r[E.E_LVL]))
        qty, leaves = str(int(r[E.E_QTY])), str(int(r[E.E_LEAVES]))
        exq = str(int(r[E.E_EXQ])) if ev == E.EV_FILL else ""
        expx = self.px(inst, int(r[E.E_EXLVL])) if ev == E.EV_FILL else ""
        venue = self.pop.instruments[inst].venue
        if self.fmt == "vendor-a":
            lt = datetime.fromtimestamp((ts + self.off_ns) // 10**9, UTC)
            frac = ((ts + self.off_ns) % 10**9) // 1000
            return [lt.strftime("%Y%m%d"), lt.strftime("%H:%M:%S") + f".{frac:06d}", trd, acc,
                    sym, "BS"[side], "NMCFR"[ev], oid, price, qty, leaves, exq, expx, venue,
                    "D" + str(int(r[E.E_TRD]) % 7)]
        if self.fmt == "vendor-b":
            lt = datetime.fromtimestamp((ts + self.off_ns) // 10**9, UTC)
            frac = ((ts + self.off_ns) % 10**9) // 1000
            art = ("NEU", "AEND", "STORNO", "AUSF", "ABGEL")[ev]
            return [lt.strftime("%d.%m.%Y %H:%M:%S") + f",{frac:06d}", oid, "KV"[side], art, acc,
                    trd, sym, qty, price.replace(".", ","), leaves, exq, expx.replace(".", ",")]
        if self.fmt == "fixed-width":
            lt = datetime.fromtimestamp((ts + self.off_ns) // 10**9, UTC)
            ms = ((ts + self.off_ns) % 10**9) // 10**6
            i = self.pop.instruments[inst]
            ip = (i.pbase + int(r[E.E_LVL])) * i.tickq
            ep = (i.pbase + int(r[E.E_EXLVL])) * i.tickq if ev == E.EV_FILL else 0
            return [lt.strftime("%y%m%d"), lt.strftime("%H%M%S") + f"{ms:03d}", f"{trd[:8]:<8}",
                    f"{acc[:8]:<8}", f"{sym[:6]:<6}", "BS"[side], "NMCFR"[ev],
                    f"{oid:>13}", f"{ip:>10d}", f"{int(r[E.E_QTY]):>5d}",
                    f"{int(r[E.E_LEAVES]):>5d}", f"{int(r[E.E_EXQ]) if ev == E.EV_FILL else 0:>5d}",
                    f"{ep:>10d}", str(i.dec)]
        # FIX execution report
        st = datetime.fromtimestamp(ts // 10**9, UTC).strftime("%Y%m%d-%H:%M:%S")
        stamp = st + f".{(ts % 10**9) // 1000:06d}"
        if ev == E.EV_FILL:
            etype = ("2" if leaves == "0" else "1") if self.fixv == "FIX.4.2" else "F"
            status = "2" if leaves == "0" else "1"
        else:
            etype = EXEC_TYPE_44[ev]
            status = ORD_STATUS[ev]
        self.seq += 1
        body = [("35", "8"), ("49", venue), ("56", self.firm), ("34", str(self.seq)),
                ("52", stamp), ("50", trd), ("1", acc), ("11", oid), ("37", oid),
                ("17", f"X{self.seq:09d}"), ("150", etype), ("39", status), ("55", sym),
                ("54", "12"[side]), ("44", price), ("38", qty), ("151", leaves),
                ("60", stamp), ("207", venue)]
        if ev == E.EV_FILL:
            body += [("32", exq), ("31", expx)]
        return ["=".join(kv) for kv in body]

    def join(self, fl: list[str], ts: int) -> bytes:
        if self.fmt == "vendor-a":
            return (";".join(fl) + "\n").encode()
        if self.fmt == "vendor-b":
            return ("\t".join(fl) + "\n").encode()
        if self.fmt == "fixed-width":
            return (f"{' '.join(fl):<{FW_LEN}}" + "\n").encode()
        sep = self.sep
        body = sep.join(fl) + sep
        head = f"8={self.fixv}{sep}9={len(body)}{sep}"
        msg = head + body
        ck = sum(msg.replace("|", "\x01").encode()) % 256
        st = datetime.fromtimestamp(ts // 10**9, UTC).strftime("%Y%m%d-%H:%M:%S")
        return f"{st}.{(ts % 10**9) // 1000:06d} : {msg}10={ck:03d}{sep}\n".encode()

    def defect(self, kind: str, field: str, row: int, detail: str, line: int | None = None):
        self.defects.append((self.line + 1 if line is None else line, kind, field, row, detail))

    def needed(self, fl: list[str], ev: int) -> list[int]:
        """Positions of the fields the event needs (a missing_field defect blanks one)."""
        if self.fmt == "fix":
            tags = FIX_NEEDED + (FIX_NEEDED_FILL if ev == E.EV_FILL else ())
            return [k for k, x in enumerate(fl) if x.split("=", 1)[0] in tags]
        n = {"vendor-a": 13, "vendor-b": 12, "fixed-width": 14}[self.fmt]
        fills = {"vendor-a": (11, 12), "vendor-b": (10, 11), "fixed-width": (11, 12)}[self.fmt]
        return [k for k in range(n) if fl[k].strip() and (ev == E.EV_FILL or k not in fills)]

    def write(self, rows: np.ndarray) -> None:
        rate = self.cfg.dirty
        u = self.rng.random((len(rows), 2))
        for i in range(len(rows)):
            r = rows[i]
            row = self.row
            self.row += 1
            fl = self.fields(r)
            ts = self.t0 + int(r[E.E_TS])
            kind = None
            if rate > 0 and u[i, 0] < rate:
                kind = DEFECT_KINDS[int(u[i, 1] * len(DEFECT_KINDS))]
            if kind == "missing_field":
                cand = self.needed(fl, int(r[E.E_EV]))
                j = cand[int(self.rng.integers(len(cand)))]
                if self.fmt == "fix":
                    self.defect(kind, fl[j].split("=")[0], row, "tag removed")
                    del fl[j]
                else:
                    self.defect(kind, str(j), row, "field blanked")
                    fl[j] = " " * len(fl[j]) if self.fmt == "fixed-width" else ""
            elif kind == "bad_symbol":
                j = next(k for k, x in enumerate(fl) if x.strip() in self.syms or
                         x.startswith("55="))
                old = fl[j]
                s = old.split("=")[-1].strip()
                bad = self.alt[s] if self.rng.random() < 0.5 else s.lower()
                fl[j] = old.replace(s, bad)
                if self.fmt == "fixed-width":
                    fl[j] = f"{fl[j].strip()[:6]:<6}"
                self.defect(kind, "symbol", row, f"{s}->{bad}")
            elif kind == "extra_field":
                x = str(int(self.rng.integers(1000)))
                if self.fmt == "fix":  # an unknown user-defined tag: valid FIX, ignored
                    fl.insert(len(fl) - 1, f"{5000 + int(x)}=X{x}")
                    self.defect(kind, str(5000 + int(x)), row, "unknown user-defined tag")
                else:
                    fl.append("EXTRA" + x)
                    self.defect(kind, str(len(fl) - 1), row, "unexpected trailing column")
            line = self.join(fl, ts)
            if kind == "garbage":
                n = int(self.rng.integers(5, 60))
                junk = bytearray(self.rng.integers(0, 256, n, np.uint8).tobytes())
                junk[0] = 0x80 | (junk[0] & 0x3F)  # a stray continuation byte: never UTF-8
                junk = bytes(junk).replace(b"\n", b"\x00").replace(b"\r", b"\x00")
                self.defect("garbage", "", -1, f"{len(junk)} binary bytes")
                self.emit(junk + b"\n")
            elif kind == "truncated":
                # cut inside the record so that something the reader needs is lost: before the
                # last field separator (delimited), before the decimals column (fixed-width),
                # anywhere before the CheckSum (FIX); a cut inside an unneeded trailing field
                # would not be a defect at all
                if self.fmt == "fixed-width":
                    end = len(" ".join(fl)) - 1
                elif self.fmt == "fix":
                    end = line.rindex(b"10=") - 1  # the separator before the CheckSum
                else:
                    end = line.rindex(b";" if self.fmt == "vendor-a" else b"\t")
                lo = min(30, end - 1)  # past the time stamp: cut records rarely collide
                cut = int(self.rng.integers(lo, max(lo + 1, end)))
                line = line[:cut] + b"\n"
                self.defect(kind, "", row, f"cut at byte {cut}")
            if kind == "reordered" and self.held is None:
                self.held = (line, row)
                continue
            self.emit(line)
            if self.held is not None:
                hl, hr = self.held
                self.held = None
                self.defect("reordered", "", hr, "written after the next event")
                self.emit(hl)
            if kind == "duplicate":
                self.defect(kind, "", row, "resend of the previous line")
                dup = line
                if self.fmt == "fix":  # PossDupFlag resend: same MsgSeqNum, new 9 and 10
                    dup = self.join([fl[0], "43=Y", *fl[1:]], ts)
                self.emit(dup)

    def close(self) -> Path:
        if self.held is not None:
            hl, hr = self.held
            self.defect("reordered", "", hr, "written last")
            self.emit(hl)
            self.held = None
        self.f.close()
        p = self.path.parent / "defects.csv"
        with open(p, "w", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(["line", "kind", "field", "canonical_row", "detail"])
            w.writerows(self.defects)
        return p


def alt_symbol(sym: str) -> str:
    """The other spelling of a futures symbol: a two-digit year (ESZ6 -> ESZ26). The symbology
    file lists both (``reference/symbology.csv``)."""
    if len(sym) >= 3 and sym[-1].isdigit() and sym[-2].isalpha():
        return sym[:-1] + "2" + sym[-1]
    return sym + ".X"
