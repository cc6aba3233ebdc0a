"""``make bench``: run every benchmark in its own process (so peak memory is per benchmark)
and print one JSON line per result. Figures and commands are kept in docs/benchmarks.md."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    failed = 0
    for bench in sorted(HERE.glob("bench_*.py")):
        print(f"== {bench.stem}", file=sys.stderr, flush=True)
        done = subprocess.run([sys.executable, "-m", f"bench.{bench.stem}"], cwd=HERE.parent)
        failed += done.returncode != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
