"""The recorder role: decides which streams are recorded, runs their Recordings, resumes
the ones a killed process left open, and serves recordings over HTTP.

What is recorded (reconciled on every session or stream change, and every few seconds):
- every stream of the room of an open trial session (paused with a recess gap during a
  recess, closed and signed when the session closes);
- every stream of class `security`, continuously;
- every side of an arraignment room from the moment it is on air, session or not;
- with recorder.record_all, every live stream of this node's hub, continuously.

It needs the hub of the media server in the same process (DESIGN.md §9: recording a
stream of another node needs the on-demand relay, not built yet).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI

from core import presence
from core.config import ConfigError, RecorderSection
from core.identity import DeviceStreams, no_devices
from core.stream_events import NewsSender, recording_news
from core.tasks import cancel_and_wait
from media_server.hub import Hub
from media_server.public import PublicRenditions
from media_server.streams import CHANGES as STREAM_CHANGES
from media_server.streams import StreamClass, StreamDefinition, StreamRegistry
from recorder.broadcast import Broadcasts
from recorder.index import RecordingIndex
from recorder.manifest import Manifest
from recorder.manifest_store import load_manifest
from recorder.recording import RecorderOptions, Recording
from recorder.sessions import CHANGES as SESSION_CHANGES
from recorder.sessions import TrialSession, TrialSessions, room_streams
from recorder.signing import SignatureError, Signer
from recorder.uploads import durable_ms
from storage.role import StorageRole

log = logging.getLogger(__name__)

RECONCILE_S = 2.0
RECORDING_TTL_S = 3 * RECONCILE_S  # stream-recording presence outlives two missed rounds
CONTINUOUS = ""  # the session id of a continuous (not session) recording


@dataclass(frozen=True)
class Wanted:
    stream: StreamDefinition
    session: TrialSession | None

    @property
    def key(self) -> tuple[str, str]:
        return self.stream.id, self.session.id if self.session else CONTINUOUS


def new_recording_id(stream_id: str, now: float) -> str:
    stamp = datetime.fromtimestamp(now, UTC).strftime("%Y%m%dT%H%M%SZ")
    # 64 random bits: two recordings of a stream started in the same second (a restart,
    # two recorders) never share a prefix, and nobody can guess the next id
    return f"{stream_id}-{stamp}-{secrets.token_hex(8)}"


class RecorderRole:
    name = "recorder"

    def __init__(
        self,
        config: RecorderSection,
        storage: StorageRole,
        app: FastAPI | None,
        hub: Hub | None,
        device_streams: DeviceStreams = no_devices,
        public: PublicRenditions | None = None,
    ) -> None:
        self.config = config
        self.device_streams = device_streams  # who may upload backfill, and for which streams
        self.storage = storage
        self.app = app
        self.hub = hub
        try:  # a key others can read (or none where configured) is a config error
            self.signer = Signer.for_recorder(config.recorder, config.node.data_dir)
        except SignatureError as exc:
            raise ConfigError(f"recorder.signing_key_file: {exc}") from None
        self.index = RecordingIndex(storage.state)
        self.sessions = TrialSessions(storage.state)
        self.registry = StreamRegistry(storage.state)
        cfg = config.recorder
        self.options = RecorderOptions(
            cfg.segment_target_s,
            cfg.part_target_s,
            config.spool_dir,
            cfg.spool_limit_mb << 20,
            config.node.name,
        )
        # public broadcasts follow sessions: with the media server's renditions at hand
        self.broadcasts = (
            Broadcasts(self.sessions, self.registry, public) if public is not None else None
        )
        self.active: dict[tuple[str, str], Recording] = {}
        self._closing: set[asyncio.Task[Any]] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._changed = asyncio.Event()
        self._lock = asyncio.Lock()
        self.news = NewsSender(storage.state.publish)  # streams starting and ending recording
        self._recorded: set[str] = set()  # the stream ids the news last said are recorded

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        if self.app is not None:
            from recorder.backfill_api import make_backfill_router
            from recorder.clerk_pages import make_clerk_pages_router
            from recorder.http import make_recorder_router
            from recorder.replay_http import Replays, make_replay_router

            self.app.include_router(make_recorder_router(self))
            self.app.include_router(make_clerk_pages_router())
            self.app.include_router(make_replay_router(self, Replays(self)))
            self.app.include_router(make_backfill_router(self))
        if self.hub is None:
            log.warning("recorder: no media server in this process, nothing to record")
            return
        self._tasks.append(asyncio.create_task(self.news.run(), name="recording-news"))
        await self._resume_open()
        await self.reconcile()
        await self.sync_broadcasts()
        self.hub.on_publish.append(self._on_publish)
        self._tasks.append(asyncio.create_task(self._loop(), name="recorder-reconcile"))
        self._tasks.append(asyncio.create_task(self._retention_loop(), name="retention"))
        for channel in (SESSION_CHANGES, STREAM_CHANGES):
            self._tasks.append(asyncio.create_task(self._listen(channel), name=channel))

    async def stop(self) -> None:
        if self.hub is not None and self._on_publish in self.hub.on_publish:
            self.hub.on_publish.remove(self._on_publish)
        await cancel_and_wait(self._tasks)
        # the process stops, the recordings do not end: a restart resumes them with a gap
        await asyncio.gather(*(r.stop(0.3) for r in self.active.values()), return_exceptions=True)
        self.active.clear()
        for task in self._closing:
            task.cancel()

    async def health(self) -> dict[str, Any]:
        outage = any(r.outage_since is not None for r in self.active.values())
        full = any(r.spool_alert for r in self.active.values())
        return {
            "state": "degraded" if outage or full else "ok",
            "recording": len(self.active),
            "spooling": outage,
            "spool_over_80_percent": full,
            "signing_key_id": self.signer.key_id,
            "durable_ms": durable_ms(r.uploads for r in self.active.values()),
        }

    # -- what to record -----------------------------------------------------------------

    async def wanted(self) -> dict[tuple[str, str], Wanted]:
        definitions = await self.registry.list()
        wanted: dict[tuple[str, str], Wanted] = {}
        for session in await self.sessions.active():
            for definition in room_streams(definitions, session.room):
                w = Wanted(definition, session)
                wanted[w.key] = w
        by_id = {d.id: d for d in definitions}
        live = {s.id for s in self.hub.streams() if s.live} if self.hub is not None else set()
        recorded = {sid for sid, sess in self.active if sess == CONTINUOUS}
        continuous = [
            d for d in definitions if d.enabled and d.stream_class == StreamClass.security
        ]
        # an arraignment side is recorded from the moment it is on air, session or not, and
        # stays recorded (gaps while off air) as long as its room's streams exist
        in_session = {sid for sid, _ in wanted}
        continuous += [
            d
            for d in definitions
            if d.enabled
            and d.stream_class == StreamClass.arraignment
            and d.id not in in_session
            and (d.id in live or d.id in recorded)
        ]
        if self.config.recorder.record_all and self.hub is not None:
            continuous += [
                by_id.get(sid) or StreamDefinition(id=sid) for sid in sorted(live | recorded)
            ]
        for definition in continuous:
            w = Wanted(definition, None)
            wanted[w.key] = w
        return wanted

    async def reconcile(self) -> None:
        async with self._lock:
            wanted = await self.wanted()
            for key, recording in list(self.active.items()):
                if key not in wanted or self._due_for_rotation(key, recording):
                    self._close_later(self.active.pop(key))
            for key, w in wanted.items():
                found = self.active.get(key)
                if found is None:
                    found = self.active[key] = await self._start(w)
                if w.session is not None and w.session.state == "recess":
                    found.pause(w.session.reason)
                else:
                    found.resume()
            self._tell_recorded()

    def _tell_recorded(self) -> None:
        """News of the streams whose recording started or ended in this round."""
        recorded = {stream_id for stream_id, _ in self.active}
        now = time.time()
        for stream_id in sorted(recorded ^ self._recorded):
            self.news.say(recording_news(stream_id, stream_id in recorded, now))
        self._recorded = recorded

    async def _touch_recorded(self) -> None:
        """The same as presence, for listeners that start now (or missed the news)."""
        now = time.time()
        infos = {stream_id: {"at": now} for stream_id in self._recorded}
        await self.storage.state.touch_presences(presence.STREAM_RECORDING, RECORDING_TTL_S, infos)

    async def _start(self, w: Wanted) -> Recording:
        now = time.time()
        d, s = w.stream, w.session
        manifest = Manifest(
            recording_id=new_recording_id(d.id, now),
            stream=d.id,
            session=s.id if s else "",
            court=(s.court if s else "") or d.court,
            room=(s.room if s else "") or d.room,
            case_number=s.case_number if s else "",
            stream_class=str(d.stream_class),
            opened_at=round(now, 6),
            public=bool(s is not None and s.public and d.stream_class == StreamClass.trial),
        )
        recording = Recording(
            self.hub_or_fail(),
            self.storage.objects,
            self.index,
            self.signer,
            manifest,
            self.options,
        )
        await recording.start()
        log.info(
            "recording %s started (%s)",
            manifest.recording_id,
            f"session {s.id}" if s else "continuous",
        )
        return recording

    def _due_for_rotation(self, key: tuple[str, str], recording: Recording) -> bool:
        """A continuous recording ends after rotate_s and the next one starts at once (from
        the hub's GOP cache, so nothing falls between them)."""
        age = time.time() - recording.manifest.opened_at
        return key[1] == CONTINUOUS and age >= self.config.recorder.rotate_s

    async def _retention_loop(self) -> None:
        from recorder.retention import apply_retention, disk_pressure_alert

        days = {str(k): v for k, v in self.config.recorder.retention_days.items()}
        while True:
            try:
                await apply_retention(self.storage.objects, self.index, days)
                await disk_pressure_alert(self.index, self.config.node.data_dir)
            except Exception:  # storage or Redis away: the next round retries
                log.exception("recorder: retention round failed")
            await asyncio.sleep(self.config.recorder.retention_check_s)

    def hub_or_fail(self) -> Hub:
        if self.hub is None:
            raise RuntimeError("the recorder needs a media server in the same process")
        return self.hub

    def _close_later(self, recording: Recording) -> None:
        """Close (upload, sign) without holding up the reconcile of other streams."""
        task = asyncio.create_task(recording.close(), name=f"close {recording.id}")
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def wait_closed(self, timeout_s: float = 30.0) -> None:
        """Wait for recordings being closed (tests, and the CLI waiting for signatures)."""
        if self._closing:
            await asyncio.wait_for(
                asyncio.gather(*self._closing, return_exceptions=True), timeout_s
            )

    async def _resume_open(self) -> None:
        """Recordings this node had open when it stopped (or was killed) go on, each with a
        recorder-restart gap; reconcile then closes those no longer wanted."""
        for record in await self.index.search(state="recording", node=self.options.node):
            try:
                manifest = await load_manifest(
                    self.storage.objects, self.options.spool_dir, record["id"]
                )
            except (LookupError, ValueError) as exc:
                log.error("recording %s cannot be resumed: %s", record["id"], exc)
                continue
            recording = Recording(
                self.hub_or_fail(),
                self.storage.objects,
                self.index,
                self.signer,
                manifest,
                self.options,
            )
            await recording.start(resumed=True)
            self.active[(manifest.stream, manifest.session)] = recording
            log.info("recording %s resumed after a restart", manifest.recording_id)

    # -- loops --------------------------------------------------------------------------

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), RECONCILE_S)
            self._changed.clear()
            try:
                await self.sessions.open_due()
                await self.reconcile()
                await self._touch_recorded()
                await self.sync_broadcasts()
            except Exception:  # Redis away or a bad definition: the next round retries
                log.exception("recorder: reconcile failed")

    async def sync_broadcasts(self) -> None:
        """Public renditions as the sessions now say (also called by the API at once)."""
        if self.broadcasts is not None:
            await self.broadcasts.reconcile()

    def _on_publish(self, stream_id: str) -> None:
        self._changed.set()  # a stream recorded while live (arraignment, record-all) may start

    async def _listen(self, channel: str) -> None:
        async with self.storage.state.subscribe(channel) as changes:
            async for _ in changes:
                self._changed.set()

    def find(self, recording_id: str) -> Recording | None:
        return next((r for r in self.active.values() if r.id == recording_id), None)
