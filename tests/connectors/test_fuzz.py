"""Mutated fixtures never crash a connector and always keep the record balance."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest

from connectors import get_connector
from connectors.base import InputRefused

DATA = Path(__file__).resolve().parents[1] / "data"
CASES = [
    ("fix", "fix/session.log"),
    ("fix", "fix/fix44_pipe.txt"),
    ("cat-json", "cat-json/events.ndjson"),
    ("vendor", "vendor/example-delimited.csv"),
    ("vendor", "vendor/example-fixed-width.txt"),
    ("lobster", "lobster/XYZ_2024-01-05_34200000_57600000_message_2.csv"),
]


def mutate(data: bytes, rng: random.Random) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        op = rng.randrange(7)
        i = rng.randrange(len(b) + 1)
        if op == 0 and b:  # flip a byte
            b[min(i, len(b) - 1)] = rng.randrange(256)
        elif op == 1:  # insert hostile bytes
            b[i:i] = rng.choice([b"\x00", b"\r", b"\n", b"\xff\xfe", b'"', b"\x01", b"|",
                                 b"NaN", b"1e999", b"9" * 40, b"\xef\xbb\xbf", b"^A", b"=", b";"])
        elif op == 2:  # truncate
            del b[i:]
        elif op == 3:  # duplicate a slice
            j = rng.randrange(len(b) + 1)
            b[i:i] = b[min(i, j) : max(i, j)][:500]
        elif op == 4 and b:  # delete a slice
            del b[i : i + rng.randrange(1, 40)]
        elif op == 5:  # huge line
            b[i:i] = b"x" * 100_000
        else:  # CR-only line endings
            b = bytearray(bytes(b).replace(b"\n", b"\r"))
    return bytes(b)


@pytest.mark.parametrize(("fmt", "rel"), CASES, ids=[c[1] for c in CASES])
def test_mutations_never_crash(tmp_path, fmt, rel):
    src = DATA / rel
    rng = random.Random(rel)
    for k in range(40):
        target = tmp_path / src.name
        target.write_bytes(mutate(src.read_bytes(), rng))
        for sib in src.parent.glob("*"):  # sidecars (mapping, orderbook) come along unchanged
            if sib != src and not (tmp_path / sib.name).exists():
                shutil.copy(sib, tmp_path / sib.name)
        try:
            result = get_connector(fmt).read(target, "f")
        except InputRefused:
            continue  # refusing a whole file is allowed (e.g. LOBSTER line counts differ)
        result.check_balance()
        assert sum(result.reasons.values()) == result.quarantined, k
