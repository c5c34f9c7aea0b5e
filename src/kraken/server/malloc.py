"""Memory freed goes back to the system: large blocks are mapped, not kept in the heap.

A connection that closes in the middle of an 8 MiB data block frees the 256 KiB
pieces it was received in. glibc's malloc maps blocks of 128 KiB and more with
``mmap`` at first, but each such block freed raises that threshold to its own size
(up to 32 MiB), after which the pieces come from the heap, where a freed block
is kept for reuse (and often cannot be returned for the blocks around it): two
rounds of 64 such connections left a server at 211 MiB of RSS, not its 42 MiB.
Fixing the threshold (``M_MMAP_THRESHOLD``, which also turns off its rise) keeps
every large block mapped and returned when freed, as the environment variable
``MALLOC_MMAP_THRESHOLD_`` would; the same run ends at 49 MiB. The cost is an
``mmap`` and ``munmap`` per large block, small beside filling it.

Only glibc's malloc has ``mallopt``; elsewhere this does nothing.
"""

from __future__ import annotations

import ctypes
import logging

log = logging.getLogger("kraken.server")

M_MMAP_THRESHOLD = -3  # glibc's malloc.h
LARGE = 128 * 1024  # bytes: blocks from this size up are mapped (glibc's starting value)


def map_large_blocks(threshold: int = LARGE) -> bool:
    """Have malloc map every block of ``threshold`` bytes and more; False where it
    cannot (not glibc)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's own symbols: its C library's
    except (OSError, AttributeError):
        log.debug("no mallopt: large blocks freed may stay in the heap")
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, threshold))
