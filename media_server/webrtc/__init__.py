"""WebRTC for the media server: WHIP ingest (RFC 9725) and WHEP egress, H.264 never
re-encoded. Mount `make_webrtc_router(...)` in the HTTP app."""

from media_server.webrtc.http import make_webrtc_router
from media_server.webrtc.ice import IceConfig, IceServer
from media_server.webrtc.service import WebRTCOptions, WebRTCService

__all__ = ["IceConfig", "IceServer", "WebRTCOptions", "WebRTCService", "make_webrtc_router"]
