"""What WHIP and WHEP sessions share: one aiortc peer connection, its offer/answer (all
candidates gathered before answering: no trickle ICE), and its end.

A session ends on DELETE, when ICE/DTLS fail or close, or when it has not connected
within the configured time (a browser that took the answer and vanished)."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable, Coroutine
from typing import Any

from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.exceptions import InternalError, InvalidAccessError, InvalidStateError, OperationError

from media_server.patches.aiortc_ice_addresses import bind_candidate_addresses
from media_server.webrtc.errors import SignalingError
from media_server.webrtc.ice import IceConfig

log = logging.getLogger(__name__)

# what aiortc raises for offers it cannot take, after our own checks let them through
AIORTC_REFUSALS = (
    ValueError,
    KeyError,
    IndexError,
    TypeError,
    InternalError,
    InvalidAccessError,
    InvalidStateError,
    OperationError,
)


class PeerSession:
    """One peer connection with an id (the last part of its Location URL)."""

    kind = "webrtc"

    def __init__(
        self,
        stream_id: str,
        pc: RTCPeerConnection,
        ice: IceConfig,
        on_closed: Callable[[PeerSession], None],
    ) -> None:
        self.id = secrets.token_urlsafe(12)
        self.stream_id = stream_id
        self.pc = pc
        self.ice = ice
        self.created = time.time()
        self.connected_at = 0.0
        self.end_reason = ""
        self.closed = False
        self._on_closed = on_closed
        self._tasks: set[asyncio.Task[None]] = set()
        self._timeout = asyncio.get_running_loop().call_later(
            ice.connect_timeout_s, self._not_connected
        )
        pc.on("connectionstatechange", self._on_state)

    @property
    def location(self) -> str:
        return f"/{self.kind}/{self.stream_id}/{self.id}"

    async def negotiate(self, offer_sdp: str) -> str:
        """Take the offer, gather every candidate, return the answer SDP."""
        try:
            await self.pc.setRemoteDescription(RTCSessionDescription(offer_sdp, "offer"))
        except AIORTC_REFUSALS as exc:
            raise SignalingError(400, f"the SDP offer could not be used: {exc}") from exc
        bind_candidate_addresses(self.pc, self.ice.candidate_addresses())
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        return self.pc.localDescription.sdp

    def _on_state(self) -> None:
        state = self.pc.connectionState
        if state == "connected" and not self.connected_at:
            self.connected_at = time.time()
            self._timeout.cancel()
            self.on_connected()
        elif state in ("failed", "closed"):
            self.close_soon(f"connection {state}")

    def on_connected(self) -> None:
        """Hook for subclasses: ICE and DTLS are up."""

    def _not_connected(self) -> None:
        self.close_soon(f"not connected after {self.ice.connect_timeout_s:.0f} s")

    def close_soon(self, reason: str) -> None:
        if not self.closed:
            self.spawn(self.close(reason))

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self, reason: str = "closed") -> None:
        if self.closed:
            return
        self.closed = True
        self.end_reason = reason
        self._timeout.cancel()
        log.info(
            "%s session %s of %s ended: %s", self.kind.upper(), self.id, self.stream_id, reason
        )
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()  # keyframe clocks and the like end with the session
        self.release()
        await self.pc.close()
        self._on_closed(self)

    def release(self) -> None:
        """Hook for subclasses: give back what the session holds (feeds, publications)."""
