"""The WebRTC egress and ingest of one media node. WHEP viewers ask the hub for a keyframe
when it has none cached; a WHIP ingest answers with a PLI to its publisher."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable, Iterator

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
STAFF_RESERVE = 20  # the wall and arraignment rooms get in whatever the public does
MAX_PUBLIC_PER_ADDRESS = 4
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
    staff_reserve: int = Field(
        default=STAFF_RESERVE,
        ge=0,
        description="Of max_sessions, slots anonymous viewers never take (signed-in users "
        "and arraignment seats only).",
    )
    max_public_per_address: int = Field(
        default=MAX_PUBLIC_PER_ADDRESS,
        ge=1,
        description="WHEP sessions one anonymous address holds at most; more are 429.",
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
        self._public_opening: Counter[str] = Counter()  # anonymous address -> negotiating
        self._public: dict[str, str] = {}  # anonymous viewer's session id -> address

    @contextlib.contextmanager
    def slot(
        self, kind: str, stream_id: str, public_address: str | None = None
    ) -> Iterator[Callable[[str], None]]:
        """Admit one more session (counted while it negotiates too) or refuse with 503;
        public_address: an anonymous viewer's, held to its share (429 over it). Yields
        keep(session_id), to call once the session is open."""
        self._check_total(kind, stream_id)
        if public_address is None:
            self._opening += 1
            try:
                yield lambda session_id: None
            finally:
                self._opening -= 1
            return
        self._check_public(stream_id, public_address)
        self._opening += 1
        self._public_opening[public_address] += 1
        try:
            yield lambda session_id: self._public.__setitem__(session_id, public_address)
        finally:
            self._opening -= 1
            self._public_opening[public_address] -= 1
            if not self._public_opening[public_address]:
                del self._public_opening[public_address]

    def _public_held(self) -> Counter[str]:
        """Anonymous sessions per address, open or negotiating (ended ones forgotten)."""
        for session_id in [s for s in self._public if s not in self.whep.sessions]:
            del self._public[session_id]
        held = Counter(self._public.values())
        held.update(self._public_opening)
        return held

    def _check_public(self, stream_id: str, address: str) -> None:
        held = self._public_held()
        hls = f"; watch over HLS: /live/{stream_id}/index.m3u8"
        cap = self.options.max_public_per_address
        if held[address] >= cap:
            raise SignalingError(
                429, f"at most {cap} WebRTC sessions per address without signing in{hls}"
            )
        share = self.options.max_sessions - self.options.staff_reserve
        if held.total() >= share:
            raise SignalingError(
                503,
                f"all {max(share, 0)} WebRTC sessions open to the public are taken; the "
                f"other {self.options.staff_reserve} are kept for signed-in users{hls}",
            )

    def _check_total(self, kind: str, stream_id: str) -> None:
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

    async def close(self) -> None:
        await self.whep.close_all()
        await self.whip.close_all()
