"""The control-room role: the control plane API and the web pages.

Health, metrics, users, streams and devices (enrolment, the agents' websocket, the /devices
page), walls and the staff's events websocket (/wall/{name}); trial sessions and the portal
plug in here as routers of their own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from control_room.agent_link import AgentLink
from control_room.alert_rules import RuleEngine
from control_room.alert_rules_api import build_alert_rules_router
from control_room.alerts_api import build_alerts_router
from control_room.api import build_api_router
from control_room.audit_api import build_audit_router
from control_room.console_page import build_console_router
from control_room.courts_api import build_courts_router
from control_room.devices import DeviceRegistry
from control_room.devices_api import build_devices_router, build_pages_router
from control_room.events import EventHub
from control_room.first_run import FirstRun, demo_wall, prepare
from control_room.portal import build_portal_router
from control_room.sign_in import SignInDesk
from control_room.stream_scope import StreamScope
from control_room.users import Users
from control_room.walls import WallStore
from control_room.walls_api import build_wall_page_router, build_walls_router
from core.config import ControlRoomSection
from media_server.access import PlayTokens
from storage.objects_disk import DiskObjectStore
from storage.objects_http import make_objects_router
from storage.role import StorageRole


class ControlRoomRole:
    name = "control_room"

    def __init__(
        self,
        config: ControlRoomSection,
        storage: StorageRole,
        app: FastAPI,
        rtmp_port: Callable[[], int],
    ) -> None:
        self.config = config
        self.storage = storage
        self.app = app
        self.rtmp_port = rtmp_port  # the port agents publish to (the media server's, if here)
        self.users = Users(storage.state)
        self.sign_in_desk = SignInDesk(self.users, storage.state, storage.state)
        self.play_tokens = PlayTokens.for_node(config.node.data_dir, config.security)
        self.devices = DeviceRegistry(storage.state)
        self.first_run = FirstRun()  # what the welcome tells about signing in
        self.agent_link = AgentLink(
            storage.state,
            self.devices,
            config.devices.heartbeat_s,
            config.devices.clock_offset_alert_s,
        )
        self.walls = WallStore(storage.state)
        self.stream_scope = StreamScope(storage.state, config.security.open)
        self.events = EventHub(storage.state, self.walls, self.stream_scope)
        self.alert_rules = RuleEngine(storage.state, self.walls, self.stream_scope.tree)

    async def start(self) -> None:
        app = self.app
        app.include_router(build_api_router(self))
        app.include_router(build_devices_router(self))
        app.include_router(build_courts_router(self))
        app.include_router(build_audit_router(self))
        app.include_router(build_alerts_router(self))
        app.include_router(build_alert_rules_router(self))
        app.include_router(self.agent_link.router())
        app.include_router(build_pages_router())
        app.include_router(build_console_router())
        app.include_router(build_walls_router(self))
        app.include_router(build_wall_page_router(self))
        app.include_router(self.events.router(self.config.security.open))
        app.include_router(build_portal_router())
        await self.agent_link.start()
        await self.events.start()
        await self.alert_rules.start()
        self.first_run = await prepare(self.users, self.config.demo.enabled)
        if self.config.demo.enabled:
            await demo_wall(self.walls)
        if isinstance(self.storage.objects, DiskObjectStore):
            # S3 serves its own presigned URLs; the disk store's signed URLs are served here
            app.include_router(make_objects_router(self.storage.objects))

    async def stop(self) -> None:
        await self.alert_rules.stop()
        await self.events.stop()
        await self.agent_link.stop()

    async def health(self) -> dict[str, Any]:
        return {"state": "ok"}
