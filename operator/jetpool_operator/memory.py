"""Keep the operator's resident memory in proportion to its pools, not its threads.

glibc gives threads that contend for malloc arenas of their own (up to eight per core), and a
Python heap spread over many arenas returns little to the OS: with its API-call threads the
operator held tens of MB more at a thousand pools than its objects need. Two arenas serve an
event loop plus blocking API calls without measurable contention.
"""

from __future__ import annotations

import ctypes
import logging

log = logging.getLogger(__name__)

M_ARENA_MAX = -8
"""glibc's mallopt() parameter (malloc.h)."""
ARENAS = 2


def limit_malloc_arenas(arenas: int = ARENAS) -> bool:
    """Call before threads start; True when glibc took it (other C libraries: no-op)."""
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    applied = bool(mallopt(M_ARENA_MAX, arenas))
    log.debug("malloc arenas limited to %d: %s", arenas, applied)
    return applied
