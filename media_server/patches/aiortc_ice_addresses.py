"""aiortc's ICE gatherers made to bind exactly the candidate addresses we choose.

aiortc gathers host candidates on every interface address aioice finds and offers no option
for the address list; a closed court network (and loopback tests) need the configured ones.
The per-component gathering method is wrapped on each of a peer connection's aioice
connections, which aiortc keeps in the private `RTCIceGatherer._connection`.

Written against aiortc 1.16 and aioice 0.13: check() says so at start-up.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aioice import Candidate
from aiortc import RTCPeerConnection

from media_server.patches import require_version

WHY = "RTCIceGatherer._connection, whose candidate gathering is wrapped"


def check() -> None:
    require_version("aiortc", ("1.16.0",), WHY)
    require_version("aioice", ("0.13.0",), WHY)


GatherFn = Callable[..., Awaitable[list[Candidate]]]


def bind_candidate_addresses(pc: RTCPeerConnection, chosen: list[str]) -> None:
    """Make every ICE gatherer of pc bind exactly these addresses.

    Call after setRemoteDescription (which creates the transports) and before
    setLocalDescription (which gathers). aioice has no option for the address list, so
    the public per-component gathering method is wrapped on each connection.
    """
    check()
    for connection in _ice_connections(pc):
        original: GatherFn = connection.get_component_candidates

        async def gather(
            component: int,
            addresses: list[str] | None = None,
            timeout: int = 5,
            _original: GatherFn = original,
        ) -> list[Candidate]:
            return await _original(component=component, addresses=chosen, timeout=timeout)

        connection.get_component_candidates = gather


def _ice_connections(pc: RTCPeerConnection) -> list[Any]:
    found: list[Any] = []
    for transceiver in pc.getTransceivers():
        gatherer = transceiver.sender.transport.transport.iceGatherer
        connection = getattr(gatherer, "_connection", None)
        if connection is None:
            raise RuntimeError("aiortc internals changed: RTCIceGatherer._connection is gone")
        if connection not in found:
            found.append(connection)
    return found
