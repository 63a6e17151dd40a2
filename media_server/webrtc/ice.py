"""ICE for a closed network: no public STUN unless configured, host candidates we choose.

aiortc falls back to a public Google STUN server when iceServers is None, and aioice
leaves 127.0.0.1 out of its host candidates. Court networks reach no public STUN, and a
single-machine run needs loopback, so every peer connection made here gets an explicit
server list (empty by default) and candidate addresses from config.
"""

from __future__ import annotations

import logging

from aioice import ice as aioice_ice
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection
from pydantic import BaseModel, Field

log = logging.getLogger(__name__)


class IceServer(BaseModel):
    """A STUN or TURN server, as a browser's RTCIceServer."""

    urls: list[str]
    username: str | None = None
    credential: str | None = None


class IceConfig(BaseModel):
    """ICE settings of the WebRTC endpoints (WHIP, WHEP)."""

    servers: list[IceServer] = Field(
        default_factory=list,
        description="STUN/TURN servers for the server side; empty: host candidates only.",
    )
    host_addresses: list[str] | None = Field(
        default=None,
        description="Addresses to offer as host candidates (e.g. the media node's LAN "
        "address, or a NAT's public address is NOT meant here: use TURN). None: every "
        "interface address aioice finds.",
    )
    include_loopback: bool = Field(
        default=True,
        description="Also offer 127.0.0.1, so a browser on the same machine connects "
        "(Chromium needs --allow-loopback-in-peer-connection).",
    )
    connect_timeout_s: float = Field(
        default=20.0, gt=0, description="A session not connected by then is closed."
    )

    def rtc_configuration(self) -> RTCConfiguration:
        return RTCConfiguration(
            iceServers=[
                RTCIceServer(urls=s.urls, username=s.username, credential=s.credential)
                for s in self.servers
            ]
        )

    def candidate_addresses(self) -> list[str]:
        if self.host_addresses is not None:
            addresses = list(self.host_addresses)
        else:
            addresses = aioice_ice.get_host_addresses(use_ipv4=True, use_ipv6=True)
        if self.include_loopback and "127.0.0.1" not in addresses:
            addresses.append("127.0.0.1")
        return addresses


def new_peer_connection(config: IceConfig) -> RTCPeerConnection:
    return RTCPeerConnection(configuration=config.rtc_configuration())
