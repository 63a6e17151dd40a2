"""A first look at an SDP offer, before aiortc sees it: is it SDP, what does it offer?

Pure functions over text. aiortc's own parser raises whatever it trips on for malformed
input; reading the offer here first lets the endpoints answer 400 or 406 with a reason
a person can act on ("your browser offered no H.264") instead of a stack trace.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aiortc.codecs import CODECS
from aiortc.sdp import parse_h264_profile_level_id

from media_server.source_audio import WEBRTC_CLOCKS

MAX_OFFER_BYTES = 64 * 1024
DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")


class SdpError(ValueError):
    """Not an SDP offer we can use; the message says why."""


@dataclass(frozen=True, slots=True)
class OfferedCodec:
    payload_type: int
    name: str
    clock_rate: int
    fmtp: dict[str, str]


@dataclass(slots=True)
class OfferedMedia:
    kind: str
    port: int
    direction: str = "sendrecv"
    codecs: list[OfferedCodec] = field(default_factory=list)
    has_ice: bool = False
    has_fingerprint: bool = False
    ssrcs: list[int] = field(default_factory=list)
    fid: list[int] = field(default_factory=list)  # primary SSRC, then its RTX SSRC

    @property
    def media_ssrc(self) -> int | None:
        """The SSRC the sender's media (not its retransmissions) comes from."""
        if self.fid:
            return self.fid[0]
        return self.ssrcs[0] if self.ssrcs else None


@dataclass(slots=True)
class Offer:
    media: list[OfferedMedia]

    def of_kind(self, kind: str) -> list[OfferedMedia]:
        return [m for m in self.media if m.kind == kind and m.port != 0]


def parse_offer(text: str) -> Offer:
    """The media sections of an offer; SdpError if it is not a usable SDP offer."""
    if len(text) > MAX_OFFER_BYTES:
        raise SdpError(f"SDP offer larger than {MAX_OFFER_BYTES} bytes")
    lines = [line.strip() for line in text.replace("\r\n", "\n").split("\n")]
    lines = [line for line in lines if line]
    if not lines or lines[0] != "v=0":
        raise SdpError("not an SDP offer: the body must start with 'v=0'")
    media: list[OfferedMedia] = []
    session_ice = session_fp = False
    rtpmaps: dict[tuple[int, int], tuple[str, int]] = {}
    fmtps: dict[tuple[int, int], dict[str, str]] = {}
    for number, line in enumerate(lines, 1):
        if len(line) < 2 or line[1] != "=":
            raise SdpError(f"line {number} is not an SDP line (type=value): {line[:60]!r}")
        kind, value = line[0], line[2:]
        if kind == "m":
            media.append(_media_line(value, number))
        elif kind == "a":
            target = media[-1] if media else None
            ice, fp = _attribute(value, target, len(media) - 1, rtpmaps, fmtps)
            if target is None:
                session_ice, session_fp = session_ice or ice, session_fp or fp
            else:
                target.has_ice, target.has_fingerprint = (
                    target.has_ice or ice,
                    target.has_fingerprint or fp,
                )
    if not media:
        raise SdpError("the SDP offer has no media (m=) section")
    for index, m in enumerate(media):
        _finish(m, index, rtpmaps, fmtps, session_ice, session_fp)
    return Offer(media)


def _media_line(value: str, number: int) -> OfferedMedia:
    parts = value.split()
    if len(parts) < 4 or not parts[1].split("/")[0].isdigit():
        raise SdpError(f"line {number}: malformed m= line {value[:60]!r}")
    return OfferedMedia(kind=parts[0], port=int(parts[1].split("/")[0]))


def _attribute(
    value: str,
    media: OfferedMedia | None,
    index: int,
    rtpmaps: dict[tuple[int, int], tuple[str, int]],
    fmtps: dict[tuple[int, int], dict[str, str]],
) -> tuple[bool, bool]:
    name, _, rest = value.partition(":")
    if media is not None and name in DIRECTIONS:
        media.direction = name
    elif name == "rtpmap" and media is not None:
        pt, _, codec = rest.partition(" ")
        parts = codec.split("/")
        if pt.isdigit() and len(parts) >= 2 and parts[1].isdigit():
            rtpmaps[(index, int(pt))] = (parts[0], int(parts[1]))
    elif name == "ssrc" and media is not None:
        ssrc = rest.split(" ", 1)[0]
        if ssrc.isdigit() and int(ssrc) not in media.ssrcs:
            media.ssrcs.append(int(ssrc))
    elif name == "ssrc-group" and media is not None:
        semantic, *ssrcs = rest.split()
        if semantic == "FID" and all(x.isdigit() for x in ssrcs):
            media.fid = [int(x) for x in ssrcs]
    elif name == "fmtp" and media is not None:
        pt, _, params = rest.partition(" ")
        if pt.isdigit():
            fmtps[(index, int(pt))] = {
                k.strip().lower(): v.strip()
                for k, _, v in (p.partition("=") for p in params.split(";"))
                if k.strip()
            }
    return name in ("ice-ufrag", "ice-pwd"), name == "fingerprint"


def _finish(
    m: OfferedMedia,
    index: int,
    rtpmaps: dict[tuple[int, int], tuple[str, int]],
    fmtps: dict[tuple[int, int], dict[str, str]],
    session_ice: bool,
    session_fp: bool,
) -> None:
    for (i, pt), (name, rate) in rtpmaps.items():
        if i == index:
            m.codecs.append(OfferedCodec(pt, name, rate, fmtps.get((i, pt), {})))
    m.has_ice = m.has_ice or session_ice
    m.has_fingerprint = m.has_fingerprint or session_fp


def check_webrtc(offer: Offer) -> None:
    """WebRTC needs ICE credentials and a DTLS fingerprint for its media."""
    for m in offer.media:
        if m.port == 0 or m.kind not in ("audio", "video"):
            continue
        if not m.has_ice:
            raise SdpError(f"the {m.kind} section has no ICE credentials (a=ice-ufrag, a=ice-pwd)")
        if not m.has_fingerprint:
            raise SdpError(f"the {m.kind} section has no DTLS fingerprint (a=fingerprint)")


def _aiortc_h264_profiles() -> set[object]:
    return {
        parse_h264_profile_level_id(str(c.parameters["profile-level-id"]))[0]
        for c in CODECS["video"]
        if c.mimeType.lower() == "video/h264"
    }


def offers_h264(m: OfferedMedia) -> bool:
    """Does this section offer H.264 in a form aiortc sends (mode 1, baseline family)?"""
    profiles = _aiortc_h264_profiles()
    for codec in m.codecs:
        if codec.name.lower() != "h264" or codec.fmtp.get("packetization-mode") != "1":
            continue
        try:
            profile = parse_h264_profile_level_id(codec.fmtp.get("profile-level-id", "42e01f"))[0]
        except ValueError:
            continue
        if profile in profiles:
            return True
    return False


def offers_opus(m: OfferedMedia) -> bool:
    return offers_audio(m, "opus")


def offers_audio(m: OfferedMedia, codec: str) -> bool:
    """Does this section offer codec (opus, pcma, pcmu) at the clock WebRTC runs it at?"""
    clock = WEBRTC_CLOCKS.get(codec)
    return any(c.name.lower() == codec and c.clock_rate == clock for c in m.codecs)


def codec_names(m: OfferedMedia) -> str:
    names = sorted({c.name for c in m.codecs if c.name.lower() not in ("rtx", "red", "ulpfec")})
    return ", ".join(names) or "none"
