"""The state store: Redis, through redis-py's asyncio client, with the few shapes the roles
need (DESIGN.md §6): registry records, presence with a TTL, pub/sub commands, streams of
events/alerts/audit capped by age, and for coordination between processes one-time claims,
locks, field maps and liveness (maps.py). The roles use these methods, never Redis itself.

Faults. Every command retries ConnectionError/TimeoutError with redis-py's own
`Retry(ExponentialWithJitterBackoff)`, so a Redis restart is ridden over; only an outage
longer than the retry budget raises `redis.exceptions.ConnectionError` to the caller. A
background PING (its own connection, no retries) keeps `health()` current, which is how an
outage is reported: "degraded" with the error, then "ok" again.
Retried writes are at-least-once: a write whose reply was lost is sent again. Records,
presence and indexes are idempotent; an event appended twice shows up twice.

Keys (prefix default "cc:"; a kind may not contain ':'):
    {p}rec:{kind}:{id}           hash, one registry record
    {p}ids:{kind}                set of the ids of a kind (listing never SCANs)
    {p}idx:{kind}:{field}:{val}  set of ids whose indexed field has that encoded value
    {p}presence:{kind}:{id}      string (JSON info) with a TTL
    {p}presence-ids:{kind}       set of ids that may be present (pruned on read)
    {p}chan:{channel}            pub/sub channel (messages are JSON objects)
    {p}stream:{stream}           stream of events
    {p}lock:{name}               string, a lock (redis-py's: a token with an expiry)
    {p}{scope}:{id}              string, a one-time claim: the holder that took it
    {p}{name}                    hash, a field map: field -> plain text (maps.py)
    {p}{kind}-liveness           hash, id -> never-seen | online | offline (maps.py)

Encoding: every record field value and every event field value is stored as its JSON text,
so types round-trip and nesting is allowed: "abc" is stored as "\"abc\"", 42 as "42",
{"a": [1]} as "{\"a\":[1]}". Secondary indexes use the same text, so a lookup by 42 does
not match "42". Records read back carry their id under "id".
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any, Literal, TypedDict

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from redis.exceptions import RedisError

from core.redact import redact_url
from storage.maps import FieldMap, Liveness
from storage.pubsub import ChannelSubscription

log = logging.getLogger(__name__)

Record = dict[str, Any]
# scopes a claim may not take: their keys have other shapes
_NOT_CLAIMS = {
    "rec",
    "ids",
    "idx",
    "presence",
    "presence-ids",
    "chan",
    "stream",
    "lock",
    "count",
    "hold",
    "lease",
    "epoch",
}


class Health(TypedDict):
    state: Literal["ok", "degraded"]
    error: str


class StateStoreUnavailable(RuntimeError):
    """Redis did not answer within the connect timeout."""


# Replace a record and keep its secondary indexes right, atomically (no read-then-write race).
# KEYS: record hash, id set. ARGV: id, index key prefix, n, n indexed fields, field/value pairs.
_PUT_LUA = """
local rec, ids, id, idxp = KEYS[1], KEYS[2], ARGV[1], ARGV[2]
local n = tonumber(ARGV[3])
for i = 4, 3 + n do
  local old = redis.call('HGET', rec, ARGV[i])
  if old then redis.call('SREM', idxp .. ARGV[i] .. ':' .. old, id) end
end
redis.call('DEL', rec)
redis.call('HSET', rec, unpack(ARGV, 4 + n))
for i = 4, 3 + n do
  local new = redis.call('HGET', rec, ARGV[i])
  if new then redis.call('SADD', idxp .. ARGV[i] .. ':' .. new, id) end
end
redis.call('SADD', ids, id)
return 1
"""

# Same arguments as _PUT_LUA without the pairs; returns 1 if the record existed.
_DELETE_LUA = """
local rec, ids, id, idxp = KEYS[1], KEYS[2], ARGV[1], ARGV[2]
local n = tonumber(ARGV[3])
for i = 4, 3 + n do
  local old = redis.call('HGET', rec, ARGV[i])
  if old then redis.call('SREM', idxp .. ARGV[i] .. ':' .. old, id) end
