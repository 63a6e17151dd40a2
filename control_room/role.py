"""The control-room role: the control plane API (and, later, every web page).

Health, metrics, users, streams and devices (enrolment, the agents' websocket, the /devices
page); trial sessions, the wall and the portal plug in here as routers of their own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from control_room.agent_link import AgentLink
from control_room.api import build_api_router
from control_room.devices import DeviceRegistry
from control_room.devices_api import build_devices_router, build_pages_router
from control_room.users import Users
from courtcast.config import Config
from media_server.access import PlayTokens
from storage.objects_disk import DiskObjectStore
from storage.objects_http import make_objects_router
from storage.role import StorageRole

if TYPE_CHECKING:
    from courtcast.platform import Platform


class ControlRoomRole:
    name = "control_room"

    def __init__(self, config: Config, storage: StorageRole, platform: Platform) -> None:
        self.config = config
        self.storage = storage
        self.platform = platform
        self.users = Users(storage.state)
        self.play_tokens = PlayTokens.for_config(config)
        self.devices = DeviceRegistry(storage.state)
        self.agent_link = AgentLink(storage.state, self.devices, config.devices.heartbeat_s,
                                    config.devices.clock_offset_alert_s)

    def rtmp_port(self) -> int:
        """The RTMP port agents publish to: this process's media server's, else config's."""
        media = next((r for r in self.platform.roles if r.name == "media_server"), None)
        port = getattr(media, "rtmp_port", 0)
        return int(port) if port else self.config.rtmp.port

    async def start(self) -> None:
        app = self.platform.app
        app.include_router(build_api_router(self))
        app.include_router(build_devices_router(self))
        app.include_router(self.agent_link.router())
        app.include_router(build_pages_router())
        await self.agent_link.start()
        if isinstance(self.storage.objects, DiskObjectStore):
            # S3 serves its own presigned URLs; the disk store's signed URLs are served here
            app.include_router(make_objects_router(self.storage.objects))

    async def stop(self) -> None:
        await self.agent_link.stop()

    async def health(self) -> dict[str, Any]:
        return {"state": "ok"}
