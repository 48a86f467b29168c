"""Keep freed tensor memory inside the process on Linux glibc.

By default glibc serves large blocks with mmap and returns them to the OS on free, so every
training step faults the same activations back in (about a million page faults a step on CPU).
Serving everything from the heap and never trimming it keeps those pages mapped.

A heap that is never trimmed fragments, though: the head's logits change size every step (the
number of masked tokens varies), and freed blocks between live ones pile up as resident memory.
`release_free_memory`, called every 50 training steps on CPU, hands the pages of free blocks back
(malloc_trim also releases whole free pages inside the heap, not only at its top), so RSS stays
flat while the steps in between still find their pages mapped.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4


def _libc():
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def release_free_memory() -> bool:
    """Return the pages of freed heap blocks to the OS; False where glibc is not in use."""
    libc = _libc()
    try:
        return libc is not None and bool(libc.malloc_trim(0))
    except AttributeError:
        return False


def tune_allocator() -> bool:
    """Returns True when glibc accepted the settings; a no-op (False) elsewhere."""
    libc = _libc()
    try:
        return (
            libc is not None
            and bool(libc.mallopt(M_MMAP_MAX, 0))
            and bool(libc.mallopt(M_TRIM_THRESHOLD, 1 << 30))
        )
    except AttributeError:
        return False
