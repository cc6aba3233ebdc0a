"""Progress for long commands: readable lines on a terminal, JSON log lines otherwise.

Both go to stderr so that stdout carries only the command's data (and ``--json`` stays parseable).
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from appliance.timefmt import now_iso


class Reporter:
    """Call ``reporter(event, fields)`` at each stage; ``quiet`` silences terminal chatter."""

    def __init__(self, fmt: str = "auto", quiet: bool = False) -> None:
        tty = sys.stderr.isatty()
        self.json = fmt == "json" or (fmt == "auto" and not tty)
        self.quiet = quiet
        self.t0 = time.perf_counter()

    def __call__(self, event: str, fields: dict[str, Any]) -> None:
        if self.json:
            line = {"ts": now_iso(), "level": "info", "event": event, **fields}
            print(json.dumps(line, default=str), file=sys.stderr, flush=True)
        elif not self.quiet:
            elapsed = time.perf_counter() - self.t0
            detail = " ".join(f"{k}={v}" for k, v in fields.items() if not isinstance(v, dict))
            print(f"[{elapsed:6.1f}s] {event.replace('_', ' ')} {detail}".rstrip(),
                  file=sys.stderr, flush=True)
