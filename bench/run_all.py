"""``make bench``: run every benchmark in its own process (so peak memory is per benchmark)
and print one JSON line per result. Figures and commands are kept in docs/benchmarks.md.

The comparisons with DuckDB/polars need the separate bench venv (``.venv-bench``, never in
``requirements.lock``; see docs/benchmarks.md): they run with its interpreter when it exists and
are skipped, with a note, when it does not.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
#: benchmarks that import duckdb/polars: run by the bench venv's interpreter
BENCH_VENV = {"bench_spoofing_sql", "bench_ingest_peers"}
BENCH_PYTHON = ROOT / ".venv-bench" / "bin" / "python"


def main() -> int:
    failed = 0
    for bench in sorted(HERE.glob("bench_*.py")):
        python = sys.executable
        if bench.stem in BENCH_VENV:
            if not BENCH_PYTHON.exists():
                print(f"== {bench.stem}: skipped (needs {BENCH_PYTHON.relative_to(ROOT)} with "
                      "duckdb and polars, see docs/benchmarks.md)", file=sys.stderr, flush=True)
                continue
            python = str(BENCH_PYTHON)
        print(f"== {bench.stem}", file=sys.stderr, flush=True)
        done = subprocess.run([python, "-m", f"bench.{bench.stem}"], cwd=ROOT)
        failed += done.returncode != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
