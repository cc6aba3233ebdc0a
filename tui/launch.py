"""The ``surveil`` program: the headless CLI plus the console. The composition root lives here,
in the console's package, so that ``appliance`` never imports the console; Textual itself is
imported only when ``surveil console`` runs."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any


def _open_console(service: Any) -> int:
    from tui.app import run_console

    return run_console(service)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``surveil`` console script and of the frozen bundle."""
    from appliance.cli import main as cli_main

    return cli_main(argv, console=_open_console)


if __name__ == "__main__":
    sys.exit(main())
