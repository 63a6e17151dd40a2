"""The WebRTC egress and ingest of one media node. WHEP viewers ask the hub for a keyframe
when it has none cached; a WHIP ingest answers with a PLI to its publisher."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from pydantic import BaseModel, Field

from media_server.hub import Hub
from media_server.patches import aiortc_fast_sender, aiortc_ice_addresses, aiortc_receiver_tap
from media_server.webrtc.arraignment import ArraignmentRooms
from media_server.webrtc.arraignment_http import RoomHooks
from media_server.webrtc.errors import SignalingError
from media_server.webrtc.ice import IceConfig
from media_server.webrtc.whep import WhepEndpoint
from media_server.webrtc.whip import WhipEndpoint

# All sessions share one event loop (one core): the cap keeps a margin below the count at
# which every viewer's video would stutter (what a viewer costs: bench/RESULTS.md, "Viewers
# per core").
MAX_SESSIONS = 60
PUBLISHER_RESERVE = 8  # a courtroom publishing must not be locked out by a full wall
RETRY_AFTER_S = 10


class WebRTCOptions(BaseModel):
    shared_packetization: bool = Field(
        default=True,
        description="Compute each video frame's RTP payloads once per stream and reuse them "
        "for every viewer (False: aiortc packetizes for each viewer; for comparison).",
    )
    whip_keyframe_interval_s: float = Field(
        default=2.0,
        gt=0,
        description="Ask WHIP publishers for a keyframe this often (browsers send none "
        "unasked; HLS segments and recordings start only on keyframes).",
    )
    max_sessions: int = Field(
        default=MAX_SESSIONS,
        ge=1,
        description="WHEP viewers one node serves at most; more are answered 503.",
    )


class WebRTCService:
    def __init__(
        self, hub: Hub, ice: IceConfig, options: WebRTCOptions, room_hooks: RoomHooks | None = None
    ) -> None:
        aiortc_fast_sender.check()  # at start-up: an aiortc upgrade fails here, loudly
        aiortc_receiver_tap.check()
        aiortc_ice_addresses.check()
        self.hub = hub
        self.ice = ice
        self.options = options
        self.room_hooks = room_hooks or RoomHooks()
        self.rooms = ArraignmentRooms(self.room_hooks.store)
        self.whip = WhipEndpoint(hub, ice, keyframe_interval_s=options.whip_keyframe_interval_s)
        self.whep = WhepEndpoint(hub, ice, shared_packetization=options.shared_packetization)
        self._opening = 0

    @contextlib.contextmanager
    def slot(self, kind: str, stream_id: str) -> Iterator[None]:
        """Admit one more session (counted while it negotiates too) or refuse with 503."""
        limit = self.options.max_sessions + (PUBLISHER_RESERVE if kind == "whip" else 0)
        busy = len(self.whep.sessions) + len(self.whip.sessions) + self._opening
        if busy >= limit:
            hint = f"; watch over HLS: /live/{stream_id}/index.m3u8" if kind == "whep" else ""
            raise SignalingError(
                503,
                f"this media node is serving its limit of {limit} "
                f"WebRTC sessions ({len(self.whep.sessions)} viewers, "
                f"{len(self.whip.sessions)} publishers); try again "
                f"shortly{hint}",
            )
        self._opening += 1
        try:
            yield
        finally:
            self._opening -= 1

    async def close(self) -> None:
        await self.whep.close_all()
        await self.whip.close_all()
