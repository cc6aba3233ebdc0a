"""Dirty renderer: deterministic bytes per dialect, and a defect list that says what is there."""

from __future__ import annotations

import csv
import hashlib

import pytest

from appliance.sim import SimConfig, simulate

DIALECTS = [("fix", "4.4", "soh"), ("fix", "4.2", "pipe"), ("vendor-a", "4.4", "soh"),
            ("vendor-b", "4.4", "soh"), ("fixed-width", "4.4", "soh")]
IDS = ["fix-4.4-soh", "fix-4.2-pipe", "vendor-a", "vendor-b", "fixed-width"]
SEP = {"vendor-a": b";", "vendor-b": b"\t"}


def _tags(raw: bytes, drop=()) -> list[str]:
    msg = raw.split(b" : ", 1)[1].decode().replace("\x01", "|")
    return [f.split("=")[0] if not drop else f for f in msg.split("|")[:-1]
            if f.split("=")[0] not in drop]


def _cfg(fmt, ver, sep, seed=21):
    return SimConfig(seed=seed, minutes=1.0, instruments=1, traders=10, fmt=fmt, dirty=0.05,
                     fix_version=ver, fix_sep=sep)


@pytest.mark.parametrize(("fmt", "ver", "sep"), DIALECTS, ids=IDS)
def test_dirty_rendering_is_deterministic_and_defects_are_true(tmp_path, fmt, ver, sep):
    a = simulate(_cfg(fmt, ver, sep), tmp_path / "a")
    b = simulate(_cfg(fmt, ver, sep), tmp_path / "b")
    for p in (a.orders_path, a.defects_path, a.clean_orders_path):
        q = b.out_dir / p.relative_to(a.out_dir)
        assert hashlib.sha256(p.read_bytes()).digest() == hashlib.sha256(q.read_bytes()).digest()
    lines = a.orders_path.read_bytes().split(b"\n")[:-1]
    with open(a.clean_orders_path, newline="") as fh:
        clean = list(csv.DictReader(fh))
    with open(a.defects_path, newline="") as fh:
        defects = list(csv.DictReader(fh))
    assert len({d["kind"] for d in defects}) == 7 and len(defects) >= 40
    fix = fmt == "fix"
    width = len(next(ln for ln in lines[1:] if not ln.startswith(b"*")))
    for d in defects:
        k, kind, row = int(d["line"]), d["kind"], int(d["canonical_row"])
        raw = lines[k - 1]
        ok_text = True
        try:
            raw.decode()
        except UnicodeDecodeError:
            ok_text = False
        if kind == "garbage":
            assert row == -1 and not ok_text
            continue
        c = clean[row]
        assert c["order_id"][1:].encode() in raw or kind in ("truncated", "missing_field"), d
        text = raw.decode()
        if kind == "truncated":
            assert (b"\x0110=" not in raw and b"|10=" not in raw) if fix else (
                raw.count(SEP[fmt]) < lines[0].count(SEP[fmt]) if fmt in SEP
                else len(raw) < 101), (d, raw)
        elif kind == "duplicate":
            prev = lines[k - 2]
            if fix:  # a PossDup resend of the line before: same fields plus 43=Y
                assert _tags(raw, drop=("9", "10", "43")) == _tags(prev, drop=("9", "10"))
                assert "43" in _tags(raw) and "43" not in _tags(prev)
            else:
                assert raw == prev
        elif kind == "reordered":  # written after the next event: earlier than the line before
            assert c["order_id"][1:] in text
        elif kind == "missing_field":
            if fix:
                assert d["field"] not in _tags(raw)
            elif fmt in SEP:
                assert raw.split(SEP[fmt])[int(d["field"])] == b""
        elif kind == "bad_symbol":
            old, new = d["detail"].split("->")
            assert old == c["symbol"] and new != old and new in text
        elif kind == "extra_field":
            if fix:
                assert d["field"] in _tags(raw)
            elif fmt in SEP:
                assert raw.count(SEP[fmt]) == lines[0].count(SEP[fmt]) + 1
            else:
                assert len(raw) > width
    # FIX messages keep valid BodyLength and CheckSum unless truncated or junk
    if fix:
        bad = {int(d["line"]) for d in defects if d["kind"] in ("truncated", "garbage")}
        for k, raw in enumerate(lines, 1):
            if k in bad:
                continue
            msg = raw.split(b" : ", 1)[1].replace(b"|", b"\x01")
            body = msg[msg.index(b"\x01", msg.index(b"9=")) + 1 : msg.rindex(b"10=")]
            assert int(msg.split(b"\x01")[1][2:]) == len(body)
            assert int(msg[-4:-1]) == sum(msg[: msg.rindex(b"10=")]) % 256


def test_some_positives_are_left_unlabelled(demo_run):
    """PU realism: a documented fraction of positives is kept out of truth.csv."""
    out = demo_run.out_dir
    hidden = demo_run.hidden_episodes
    with open(out / "truth_hidden.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["episode_id"] for r in rows] == [e["episode_id"] for e in hidden]
    assert hidden and all(e["label"] == "positive" for e in hidden)
    shown = {e["episode_id"] for e in demo_run.episodes}
    assert not shown & {e["episode_id"] for e in hidden}
    with open(out / "truth_orders.csv", newline="") as fh:
        assert not {r["episode_id"] for r in csv.DictReader(fh)} & {e["episode_id"] for e in hidden}
    for pat in {e["pattern"] for e in hidden}:
        n = sum(e["pattern"] == pat and e["label"] == "positive"
                for e in demo_run.episodes + hidden)
        assert sum(e["pattern"] == pat for e in hidden) == int(0.1 * n)
