"""Keep freed tensor memory inside the process on Linux glibc.

By default glibc serves large blocks with mmap and returns them to the OS on free, so every
training step faults the same activations back in (about a million page faults a step on CPU).
Serving everything from the heap and never trimming it keeps those pages mapped.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4


def tune_allocator() -> bool:
    """Returns True when glibc accepted the settings; a no-op (False) elsewhere."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 1 << 30))
    except (OSError, AttributeError):
        return False
