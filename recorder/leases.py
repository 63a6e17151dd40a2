"""Recording leases of a recorder fleet (DESIGN.md §9): one writer per recording key
(stream, session), held by a Redis lease and fenced.

- A grant is "holder/epoch": the epoch comes from an INCR per key, so a later writer of a
  recording always has a higher one (storage/state.py fenced_lease).
- The holder renews its grants every ttl/3; a grant not renewed in time is lost, here too
  (its writer stops at once, whether Redis said so or cannot be reached).
- Fencing, so that a paused old writer (SIGSTOP, a long GC, a frozen VM) cannot write after
  its lease passed on: its index writes are one Lua step with the grant check
  (FencedIndex); each object put is preceded by a check of the grant (FencedStore); and a
  writer taking a recording over numbers its segments from (epoch - 1) * SEQS_PER_EPOCH
  (a new recording from 0), so the objects of two writers never share a key: a put
  already on its way when the lease passed lands on a name the new writer never uses.
- Recorders spread the work: each takes at most ceil(wanted / live recorders) keys, the
  live recorders being those whose presence (renewed with the grants) has not run out.
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import logging
import math
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

from core import presence
from recorder.index import KIND, RecordingIndex
from recorder.manifest import Manifest
from storage.objects import DEFAULT_CONTENT_TYPE, ObjectInfo, ObjectStore, PutData
from storage.state import StateStore

log = logging.getLogger(__name__)

SCOPE = "recording"
SEQS_PER_EPOCH = 1_000_000  # 46 days of 4 s segments per writer before the next one's range

Key = tuple[str, str]  # (stream id, session id; "" for a continuous recording)


class FenceLost(Exception):
    """This writer's lease on the recording passed to another (or ran out): it must stop."""


def lease_id(key: Key) -> str:
    return f"{key[0]}|{key[1]}"


@dataclass
class Grant:
    key: Key
    value: str  # "holder/epoch", as stored in Redis
    expires: float  # monotonic: not renewed by then, the grant is lost here

    @property
    def epoch(self) -> int:
        return int(self.value.rsplit("/", 1)[1])

    @property
    def first_seq(self) -> int:
        """The first segment number this writer may use."""
        return (self.epoch - 1) * SEQS_PER_EPOCH


class RecordingLeases:
    """The grants of one recorder process."""

    def __init__(self, state: StateStore, holder: str, ttl_s: float) -> None:
        self.state = state
        self.holder = holder
        self.ttl_s = ttl_s
        self.held: dict[Key, Grant] = {}

    async def announce(self) -> int:
        """Say this recorder is alive; returns how many recorders are (itself included)."""
        info = {"held": len(self.held)}
        await self.state.touch_presence(presence.RECORDER, self.holder, self.ttl_s, info)
        return max(1, len(await self.state.present(presence.RECORDER)))

    async def claim(self, wanted: Iterable[Key]) -> list[Grant]:
        """Take free keys of `wanted` up to this recorder's fair share; the new grants."""
        keys = sorted(set(wanted))
        share = math.ceil(len(keys) / await self.announce())
        mine = sum(1 for k in keys if k in self.held)
        taken: list[Grant] = []
        # each recorder tries the keys in its own order, so two rarely race for the same
        for key in sorted(keys, key=self._order):
            if mine >= share:
                break
            if key in self.held:
                continue
            grant = await self.take(key)
            if grant is not None:
                taken.append(grant)
                mine += 1
        return taken

    async def take(self, key: Key) -> Grant | None:
        """The key's lease for this recorder if it is free (or already this one's)."""
        asked = time.monotonic()
        value = await self.state.fenced_lease(SCOPE, lease_id(key), self.holder, self.ttl_s)
        if not value.startswith(f"{self.holder}/"):
            return None
        grant = self.held[key] = Grant(key, value, asked + self.ttl_s)
        return grant

    def _order(self, key: Key) -> bytes:
        return hashlib.sha256(f"{self.holder}|{lease_id(key)}".encode()).digest()

    async def renew(self) -> list[Grant]:
        """Renew every grant; the ones lost (taken by another, or out of time here)."""
        lost = []
        for key, grant in list(self.held.items()):
            asked = time.monotonic()
            try:
                kept = await self.state.renew_fenced(SCOPE, lease_id(key), grant.value, self.ttl_s)
            except Exception:  # Redis away: the grant lives on until its time here runs out
                kept = asked < grant.expires
                log.warning("recording lease %s: renewal failed", lease_id(key), exc_info=True)
            else:
                grant.expires = asked + self.ttl_s if kept else grant.expires
            if not kept or time.monotonic() >= grant.expires:
                log.error("recording lease %s lost (grant %s)", lease_id(key), grant.value)
                del self.held[key]
                lost.append(grant)
        return lost

    async def check(self, grant: Grant) -> None:
        """FenceLost unless the grant still holds its key (asked of Redis, so a writer that
        was paused past its lease learns it before it writes)."""
        if time.monotonic() >= grant.expires:
            raise FenceLost(f"recording lease {lease_id(grant.key)} ran out")
        if await self.state.lease_holder(SCOPE, lease_id(grant.key)) != grant.value:
            raise FenceLost(f"recording lease {lease_id(grant.key)} passed to another recorder")

    async def release(self, key: Key) -> None:
        grant = self.held.pop(key, None)
        if grant is not None:
            with contextlib.suppress(Exception):  # Redis away: the lease runs out instead
                await self.state.release(SCOPE, lease_id(key), grant.value)

    async def release_all(self) -> None:
        for key in list(self.held):
            await self.release(key)
        with contextlib.suppress(Exception):
            await self.state.drop_presence(presence.RECORDER, self.holder)


class FencedIndex(RecordingIndex):
    """The recording index, written only while the grant holds (one Lua step)."""

    def __init__(self, state: StateStore, grant: Grant) -> None:
        super().__init__(state)
        self.grant = grant

    async def put(self, manifest: Manifest, node: str, **extra: Any) -> None:
        record = self.record(manifest, node, **extra)
        fence = (SCOPE, lease_id(self.grant.key), self.grant.value)
        if not await self.state.put_record_fenced(KIND, manifest.recording_id, record, fence):
            raise FenceLost(f"recording lease {lease_id(self.grant.key)}: index write refused")


class FencedStore(ObjectStore):
    """An object store whose puts are made only while the grant holds."""

    def __init__(self, store: ObjectStore, leases: RecordingLeases, grant: Grant) -> None:
        self.store = store
        self.leases = leases
        self.grant = grant
        self.backend = store.backend

    @property
    def label(self) -> str:
        return self.store.label

    async def put(
        self, key: str, data: PutData, content_type: str = DEFAULT_CONTENT_TYPE
    ) -> ObjectInfo:
        await self.leases.check(self.grant)
        return await self.store.put(key, data, content_type)

    async def get(self, key: str, start: int | None = None, end: int | None = None) -> bytes:
        return await self.store.get(key, start, end)

    def stream(
        self, key: str, start: int | None = None, end: int | None = None
    ) -> AsyncIterator[bytes]:
        return self.store.stream(key, start, end)

    async def stat(self, key: str) -> ObjectInfo:
        return await self.store.stat(key)

    async def list(self, prefix: str = "") -> builtins.list[ObjectInfo]:
        return await self.store.list(prefix)

    async def delete(self, key: str) -> None:
        await self.leases.check(self.grant)
        await self.store.delete(key)

    async def signed_url(self, key: str, expires_s: int = 3600) -> str:
        return await self.store.signed_url(key, expires_s)

    async def health(self, probe: bool = False) -> dict[str, Any]:
        return await self.store.health(probe)
