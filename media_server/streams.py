"""The stream registry: which streams exist, their class, who may read them, their keys.

Kept in Redis (kind "stream") so every media node, the recorder and the control room see
the same definitions. Keys are stored as SHA-256 digests only; the key itself is shown
once, when it is made. Source URLs (RTSP cameras) may carry credentials: they are kept
for the puller but every outward view goes through `public_view`, which redacts them.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from contextlib import AbstractAsyncContextManager
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from core.courts import CourtTree
from core.redact import redact_url
from storage.state import StateStore

STREAM_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
KIND = "stream"
CHANGES = "streams"  # pub/sub channel: a definition was made, changed or deleted
# what a change of a definition may touch (the id, key digest and creation time never)
CHANGEABLE = ("stream_class", "public", "title", "court", "room", "source_url", "enabled")


class StreamClass(StrEnum):
    trial = "trial"  # recorded while a session is open; broadcast (delayed) if it is public
    security = "security"  # recorded 24/7, never public
    arraignment = "arraignment"  # private, recorded
    conference = "conference"


def valid_stream_id(stream_id: str) -> bool:
    return bool(STREAM_ID.match(stream_id))


PULLED_SCHEMES = ("rtsp://", "rtsps://")
_PROTOCOL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")  # FFmpeg's "proto:" (http:, concat:, ...)


def is_camera_url(url: str) -> bool:
    return url.lower().startswith(PULLED_SCHEMES)


def is_local_path(url: str) -> bool:
    """A file path (or file://path) that FFmpeg opens as a file, not through a protocol."""
    return bool(url) and not _PROTOCOL.match(url.removeprefix("file://"))


def check_source_url(url: str | None, local_ok: bool) -> None:
    """A pulled source is an RTSP camera; ValueError otherwise. FFmpeg, which opens it,
    would as readily fetch http:// from the server's own network or read its files.
    local_ok (open or demo mode, local trials): a file path or file:// too."""
    if not url or is_camera_url(url):
        return
    if local_ok and is_local_path(url):
        return
    where = " or a file (open and demo mode only)" if not local_ok else " or a file"
    raise ValueError(f"source_url must be an rtsp:// or rtsps:// camera URL{where}")


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class StreamExists(Exception):
    """create() of an id that is already defined."""


@dataclass
class StreamDefinition:
    id: str
    stream_class: StreamClass = StreamClass.trial
    public: bool = False
    title: str = ""
    court: str = ""
    room: str = ""
    source_url: str = ""  # pulled (RTSP camera) when set; pushed (RTMP/WHIP) otherwise
    key_sha256: str = ""
    enabled: bool = True
    created: float = field(default_factory=time.time)

    def to_record(self) -> dict[str, Any]:
        record = asdict(self)
        record["stream_class"] = str(self.stream_class)
        return record

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> StreamDefinition:
        known = {k: record[k] for k in cls.__dataclass_fields__ if k in record}
        known["stream_class"] = StreamClass(known.get("stream_class", "trial"))
        for flag in ("public", "enabled"):
            if flag in known:
                known[flag] = _as_bool(known[flag])
        if "created" in known:
            known["created"] = float(known["created"])
        return cls(**known)

    @property
    def is_public(self) -> bool:
        """Whether anyone may watch the live stream itself. Security and arraignment
        streams never, whatever the flag says; nor a trial stream: its flag means "may be
        broadcast", and the public sees it only through the delayed public rendition of a
        session approved for broadcast (DESIGN.md §7)."""
        return self.public and self.stream_class == StreamClass.conference

    @property
    def broadcastable(self) -> bool:
        """A trial camera whose picture a public session may broadcast."""
        return self.public and self.enabled and self.stream_class == StreamClass.trial

    def public_view(self) -> dict[str, Any]:
        view = self.to_record()
        view.pop("key_sha256")
        view["source_url"] = redact_url(self.source_url) if self.source_url else ""
        return view


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.lower() in ("1", "true", "yes")
    return bool(value)


class StreamRegistry:
    """Stream definitions in the state store."""

    def __init__(self, state: StateStore) -> None:
        self._state = state

    @property
    def state(self) -> StateStore:
        return self._state

    async def place(self, court: str, room: str) -> str:
        """The court's id in the tree (by id or name, created when missing, as is the room
        under it): a definition keeps the id, so its scope does not hang on a name."""
        if not court.strip():
            return ""
        tree = CourtTree(self._state)
        court_id = await tree.ensure(court)
        await tree.ensure_room(court_id, room)
        return court_id

    async def define(self, definition: StreamDefinition, key: str | None = None) -> str:
        """Create or replace a stream; returns its publish key (a new one unless given)."""
        if not valid_stream_id(definition.id):
            raise ValueError(
                f"stream id {definition.id!r}: use 1-100 letters, digits, '.', '_' or '-'"
            )
        definition.court = await self.place(definition.court, definition.room)
        key = key or secrets.token_urlsafe(18)
        definition.key_sha256 = key_digest(key)
        await self._state.put_record(KIND, definition.id, definition.to_record())
        await self._state.publish(CHANGES, {"id": definition.id, "change": "defined"})
        return key

    async def create(self, definition: StreamDefinition) -> str:
        """Define a new stream and return its publish key; StreamExists if the id is taken
        (an existing stream keeps its key: change it with update(), rotate_key())."""
        async with self._locked(definition.id):
            if await self.get(definition.id) is not None:
                raise StreamExists(f"stream {definition.id!r} already exists")
            return await self.define(definition)

    async def update(
        self, stream_id: str, changes: dict[str, Any]
    ) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """Change fields of CHANGEABLE, keeping the key; returns (before, after) of the
        fields that changed, or None if there is no such stream."""
        unknown = set(changes) - set(CHANGEABLE)
        if unknown:
            raise ValueError(f"cannot change {', '.join(sorted(unknown))} of a stream")
        async with self._locked(stream_id):
            definition = await self.get(stream_id)
            if definition is None:
                return None
            old = definition.to_record()
            if "court" in changes or "room" in changes:
                court = changes.get("court", old["court"])
                changes = {
                    **changes,
                    "court": await self.place(court, changes.get("room", old["room"])),
                }
            changed = StreamDefinition.from_record({**old, **changes}).to_record()
            after = {k: changed[k] for k in changes if changed[k] != old[k]}
            if after:
                await self._state.put_record(KIND, stream_id, changed)
                await self._state.publish(CHANGES, {"id": stream_id, "change": "defined"})
            return {k: old[k] for k in after}, after

    async def rotate_key(self, stream_id: str) -> str | None:
        """A new publish key for the stream (the old one stops working); None if there
        is no such stream. Media nodes disconnect a publisher still on the old key."""
        async with self._locked(stream_id):
            definition = await self.get(stream_id)
            if definition is None:
                return None
            key = secrets.token_urlsafe(18)
            definition.key_sha256 = key_digest(key)
            await self._state.put_record(KIND, stream_id, definition.to_record())
        rotated = {"id": stream_id, "change": "key-rotated", "at": time.time()}
        await self._state.publish(CHANGES, rotated)
        return key

    def _locked(self, stream_id: str) -> AbstractAsyncContextManager[Any]:
        """One change of a definition at a time, across every process."""
        return self._state.lock(f"stream-definition:{stream_id}", timeout_s=10, wait_s=10)

    async def set_enabled(self, stream_id: str, enabled: bool) -> bool:
        """Enable or disable a stream, keeping its key digest (so enabling restores the
        same key, where define() would make a new one); False if there is no such stream
        or it already was so."""
        definition = await self.get(stream_id)
        if definition is None or definition.enabled == enabled:
            return False
        definition.enabled = enabled
        await self._state.put_record(KIND, stream_id, definition.to_record())
        await self._state.publish(CHANGES, {"id": stream_id, "change": "defined"})
        return True

    async def get(self, stream_id: str) -> StreamDefinition | None:
        record = await self._state.get_record(KIND, stream_id)
        return StreamDefinition.from_record(record) if record else None

    async def list(self) -> list[StreamDefinition]:
        records = await self._state.list_records(KIND)
        return sorted((StreamDefinition.from_record(r) for r in records), key=lambda d: d.id)

    async def delete(self, stream_id: str) -> None:
        await self._state.delete_record(KIND, stream_id)
        await self._state.publish(CHANGES, {"id": stream_id, "change": "deleted"})

    async def key_matches(self, stream_id: str, key: str | None) -> bool:
        definition = await self.get(stream_id)
        if definition is None or not key or not definition.key_sha256:
            return False
        return hmac.compare_digest(definition.key_sha256, key_digest(key))
