"""Frozen entry point of the `surveil` bundle.

In a PyInstaller app ``sys.executable`` is this program, and Ray (plus multiprocessing, joblib/loky)
starts its helpers and workers as ``sys.executable [python flags] script.py|-m mod|-c code ...``.
Those invocations are recognised here and run with ``runpy`` exactly as CPython would; every
other invocation goes to the product program (``tui.launch.main``: the CLI plus the console).

Safety: a process started by the app (marker env var set by the CLI / probe) whose arguments are
not a recognised interpreter invocation exits with status 3 instead of re-entering ``main()``,
which could otherwise start Ray again and fork-bomb the machine.
"""

from __future__ import annotations

import contextlib
import os
import runpy
import sys

CHILD_MARKER = "SURVEIL_APP_PROCESS"
# Interpreter flags Ray/multiprocessing/loky pass; behaviour is already fixed in a frozen app.
_NOARG_FLAGS = set("uSsEBOIqbRdiv")
_ARG_FLAGS = {"-X", "-W"}


def _die(msg: str) -> None:
    sys.stderr.write(f"surveil (frozen): {msg}\n")
    raise SystemExit(3)


def _bundle_root() -> str:
    return os.path.realpath(getattr(sys, "_MEIPASS", os.path.dirname(os.path.abspath(__file__))))


def _module_for_script(path: str) -> str | None:
    """Map a ``.../_internal/ray/foo/bar.py`` path inside the bundle to ``ray.foo.bar``."""
    real = os.path.realpath(path)
    root = _bundle_root()
    if not real.startswith(root + os.sep) or not real.endswith(".py"):
        return None
    rel = os.path.relpath(real, root)[: -len(".py")]
    parts = rel.split(os.sep)
    if parts[-1] == "__main__":
        parts = parts[:-1]
    if not all(p.isidentifier() for p in parts):
        return None
    return ".".join(parts)


def _looks_like_python(argv: list[str]) -> bool:
    if not argv:
        return False
    a = argv[0]
    if a in ("-m", "-c") or a in _ARG_FLAGS or a.endswith(".py"):
        return True
    if a.startswith("-X") or a.startswith("-W") or a.startswith("-c") or a.startswith("-m"):
        return len(a) > 2 and not a.startswith("--")
    return len(a) > 1 and a[0] == "-" and a[1] != "-" and set(a[1:]) <= _NOARG_FLAGS


def run_python_invocation(argv: list[str]) -> None:
    """Emulate ``python [flags] (script | -m mod | -c code) args...``; never returns normally."""
    i = 0
    unbuffered = False
    while i < len(argv):
        a = argv[i]
        if a in _ARG_FLAGS:
            i += 2
            continue
        if (a.startswith("-X") or a.startswith("-W")) and len(a) > 2:
            i += 1
            continue
        if a.startswith("-c") or a.startswith("-m"):
            break
        if len(a) > 1 and a[0] == "-" and a[1] != "-" and set(a[1:]) <= _NOARG_FLAGS:
            unbuffered = unbuffered or "u" in a
            i += 1
            continue
        break
    if unbuffered:
        os.environ["PYTHONUNBUFFERED"] = "1"
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.reconfigure(line_buffering=True, write_through=True)
    rest = argv[i:]
    if not rest:
        _die("interactive interpreter is not available in the bundle")
    head = rest[0]
    if head.startswith("-m"):
        mod, args = (head[2:], rest[1:]) if len(head) > 2 else (rest[1], rest[2:])
        sys.argv = [mod, *args]
        runpy.run_module(mod, run_name="__main__", alter_sys=True)
    elif head.startswith("-c"):
        code, args = (head[2:], rest[1:]) if len(head) > 2 else (rest[1], rest[2:])
        sys.argv = ["-c", *args]
        exec(
            compile(code, "<string>", "exec"),
            {"__name__": "__main__", "__builtins__": __builtins__},
        )
    else:
        mod = _module_for_script(head)
        sys.argv = [head, *rest[1:]]
        if mod is not None:
            # Ray puts the script's directory first on sys.path (e.g. the runtime-env agent's
            # vendored aiohttp lives next to it); mimic CPython.
            sys.path.insert(0, os.path.dirname(os.path.realpath(head)))
            runpy.run_module(mod, run_name="__main__", alter_sys=True)
        elif os.path.isfile(head) and os.environ.get("SURVEIL_ALLOW_SCRIPTS") == "1":
            runpy.run_path(head, run_name="__main__")
        else:
            _die(f"refusing to run script outside the bundle: {head!r}")
    raise SystemExit(0)


def _secure_defaults() -> None:
    """Applied to every frozen process before Ray can be imported (explicit env still wins)."""
    env = os.environ
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # nothing phoned home
    env.setdefault("RAY_USAGE_STATS_PROMPT_ENABLED", "0")
    # Keeps Ray's node IP at 127.0.0.1 so that all its servers bind to loopback only.
    env.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def main() -> None:
    import multiprocessing

    _secure_defaults()

    multiprocessing.freeze_support()
    argv = sys.argv[1:]
    if _looks_like_python(argv):
        run_python_invocation(argv)
    # A child of the app with arguments we do not understand: never start the CLI again.
    if (
        os.environ.get(CHILD_MARKER) == "1"
        and os.environ.get("SURVEIL_ALLOW_REENTRY") != "1"
        and (not argv or argv[0] not in _SAFE_CHILD_COMMANDS)
    ):
        _die(f"unrecognised child invocation: {sys.argv!r}")
    if argv and argv[0] == "--bundle-selftest":
        # Hidden diagnostic: Ray workers + numba + pyarrow + sklearn, without the product code.
        import probe

        raise SystemExit(probe.main(argv[1:]))
    from tui.launch import main as cli_main

    raise SystemExit(cli_main())


#: CLI commands a child process of the app may legitimately run (cheap, never start Ray).
_SAFE_CHILD_COMMANDS = {"version", "--version", "--help", "-h"}

if __name__ == "__main__":
    main()
