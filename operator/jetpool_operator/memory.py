"""Keep the operator's resident memory in proportion to its pools, not its threads.

glibc gives threads that contend for malloc arenas of their own (up to eight per core), and a
Python heap spread over many arenas returns little to the OS: with its API-call threads the
operator held tens of MB more at a thousand pools than its objects need. Two arenas serve an
event loop plus blocking API calls without measurable contention.

Large buffers (a page of the stream listing is a megabyte of JSON, every second) go to mmap
at a fixed threshold: glibc's default raises the threshold after each such free, after which
those buffers land in the heap and pin it.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
from typing import Any

log = logging.getLogger(__name__)

M_ARENA_MAX = -8
M_MMAP_THRESHOLD = -3
"""glibc's mallopt() parameters (malloc.h)."""
ARENAS = 2
MMAP_THRESHOLD_BYTES = 256 * 1024
TRIM_INTERVAL_SECONDS = 15.0


def limit_malloc_arenas(arenas: int = ARENAS) -> bool:
    """Call before threads start; True when glibc took it (other C libraries: no-op)."""
    mallopt = _libc_function("mallopt")
    if mallopt is None:
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    applied = bool(mallopt(M_ARENA_MAX, arenas))
    applied = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and applied
    log.debug("malloc arenas limited to %d, mmap threshold fixed: %s", arenas, applied)
    return applied


def _libc_function(name: str) -> Any:
    """The C library's ``name`` (a ctypes function), or None where it has none."""
    try:
        return getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError):
        return None


async def return_freed_memory(interval: float = TRIM_INTERVAL_SECONDS) -> None:
    """Every ``interval``, hand the pages Python freed back to the OS (glibc ``malloc_trim``).

    A burst (a thousand pools created, a controller-manager catching up on their Deployments)
    leaves the heap full of freed chunks that glibc keeps; trimming brings resident memory back
    to what the pools hold. It takes milliseconds; elsewhere than glibc it does nothing.
    """
    trim = _libc_function("malloc_trim")
    if trim is None:
        return
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    while True:
        await asyncio.sleep(interval)
        trim(0)
