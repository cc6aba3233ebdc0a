"""Exit codes of every ``surveil`` command (documented in docs/cli.md)."""

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0  # done
    INTERNAL = 1  # a bug: the message says how to get a traceback
    USAGE = 2  # bad arguments or configuration (unknown key, wrong type, missing file)
    INPUT = 3  # an input file was refused as a whole (unreadable, missing required column)
    NOT_FOUND = 4  # the alert (or other object) asked for does not exist
    STORE = 5  # the store cannot be opened (missing, locked, corrupt, newer schema)
    INTERRUPTED = 130  # Ctrl-C
