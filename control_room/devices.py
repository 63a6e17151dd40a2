"""Devices (agents on courtroom hardware): enrolment, credentials, disable/revoke, liveness.

Kept in the StateStore (DESIGN.md §6), which owns the keys:
    record   enrol-token/{sha256(token)}  court, room, class, expiry (the token itself never)
    claim    enrol-spent/{sha256}         taken by the one enrolment that spends the token
    record   device/{id}                  identity, sources, stream ids, secret's sha256
    record   court/{id}, room/{court}/{room}     the court tree (core/courts.py)
    presence device/{id}                  the latest Heartbeat (TTL: 3 heartbeats + a little)
    liveness device/{id}                  never-seen | online | offline (compare-and-set, so
                                          every control-room process may run the loop)
    map      device-seen                  id -> last heartbeat time (outlives the presence)
    map      device-clock                 id -> "1" while its clock offset is over the limit
    map      device-sources               id -> JSON {source: state} of the last heartbeat
    map      device-dropped               id -> JSON {source: [dropped track, ...]} last told
Stream definitions go through the StreamRegistry. Transitions go to the "device-events"
stream and the "devices" pub/sub channel.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from core import presence
from core.alerts import ALERTS_MAX_AGE_S, alert
from core.alerts import ALERTS_STREAM as ALERTS
from core.courts import CourtTree
from core.identity import CredentialError
from device_agents.protocol import (
    EnrolRequest,
    EnrolResponse,
    Heartbeat,
    SourceStreams,
    StreamCredential,
    stream_id_for,
)
from media_server.streams import StreamClass, StreamDefinition, StreamRegistry
from storage.state import StateStore

log = logging.getLogger(__name__)

KIND = "device"
TOKEN_KIND = "enrol-token"
EVENTS = "device-events"
EVENTS_MAX_AGE_S = 90 * 86400
CHANNEL = "devices"  # pub/sub: a device's state changed
SPENT = "enrol-spent"  # claim scope: enrolment tokens spent


class DeviceAuthError(CredentialError):
    """A device credential was refused; `reason` is what the agent is told."""


class EnrolError(Exception):
    """An enrolment token was refused; `status` is the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class DeviceNotFound(KeyError):
    pass


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass
class Device:
    id: str
    court: str
    room: str
    model: str = ""
    agent_version: str = ""
    sources: list[dict[str, Any]] = field(default_factory=list)  # SourceInfo dumps
    streams: list[str] = field(default_factory=list)
    stream_class: str = "trial"
    enabled: bool = True
    revoked: bool = False
    created: float = field(default_factory=time.time)
    secret_sha256: str = ""

    def to_record(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Device:
        return cls(**{k: record[k] for k in cls.__dataclass_fields__ if k in record})

    def public_view(self) -> dict[str, Any]:
        view = self.to_record()
        view.pop("secret_sha256")
        return view


class DeviceRegistry:
    """Devices in the state store (one per process or per request: it holds no state)."""

    def __init__(self, state: StateStore) -> None:
        self._state = state
        self._streams = StreamRegistry(state)
        self._liveness = state.liveness(presence.DEVICE)
        self._seen = state.field_map("device-seen")
        self._clock = state.field_map("device-clock")
        self._sources = state.field_map("device-sources")
        self._dropped = state.field_map("device-dropped")

    # -- enrolment --

    async def make_enrol_token(
        self,
        court: str,
        room: str,
        stream_class: str = "trial",
        ttl_s: float = 86400,
        who: str = "",
    ) -> str:
        """A one-time token for a device of this courtroom; only its sha256 is kept."""
        court, room = court.strip(), room.strip()
        if not court or not room or ":" in court + room or "/" in court + room:
            raise ValueError("court and room must be non-empty, without ':' or '/'")
        StreamClass(stream_class)  # ValueError names a wrong class
        tree = CourtTree(self._state)  # the court by id or name, created when missing
        court = await tree.ensure(court)
        await tree.ensure_room(court, room)
        # the prefix names what it is, and a token never starts with '-' (argparse would
        # take `--token -x...` for an option)
        token = "enrol-" + secrets.token_urlsafe(24)
        now = time.time()
        await self._state.put_record(
            TOKEN_KIND,
            digest(token),
            {
                "court": court,
                "room": room,
                "stream_class": stream_class,
                "created": now,
                "expires_at": now + ttl_s,
                "who": who,
            },
        )
        return token

    async def token_expiry(self, token: str) -> float:
        record = await self._state.get_record(TOKEN_KIND, digest(token))
        return float(record["expires_at"]) if record else 0.0

    async def token_grant(self, token: str) -> dict[str, Any]:
        """What a token grants: court (the tree's id), room, class, expiry ({} if none)."""
        return await self._state.get_record(TOKEN_KIND, digest(token)) or {}

    async def enroll(
        self, req: EnrolRequest, rtmp_url: str, heartbeat_s: float = 5.0
    ) -> EnrolResponse:
        """Spend the token (exactly once, even under concurrent calls) and make the device
        with its credentials and one stream (+ sub) per source; keys are returned once."""
        sha = digest(req.token)
        grant = await self._state.get_record(TOKEN_KIND, sha)
        if grant is None:
            raise EnrolError(401, "enrolment token unknown: ask a technician for a new one")
        if time.time() > float(grant["expires_at"]):
            raise EnrolError(410, "enrolment token expired: ask a technician for a new one")
        used = EnrolError(409, "enrolment token already used: ask a technician for a new one")
        if await self._state.is_claimed(SPENT, sha):
            raise used  # said first; the claim below is what decides
        await self._check_streams_free(req, str(grant["court"]), str(grant["room"]))
        device_id = f"dev-{secrets.token_hex(4)}"
        # the atomic spend: one claim wins, every other caller sees it taken
        if not await self._state.claim(SPENT, sha, device_id):
            raise used
        return await self._create(device_id, req, grant, rtmp_url, heartbeat_s)

    async def _check_streams_free(self, req: EnrolRequest, court: str, room: str) -> None:
        """A live stream of another device (or one defined by hand) keeps its key: a new
        device must not take it over silently (before the spend, so the token stays good)."""
        for source in req.sources:
            for sub in (False, True) if source.has_sub else (False,):
                stream_id = stream_id_for(court, room, source.name, sub)
                existing = await self._streams.get(stream_id)
                if existing is not None and existing.enabled:
                    raise EnrolError(
                        409,
                        f"stream {stream_id} is already in use: revoke the "
                        "device that has it, or name the source differently",
                    )

    async def _create(
        self,
        device_id: str,
        req: EnrolRequest,
        grant: dict[str, Any],
        rtmp_url: str,
        heartbeat_s: float,
    ) -> EnrolResponse:
        court, room = str(grant["court"]), str(grant["room"])
        stream_class = StreamClass(str(grant["stream_class"]))
        streams: dict[str, SourceStreams] = {}
        for source in req.sources:
            main = await self._define(court, room, source.name, False, stream_class)
            sub = (
                await self._define(court, room, source.name, True, stream_class)
                if source.has_sub
                else None
            )
            streams[source.name] = SourceStreams(main=main, sub=sub)
        secret = secrets.token_urlsafe(32)
        ids = [c.stream_id for s in streams.values() for c in (s.main, s.sub) if c is not None]
        device = Device(
            id=device_id,
            court=court,
            room=room,
            model=req.model,
            agent_version=req.agent_version,
            sources=[s.model_dump() for s in req.sources],
            streams=ids,
            stream_class=str(stream_class),
            secret_sha256=digest(secret),
        )
        await self._state.put_record(KIND, device_id, device.to_record())
        await self._liveness.add(device_id)
        await self.event(device, "enrolled", model=req.model, streams=ids)
        return EnrolResponse(
            device_id=device_id,
            device_secret=secret,
            court=court,
            room=room,
            rtmp_url=rtmp_url,
            heartbeat_s=heartbeat_s,
            streams=streams,
        )

    async def _define(
        self, court: str, room: str, source: str, sub: bool, stream_class: StreamClass
    ) -> StreamCredential:
        stream_id = stream_id_for(court, room, source, sub)
        title = f"{court} {room} {source}" + (" (sub)" if sub else "")
        key = await self._streams.define(
            StreamDefinition(
                id=stream_id, stream_class=stream_class, title=title, court=court, room=room
            )
        )
        return StreamCredential(stream_id=stream_id, key=key)

    # -- credentials --

    async def get(self, device_id: str) -> Device:
        record = await self._state.get_record(KIND, device_id) if device_id else None
        if record is None:
            raise DeviceNotFound(device_id)
        return Device.from_record(record)

    async def streams_of(self, authorization: str) -> list[str]:
        """The streams of the device whose credential this is (recorder backfill)."""
        return list((await self.authenticate(authorization)).streams)

    async def authenticate(self, authorization: str | None) -> Device:
        """The device of a `Bearer {id}.{secret}` header; DeviceAuthError says why not."""
        scheme, _, credential = (authorization or "").partition(" ")
        device_id, _, secret = credential.strip().partition(".")
        if scheme.lower() != "bearer" or not device_id or not secret:
            raise DeviceAuthError("unknown device")
        try:
            device = await self.get(device_id)
        except DeviceNotFound:
            hmac.compare_digest(digest(secret), "0" * 64)  # same work as a real check
            raise DeviceAuthError("unknown device") from None
        if not hmac.compare_digest(device.secret_sha256, digest(secret)):
            raise DeviceAuthError("wrong credentials")
        if device.revoked:
            raise DeviceAuthError("device revoked")
        if not device.enabled:
            raise DeviceAuthError("device disabled")
        return device

    # -- disable, enable, revoke --

    async def disable(self, device_id: str, who: str = "") -> Device:
        return await self._set(device_id, "disabled", who, enabled=False)

    async def enable(self, device_id: str, who: str = "") -> Device:
        device = await self.get(device_id)
        if device.revoked:
            raise ValueError(f"device {device_id} is revoked: enrol it again with a new token")
        return await self._set(device_id, "enabled", who, enabled=True)

    async def revoke(self, device_id: str, who: str = "") -> Device:
        return await self._set(device_id, "revoked", who, revoked=True)

    async def _set(self, device_id: str, what: str, who: str, **flags: bool) -> Device:
        device = await self.get(device_id)
        for name, value in flags.items():
            setattr(device, name, value)
        await self._state.put_record(KIND, device_id, device.to_record())
        usable = device.enabled and not device.revoked
        await self._set_streams(device, usable)
        # the agent's websocket (on whichever process holds it) is told to close
        if not usable:
            await self._state.publish(
                command_channel(device_id), {"type": "refuse", "reason": f"device {what}"}
            )
        await self.event(device, what, who=who)
        return device

    async def _set_streams(self, device: Device, enabled: bool) -> None:
        """Flip the device's stream definitions, keeping their keys (so enable restores
        the same keys); each change publishes a "streams" change."""
        for stream_id in device.streams:
            await self._streams.set_enabled(stream_id, enabled)

    # -- liveness and health --

    def presence_ttl_s(self, heartbeat_s: float) -> float:
        """Present until 3 heartbeats are missed (plus a little for the network)."""
        return 3 * heartbeat_s + min(1.0, heartbeat_s / 2)

    async def heartbeat(
        self, device: Device, beat: Heartbeat, heartbeat_s: float, clock_limit_s: float
    ) -> None:
        """Store the latest heartbeat; events for online, sources and clock changes."""
        now = time.time()
        info = {**beat.model_dump(), "received_at": now}
        await self._state.touch_presence(
            presence.DEVICE, device.id, self.presence_ttl_s(heartbeat_s), info
        )
        await self._seen.set(device.id, str(now))
        if await self._liveness.mark_online(device.id):
            await self.event(device, "online", agent_version=beat.agent_version)
        if beat.agent_version and beat.agent_version != device.agent_version:
            device.agent_version = beat.agent_version
            await self._state.put_record(KIND, device.id, device.to_record())
        await self._source_events(device, beat)
        await self._track_events(device, beat)
        await self._clock_events(device, beat.clock_offset_s, clock_limit_s)

    async def _source_events(self, device: Device, beat: Heartbeat) -> None:
        raw = await self._sources.get(device.id)
        before: dict[str, str] = json.loads(raw) if raw else {}
        now = {s.name: s.state for s in beat.sources}
        if now == before:
            return
        await self._sources.set(device.id, json.dumps(now))
        for source in beat.sources:
            old = before.get(source.name)
            if (
                source.state in ("up", "down")
                and source.state != old
                and (old is not None or source.state == "down")
            ):
                await self.event(
                    device, f"source-{source.state}", source=source.name, reason=source.reason
                )

    async def _track_events(self, device: Device, beat: Heartbeat) -> None:
        """A track a source sends that the agent drops: one event and one alert, the first
        time; a source that is down says nothing of its tracks, so what it said stands."""
        raw = await self._dropped.get(device.id)
        before: dict[str, list[str]] = json.loads(raw) if raw else {}
        now = dict(before)
        for source in beat.sources:
            if not source.tracks:
                continue
            dropped = [t for t in source.tracks if t.state.startswith("dropped")]
            now[source.name] = [f"{t.kind} {t.codec}: {t.state}" for t in dropped]
            for track in dropped:
                if f"{track.kind} {track.codec}: {track.state}" in before.get(source.name, []):
                    continue
                await self._dropped_track(device, source.name, track.kind, track.codec, track.state)
        if now != before:
            await self._dropped.set(device.id, json.dumps(now))

    async def _dropped_track(
        self, device: Device, source: str, kind: str, codec: str, state: str
    ) -> None:
        reason = state.removeprefix("dropped:").strip()
        fields = {"source": source, "track": kind, "codec": codec, "reason": reason}
        await self.event(device, "track-dropped", **fields)
        message = (
            f"device {device.id} ({device.court} {device.room}): source {source} sends a "
            f"{kind} track ({codec}) that is dropped: {reason}; it is in no recording"
        )
        await alert(
            self._state,
            "track-dropped",
            message,
            device=device.id,
            court=device.court,
            room=device.room,
            **fields,
        )

    async def _clock_events(self, device: Device, offset: float | None, limit: float) -> None:
        if offset is None:
            return
        over = abs(offset) > limit
        was_over = await self._clock.swap(device.id, "1" if over else "0") == "1"
        if over == was_over:
            return  # one alert per excursion
        if over:
            message = (
                f"device {device.id} ({device.court} {device.room}): clock off by "
                f"{offset:+.3f} s (limit {limit} s); recordings' wall-clock is wrong"
            )
            await self.event(device, "clock-offset", offset_s=offset, limit_s=limit)
            await self._state.append_event(
                ALERTS,
                {
                    "kind": "clock-offset",
                    "at": time.time(),
                    "device": device.id,
                    "court": device.court,
                    "room": device.room,
                    "offset_s": offset,
                    "message": message,
                },
                ALERTS_MAX_AGE_S,
            )
        else:
            await self.event(device, "clock-ok", offset_s=offset)

    async def mark_offline_if_silent(self) -> list[str]:
        """Devices online whose presence expired become offline (atomically, so several
        control-room processes running this make one transition); returns their ids."""
        states = await self._liveness.all()
        gone: list[str] = []
        for device_id, state in states.items():
            if state != "online":
                continue
            if await self._liveness.mark_offline_if_absent(device_id):
                gone.append(device_id)
                try:
                    device = await self.get(device_id)
                except DeviceNotFound:
                    continue
                await self.event(device, "offline", reason="3 heartbeats missed")
        return gone

    # -- events --

    async def event(self, device: Device, event: str, **details: Any) -> None:
        body = {
            "device": device.id,
            "court": device.court,
            "room": device.room,
            "event": event,
            "at": time.time(),
            **details,
        }
        await self._state.append_event(EVENTS, body, EVENTS_MAX_AGE_S)
        await self._state.publish(CHANNEL, body)
        log.info("device %s (%s %s): %s", device.id, device.court, device.room, event)

    async def events(self, device_id: str | None = None, count: int = 500) -> list[dict[str, Any]]:
        """The latest events (oldest first), of one device or all."""
        entries = await self._state.latest_events(EVENTS, count)
        return [e for _, e in entries if device_id is None or e.get("device") == device_id]

    # -- the technicians' view --

    async def list(self) -> list[dict[str, Any]]:
        """Every device with its state, last seen and the health of its last heartbeat."""
        records = await self._state.list_records(KIND)
        present = await self._state.present(presence.DEVICE)
        liveness = await self._liveness.all()
        seen = await self._seen.all()
        rows = [
            self._row(
                Device.from_record(r),
                present.get(r["id"]),
                liveness.get(r["id"]),
                seen.get(r["id"]),
            )
            for r in records
        ]
        return sorted(rows, key=lambda r: (r["court"], r["room"], r["id"]))

    async def view(self, device_id: str) -> dict[str, Any]:
        device = await self.get(device_id)
        return self._row(
            device,
            await self._state.get_presence(presence.DEVICE, device_id),
            await self._liveness.get(device_id),
            await self._seen.get(device_id),
        )

    @staticmethod
    def _row(
        device: Device, beat: dict[str, Any] | None, liveness: str | None, seen: str | None
    ) -> dict[str, Any]:
        state = (
            "revoked"
            if device.revoked
            else "disabled"
            if not device.enabled
            else (liveness if liveness in ("online", "offline") else "never-seen")
        )
        health = {s["name"]: s for s in (beat or {}).get("sources", [])}
        sources = [
            {**src, **{k: v for k, v in health.get(src["name"], {}).items() if k != "name"}}
            for src in device.sources
        ]
        for src in sources:
            src.setdefault("state", "unknown")
        return {
            **device.public_view(),
            "state": state,
            "sources": sources,
            "last_seen": float(seen) if seen else None,
            "clock_offset_s": (beat or {}).get("clock_offset_s"),
            "spool_bytes": (beat or {}).get("spool_bytes"),
            "spool_limit_bytes": (beat or {}).get("spool_limit_bytes"),
            "backfill_pending": (beat or {}).get("backfill_pending"),
        }


def command_channel(device_id: str) -> str:
    """Pub/sub channel to whichever process holds the device's websocket."""
    return f"device-cmd:{device_id}"


def result_channel(command_id: str) -> str:
    """Pub/sub channel the asker of one command waits on."""
    return f"device-result:{command_id}"
