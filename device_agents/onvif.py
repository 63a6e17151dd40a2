"""PTZ presets over ONVIF, for cameras that have them.

Uses onvif-zeep-async (pinned in pyproject), imported only when a PTZ command comes so
an agent without PTZ cameras does not load zeep. Not yet tested against a real ONVIF camera
(none here). The endpoint is `http://user:pass@host[:port]` (the camera's device service).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit


async def goto_preset(endpoint: str, preset: str) -> None:
    try:
        from onvif import ONVIFCamera  # type: ignore[import-not-found]
    except ImportError:
        from device_agents.commands import CommandError

        raise CommandError("ONVIF support is not installed on this agent "
                           "(pip install onvif-zeep-async==4.3.0)") from None
    parts = urlsplit(endpoint)
    camera: Any = ONVIFCamera(parts.hostname, parts.port or 80, unquote(parts.username or ""),
                              unquote(parts.password or ""))
    await camera.update_xaddrs()
    try:
        media = await camera.create_media_service()
        ptz = await camera.create_ptz_service()
        profiles = await media.GetProfiles()
        await ptz.GotoPreset({"ProfileToken": profiles[0].token, "PresetToken": preset})
    finally:
        await camera.close()
