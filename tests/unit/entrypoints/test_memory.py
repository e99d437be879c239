"""The operator's memory tuning is a no-op where the C library lacks it, never an error."""

from __future__ import annotations

import asyncio

from jetpool_operator.memory import limit_malloc_arenas, return_freed_memory


def test_limiting_malloc_arenas_reports_whether_the_c_library_took_it() -> None:
    assert isinstance(limit_malloc_arenas(), bool)


async def test_the_trimmer_runs_until_cancelled() -> None:
    trimmer = asyncio.create_task(return_freed_memory(interval=0.01))
    await asyncio.sleep(0.05)
    assert not trimmer.done()  # trimming raised nothing
    trimmer.cancel()
