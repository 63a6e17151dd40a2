"""The control-room role: the control plane API (and, later, every web page).

This issue's scope is health, metrics, users and streams; courts, rooms, devices, trial
sessions, the wall and the portal plug in here as routers of their own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from control_room.api import build_api_router
from control_room.users import Users
from media_server.access import PlayTokens
from courtcast.config import Config
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

    async def start(self) -> None:
        self.platform.app.include_router(build_api_router(self))
        if isinstance(self.storage.objects, DiskObjectStore):
            # S3 serves its own presigned URLs; the disk store's signed URLs are served here
            self.platform.app.include_router(make_objects_router(self.storage.objects))

    async def stop(self) -> None:
        return None

    async def health(self) -> dict[str, Any]:
        return {"state": "ok"}
