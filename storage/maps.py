"""Field maps and liveness: small per-id facts written often, beside the registry.

A FieldMap is one Redis hash of plain text (id -> a short value, such as when a device
was last seen): unlike records, values are stored as they are (no JSON) and nothing is
indexed. Liveness is a field map of each id's never-seen | online | offline, kept in step
with the id's presence: presence expires silently, liveness remembers the last state, so
"went offline" can be an event. Its changes are compare-and-set in Lua, so several
processes may run the same loop and exactly one of them makes each change.

Get them from the StateStore (`field_map`, `liveness`), which owns their keys.
"""

from __future__ import annotations

import redis.asyncio as aioredis

NEVER_SEEN = "never-seen"
ONLINE = "online"
OFFLINE = "offline"

# Set a hash field, returning what it held before (nil for nothing).
# KEYS: the hash. ARGV: field, value.
_SWAP_LUA = """
local old = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return old
"""

# Offline when online and the presence key has expired: 1 if this call made the change.
# KEYS: liveness hash, presence key. ARGV: id.
_OFFLINE_LUA = """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= 'online' then return 0 end
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], 'offline')
return 1
"""


class FieldMap:
    """One hash of plain text values, by field."""

    def __init__(self, redis: aioredis.Redis, key: str) -> None:
        self._redis = redis
        self._key = key
        self._swap = redis.register_script(_SWAP_LUA)

    async def get(self, field: str) -> str | None:
        value = await self._redis.hget(self._key, field)
        return None if value is None else str(value)

    async def all(self) -> dict[str, str]:
        raw = await self._redis.hgetall(self._key)
        return {str(k): str(v) for k, v in (raw or {}).items()}

    async def set(self, field: str, value: str) -> None:
        await self._redis.hset(self._key, field, value)

    async def swap(self, field: str, value: str) -> str | None:
        """Set the field and return what it held before (None for nothing), atomically."""
        old = await self._swap(keys=[self._key], args=[field, value])
        return None if old is None else str(old)


class Liveness:
    """never-seen | online | offline per id of one presence kind."""

    def __init__(self, redis: aioredis.Redis, key: str, presence_prefix: str) -> None:
        self._states = FieldMap(redis, key)
        self._key = key
        self._presence_prefix = presence_prefix
        self._offline = redis.register_script(_OFFLINE_LUA)

    async def add(self, id: str) -> None:
        """A new id, not seen yet."""
        await self._states.set(id, NEVER_SEEN)

    async def mark_online(self, id: str) -> bool:
        """True if this call brought the id online (from never-seen, offline or nothing)."""
        return await self._states.swap(id, ONLINE) != ONLINE

    async def mark_offline_if_absent(self, id: str) -> bool:
        """True if this call took an online id offline because its presence has expired."""
        keys = [self._key, self._presence_prefix + id]
        return bool(await self._offline(keys=keys, args=[id]))

    async def get(self, id: str) -> str | None:
        return await self._states.get(id)

    async def all(self) -> dict[str, str]:
        return await self._states.all()
