"""Analysis of streams: one pipeline per analysed stream, and the set of them.

A `StreamAnalysis` is a tap on the hub's stream (inline: it appends the packet to the
pre-roll ring and to the sampler's queue, nothing more), a `Sampler` worker thread that
decodes, runs the detectors and the episodes, and one task on the event loop that writes
what the worker found, in order: the snapshot and the alert, the clip once its post-roll
has come, the alert's end. Signal loss is told on the loop: no packet for
`signal_loss_s`, and its end when packets come back.

`Analysis` keeps a `StreamAnalysis` for every stream that wants one (every `security`
stream, with the defaults until settings are stored; any stream whose stored settings say
`enabled`), and follows changes of definitions and settings.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from media_server.analysis import clips
from media_server.analysis.alerts import AlertWriter, clip_key, new_id, snapshot_key
from media_server.analysis.detectors import Detectors
from media_server.analysis.episodes import Episodes, Transition
from media_server.analysis.sampler import Picture, Sampler
from media_server.analysis.settings import CHANGES, AnalysisSettings, SettingsStore
from media_server.hub import Hub, Stream
from media_server.media import Item, Packet, StreamEnd, StreamStart
from media_server.streams import CHANGES as STREAM_CHANGES
from media_server.streams import StreamClass, StreamDefinition, StreamRegistry
from media_server.tap import Tap, tap
from storage.objects import ObjectStore
from storage.state import StateStore

log = logging.getLogger(__name__)

RECONCILE_S = 10.0
WATCH_S = 0.25  # how often signal loss and finished post-rolls are looked at
STOP_S = 0.5  # stopping: what is not written by then (open alerts' ends) is not


@dataclass
class Episode:
    """An alert being written: its id once it is, and its clip while it collects."""

    kind: str
    transition: Transition
    alert_id: str = field(default_factory=new_id)
    snapshot: bytes | None = None
    clip: clips.Clip | None = None


class StreamAnalysis:
    def __init__(
        self,
        stream: Stream,
        court: str,
        settings: AnalysisSettings,
        writer: AlertWriter,
        objects: ObjectStore,
    ) -> None:
        self.stream = stream
        self.court = court
        self.settings = settings
        self._writer = writer
        self._objects = objects
        self._loop = asyncio.get_running_loop()
        self._ring = clips.PacketRing(settings.pre_roll_s)
        self._open: dict[str, Episode] = {}  # kind -> the episode running (loop side)
        self._collecting: list[Episode] = []  # episodes whose clip takes packets
        self._work: asyncio.Queue[tuple[str, Episode]] = asyncio.Queue()
        self._last_packet: float | None = None  # monotonic
        self._last_wall = 0.0
        # worker-thread side
        self._detectors = Detectors(settings)
        self._episodes = Episodes()
        self._settings_for_worker: AnalysisSettings | None = None
        self.sampler = Sampler(stream.id, self._picture, self._marker, settings.fps, settings.width)
        self._tap: Tap = tap(stream, "analysis", self._item)
        self._tasks = [
            asyncio.create_task(self._write_loop(), name=f"analysis-write {stream.id}"),
            asyncio.create_task(self._watch_loop(), name=f"analysis-watch {stream.id}"),
        ]

    def configure(self, settings: AnalysisSettings, court: str) -> None:
        self.court = court
        if settings == self.settings:
            return
        self.settings = settings
        self._ring.keep_s = settings.pre_roll_s
        self.sampler.fps, self.sampler.width = settings.fps, settings.width
        self._settings_for_worker = settings

    async def close(self) -> None:
        """Stop analysing; an episode still open ends now (an alert must not look ongoing
        for ever because its stream stopped being analysed)."""
        self._tap.close()
        self.sampler.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        now = time.time()
        for kind, episode in list(self._open.items()):
            with contextlib.suppress(Exception):  # Redis away: it stays open, as it was
                await self._writer.update(
                    episode.alert_id, kind, "end", end=now, score=episode.transition.score
                )
        self._open.clear()

    # -- the tap: on the publisher's stack, never blocks --------------------------------

    def _item(self, item: Item) -> None:
        if isinstance(item, Packet):
            self._packet(item)
        elif isinstance(item, (StreamStart, StreamEnd)):
            # a clip holds one publication: its timeline ends here
            for episode in self._collecting:
                self._work.put_nowait(("clip", episode))
            self._collecting = []
            if isinstance(item, StreamStart):
                self._ring.start(item.tracks)
        self.sampler.offer(item)

    def _packet(self, packet: Packet) -> None:
        self._last_packet, self._last_wall = time.monotonic(), packet.arrival
        self._ring.push(packet)
        if self._collecting:
            self._collect(packet)
        lost = self._open.get("signal_loss")
        if lost is not None:
            del self._open["signal_loss"]
            end = Transition("signal_loss", "end", packet.arrival, 1.0)
            self._work.put_nowait(("end", Episode("signal_loss", end, lost.alert_id)))

    def _collect(self, packet: Packet) -> None:
        still: list[Episode] = []
        for episode in self._collecting:
            assert episode.clip is not None
            if episode.clip.add(packet):
                still.append(episode)
            else:
                self._work.put_nowait(("clip", episode))
        self._collecting = still

    # -- the worker thread ---------------------------------------------------------------

    def _picture(self, picture: Picture) -> None:
        if self._settings_for_worker is not None:
            settings, self._settings_for_worker = self._settings_for_worker, None
            self._detectors = Detectors(settings)
        settings = self._detectors.settings
        scores = {
            k: v for k, v in self._detectors.scores(picture.grey).items() if settings.wants(k)
        }
        transitions = self._episodes.update(picture.media, picture.wall, scores)
        if transitions:
            found = [
                (t, clips.snapshot(picture.frame) if t.phase == "start" else None)
                for t in transitions
            ]
            self._loop.call_soon_threadsafe(self._transitions, found)

    def _marker(self, marker: StreamStart | StreamEnd) -> None:
        if isinstance(marker, StreamEnd):
            ended: list[tuple[Transition, bytes | None]] = [
                (t, None) for t in self._episodes.close()
            ]
            if ended:
                self._loop.call_soon_threadsafe(self._transitions, ended)
        else:
            self._detectors = Detectors(self._detectors.settings)

    # -- back on the loop ----------------------------------------------------------------

    def _transitions(self, found: list[tuple[Transition, bytes | None]]) -> None:
        for transition, jpeg in found:
            if transition.phase == "start":
                self._begin(transition, jpeg)
            else:
                self._end(transition)

    def _begin(self, transition: Transition, jpeg: bytes | None) -> None:
        settings = self.settings
        episode = Episode(transition.kind, transition, snapshot=jpeg)
        # a lost signal's clip: the seconds before it (nothing comes after)
        post_roll = 0.0 if transition.kind == "signal_loss" else settings.post_roll_s
        episode.clip = clips.clip_from(self._ring, transition.at, settings.pre_roll_s, post_roll)
        self._open[transition.kind] = episode
        self._collecting.append(episode)
        self._work.put_nowait(("start", episode))

    def _end(self, transition: Transition) -> None:
        episode = self._open.pop(transition.kind, None)
        if episode is not None:
            ended = Episode(transition.kind, transition, episode.alert_id)
            self._work.put_nowait(("end", ended))

    async def _watch_loop(self) -> None:
        """Signal loss, and clips whose post-roll ended with no packet to say so."""
        while True:
            await asyncio.sleep(WATCH_S)
            now = time.time()
            done = [e for e in self._collecting if e.clip is not None and e.clip.until < now]
            for episode in done:
                self._collecting.remove(episode)
                self._work.put_nowait(("clip", episode))
            silent = self._last_packet is not None and (
                time.monotonic() - self._last_packet >= self.settings.signal_loss_s
            )
            if silent and "signal_loss" not in self._open and self.settings.wants("signal_loss"):
                self._begin(Transition("signal_loss", "start", self._last_wall, 1.0), None)

    async def _write_loop(self) -> None:
        while True:
            phase, episode = await self._work.get()
            try:
                await self._write(phase, episode)
            except Exception:  # Redis or the object store away: this entry is lost, said
                log.exception(
                    "stream %s: %s of a %s alert not written", self.stream.id, phase, episode.kind
                )

    async def _write(self, phase: str, episode: Episode) -> None:
        alert_id, kind, transition = episode.alert_id, episode.kind, episode.transition
        if phase == "start":
            snapshot = None
            if episode.snapshot is not None:
                snapshot = snapshot_key(alert_id)
                await self._objects.put(snapshot, episode.snapshot, "image/jpeg")
            await self._writer.start(
                alert_id,
                self.stream.id,
                self.court,
                kind,
                transition.at,
                transition.score,
                snapshot,
            )
            log.info("stream %s: %s alert %s", self.stream.id, kind, alert_id)
        elif phase == "clip":
            assert episode.clip is not None
            if not episode.clip.packets:
                return
            data = await asyncio.to_thread(clips.mp4, episode.clip)
            await self._objects.put(clip_key(alert_id), data, "video/mp4")
            await self._writer.update(
                alert_id,
                kind,
                "clip",
                clip=clip_key(alert_id),
                clip_start=episode.clip.start_time(),
            )
        else:
            await self._writer.update(
                alert_id, kind, "end", end=transition.at, score=transition.score
            )


class Analysis:
    """Every analysed stream of this node's hub."""

    def __init__(self, hub: Hub, state: StateStore, objects: ObjectStore, node: str) -> None:
        self.hub = hub
        self.streams: dict[str, StreamAnalysis] = {}
        self._state = state
        self._objects = objects
        self._registry = StreamRegistry(state)
        self._settings = SettingsStore(state)
        self._writer = AlertWriter(state, node, objects.signed_url)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        with contextlib.suppress(Exception):  # Redis away: the loop tries again
            await self.reconcile()
        self._task = asyncio.create_task(self._loop(), name="analysis-reconcile")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        closing = asyncio.gather(*(a.close() for a in self.streams.values()))
        with contextlib.suppress(Exception):  # the process is stopping: within its budget
            await asyncio.wait_for(closing, STOP_S)
        self.streams.clear()

    def wanted(
        self, definition: StreamDefinition, stored: AnalysisSettings | None
    ) -> AnalysisSettings | None:
        """The settings a stream is analysed with, or None when it is not."""
        if not definition.enabled:
            return None
        if stored is not None:
            return stored if stored.enabled else None
        return AnalysisSettings() if definition.stream_class == StreamClass.security else None

    async def reconcile(self) -> None:
        stored = await self._settings.all()
        wanted: dict[str, tuple[AnalysisSettings, str]] = {}
        for definition in await self._registry.list():
            settings = self.wanted(definition, stored.get(definition.id))
            if settings is not None:
                wanted[definition.id] = (settings, definition.court)
        for stream_id in list(self.streams):
            if stream_id not in wanted:
                await self.streams.pop(stream_id).close()
        for stream_id, (settings, court) in wanted.items():
            running = self.streams.get(stream_id)
            if running is None:
                self.streams[stream_id] = StreamAnalysis(
                    self.hub.stream(stream_id), court, settings, self._writer, self._objects
                )
            else:
                running.configure(settings, court)

    async def _loop(self) -> None:
        changed = asyncio.Event()

        async def listen(channel: str) -> None:
            async with self._state.subscribe(channel) as changes:
                async for _ in changes:
                    changed.set()

        listeners = [
            asyncio.create_task(listen(channel), name=f"analysis-listen {channel}")
            for channel in (CHANGES, STREAM_CHANGES)
        ]
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), RECONCILE_S)
                changed.clear()
                try:
                    await self.reconcile()
                except Exception:  # Redis away: the next pass tries again
                    log.exception("analysis: reconciling streams failed")
        finally:
            for listener in listeners:
                listener.cancel()
            await asyncio.gather(*listeners, return_exceptions=True)


class AnalysisCollector(Collector):
    """/metrics: what analysis skipped because it was behind, and what it looked at."""

    def __init__(self, analysis: Analysis) -> None:
        self._analysis = analysis

    def collect(self) -> Iterator[CounterMetricFamily]:
        skipped = CounterMetricFamily(
            "courtcast_analysis_skipped_packets",
            "Video packets analysis skipped because it was behind (the media path never waits)",
            labels=["stream"],
        )
        pictures = CounterMetricFamily(
            "courtcast_analysis_pictures", "Pictures analysed", labels=["stream"]
        )
        for stream_id, analysed in list(self._analysis.streams.items()):
            skipped.add_metric([stream_id], analysed.sampler.skipped)
            pictures.add_metric([stream_id], analysed.sampler.pictures)
        yield skipped
        yield pictures
