"""PTZ presets over ONVIF, for cameras that have them.

Uses onvif-zeep-async (pinned in pyproject), imported only when a PTZ command comes so
an agent without PTZ cameras does not load zeep. The endpoint is `http://user:pass@host[:port]`
(the camera's device service; any path is ignored). Tested against a real ONVIF service
(ipycam's, tests/device_agents/test_ptz.py): GotoPreset on the first media profile moves the
camera to the preset. Whatever the camera or the network says no with (a SOAP fault such as a
wrong password, an unknown preset, a refused or timed-out connection) comes back as a
CommandError naming the camera, never as zeep's or aiohttp's own exception.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit


def _is_auth_fault(fault: Any) -> bool:
    text = " ".join(
        [
            str(getattr(fault, "message", "") or ""),
            str(getattr(fault, "code", "")),
            " ".join(str(c) for c in getattr(fault, "subcodes", None) or []),
        ]
    )
    return "authori" in text.lower()  # ter:NotAuthorized, "Sender not authorized", ...


async def goto_preset(endpoint: str, preset: str) -> None:
    from device_agents.commands import CommandError

    try:
        import aiohttp
        import zeep.exceptions
        from onvif import ONVIFCamera
        from onvif.exceptions import ONVIFAuthError, ONVIFError
    except ImportError:
        raise CommandError(
            "ONVIF support is not installed on this agent (pip install onvif-zeep-async==4.3.0)"
        ) from None
    parts = urlsplit(endpoint)
    where = f"ONVIF camera {parts.hostname}:{parts.port or 80}"
    user = unquote(parts.username or "")
    camera: Any = ONVIFCamera(parts.hostname, parts.port or 80, user, unquote(parts.password or ""))
    try:
        await camera.update_xaddrs()
        media = await camera.create_media_service()
        ptz = await camera.create_ptz_service()
        profiles = await media.GetProfiles()
        if not profiles:
            raise CommandError(f"{where} has no media profile")
        await ptz.GotoPreset({"ProfileToken": profiles[0].token, "PresetToken": preset})
    except zeep.exceptions.Fault as fault:
        if _is_auth_fault(fault):
            raise CommandError(
                f"{where} refused user {user!r} (wrong user or password?): {fault.message}"
            ) from None
        raise CommandError(f"{where} refused preset {preset!r}: {fault.message}") from None
    except ONVIFAuthError as exc:
        raise CommandError(
            f"{where} refused user {user!r} (wrong user or password?): {exc}"
        ) from None
    except (ONVIFError, zeep.exceptions.Error, aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise CommandError(
            f"{where} unreachable or not answering ONVIF: {type(exc).__name__}: {exc}"
        ) from None
    finally:
        await camera.close()
