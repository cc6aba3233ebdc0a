"""The headless core never loads the console: the nightly job must start without Textual."""

import subprocess
import sys

HEADLESS = ["appliance.cli", "appliance.pipeline", "appliance.service", "appliance.ingest",
            "appliance.demo", "connectors"]


def test_headless_modules_do_not_import_textual():
    code = ("import sys\n" + "".join(f"import {m}\n" for m in HEADLESS) +
            "bad = [m for m in sys.modules if m.split('.')[0] in ('textual', 'tui')]\n"
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_help_does_not_import_heavy_libraries():
    code = ("import sys\nfrom appliance.cli import build_parser\nbuild_parser()\n"
            "heavy = ('pyarrow', 'ray', 'numba', 'sklearn')\n"
            "print(','.join(m for m in heavy if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_the_program_entry_point_loads_textual_only_for_the_console():
    code = ("import sys\nimport tui.launch\nfrom appliance.cli import build_parser\n"
            "build_parser()\nprint('textual' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_core_cli_alone_has_no_console(capsys):
    from appliance.cli import main

    assert main(["--config", "/nonexistent.toml", "console"]) == 2
    assert "console is not part of this installation" in capsys.readouterr().err
