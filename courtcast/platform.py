"""One place wires the system: roles started in order, stopped in reverse.

`courtcast up` runs every role in one process; `courtcast media-server` and
`courtcast control-room` run one each (plus storage, which every role needs) against an
external Redis and S3. The code path is the same; only the config differs.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from core.config import Config, ConfigError
from core.page_headers import SecurityHeaders
from core.rights import Caller, may
from core.web.assets import mount_assets
from courtcast.body_limit import BodyLimit
from courtcast.http_front import FrontDoor
from courtcast.http_guard import HeaderLimits, guarded_protocol

log = logging.getLogger(__name__)

ROLE_ORDER = ("storage", "media_server", "recorder", "control_room")
STOP_BUDGET_S = 4.0  # SIGTERM to exit must stay under 5 s
METRICS_REFUSED = (
    "/metrics needs Authorization: Bearer <security.metrics_token>, "
    "or a signed-in admin, operator or technician"
)


class Role(Protocol):
    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def health(self) -> dict[str, Any]: ...


def bind_socket(host: str, port: int, key: str) -> socket.socket:
    """Bind a listening TCP socket now, so a busy port is a config error at start."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto IPPROTO_TCP, not 0: asyncio turns Nagle off only on such sockets' connections,
    # and with Nagle a response written as headers then body waits ~40 ms on each request
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"{key}: cannot listen on {host}:{port} ({exc.strerror})") from None
    sock.listen(512)
    sock.setblocking(False)
    return sock


