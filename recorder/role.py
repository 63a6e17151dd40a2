"""The recorder role: decides which streams are recorded, runs their Recordings, resumes
the ones a killed process left open, and serves recordings over HTTP.

What is recorded (reconciled on every session or stream change, and every few seconds):
- every stream of the room of an open trial session (paused with a recess gap during a
  recess, closed and signed when the session closes);
- every stream of class `security`, continuously;
- every side of an arraignment room from the moment it is on air, session or not;
- with recorder.record_all, every live stream of this node's hub, continuously.

Where the media comes from: the hub of the media server in the same process; or, in a
recorder process of a cluster (recorder/fleet.py), a hub of its own filled by relays from
the media nodes. A fleet's recorders claim the recordings with fenced Redis leases
(recorder/leases.py): each writes those it holds, takes a free one up to its fair share,
and takes over the open recording of a key whose writer died (a recorder-failover gap).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

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
from recorder.leases import FencedIndex, FencedStore, Grant
from recorder.manifest import GapCause, Manifest
from recorder.manifest_store import load_manifest
from recorder.orphans import adopt
from recorder.recording import RecorderOptions, Recording
from recorder.sessions import CHANGES as SESSION_CHANGES
from recorder.sessions import TrialSession, TrialSessions, room_streams
from recorder.signing import SignatureError, Signer
from recorder.spool import Spool
from recorder.uploads import durable_ms
from storage.role import StorageRole

if TYPE_CHECKING:
    from recorder.fleet import RecorderFleet

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
        fleet: RecorderFleet | None = None,
    ) -> None:
        self.config = config
        self.fleet = fleet  # a recorder process of a cluster: its own hub, relays, leases
        hub = fleet.hub if fleet is not None else hub
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
        self._closing_ids: set[str] = set()  # recordings being closed here (not to take over)
        self._orphans_due = 0.0  # monotonic: when a fleet recorder next looks for orphans
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
        if self.fleet is not None:  # leases decide what this process resumes
            self.fleet.start(self._lost, lambda: {sid for sid, _ in self.active})
        else:
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
        if self.fleet is not None:  # handed back: another recorder takes them over at once
            await self.fleet.leases.release_all()
            await self.fleet.stop()

    async def health(self) -> dict[str, Any]:
        outage = any(r.outage_since is not None for r in self.active.values())
        full = any(r.spool_alert for r in self.active.values())
        # a full disk: media dropped (disk-full gaps) until a segment is spooled again
        disk_error = self.options.meter.error if self.active else None
        store_error = next((r.uploads.error for r in self.active.values() if r.uploads.error), None)
        return {
            "state": "degraded" if outage or full or disk_error else "ok",
            "recording": len(self.active),
            "spooling": outage,
            "spool_over_80_percent": full,
            "disk_error": disk_error,
            "store_error": store_error,  # why the object store refuses puts (spooling)
            "signing_key_id": self.signer.key_id,
            "durable_ms": durable_ms(r.uploads for r in self.active.values()),
            **({"leases": len(self.fleet.leases.held)} if self.fleet is not None else {}),
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
        if self.fleet is not None:  # live on any media node of the cluster
            live |= set(await self.storage.state.present(presence.STREAM_LIVE))
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
                    self._close_later(self.active.pop(key), release=key not in wanted)
            grants = await self._claim(wanted)
            for key, w in wanted.items():
                found = self.active.get(key)
                if found is None and self.fleet is not None and key not in grants:
                    continue  # another recorder's, or over this one's share
                if found is None:
                    found = self.active[key] = await self._take(w, grants.get(key))
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

    async def _claim(self, wanted: dict[tuple[str, str], Wanted]) -> dict[tuple[str, str], Grant]:
        """In a fleet: the grants this recorder holds (free keys taken up to its share), the
        streams of the new ones pulled here first. Alone: none."""
        if self.fleet is None:
            return {}
        taken = await self.fleet.leases.claim(wanted)
        await self.fleet.want(g.key[0] for g in taken if g.key not in self.active)
        return {k: g for k, g in self.fleet.leases.held.items() if k in wanted}

    async def _take(self, w: Wanted, grant: Grant | None) -> Recording:
        """A new recording of the key, or (fleet) the open one another writer left."""
        record = await self._open_of(w.key) if grant is not None else None
        if record is None:
            return await self._start(w, grant)
        rid = str(record["id"])
        mine = record.get("node") == self.options.node  # this node before a restart
        if not mine:  # what this node's spool has of it predates the other writer's part
            Spool(self.options.spool_dir, rid).remove()
        try:
            manifest = await load_manifest(self.storage.objects, self.options.spool_dir, rid)
        except (LookupError, ValueError) as exc:
            log.error("recording %s cannot be taken over (%s): a new one starts", rid, exc)
            return await self._start(w, grant)
        if not mine and grant is not None:  # what the dead writer stored but never listed
            await adopt(self.storage.objects, manifest, grant.first_seq)
        recording = self._recording(manifest, grant, takeover=True)
        cause = GapCause.recorder_restart if mine else GapCause.recorder_failover
        await recording.start(resumed=True, cause=cause)
        log.info("recording %s taken over (%s, grant %s)", rid, cause, grant and grant.value)
        return recording

    async def _close_orphans(self) -> None:
        """Fleet, every few lease times: an open recording that no recorder writes and that
        is no longer wanted (its writer died, and its session closed before another took it
        over) is taken over here and closed, with its recorder-failover gap."""
        if self.fleet is None or time.monotonic() < self._orphans_due:
            return
        self._orphans_due = time.monotonic() + 3 * self.fleet.leases.ttl_s
        wanted = await self.wanted()
        for record in await self.index.search(state="recording"):
            key = (str(record.get("stream", "")), str(record.get("session", "")))
            if key in wanted or key in self.active or record["id"] in self._closing_ids:
                continue
            grant = await self.fleet.leases.take(key)
            if grant is None:  # its writer lives (and is closing it), or another took it
                continue
            try:
                manifest = await load_manifest(
                    self.storage.objects, self.options.spool_dir, str(record["id"])
                )
            except (LookupError, ValueError) as exc:
                log.error("recording %s left open, cannot be closed: %s", record["id"], exc)
                await self.fleet.leases.release(key)
                continue
            await adopt(self.storage.objects, manifest, grant.first_seq)
            recording = self._recording(manifest, grant, takeover=True)
            await recording.start(resumed=True, cause=GapCause.recorder_failover)
            log.info("recording %s left open by a dead recorder: closed here", recording.id)
            self._close_later(recording, release=True)

    async def _open_of(self, key: tuple[str, str]) -> dict[str, Any] | None:
        """The index record of the key's open recording, if one was left."""
        found = await self.index.search(stream=key[0], session=key[1], state="recording")
        found = [r for r in found if r["id"] not in self._closing_ids]  # a rotation's
        return next((r for r in found if r.get("session", "") == key[1]), None)

    def _recording(
        self, manifest: Manifest, grant: Grant | None, takeover: bool = False
    ) -> Recording:
        """A Recording; in a fleet, writing only while its grant holds, listing each
        segment in the stored manifest as soon as it is stored (a takeover then finds
        little the manifest lacks), and, taking over another writer's recording, numbering
        its segments from the grant's range (their objects never share a key)."""
        store, index, options = self.storage.objects, self.index, self.options
        if grant is not None and self.fleet is not None:
            store = FencedStore(store, self.fleet.leases, grant)
            index = FencedIndex(self.storage.state, grant)
            first = grant.first_seq if takeover else 0  # a new recording has no other writer
            options = replace(options, first_seq=first, checkpoint_every_s=0.0)
        return Recording(self.hub_or_fail(), store, index, self.signer, manifest, options)

    async def _lost(self, grant: Grant) -> None:
        """The lease passed to another recorder (or ran out): stop writing at once. What
        this process has of it is no use to the new writer: its spool goes."""
        async with self._lock:
            recording = self.active.pop(grant.key, None)
        if recording is None:
            return
        log.error("recording %s: lease lost, this recorder stops writing it", recording.id)
        recording.uploads.stop()
        with contextlib.suppress(Exception):
            await recording.stop(0.0)
        recording.spool.remove()

    async def _start(self, w: Wanted, grant: Grant | None = None) -> Recording:
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
        recording = self._recording(manifest, grant)
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

    def _close_later(self, recording: Recording, release: bool = False) -> None:
        """Close (upload, sign) without holding up the reconcile of other streams; release:
        then hand its lease back (a fleet's key no longer wanted)."""
        task = asyncio.create_task(self._close(recording, release), name=f"close {recording.id}")
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _close(self, recording: Recording, release: bool) -> None:
        self._closing_ids.add(recording.id)
        try:
            await recording.close()
        finally:
            self._closing_ids.discard(recording.id)
            key = (recording.manifest.stream, recording.manifest.session)
            if release and self.fleet is not None and key not in self.active:
                await self.fleet.leases.release(key)

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
                await asyncio.wait_for(self._changed.wait(), self._round_s())
            self._changed.clear()
            try:
                await self.sessions.open_due()
                await self.reconcile()
                await self._close_orphans()
                await self._touch_recorded()
                await self.sync_broadcasts()
            except Exception:  # Redis away or a bad definition: the next round retries
                log.exception("recorder: reconcile failed")

    def _round_s(self) -> float:
        """Between reconciles: in a fleet, a fifth of the lease time, so a lease that ran
        out is taken over soon after."""
        if self.fleet is None:
            return RECONCILE_S
        return min(RECONCILE_S, self.fleet.leases.ttl_s / 5)

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
