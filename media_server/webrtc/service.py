"""The WebRTC egress and ingest of one media node. WHEP viewers ask the hub for a keyframe
when it has none cached; a WHIP ingest answers with a PLI to its publisher."""

from __future__ import annotations

from pydantic import BaseModel, Field

from media_server.hub import Hub
from media_server.webrtc.arraignment import ArraignmentRooms
from media_server.webrtc.arraignment_http import RoomHooks
from media_server.webrtc.ice import IceConfig
from media_server.webrtc.whep import WhepEndpoint
from media_server.webrtc.whip import WhipEndpoint


class WebRTCOptions(BaseModel):
    shared_packetization: bool = Field(
        default=True,
        description="Compute each video frame's RTP payloads once per stream and reuse them "
        "for every viewer (False: aiortc packetizes for each viewer; for comparison).")
    whip_keyframe_interval_s: float = Field(
        default=2.0, gt=0,
        description="Ask WHIP publishers for a keyframe this often (browsers send none "
        "unasked; HLS segments and recordings start only on keyframes).")


class WebRTCService:
    def __init__(self, hub: Hub, ice: IceConfig, options: WebRTCOptions,
                 room_hooks: RoomHooks | None = None) -> None:
        self.hub = hub
        self.ice = ice
        self.options = options
        self.room_hooks = room_hooks or RoomHooks()
        self.rooms = ArraignmentRooms(self.room_hooks.store)
        self.whip = WhipEndpoint(hub, ice, keyframe_interval_s=options.whip_keyframe_interval_s)
        self.whep = WhepEndpoint(hub, ice, shared_packetization=options.shared_packetization)

    async def close(self) -> None:
        await self.whep.close_all()
        await self.whip.close_all()
