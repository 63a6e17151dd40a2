"""A subscription to one pub/sub channel of the state store (StateStore.subscribe makes
them): its messages as an async iterator of JSON objects, resubscribed after a Redis
restart."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

from redis.asyncio.client import PubSub
from redis.backoff import AbstractBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger(__name__)

TRANSIENT = (RedisConnectionError, RedisTimeoutError, OSError)
_SUB_POLL_S = 0.5


def _raise_swallowed_cancel() -> None:
    """Raise the cancel redis-py may have swallowed. It sends commands with asyncio.wait_for,
    which on Python 3.11 loses a cancel that lands as the send completes (CPython
    gh-86296), and it answers a poll whose timeout races a cancel with None: the task is
    left "cancelling" and, unchecked, this loop polled on for ever and whoever awaited the
    task (a role's stop, a test runner's loop teardown) hung with it."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class ChannelSubscription:
    """The messages of one channel, decoded from JSON; use `async with` or aclose().

    A message published while nobody is subscribed is lost (pub/sub queues nothing), so
    `await start()` (or enter the context) before anything that expects a reply. After a
    Redis restart the channel is subscribed again, with backoff, for as long as it takes;
    messages published during the outage are lost.
    """

    def __init__(
        self,
        pubsub: PubSub,
        channel_key: str,
        backoff: AbstractBackoff,
        on_close: Callable[[ChannelSubscription], None],
    ) -> None:
        self._pubsub = pubsub
        self._key = channel_key
        self._backoff = backoff
        self._on_close = on_close
        self._started = False
        self._closed = False

    async def start(self) -> None:
        if not self._started:
            await self._pubsub.subscribe(self._key)
            _raise_swallowed_cancel()
            self._started = True

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._on_close(self)
            await self._pubsub.aclose()  # type: ignore[no-untyped-call]

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __aiter__(self) -> ChannelSubscription:
        return self

    async def __anext__(self) -> dict[str, Any]:
        failures = 0
        while not self._closed:
            try:
                await self.start()
                # A bounded wait, so that aclose() from another task ends this loop.
                msg = await self._pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=_SUB_POLL_S
                )
                _raise_swallowed_cancel()
            except TRANSIENT as exc:
                _raise_swallowed_cancel()
                if self._closed:
                    break
                failures = min(failures + 1, 16)  # the backoff's 2**n must stay a float
                log.debug("subscription %s: %s; retrying", self._key, exc)
                await asyncio.sleep(self._backoff.compute(failures))
                continue
            failures = 0
            if msg is not None and msg["type"] == "message":
                try:
                    return dict(json.loads(msg["data"]))
                except (ValueError, TypeError):
                    log.warning("dropped a non-JSON-object message on %s", self._key)
        raise StopAsyncIteration
