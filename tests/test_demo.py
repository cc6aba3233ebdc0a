"""`surveil demo` end to end: simulated day → ingest → Ray run → alerts that find the injected
spoofing episodes."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

SURVEIL = str(Path(sys.executable).with_name("surveil"))


@pytest.mark.slow
def test_demo_alerts_cover_the_injected_spoofing_episodes(tmp_path):
    out = subprocess.run([SURVEIL, "demo", "--dir", str(tmp_path / "demo"), "--json"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout)
    assert result["summary"]["mode"] == "ray"
    for r in result["ingest"]:
        assert r["rows"] == r["accepted"] + r["quarantined"] + r["ignored"]
    spoofs = [e for e in result["episodes"] if e["pattern"] == "spoofing"]
    assert len(spoofs) >= 3
    found = [e for e in spoofs if e["alert_id"] is not None]
    assert len(found) >= 3 and len(found) / len(spoofs) >= 0.5
    spoof_traders = {e["trader"] for e in spoofs}
    top = result["alerts"][0]
    assert top["detector"] == "spoofing" and top["trader"] in spoof_traders
    # stderr is JSON log lines when not on a terminal
    for line in out.stderr.splitlines():
        if line.startswith("{"):
            json.loads(line)
