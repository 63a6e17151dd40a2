"""ONVIF for cameras that have it: PTZ presets, and the sub stream's encoder set to H.264.

Uses onvif-zeep-async (pinned in pyproject), imported only when an ONVIF command comes so
an agent without ONVIF cameras does not load zeep. The endpoint is `http://user:pass@host[:port]`
(the camera's device service; any path is ignored). Tested against a real ONVIF service
(ipycam's, tests/device_agents/test_ptz.py and test_onvif_sub_stream.py). Whatever the camera
or the network says no with (a SOAP fault such as a wrong password, an unknown preset, an
encoder setting refused, a refused or timed-out connection) comes back as a CommandError
naming the camera, never as zeep's or aiohttp's own exception.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import unquote, urlsplit

MEDIA = "http://www.onvif.org/ver10/media/wsdl"
MEDIA2 = "http://www.onvif.org/ver20/media/wsdl"
# H.264 profiles without B-frames, in order of preference: Baseline has none by definition;
# Main may have them in general, but ONVIF has no B-frame switch and cameras' Main is IP-only
NO_B_FRAMES = ("Baseline", "Main")
GOP_SECONDS = 2  # a keyframe every 2 s: a wall tile starts within 2 s of a switch
SUB_SIZE = (640, 360)  # a wall tile's size, when the camera cannot keep the current one


def _is_auth_fault(fault: Any) -> bool:
    text = " ".join(
        [
            str(getattr(fault, "message", "") or ""),
            str(getattr(fault, "code", "")),
            " ".join(str(c) for c in getattr(fault, "subcodes", None) or []),
        ]
    )
    return "authori" in text.lower()  # ter:NotAuthorized, "Sender not authorized", ...


@asynccontextmanager
async def _camera(endpoint: str, refused: str) -> AsyncIterator[tuple[Any, str]]:
    """An ONVIF camera with its service addresses read, and its name for messages; any
    failure inside becomes a CommandError (`refused` says what a SOAP fault refused)."""
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
    wrong_user = f"{where} refused user {user!r} (wrong user or password?)"
    try:
        await camera.update_xaddrs()
        yield camera, where
    except zeep.exceptions.Fault as fault:
        if _is_auth_fault(fault):
            raise CommandError(f"{wrong_user}: {fault.message}") from None
        raise CommandError(f"{where} refused {refused}: {fault.message}") from None
    except ONVIFAuthError as exc:
        raise CommandError(f"{wrong_user}: {exc}") from None
    except (ONVIFError, zeep.exceptions.Error, aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise CommandError(
            f"{where} unreachable or not answering ONVIF: {type(exc).__name__}: {exc}"
        ) from None
    finally:
        await camera.close()


async def goto_preset(endpoint: str, preset: str) -> None:
    from device_agents.commands import CommandError

    async with _camera(endpoint, f"preset {preset!r}") as (camera, where):
        media = await camera.create_media_service()
        ptz = await camera.create_ptz_service()
        profiles = await media.GetProfiles()
        if not profiles:
            raise CommandError(f"{where} has no media profile")
        await ptz.GotoPreset({"ProfileToken": profiles[0].token, "PresetToken": preset})


async def sub_stream_h264(endpoint: str) -> dict[str, Any]:
    """Set the encoder of the camera's second media profile (its sub stream) to H.264
    without B-frames (Baseline, else Main), a keyframe every GOP_SECONDS, keeping its size
    and frame rate where the camera allows them. ONVIF Media (ver10) only: the pinned
    client has no Media2 WSDL. Answers what the sub stream is now, and whether it changed."""
    from device_agents.commands import CommandError

    async with _camera(endpoint, "H.264 on its sub stream") as (camera, where):
        if MEDIA not in camera.xaddrs:
            only2 = " (only Media2, which this agent does not speak yet)"
            raise CommandError(
                f"{where} has no ONVIF media service{only2 if MEDIA2 in camera.xaddrs else ''}"
            )
        media = await camera.create_media_service()
        sub, vec = _sub_profile(where, await media.GetProfiles())
        token = {"ConfigurationToken": vec.token}
        config = await media.GetVideoEncoderConfiguration(token)
        options = await media.GetVideoEncoderConfigurationOptions(
            {**token, "ProfileToken": sub.token}
        )
        wanted = _h264_settings(where, config, options.H264)
        if _settings_of(config) == wanted:
            return _answer(sub, wanted, changed=False)
        _apply(config, wanted)
        await media.SetVideoEncoderConfiguration(
            {"Configuration": config, "ForcePersistence": True}
        )
        now = _settings_of(await media.GetVideoEncoderConfiguration(token))
        if now != wanted:
            raise CommandError(f"{where} accepted H.264 on {sub.Name!r} but now reports {now}")
        return _answer(sub, wanted, changed=True)


def _sub_profile(where: str, profiles: list[Any]) -> tuple[Any, Any]:
    """The second profile and its video encoder, if it has one of its own."""
    from device_agents.commands import CommandError

    if len(profiles) < 2:
        names = ", ".join(repr(p.Name) for p in profiles) or "none"
        raise CommandError(f"{where} has no second media profile (its profiles: {names})")
    main, sub = profiles[0], profiles[1]
    vec = sub.VideoEncoderConfiguration
    if vec is None:
        raise CommandError(f"{where}: its second profile {sub.Name!r} has no video encoder")
    main_vec = main.VideoEncoderConfiguration
    if main_vec is not None and main_vec.token == vec.token:
        raise CommandError(
            f"{where}: profiles {main.Name!r} and {sub.Name!r} share one video encoder;"
            " changing it would change the main stream too"
        )
    return sub, vec


def _clamp(value: int, limits: Any) -> int:
    return value if limits is None else max(int(limits.Min), min(int(limits.Max), value))


def _h264_settings(where: str, config: Any, h264: Any) -> dict[str, Any]:
    """What the sub stream's encoder is to be, within the camera's H.264 options."""
    from device_agents.commands import CommandError

    if h264 is None:
        raise CommandError(f"{where}: its sub stream cannot be H.264 (not among its options)")
    offered = [str(p) for p in h264.H264ProfilesSupported or []]
    profile = next((p for p in NO_B_FRAMES if p in offered), None)
    if profile is None:
        raise CommandError(
            f"{where} offers H.264 on its sub stream only as {', '.join(offered) or 'nothing'};"
            " a wall tile needs Baseline or Main (no B-frames)"
        )
    sizes = [(int(r.Width), int(r.Height)) for r in h264.ResolutionsAvailable or []]
    size = (int(config.Resolution.Width), int(config.Resolution.Height))
    if sizes and size not in sizes:
        size = min(sizes, key=lambda s: abs(s[0] * s[1] - SUB_SIZE[0] * SUB_SIZE[1]))
    fps = None
    if config.RateControl is not None:
        fps = _clamp(int(config.RateControl.FrameRateLimit), h264.FrameRateRange)
    gov = _clamp(GOP_SECONDS * (fps or 25), h264.GovLengthRange)
    return {"encoding": "H264", "h264_profile": profile, "size": size, "fps": fps, "gov": gov}


def _settings_of(config: Any) -> dict[str, Any]:
    h264 = config.H264 if config.Encoding == "H264" else None
    return {
        "encoding": str(config.Encoding),
        "h264_profile": None if h264 is None else str(h264.H264Profile),
        "size": (int(config.Resolution.Width), int(config.Resolution.Height)),
        "fps": None if config.RateControl is None else int(config.RateControl.FrameRateLimit),
        "gov": None if h264 is None else int(h264.GovLength),
    }


def _apply(config: Any, wanted: dict[str, Any]) -> None:
    config.Encoding = "H264"
    config.Resolution.Width, config.Resolution.Height = wanted["size"]
    if wanted["fps"] is not None:
        config.RateControl.FrameRateLimit = wanted["fps"]
    config.H264 = {"GovLength": wanted["gov"], "H264Profile": wanted["h264_profile"]}


def _answer(profile: Any, settings: dict[str, Any], changed: bool) -> dict[str, Any]:
    width, height = settings["size"]
    return {
        "profile": str(profile.Name),
        "encoding": "H264",
        "h264_profile": settings["h264_profile"],
        "resolution": f"{width}x{height}",
        "fps": settings["fps"],
        "gov_length": settings["gov"],
        "changed": changed,
    }
