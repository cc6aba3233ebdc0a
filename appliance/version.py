"""What code is running: the package version plus the git commit, recorded with every run."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

from appliance import __version__


@functools.cache
def git_commit() -> str:
    """The commit this code came from: baked in by the bundle build, else asked of git."""
    try:
        from appliance import _build_info  # type: ignore[attr-defined]  # written by make bundle

        return str(_build_info.GIT_COMMIT)
    except ImportError:
        pass
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
            capture_output=True, text=True, timeout=5, check=False,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def code_version() -> str:
    """``<version>+<commit>``, e.g. ``0.1.0+3f2a9c1b7d0e``."""
    return f"{__version__}+{git_commit()}"


#: Distributions whose versions are reported by ``surveil version``.
REPORTED = ("pyarrow", "ray", "numba", "llvmlite", "numpy", "scikit-learn", "textual", "apsw",
            "rich")


def build_info() -> dict[str, object]:
    """Version, commit, Python and the versions of the libraries that decide results."""
    import platform
    import sys
    from importlib import metadata

    deps = {}
    try:
        from appliance import _build_info  # type: ignore[attr-defined]

        deps = dict(_build_info.DEPENDENCIES)
    except ImportError:
        for name in REPORTED:
            try:
                deps[name] = metadata.version(name)
            except metadata.PackageNotFoundError:
                deps[name] = None
    return {
        "version": __version__,
        "commit": git_commit(),
        "code_version": code_version(),
        "python": platform.python_version(),
        "frozen": bool(getattr(sys, "frozen", False)),
        "dependencies": deps,
    }