end
redis.call('DEL', rec)
return redis.call('SREM', ids, id)
"""

# A lease: KEYS[1] is taken (or renewed) for ARGV[1] for ARGV[2] ms unless another holder
# has it; returns the holder after the call.
_LEASE_LUA = """
local cur = redis.call('GET', KEYS[1])
if not cur or cur == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return ARGV[1]
end
return cur
"""

# Ends KEYS[1] if ARGV[1] holds it (a holder never ends another's lease); 1 if it did.
_RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# A fenced lease: KEYS[1] the lease, KEYS[2] its epoch counter; ARGV holder, ttl ms. Free:
# a new grant "holder/epoch" (epoch from INCR, so every grant of the key has a higher one);
# held by holder: renewed. Returns the grant held after the call.
_FENCED_LEASE_LUA = """
local cur = redis.call('GET', KEYS[1])
if not cur then
  cur = ARGV[1] .. '/' .. redis.call('INCR', KEYS[2])
end
if string.sub(cur, 1, #ARGV[1] + 1) == ARGV[1] .. '/' then
  redis.call('SET', KEYS[1], cur, 'PX', ARGV[2])
end
return cur
"""

# Renews grant ARGV[1] of KEYS[1] for ARGV[2] ms if it is still the one held; 1 if it was.
_FENCED_RENEW_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

# _PUT_LUA behind a fence: KEYS[3] must hold the grant ARGV[1] (else 0, nothing written).
_FENCED_PUT_LUA = (
    """
local fence = table.remove(ARGV, 1)
if redis.call('GET', KEYS[3]) ~= fence then return 0 end
"""
    + _PUT_LUA
)

# Ids of a kind that are still present, with their info; expired ones leave the id set.
# KEYS: presence id set. ARGV: presence key prefix (ends with ':').
_PRESENT_LUA = """
local out = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local info = redis.call('GET', ARGV[1] .. id)
  if info then
    out[#out + 1] = id
    out[#out + 1] = info
  else
    redis.call('SREM', KEYS[1], id)
  end
end
return out
"""


def _encode(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _encode_fields(mapping: Mapping[str, Any]) -> dict[str, str]:
    return {field: _encode(value) for field, value in mapping.items()}


def _decode_fields(raw: Mapping[Any, Any]) -> Record:
    return {str(field): json.loads(text) for field, text in raw.items()}


def _check_name(what: str, name: str) -> None:
    if not name or ":" in name:
        raise ValueError(f"{what} must be non-empty and contain no ':', got {name!r}")


class StateStore:
    """Redis-backed state shared by every role (one per process)."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "cc:",
        indexes: Mapping[str, Iterable[str]] | None = None,
        retries: int = 12,
        backoff_base_s: float = 0.05,
        backoff_cap_s: float = 2.0,
        socket_timeout_s: float = 5.0,
        health_interval_s: float = 1.0,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self._backoff = ExponentialWithJitterBackoff(cap=backoff_cap_s, base=backoff_base_s)
        self._redis: aioredis.Redis = aioredis.Redis.from_url(
            url,
            decode_responses=True,
            retry=Retry(self._backoff, retries),
            socket_timeout=socket_timeout_s,
            socket_connect_timeout=socket_timeout_s,
        )
        # The health probe must see an outage at once, so it never retries.
        self._probe: aioredis.Redis = aioredis.Redis.from_url(
            url,
            retry=Retry(NoBackoff(), 0),
            socket_timeout=min(socket_timeout_s, 2.0),
            socket_connect_timeout=min(socket_timeout_s, 2.0),
        )
        self._indexes: dict[str, tuple[str, ...]] = {}
        for kind, fields in (indexes or {}).items():
            for field in fields:
                self.declare_index(kind, field)
        self._put_script = self._redis.register_script(_PUT_LUA)
        self._delete_script = self._redis.register_script(_DELETE_LUA)
        self._present_script = self._redis.register_script(_PRESENT_LUA)
        self._lease_script = self._redis.register_script(_LEASE_LUA)
        self._release_script = self._redis.register_script(_RELEASE_LUA)
        self._fenced_lease_script = self._redis.register_script(_FENCED_LEASE_LUA)
        self._fenced_renew_script = self._redis.register_script(_FENCED_RENEW_LUA)
        self._fenced_put_script = self._redis.register_script(_FENCED_PUT_LUA)
        self._health: Health = {"state": "degraded", "error": "not connected"}
        self._health_interval_s = health_interval_s
        self._watch_task: asyncio.Task[None] | None = None
        self._closing = False
        self._subscriptions: set[ChannelSubscription] = set()

    # -- lifecycle -------------------------------------------------------------------

    @property
    def raw(self) -> aioredis.Redis:
        """The underlying client (decode_responses=True, retrying), for tests of the layout;
        the roles use the methods here."""
        return self._redis

    async def connect(self, timeout_s: float = 10.0) -> None:
        """Wait until Redis answers (bounded), then keep health() current."""
        deadline = time.monotonic() + timeout_s
        while not await self._ping():
            if time.monotonic() > deadline:
                raise StateStoreUnavailable(
                    f"Redis at {redact_url(self.url)} did not answer within {timeout_s:.0f} s "
                    f"({self._health['error']}): start it, or fix state.redis_url"
                )
            await asyncio.sleep(0.05)
        if self._watch_task is None:
            self._watch_task = asyncio.create_task(self._watch(), name="state-health")

    async def close(self) -> None:
        self._closing = True
        if self._watch_task is not None:
            # redis-py may swallow a cancel that lands inside a command (seen with ping,
            # when close() runs in another task): cancel again until it ends (bounded).
            for _ in range(20):
                self._watch_task.cancel()
                await asyncio.wait({self._watch_task}, timeout=0.05)
                if self._watch_task.done():
                    break
            self._watch_task = None
        for sub in list(self._subscriptions):
            await sub.aclose()
        await self._redis.aclose()
        await self._probe.aclose()
        self._health = {"state": "degraded", "error": "closed"}

    def health(self) -> Health:
        return self._health.copy()

    async def _ping(self) -> bool:
        try:
            await self._probe.ping()
        except (RedisError, OSError) as exc:
            self._set_health(f"{type(exc).__name__}: {exc}")
            return False
        self._set_health("")
        return True

    def _set_health(self, error: str) -> None:
        state: Literal["ok", "degraded"] = "degraded" if error else "ok"
        if state != self._health["state"]:
            if error:
                log.warning("state store degraded: %s", error)
            else:
                log.info("state store ok again")
        self._health = {"state": state, "error": error}

    async def _watch(self) -> None:
        while not self._closing:
            await self._ping()
            await asyncio.sleep(self._health_interval_s)

    # -- keys ------------------------------------------------------------------------

    def _rec_key(self, kind: str, id: str) -> str:
        return f"{self.prefix}rec:{kind}:{id}"

    def _ids_key(self, kind: str) -> str:
        return f"{self.prefix}ids:{kind}"

    def _idx_prefix(self, kind: str) -> str:
        return f"{self.prefix}idx:{kind}:"

    def _presence_prefix(self, kind: str) -> str:
        return f"{self.prefix}presence:{kind}:"

    # -- registry --------------------------------------------------------------------

    def declare_index(self, kind: str, field: str) -> None:
        """Keep an id set per value of `field` for `kind`, for find_records.
        Declare before the first put_record of that kind (older records are not indexed)."""
        _check_name("kind", kind)
        _check_name("indexed field", field)
        if field not in self._indexes.get(kind, ()):
            self._indexes[kind] = (*self._indexes.get(kind, ()), field)

    def _record_args(self, kind: str, id: str) -> tuple[list[str], list[str]]:
        _check_name("kind", kind)
        if not id:
            raise ValueError("a record id must be non-empty")
        fields = self._indexes.get(kind, ())
        keys = [self._rec_key(kind, id), self._ids_key(kind)]
        return keys, [id, self._idx_prefix(kind), str(len(fields)), *fields]

    async def put_record(self, kind: str, id: str, mapping: Mapping[str, Any]) -> None:
        """Create or replace the record `kind`/`id` (fields not in `mapping` are dropped)."""
        keys, args = self._record_args(kind, id)
        await self._put_script(keys=keys, args=[*args, *self._record_pairs(kind, id, mapping)])

    async def put_record_fenced(
        self, kind: str, id: str, mapping: Mapping[str, Any], fence: tuple[str, str, str]
    ) -> bool:
        """put_record while the grant of a fenced lease (fenced_lease) holds it, in the same
        atomic step; fence: (scope, id, grant). False, nothing written, when it does not."""
        keys, args = self._record_args(kind, id)
        keys.append(self._counter_key("lease", fence[0], fence[1]))
        pairs = self._record_pairs(kind, id, mapping)
        return bool(await self._fenced_put_script(keys=keys, args=[fence[2], *args, *pairs]))

    def _record_pairs(self, kind: str, id: str, mapping: Mapping[str, Any]) -> list[str]:
        fields = {k: v for k, v in mapping.items() if k != "id"}
        if mapping.get("id", id) != id:
            raise ValueError(f"record id {id!r} differs from its 'id' field {mapping['id']!r}")
        if not fields:
            raise ValueError(f"record {kind}/{id} needs at least one field besides 'id'")
        return [part for item in _encode_fields(fields).items() for part in item]

    async def get_record(self, kind: str, id: str) -> Record | None:
        _check_name("kind", kind)
        raw = await self._redis.hgetall(self._rec_key(kind, id))
        return {**_decode_fields(raw), "id": id} if raw else None

    async def delete_record(self, kind: str, id: str) -> bool:
        """Remove a record and its index entries; False if there was none."""
        keys, args = self._record_args(kind, id)
        return bool(await self._delete_script(keys=keys, args=args))

    async def list_records(self, kind: str) -> list[Record]:
        """Every record of a kind, sorted by id."""
        _check_name("kind", kind)
        ids = await self._redis.smembers(self._ids_key(kind))
        return await self._fetch_records(kind, sorted(map(str, ids)))

    async def find_records(self, kind: str, field: str, value: Any) -> list[Record]:
        """Records of `kind` whose indexed `field` equals `value`, sorted by id."""
        if field not in self._indexes.get(kind, ()):
            raise ValueError(f"{kind}.{field} is not indexed: declare_index({kind!r}, {field!r})")
        ids = await self._redis.smembers(f"{self._idx_prefix(kind)}{field}:{_encode(value)}")
        records = await self._fetch_records(kind, sorted(map(str, ids)))
        return [r for r in records if r.get(field) == value]

    async def _fetch_records(self, kind: str, ids: list[str]) -> list[Record]:
        if not ids:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for id in ids:
                pipe.hgetall(self._rec_key(kind, id))
            raws = await pipe.execute()
        # A record deleted between the two reads has an empty hash: leave it out.
        return [{**_decode_fields(raw), "id": id} for id, raw in zip(ids, raws) if raw]

    # -- presence --------------------------------------------------------------------

    async def touch_presence(
        self, kind: str, id: str, ttl_s: float, info: Mapping[str, Any] | None = None
    ) -> None:
        """Say `kind`/`id` is alive for the next `ttl_s` seconds (a heartbeat)."""
        _check_name("kind", kind)
        ttl_ms = max(1, int(ttl_s * 1000))
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(self._presence_prefix(kind) + id, _encode(dict(info or {})), px=ttl_ms)
            pipe.sadd(f"{self.prefix}presence-ids:{kind}", id)
            await pipe.execute()

    async def touch_presences(
        self, kind: str, ttl_s: float, infos: Mapping[str, Mapping[str, Any]]
    ) -> None:
        """touch_presence for many ids in one round trip (a node's live streams each second)."""
        _check_name("kind", kind)
        if not infos:
            return
        ttl_ms = max(1, int(ttl_s * 1000))
        async with self._redis.pipeline(transaction=True) as pipe:
            for id, info in infos.items():
                pipe.set(self._presence_prefix(kind) + id, _encode(dict(info)), px=ttl_ms)
            pipe.sadd(f"{self.prefix}presence-ids:{kind}", *infos)
            await pipe.execute()

    async def drop_presence(self, kind: str, id: str) -> None:
        """A clean goodbye: absent at once rather than when the TTL runs out."""
        _check_name("kind", kind)
        await self._redis.delete(self._presence_prefix(kind) + id)

    async def get_presence(self, kind: str, id: str) -> dict[str, Any] | None:
        """The info of id's last heartbeat, or None once it has expired."""
        _check_name("kind", kind)
        raw = await self._redis.get(self._presence_prefix(kind) + id)
        return json.loads(raw) if raw is not None else None

    async def is_present(self, kind: str, id: str) -> bool:
        _check_name("kind", kind)
        return bool(await self._redis.exists(self._presence_prefix(kind) + id))

    async def presence_left_s(self, kind: str, id: str) -> float | None:
        """How long id's last heartbeat has yet to live (Redis's clock), None once gone."""
        _check_name("kind", kind)
        left_ms = int(await self._redis.pttl(self._presence_prefix(kind) + id))
        return left_ms / 1000 if left_ms >= 0 else None

    async def present(self, kind: str) -> dict[str, dict[str, Any]]:
        """Every present id of a kind with the info of its last heartbeat."""
        _check_name("kind", kind)
        flat = await self._present_script(
            keys=[f"{self.prefix}presence-ids:{kind}"], args=[self._presence_prefix(kind)]
        )
        return {flat[i]: json.loads(flat[i + 1]) for i in range(0, len(flat), 2)}

    # -- pub/sub ---------------------------------------------------------------------

    async def publish(self, channel: str, message: Mapping[str, Any]) -> int:
        """Send a JSON message; returns how many subscribers got it (none are queued)."""
        return int(await self._redis.publish(f"{self.prefix}chan:{channel}", _encode(message)))

    def subscribe(self, channel: str) -> ChannelSubscription:
        """Messages of a channel, as an async iterator; see ChannelSubscription."""
        sub = ChannelSubscription(
            self._redis.pubsub(),
            f"{self.prefix}chan:{channel}",
            self._backoff,
            self._subscriptions.discard,
        )
        self._subscriptions.add(sub)
        return sub

    # -- streams ---------------------------------------------------------------------

    async def append_event(
        self, stream: str, event: Mapping[str, Any], max_age_s: float, exact: bool = False
    ) -> str:
        """Append an event and drop those older than `max_age_s`; returns its id.

        Trimming is approximate by default (whole stream nodes, ~100 entries, cheap), so a
        few older events may linger; `exact` trims to the millisecond. The age is measured
        on this host's clock against the id Redis gives (the server's clock).
        """
        if not event:
            raise ValueError("an event needs at least one field")
        min_ms = max(0, int((time.time() - max_age_s) * 1000))
        fields: dict[Any, Any] = _encode_fields(event)  # redis-py's dict type is invariant
        id = await self._redis.xadd(
            f"{self.prefix}stream:{stream}", fields, minid=min_ms, approximate=not exact
        )
        return str(id)

    async def read_events(
        self, stream: str, since_id: str | None = None, count: int = 100
    ) -> list[tuple[str, Record]]:
        """Up to `count` events after `since_id` (exclusive), oldest first."""
        start = f"({since_id}" if since_id else "-"
        entries = await self._redis.xrange(
            f"{self.prefix}stream:{stream}", min=start, max="+", count=count
        )
        return [(str(id), _decode_fields(fields or {})) for id, fields in entries or []]

    async def events_between(
        self, stream: str, low: str = "-", high: str = "+", count: int = 100
    ) -> list[tuple[str, Record]]:
        """Up to `count` events with ids in [low, high] (ids or "ms" times), newest first."""
        entries = await self._redis.xrevrange(
            f"{self.prefix}stream:{stream}", max=high, min=low, count=count
        )
        return [(str(id), _decode_fields(fields or {})) for id, fields in entries or []]

    async def latest_events(self, stream: str, count: int = 100) -> list[tuple[str, Record]]:
        """The last `count` events, oldest first."""
        entries = await self._redis.xrevrange(f"{self.prefix}stream:{stream}", count=count)
        return [(str(id), _decode_fields(fields or {})) for id, fields in reversed(entries or [])]

    # -- counters and holds (attempt limits, storage/attempts.py) ------------------------

    async def count_hit(self, scope: str, id: str, window_s: float) -> int:
        """One more hit of `scope`/`id`; the count is forgotten `window_s` after its first
        hit. Atomic, so every process counting the same id sees one count."""
        key = self._counter_key("count", scope, id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(key, 0, px=max(1, int(window_s * 1000)), nx=True)
            pipe.incr(key)
            _, hits = await pipe.execute()
        return int(hits)

    async def forget_hits(self, scope: str, id: str) -> None:
        await self._redis.delete(self._counter_key("count", scope, id))

    async def hold(self, scope: str, id: str, ttl_s: float) -> None:
        """Hold `scope`/`id` for `ttl_s` seconds (a lockout)."""
        await self._redis.set(self._counter_key("hold", scope, id), 1, px=max(1, int(ttl_s * 1000)))

    async def held_for(self, scope: str, id: str) -> float:
        """Seconds the hold of `scope`/`id` has left; 0 when it is not held."""
        left_ms = await self._redis.pttl(self._counter_key("hold", scope, id))
        return max(0, int(left_ms)) / 1000

    def _counter_key(self, what: str, scope: str, id: str) -> str:
        _check_name("scope", scope)
        return f"{self.prefix}{what}:{scope}:{id}"

    # -- coordination ----------------------------------------------------------------

    def lock(self, name: str, timeout_s: float, wait_s: float) -> AbstractAsyncContextManager[Any]:
        """A lock every process sees, for `async with`: held at most `timeout_s` (so a
        holder that died frees it), waited for at most `wait_s`, after which entering
        raises redis.exceptions.LockError."""
        return self._redis.lock(
            f"{self.prefix}lock:{name}", timeout=timeout_s, blocking_timeout=wait_s
        )

    async def claim(self, scope: str, id: str, holder: str) -> bool:
        """Take `scope`/`id` for `holder`, for good: True for the one caller that took it
        (SET NX, so concurrent callers cannot both win), False for every other."""
        return bool(await self._redis.set(self._claim_key(scope, id), holder, nx=True))

    async def is_claimed(self, scope: str, id: str) -> bool:
        return bool(await self._redis.exists(self._claim_key(scope, id)))

    async def lease(self, scope: str, id: str, holder: str, ttl_s: float) -> str:
        """Take or renew `scope`/`id` for `holder` for `ttl_s` seconds, unless another holds
        it; returns who holds it now (holder when taken). A holder that dies stops renewing
        and its lease runs out."""
        key = self._counter_key("lease", scope, id)
        ttl_ms = max(1, int(ttl_s * 1000))
        return str(await self._lease_script(keys=[key], args=[holder, ttl_ms]))

    async def release(self, scope: str, id: str, holder: str) -> bool:
        """End `holder`'s lease on `scope`/`id` at once; another's lease is left alone."""
        key = self._counter_key("lease", scope, id)
        return bool(await self._release_script(keys=[key], args=[holder]))

    async def fenced_lease(self, scope: str, id: str, holder: str, ttl_s: float) -> str:
        """Take or renew `scope`/`id` for `holder` for `ttl_s` seconds, fenced: each new
        grant is "holder/epoch" with an epoch higher than every earlier grant of the key
        (INCR), and writes can be made conditional on it (put_record's fence, holds).
        Returns the grant held now: holder's when taken or kept, else another's."""
        key = self._counter_key("lease", scope, id)
        epochs = self._counter_key("epoch", scope, id)
        ttl_ms = max(1, int(ttl_s * 1000))
        return str(await self._fenced_lease_script(keys=[key, epochs], args=[holder, ttl_ms]))

    async def renew_fenced(self, scope: str, id: str, grant: str, ttl_s: float) -> bool:
        """Extend `grant` by `ttl_s` if it still holds the lease; False when it was lost."""
        key = self._counter_key("lease", scope, id)
        ttl_ms = max(1, int(ttl_s * 1000))
        return bool(await self._fenced_renew_script(keys=[key], args=[grant, ttl_ms]))

    async def lease_holder(self, scope: str, id: str) -> str | None:
        raw = await self._redis.get(self._counter_key("lease", scope, id))
        return str(raw) if raw is not None else None

    def _claim_key(self, scope: str, id: str) -> str:
        _check_name("claim scope", scope)
        if scope in _NOT_CLAIMS:
            raise ValueError(f"claim scope {scope!r} is taken by the store's own keys")
        return f"{self.prefix}{scope}:{id}"

    def field_map(self, name: str) -> FieldMap:
        """The field map `name` (plain text by field, e.g. device id -> last seen)."""
        _check_name("field map", name)
        return FieldMap(self._redis, f"{self.prefix}{name}")

    def liveness(self, kind: str) -> Liveness:
        """never-seen | online | offline of each id of presence `kind`."""
        _check_name("kind", kind)
        return Liveness(self._redis, f"{self.prefix}{kind}-liveness", self._presence_prefix(kind))
