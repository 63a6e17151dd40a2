"""The media-server role: ingests (RTMP, RTSP pull, WHIP, demo rooms) into the hub, and
egress (LL-HLS, WHEP, RTMP play) out of it, every one of them behind the access policy."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, HTTPException, Request

from core import presence
from core.alerts import alert
from core.audit import FirstSeen
from core.config import MediaServerSection
from core.courts import CourtTree
from core.rights import Caller
from core.stream_events import NewsSender, live_news
from media_server.access import AccessDenied, AccessPolicy, PlayTokens
from media_server.admissions import Admission, Admissions
from media_server.hub import Hub
from media_server.stats import HubCollector, RtmpCollector, stream_stats
from media_server.streams import CHANGES as STREAM_CHANGES
from media_server.streams import (
    StreamClass,
    StreamDefinition,
    StreamRegistry,
    check_source_url,
)
from media_server.track_alerts import KIND as TRACK_DROPPED
from media_server.track_alerts import DroppedTracks, describe
from storage.role import StorageRole

log = logging.getLogger(__name__)

LIVE_TTL_S = 5
RECONCILE_S = 10.0

CallerResolver = Callable[[Request], Awaitable[Caller | None]]


class MediaServerRole:
    name = "media_server"

    def __init__(
        self,
        config: MediaServerSection,
        storage: StorageRole,
        app: FastAPI,
        metrics: Any,
        resolve_caller: CallerResolver,
        rtmp_sock: socket.socket | None,
        node_url: str = "",
    ) -> None:
        self.config = config
        self.storage = storage
        self.app = app
        self.metrics = metrics
        self.resolve_caller = resolve_caller
        self.hub = Hub()
        self.registry = StreamRegistry(storage.state)
        self.tokens = PlayTokens.for_node(config.node.data_dir, config.security)
        self.access = AccessPolicy(self.registry, self.tokens, config.security.open)
        self.admissions = Admissions(self.access)  # WHEP and RTMP players, checked again
        self.hls_viewers = FirstSeen()  # LL-HLS viewings of private streams, audited once
        self._recheck = asyncio.Event()  # a definition changed: check the admitted at once
        self.rtmp: Any = None
        self.hls: Any = None
        self.public: Any = None  # media_server.public.PublicRenditions, once mounted
        self.pulls: dict[str, Any] = {}
        self.demos: list[Any] = []
        self._tasks: list[asyncio.Task[None]] = []
        # path prefix -> ASGI hot path the process serves before the app (http_front.py):
        # called with (scope, receive, send), True when it answered
        self.hot_paths: dict[str, Callable[..., Awaitable[bool]]] = {}
        self._rtmp_sock = rtmp_sock  # bound by the platform before anything started
        self._refused: set[str] = set()  # sources refused (logged once)
        self._dropped = DroppedTracks()  # dropped tracks already alerted
        self.news = NewsSender(storage.state.publish)  # streams going live and offline
        self.analysis: Any = None  # media_server.analysis.service.Analysis, once started
        self.node_url = node_url  # where other nodes reach this one (its HTTP base)
        self.cluster: Any = None  # media_server.cluster.service.Cluster, in a cluster

    @property
    def rtmp_port(self) -> int:
        return self.rtmp.port if self.rtmp is not None else 0

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        self.metrics.register(HubCollector(self.hub))
        self.hub.on_publish.append(lambda sid: self.news.say(live_news(sid, True, time.time())))
        self.hub.on_unpublish.append(lambda sid: self.news.say(live_news(sid, False, time.time())))
        self._tasks.append(asyncio.create_task(self.news.run(), name="stream-news"))
        await self._start_cluster()
        await self._start_rtmp()
        self._mount_hls()
        self._mount_webrtc()
        if self.config.demo.enabled:
            await self._start_demo()
        await self._start_analysis()
        await self._reconcile_pulls()
        self._tasks.append(asyncio.create_task(self._publish_live_stats(), name="live-stats"))
        self._tasks.append(asyncio.create_task(self._reconcile_loop(), name="pull-reconcile"))
        self._tasks.append(asyncio.create_task(self._recheck_loop(), name="viewer-recheck"))

    async def stop(self) -> None:
        if self.cluster is not None:
            await self.cluster.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.analysis is not None:
            await self.analysis.stop()
        await asyncio.gather(*(demo.stop() for demo in self.demos), return_exceptions=True)
        await asyncio.gather(*(pull.stop() for pull in self.pulls.values()), return_exceptions=True)
        if self.public is not None:
            await self.public.close()
        if self.hls is not None:
            await self.hls.close()
        if self.rtmp is not None:
            await self.rtmp.stop()
        elif self._rtmp_sock is not None:
            self._rtmp_sock.close()

    async def health(self) -> dict[str, Any]:
        streams = self.hub.streams()
        return {
            "state": "ok",
            "streams_live": sum(s.live for s in streams),
            "subscribers": sum(len(s.subscribers) for s in streams),
            "rtmp_port": self.rtmp_port,
            **({"cluster": self.cluster.stats()} if self.cluster is not None else {}),
        }

    def demo_streams(self) -> list[tuple[str, str]]:
        return [(demo.stream_id, demo.title) for demo in self.demos]

    # -- cluster (DESIGN.md §9) -----------------------------------------------------------

    async def _start_cluster(self) -> None:
        if not self.config.cluster.enabled:
            return
        from media_server.cluster.link import NodeTokens
        from media_server.cluster.metrics import ClusterCollector
        from media_server.cluster.nodes import NodeDirectory
        from media_server.cluster.service import Cluster

        cfg, node = self.config.cluster, self.config.node
        if not self.config.security.url_signing_secret:
            log.error(
                "cluster: security.url_signing_secret is not set, so this node's tokens are "
                "its own and other nodes cannot pull its streams: set the same one on every node"
            )
        rtmp = (
            f"{self.config.rtmp.host}:{self._rtmp_sock.getsockname()[1]}" if self._rtmp_sock else ""
        )
        directory = NodeDirectory(
            self.storage.state, node.name, self.node_url, rtmp, cfg.node_timeout_s
        )
        tokens = NodeTokens.for_node(node.data_dir, self.config.security.url_signing_secret)
        self.cluster = Cluster(
            cfg, self.hub, self.storage.state, directory, tokens, pulled=self.pulls.keys
        )
        self.app.include_router(self.cluster.router())
        self.metrics.register(ClusterCollector(self.cluster))
        await self.cluster.start()

    async def _originates(self, stream_id: str) -> bool:
        """A camera is pulled by one node of a cluster: the one holding its origin lease
        (the first to claim it; another once that node is gone)."""
        if self.cluster is None or stream_id in self.pulls:
            return True
        try:
            await self._claim_origin(stream_id, wait=False)  # each camera in turn: no wait
        except AccessDenied:
            return False
        return True

    async def _claim_origin(self, stream_id: str, wait: bool = True) -> None:
        """A publisher is let in only while no other node publishes the stream."""
        if self.cluster is None:
            return
        from media_server.cluster.origins import OriginBusy

        try:
            await self.cluster.check_publish(stream_id, wait=wait)
        except OriginBusy as exc:
            raise AccessDenied(str(exc), 409) from None

    # -- ingest --------------------------------------------------------------------------

    async def _start_rtmp(self) -> None:
        if self._rtmp_sock is None:
            return
        from media_server.rtmp.errors import RtmpRefused
        from media_server.rtmp.server import RtmpLimits, RtmpServer

        async def authorize(stream_id: str, key: str | None, action: str, peer: str) -> None:
            try:
                if action == "publish":
                    await self.access.check_publish(stream_id, key, peer)
                    await self._claim_origin(stream_id)
                else:
                    definition = await self.access.check_play(stream_id, token=key)
                    if self.cluster is not None:
                        await self.cluster.want(stream_id)
                    await self._audit_view(definition, None, key, peer, "rtmp")
            except AccessDenied as exc:
                raise RtmpRefused(str(exc)) from None

        def admit_player(
            stream_id: str, key: str | None, cut: Callable[[str], object], ended: Callable[[], bool]
        ) -> None:
            if not self.config.security.open:
                self.admissions.admit(Admission(stream_id, key, None, cut, ended))

        cfg = self.config.rtmp
        limits = RtmpLimits(
            handshake_timeout=cfg.handshake_timeout_s,
            idle_timeout=cfg.publish_deadline_s,
            max_connections=cfg.max_connections,
            max_connections_per_address=cfg.max_connections_per_address,
            max_message=cfg.max_message_bytes,
        )
        self.rtmp = RtmpServer(
            self.hub,
            cfg.host,
            0,
            authorize=authorize,
            limits=limits,
            sock=self._rtmp_sock,
            admit_player=admit_player,
        )
        await self.rtmp.start()
        self.metrics.register(RtmpCollector(self.rtmp.stats))

    async def _start_analysis(self) -> None:
        """Security analysis (media_server/analysis): off the media path, in threads."""
        from media_server.analysis.service import Analysis, AnalysisCollector

        state, objects = self.storage.state, self.storage.objects
        self.analysis = Analysis(self.hub, state, objects, self.config.node.name)
        await self.analysis.start()
        self.metrics.register(AnalysisCollector(self.analysis))

    async def _start_demo(self) -> None:
        from media_server.demo import DemoCourtroom, demo_court_tree, demo_courts

        tree = CourtTree(self.registry.state)
        for court in demo_courts():  # before the streams, whose court names find them
            await tree.add(court)
        for room in demo_court_tree()[: self.config.demo.rooms]:
            await self.registry.define(
                StreamDefinition(
                    id=room.stream_id,
                    stream_class=StreamClass.trial,
                    public=True,
                    title=room.title,
                    court=room.court,
                    room=room.room,
                )
            )
            demo = DemoCourtroom(self.hub, room.stream_id, room.title)
            await demo.start()
            self.demos.append(demo)

    async def _reconcile_pulls(self) -> None:
        """Start a puller for every registered stream with a source URL; stop removed ones."""
        from media_server.rtsp.pull import RtspPull

        wanted = {
            d.id: d
            for d in await self.registry.list()
            if d.source_url and d.enabled and self._may_pull(d) and await self._originates(d.id)
        }
        for stream_id in list(self.pulls):
            if stream_id not in wanted or self.pulls[stream_id].url != wanted[stream_id].source_url:
                await self.pulls.pop(stream_id).stop()
        for stream_id, definition in wanted.items():
            if stream_id not in self.pulls:
                pull = RtspPull(self.hub, stream_id, definition.source_url)
                pull.start()
                self.pulls[stream_id] = pull

    def _may_pull(self, definition: StreamDefinition) -> bool:
        """Only RTSP cameras (files too in open or demo mode), whoever wrote the definition."""
        local_ok = self.config.security.open or self.config.demo.enabled
        try:
            check_source_url(definition.source_url, local_ok)
        except ValueError as exc:
            if definition.id not in self._refused:
                log.warning("stream %s not pulled: %s", definition.id, exc)
                self._refused.add(definition.id)
            return False
        return True

    async def _drop_disabled_publishers(self) -> None:
        """A publisher on a stream that was disabled (a device disabled or revoked) is
        disconnected at once; publish checks refuse it when it comes back."""
        if self.config.security.open:
            return
        for stream in self.hub.streams():
            publication = stream.publication
            if publication is None or not publication.alive:
                continue
            definition = await self.registry.get(stream.id)
            if definition is not None and not definition.enabled:
                log.info("stream %s disabled: disconnecting %s", stream.id, publication.source)
                stream.unpublish(publication, "stream disabled")
                publication.evict("stream disabled")

    async def _reconcile_loop(self) -> None:
        """Reconcile at once when a definition changes (pub/sub), and every RECONCILE_S
        anyway, since pub/sub drops what is published while Redis is away."""
        changed = asyncio.Event()

        async def listen() -> None:
            async with self.storage.state.subscribe(STREAM_CHANGES) as changes:
                async for change in changes:
                    self.access.forget(str(change.get("id")))
                    self._recheck.set()
                    if change.get("change") == "key-rotated":
                        self._evict_publisher(str(change.get("id")), float(change.get("at", 0)))
                    changed.set()

        listener = asyncio.create_task(listen(), name="stream-changes")
        try:
            while True:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(changed.wait(), RECONCILE_S)
                changed.clear()
                try:
                    await self._reconcile_pulls()
                    await self._drop_disabled_publishers()
                except Exception:  # a bad definition must not end the loop for the others
                    log.exception("reconciling pulled streams failed")
        finally:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)

    def _evict_publisher(self, stream_id: str, before: float) -> None:
        """A key was rotated: a publisher that started on the old key is disconnected."""
        stream = self.hub.find(stream_id)
        publication = stream.publication if stream is not None else None
        if stream is None or publication is None or publication.started > before:
            return
        log.info("stream %s: key rotated, disconnecting %s", stream_id, publication.source)
        stream.unpublish(publication, "publish key rotated")
        publication.evict("publish key rotated")

    async def _recheck_loop(self) -> None:
        """WHEP and RTMP players are let in once: check them again at once when a
        definition changes, and every part (play tokens expire)."""
        every = self.config.hls.part_target_s
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._recheck.wait(), every)
            self._recheck.clear()
            try:
                await self.admissions.check()
            except Exception:  # Redis away: nobody is cut for it; the next pass tries again
                log.exception("checking admitted viewers failed")

    async def admit_viewer(
        self,
        request: Request,
        stream_id: str,
        cut: Callable[[str], object],
        ended: Callable[[], bool],
    ) -> None:
        """A WHEP viewer authorize_play let in: kept to be checked again while it watches."""
        if self.config.security.open:
            return
        caller = await self.resolve_caller(request)
        token = request.query_params.get("token")
        self.admissions.admit(Admission(stream_id, token, caller, cut, ended))

    async def _publish_live_stats(self) -> None:
        """Tell every node (and the CLI) which streams are live here, with their stats, and
        how the cameras this node pulls are doing."""
        node = self.config.node.name
        while True:
            now = time.time()
            # pulled streams too while down: their state (failed: why) is the news
            infos = {
                stream.id: {**stream_stats(stream), "node": node, "at": now}
                for stream in self.hub.streams()
                if (stream.live or stream.id in self.pulls) and not self._relayed(stream)
            }
            with contextlib.suppress(Exception):  # Redis down: health says so
                await self.storage.state.touch_presences(presence.STREAM_LIVE, LIVE_TTL_S, infos)
            await self._alert_dropped_tracks()
            self.hub.drop_idle(keep=self.pulls.keys())
            await asyncio.sleep(1.0)

    def _relayed(self, stream: Any) -> bool:
        """A copy pulled from another node: its origin says it is live, not this node."""
        from media_server.cluster.relay import is_relay

        return self.cluster is not None and is_relay(stream)

    async def _alert_dropped_tracks(self) -> None:
        """A track newly dropped by an ingest (stats: "dropped: why") raises one alert."""
        for stream_id, track in self._dropped.new(self.hub.streams()):
            message, fields = describe(stream_id, track)
            try:
                await alert(
                    self.storage.state, TRACK_DROPPED, message, node=self.config.node.name, **fields
                )
            except Exception:  # Redis down: said at the next tick
                log.debug("alert not written: %s", message, exc_info=True)
                self._dropped.retry(stream_id, track)
            else:
                log.warning("%s", message)

    # -- egress --------------------------------------------------------------------------

    async def authorize_play(self, request: Request, stream_id: str) -> None:
        """The check every HTTP egress (LL-HLS, WHEP) makes before serving a byte."""
        token = request.query_params.get("token")
        caller = None
        try:
            try:  # public, open mode or a play token: no session lookup (a Redis GET)
                definition = await self.access.check_play(stream_id, token)
            except AccessDenied:
                caller = await self.resolve_caller(request)
                if caller is None:
                    raise
                definition = await self.access.check_play(stream_id, token, caller)
        except AccessDenied as exc:
            raise HTTPException(exc.status, str(exc)) from None
        if self.cluster is not None:  # published on another node: pull it here once
            await self.cluster.want(stream_id)
        peer = request.client.host if request.client else "?"
        via = "whep" if request.url.path.startswith("/whep/") else "ll-hls"
        await self._audit_view(definition, caller, token, peer, via)

    async def _audit_view(
        self,
        definition: StreamDefinition | None,
        caller: Caller | None,
        token: str | None,
        peer: str,
        via: str,
    ) -> None:
        """A view of a private stream goes to the audit trail: each WHEP session and RTMP
        play, an LL-HLS viewer at its first request (not at each of its several a second).
        Who: the signed-in caller, else the holder the play token was made for."""
        if definition is None or definition.is_public or self.config.security.open:
            return
        if caller is not None:
            who = caller.name
        else:
            who = (PlayTokens.holder(token) if token else "") or "play-token"
        if via == "ll-hls" and not self.hls_viewers.first(definition.id, who, peer):
            return
        details = {"stream": definition.id, "court": definition.court, "via": via, "peer": peer}
        try:
            await self.audit("stream.view", who, details)
        except Exception:  # Redis away: the viewer is served; the log says what was lost
            log.warning(
                "audit entry lost: %s viewed %s via %s", who, definition.id, via, exc_info=True
            )

    async def authorize_publish(self, request: Request, stream_id: str, bearer: str | None) -> None:
        peer = request.client.host if request.client else "?"
        try:
            await self.access.check_publish(stream_id, bearer, f"whip {peer}")
            await self._claim_origin(stream_id)
        except AccessDenied as exc:
            raise HTTPException(exc.status if exc.status != 403 else 401, str(exc)) from None

    def _mount_hls(self) -> None:
        from media_server.hls.http import LiveFastPath, make_hls_router
        from media_server.hls.output import HlsOptions, HlsOutputs
        from media_server.hls.window_files import WindowFiles

        options = HlsOptions(**self.config.hls.model_dump())
        root = self.config.node.data_dir / "hls-window"
        files = WindowFiles(root) if options.window_in_files else None
        self.hls = HlsOutputs(self.hub, options, files)
        self.app.include_router(make_hls_router(self.hls, self.authorize_play))
        # the same routes for the process's front door, ahead of the app's middleware
        self.hot_paths["/live/"] = LiveFastPath(self.hls, self.authorize_play)
        self._mount_public()

    def _mount_public(self) -> None:
        """/public/{name}/: the delayed renditions a broadcast's driver (the recorder's
        sessions) makes; nothing else is ever served there."""
        from media_server.hls.public_http import PublicFastPath, make_public_router
        from media_server.public import PublicRenditions

        self.public = PublicRenditions(self.hub, self.hls.options)
        self.app.include_router(make_public_router(self.public))
        self.hot_paths["/public/"] = PublicFastPath(self.public)

    async def audit(self, action: str, who: str, details: dict[str, Any]) -> None:
        """One line of the audit trail (DESIGN.md §7); the recorder's writer, one format."""
        from core.audit import audit

        await audit(self.storage.state, action, who, **details)

    async def define_private_streams(self, definitions: list[StreamDefinition]) -> None:
        """Arraignment seats: private streams the recorder records. Their publish keys are
        not used (seats publish with their seat token)."""
        for definition in definitions:
            await self.registry.define(definition)

    def _room_hooks(self) -> Any:
        from media_server.webrtc.arraignment import StateRoomStore
        from media_server.webrtc.arraignment_http import JOIN_LIMIT, RoomHooks
        from storage.attempts import Attempts

        async def caller(request: Request) -> Caller | None:
            found = await self.resolve_caller(request)
            if found is None and self.config.security.open:  # loopback trials: no sign-in
                return Caller("open-mode", "admin")
            return found

        return RoomHooks(
            resolve_caller=caller,
            audit=self.audit,
            define_streams=self.define_private_streams,
            store=StateRoomStore(self.storage.state),
            attempts=Attempts(self.storage.state, JOIN_LIMIT),
        )

    def _mount_webrtc(self) -> None:
        from media_server.webrtc.http import make_webrtc_router
        from media_server.webrtc.ice import IceConfig, IceServer
        from media_server.webrtc.service import WebRTCOptions

        cfg = self.config.webrtc
        ice = IceConfig(
            servers=[IceServer(**s.model_dump()) for s in cfg.ice_servers],
            host_addresses=cfg.host_addresses,
            include_loopback=cfg.include_loopback,
            connect_timeout_s=cfg.connect_timeout_s,
        )
        options = WebRTCOptions(
            shared_packetization=cfg.shared_packetization,
            max_sessions=cfg.max_sessions,
            staff_reserve=cfg.staff_reserve,
            max_public_per_address=cfg.max_public_per_address,
        )
        self.app.include_router(
            make_webrtc_router(
                self.hub,
                self.authorize_play,
                self.authorize_publish,
                ice,
                options,
                self._room_hooks(),
                admit_viewer=self.admit_viewer,
            )
        )
