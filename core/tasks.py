"""Stopping background tasks for certain."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

RECANCEL_S = 0.2


async def cancel_and_wait(tasks: Iterable[asyncio.Task[object]], budget_s: float = 2.0) -> None:
    """Cancel the tasks and wait until they have ended, cancelling again any that is still
    running after RECANCEL_S: on Python 3.11 asyncio.wait_for (which redis-py sends every
    command with) loses a cancel that lands as the wrapped call completes (CPython
    gh-86296), and a loop that lost it runs on. Gives up after budget_s; the caller's stop
    then goes on rather than hang."""
    pending = {t for t in tasks if not t.done()}
    deadline = asyncio.get_running_loop().time() + budget_s
    while pending:
        for task in pending:
            task.cancel()
        left = deadline - asyncio.get_running_loop().time()
        if left <= 0:
            return
        _, pending = await asyncio.wait(pending, timeout=min(RECANCEL_S, left))
