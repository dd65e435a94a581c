"""Process memory figures, for backends whose engine reports none (CPU)."""

from __future__ import annotations

import os
import resource
import sys


def peak_rss_bytes() -> int:
    """The process's peak resident set size in bytes (never below the current size)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports kilobytes, macOS bytes; the kernel updates it lazily.
    peak_bytes = int(peak) if sys.platform == "darwin" else int(peak) * 1024
    return max(peak_bytes, _statm_rss() or 0)


def current_rss_bytes() -> int:
    """The process's resident set size now, in bytes (peak where /proc is absent)."""
    current = _statm_rss()
    return current if current is not None else peak_rss_bytes()


def _statm_rss() -> int | None:
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            resident_pages = int(statm.read().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return resident_pages * os.sysconf("SC_PAGE_SIZE")
