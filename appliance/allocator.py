"""Keep freed heap memory in the processes that ingest files and score partitions.

A scoring task allocates a few dozen arrays the size of its partition. With glibc's defaults
each one above the mmap threshold is a fresh mapping whose pages fault in on first touch and go
back to the OS on free — on the VMs we measured, page faults cost up to a third of the CPU
(``../shared/PERFORMANCE.md``). Worker processes therefore serve large arrays from the heap and
keep it: the heap settles at the largest task's working set (bounded by the partition size).
Ingest does the same (a FIX read of a 76 MiB day: 46k page faults and 0.14–0.6 s of system
time per read without it, none after the first read with it): its working set is bounded by
``ingest.chunk_bytes`` for the chunked formats.
"""

from __future__ import annotations

import ctypes
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_done = False


def keep_freed_memory() -> bool:
    """Tune glibc malloc once per process (no-op elsewhere); True when the tuning applies."""
    global _done
    if _done:
        return True
    _done = True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(
            libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30))
    except (OSError, AttributeError):  # not glibc (musl): keep its defaults
        return False