class Platform:
    def __init__(self, config: Config, roles: tuple[str, ...] = ROLE_ORDER) -> None:
        self.config = config
        self.role_names = tuple(r for r in ROLE_ORDER if r in roles)
        self.roles: list[Role] = []
        self.app = FastAPI(title="courtcast", version="0.1.0")
        self.metrics = CollectorRegistry()
        self.started_at = time.time()
        self._resolve_caller: Callable[[Request], Awaitable[Caller | None]] | None = None
        self._add_process_routes()
        # every listening socket is bound before any role starts: a busy port is a config
        # error reported before anything runs
        self._http_sock = bind_socket(config.http.host, config.http.port, "http.port")
        if config.http.port == 0:  # a free port: the URLs this node hands out name the one it got
            http = config.http.model_copy(update={"port": self._http_sock.getsockname()[1]})
            self.config = config = config.model_copy(update={"http": http})
        self.rtmp_sock: socket.socket | None = None
        if "media_server" in self.role_names and config.rtmp.enabled:
            try:
                self.rtmp_sock = bind_socket(config.rtmp.host, config.rtmp.port, "rtmp.port")
            except ConfigError:
                self._http_sock.close()
                raise
        self.demo_trials: Any = None  # recorder.demo_trials.DemoTrials with --demo
        self._http: uvicorn.Server | None = None
        self._http_task: asyncio.Task[None] | None = None

    def _add_process_routes(self) -> None:
        """Health, metrics and the pages' static files: served by every process, whatever
        roles it runs."""
        mount_assets(self.app)

        @self.app.exception_handler(RequestValidationError)
        async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
            # FastAPI's own handler echoes the rejected input, and a body that is not UTF-8
            # (e.g. binary sent as text/plain to a JSON route) made it answer 500
            errors = jsonable_encoder(
                exc.errors(),
                custom_encoder={bytes: lambda raw: raw.decode("utf-8", errors="replace")},
            )
            return JSONResponse({"detail": errors}, status_code=422)

        from core.identity import public

        @self.app.get(
            "/api/v1/health",
            tags=["process"],
            dependencies=[public("the status for all; the detail for staff or the token")],
        )
        async def health(request: Request) -> JSONResponse:
            body = await self.health()
            code = 200 if body["status"] == "ok" else 503
            if not await self._may_read_detail(request):
                body = {"status": body["status"]}  # roles, node, ports: staff only
            return JSONResponse(body, status_code=code)

        @self.app.get(
            "/metrics",
            tags=["process"],
            dependencies=[public("checks the metrics token or a staff session itself")],
        )
        async def metrics(request: Request) -> Response:
            if not await self._may_read_detail(request):
                return JSONResponse(
                    {"detail": METRICS_REFUSED},
                    status_code=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
            return Response(generate_latest(self.metrics), media_type=CONTENT_TYPE_LATEST)

    async def _may_read_detail(self, request: Request) -> bool:
        """/metrics and the health detail: the scraper's token, signed-in staff, or
        open mode (loopback only). Stream ids (private ones too) are in the metrics."""
        security = self.config.security
        if security.open:
            return True
        sent = request.headers.get("authorization", "").encode("latin-1")
        token = security.metrics_token
        if token and hmac.compare_digest(sent, f"Bearer {token}".encode()):
            return True
        return self._resolve_caller is not None and may(
            await self._resolve_caller(request), "read_metrics"
        )

    @property
    def http_port(self) -> int:
        return int(self._http_sock.getsockname()[1])

    async def start(self) -> None:
        """Start the roles in order, then HTTP. If anything fails on the way, what had
        started is stopped before the error is raised: the caller has no platform to stop,
        and roles left running (demo encoders, listeners, Redis) kept the process alive."""
        try:
            await self._start_roles()
            await self._start_http()
        except BaseException:
            await self.stop()
            raise

    async def _start_roles(self) -> None:
        from control_room.devices import DeviceRegistry
        from control_room.role import ControlRoomRole
        from core.identity import session_resolver
        from media_server.role import MediaServerRole
        from storage.role import StorageRole

        storage = StorageRole(self.config.storage_section())
        self.roles.append(storage)
        await storage.start()
        self._resolve_caller = session_resolver(storage.state)
        media: MediaServerRole | None = None
        if "media_server" in self.role_names:
            media = MediaServerRole(
                self.config.media_server_section(),
                storage,
                self.app,
                self.metrics,
                session_resolver(storage.state),
                self.rtmp_sock,
                self.config.public_url,
            )
            self.roles.append(media)
            await media.start()
        if "recorder" in self.role_names:
            from recorder.role import RecorderRole

            # alone, the recorder records this process's hub; in a cluster, recording is
            # the recorder processes' (`courtcast recorder`: a hub of their own filled by
            # relays, recordings claimed with leases), and a media node's recorder serves
            # recordings only, so that each recording has one writer
            cluster = self.config.cluster.enabled
            hub = media.hub if media is not None and not cluster else None
            public = media.public if media is not None else None
            devices = DeviceRegistry(storage.state)
            recorder = RecorderRole(
                self.config.recorder_section(),
                storage,
                self.app,
                hub,
                devices.streams_of,
                public,
                self._recorder_fleet(storage) if cluster and media is None else None,
            )
            self.roles.append(recorder)
            await recorder.start()
            if media is not None and self.config.demo.enabled:
                await self._start_demo_trials(recorder)
        if "control_room" in self.role_names:
            control = ControlRoomRole(
                self.config.control_room_section(), storage, self.app, self.agent_rtmp_port
            )
            self.roles.append(control)
            await control.start()

    def _recorder_fleet(self, storage: Any) -> Any:
        """A recorder process's side of the cluster (recorder/fleet.py)."""
        from recorder.fleet import RecorderFleet

        node = self.config.node
        secret = self.config.security.url_signing_secret
        return RecorderFleet(self.config.cluster, storage.state, node.name, node.data_dir, secret)

    async def _start_http(self) -> None:
        front = FrontDoor(SecurityHeaders(self.app))
        for role in self.roles:
            for prefix, hot in getattr(role, "hot_paths", {}).items():
                front.add(prefix, hot)
        http = self.config.http
        sdp = http.max_sdp_bytes
        app = BodyLimit(
            front,
            http.max_body_bytes,
            [
                ("/api/v1/login", http.max_login_bytes),
                ("/whep/", sdp),
                ("/whip/", sdp),
                ("/api/v1/backfill/", http.max_upload_bytes),
            ],
        )
        # httptools (uvicorn's C parser; h11 costs several times more per request, and an
        # LL-HLS viewer makes about four a second), guarded against slow clients
        guarded = HeaderLimits(
            http.header_timeout_s, http.max_header_bytes, http.max_unfinished_per_address
        )
        cfg = uvicorn.Config(
            app,
            log_level="warning",
            lifespan="off",
            http=guarded_protocol(guarded),
            limit_concurrency=http.max_connections,
            access_log=False,
            timeout_graceful_shutdown=1,
        )
        self._http = uvicorn.Server(cfg)
        self._http_task = asyncio.create_task(self._http.serve(sockets=[self._http_sock]))
        while not self._http.started:
            if self._http_task.done():
                self._http_task.result()
                raise RuntimeError("HTTP server ended during start")
            await asyncio.sleep(0.01)

    async def _start_demo_trials(self, recorder: Any) -> None:
        """The demo rooms hold public trials (live, one recessing, one to replay)."""
        from media_server.demo import demo_court_tree
        from recorder.demo_trials import DemoTrials

        self.demo_trials = DemoTrials(recorder, demo_court_tree()[: self.config.demo.rooms])
        await self.demo_trials.start()

    def agent_rtmp_port(self) -> int:
        """The RTMP port agents publish to: this process's media server's, else config's."""
        media = next((r for r in self.roles if r.name == "media_server"), None)
        port = getattr(media, "rtmp_port", 0)
        return int(port) if port else self.config.rtmp.port

    async def stop(self) -> None:
        """Stop HTTP, then roles in reverse order; each gets a share of the budget."""
        if self._http is not None and self._http_task is not None:
            self._http.should_exit = True
            try:
                await asyncio.wait_for(self._http_task, 1.5)
            except (TimeoutError, asyncio.CancelledError):
                self._http.force_exit = True
        self._http_sock.close()
        if self.demo_trials is not None:
            await self.demo_trials.stop()  # bounded: cancel_and_wait gives up in time
            self.demo_trials = None
        if self.rtmp_sock is not None and not any(r.name == "media_server" for r in self.roles):
            self.rtmp_sock.close()  # never handed to a started role
        for role in reversed(self.roles):
            try:
                await asyncio.wait_for(role.stop(), STOP_BUDGET_S / max(1, len(self.roles)))
            except TimeoutError:
                log.warning("role %s did not stop in time", role.name)
            except Exception:  # a failing stop must not keep the others running
                log.exception("role %s failed to stop", role.name)
        self.roles.clear()

    async def health(self) -> dict[str, Any]:
        roles = {role.name: await role.health() for role in self.roles}
        for name in ROLE_ORDER:
            roles.setdefault(name, {"state": "not running in this process"})
        running = [roles[r.name]["state"] for r in self.roles]
        status = "ok" if all(s == "ok" for s in running) else "degraded"
        return {
            "status": status,
            "node": self.config.node.name,
            "uptime_s": round(time.time() - self.started_at, 1),
            "roles": roles,
        }
