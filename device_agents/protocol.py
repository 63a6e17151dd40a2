"""What a device agent and the control plane say to each other (one contract, both sides).

Transport (the agent always dials out, so it works behind NAT):
- Enrolment, once, over HTTP: `POST /api/v1/devices/enroll` with an `EnrolRequest` (the
  one-time token is the only credential) answers an `EnrolResponse`.
- Everything after that over one websocket, `GET /api/v1/agents/ws`, authenticated with
  `Authorization: Bearer {device_id}.{device_secret}`. Messages are JSON objects with a
  `type`: the agent sends `Heartbeat` and `CommandResult`, the server sends `HeartbeatAck`
  and `Command`. A revoked or disabled device is refused (close code 4403, reason says why).
- Backfill of recorded media over HTTP with the same bearer credential (`BACKFILL_*`).
- Media over RTMP: `{rtmp_url}/{stream_id}?key={key}` for each stream of the response.

The agent's local ring (store-and-forward), one directory per stream id under the spool
dir: `{spool}/{stream_id}/init-{n}.mp4`, `seg-{start_ms}.m4s` (fMP4 from the same Segmenter
and writer as the recorder, wall-clock in `prft`) and `index.jsonl`, one `RingEntry` per
line, appended when a segment closes; the oldest segments go when the ring is over its limit.

On the server, `control_room.devices.DeviceRegistry(state).authenticate(authorization)`
returns the `Device` (id, court, room, streams, ...) for a valid bearer credential or raises
`DeviceAuthError` with the reason (unknown, wrong secret, disabled, revoked).

Stream ids are `{court}-{room}-{source}` for a source's main stream and the same with
`-sub` for its sub stream (lower-case; characters outside [a-z0-9_.-] become '-').
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

ENROLL_PATH = "/api/v1/devices/enroll"
WS_PATH = "/api/v1/agents/ws"
BACKFILL_GAPS_PATH = "/api/v1/backfill/gaps"  # GET ?stream=ID -> list[GapOut]
BACKFILL_INIT_PATH = "/api/v1/backfill/{recording_id}/init"  # PUT body: init.mp4
BACKFILL_SEGMENT_PATH = "/api/v1/backfill/{recording_id}/segments"  # PUT body: .m4s
WS_CLOSE_REFUSED = 4403  # revoked, disabled or unknown device: do not retry at once

SourceKind = Literal["rtsp", "file", "test", "v4l2"]
SourceState = Literal["up", "down", "starting", "stopped"]
CommandName = Literal[
    "start", "stop", "switch", "snapshot", "restart", "reload", "ptz", "sub-stream-h264"
]


def stream_slug(text: str) -> str:
    return re.sub(r"[^a-z0-9_.-]+", "-", text.lower()).strip("-") or "x"


def stream_id_for(court: str, room: str, source: str, sub: bool = False) -> str:
    base = f"{stream_slug(court)}-{stream_slug(room)}-{stream_slug(source)}"
    return f"{base}-sub" if sub else base


def bearer(device_id: str, secret: str) -> str:
    return f"Bearer {device_id}.{secret}"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SourceInfo(_Model):
    """A source as the agent declares it at enrolment (never its URL: it may hold a password)."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}$")
    kind: SourceKind
    has_sub: bool = False  # an RTSP camera with a second (sub) stream URL


class EnrolRequest(_Model):
    token: str
    model: str = ""  # hardware model, e.g. "Hikvision DS-2CD2143G2"
    agent_version: str = ""
    sources: list[SourceInfo] = []


class StreamCredential(_Model):
    stream_id: str
    key: str  # the RTMP key / WHIP bearer; shown once, kept 0600 by the agent


class SourceStreams(_Model):
    main: StreamCredential
    sub: StreamCredential | None = None


class EnrolResponse(_Model):
    device_id: str
    device_secret: str
    court: str
    room: str
    rtmp_url: str  # rtmp://host:port/live
    rtmp_urls: list[str] = []  # a cluster's media nodes, least loaded first (failover)
    heartbeat_s: float = 5.0
    streams: dict[str, SourceStreams]  # by source name


class TrackHealth(_Model):
    """One track the camera sends and what the agent makes of it."""

    kind: str  # video | audio | data
    codec: str  # as the camera names it: h264, pcma, ...
    state: str  # "carried", "transcoded from pcma", "dropped: <reason>"


class SourceHealth(_Model):
    name: str
    state: SourceState
    reason: str = ""  # why down: "wrong credentials", "unreachable", "unsupported codec h263"
    publishing: bool = False
    active: Literal["main", "sub"] = "main"  # which stream feeds the main stream id
    fps: float = 0.0
    bitrate_kbps: float = 0.0
    keyframe_interval_s: float = 0.0
    reconnects: int = 0
    tracks: list[TrackHealth] = []  # every track of the active feed, while it is up


class Heartbeat(_Model):
    type: Literal["heartbeat"] = "heartbeat"
    sent_at: float  # agent wall-clock when sent
    agent_version: str
    sources: list[SourceHealth]
    spool_bytes: int = 0
    spool_limit_bytes: int = 0
    clock_offset_s: float | None = None  # server - agent, from the previous ack
    backfill_pending: int = 0  # local segments still to upload


class HeartbeatAck(_Model):
    type: Literal["heartbeat-ack"] = "heartbeat-ack"
    sent_at: float  # echoed from the heartbeat
    server_time: float  # server wall-clock when received: offset = server_time - midpoint


class Command(_Model):
    type: Literal["command"] = "command"
    id: str
    name: CommandName
    args: dict[str, Any] = {}  # source, stream ("main"|"sub"), preset, ...
    timeout_s: float = 10.0


class CommandResult(_Model):
    type: Literal["command-result"] = "command-result"
    id: str
    ok: bool
    error: str = ""
    data: dict[str, Any] = {}  # snapshot: {"jpeg_b64", "width", "height"}


class GapOut(_Model):
    """A gap in a recording that backfill may close (the server's answer to the agent)."""

    recording_id: str
    stream: str
    start: float
    end: float


class RingEntry(_Model):
    """One closed segment in the agent's ring (a line of index.jsonl)."""

    file: str  # "seg-{start_ms}.m4s"
    init: str  # "init-{n}.mp4" it decodes with
    start: float  # wall-clock (UNIX s) of its first sample
    duration: float
    media_start: float  # seconds on the ring's media timeline (tfdt)
    bytes: int
    sha256: str
