"""The agent's config file: who it is (credentials from enrolment), where it sends media and
what it pulls. Written once by `courtcast agent enroll` with 0600 permissions (it holds the
device secret and the stream keys), read by `courtcast agent run`.

Every model forbids unknown keys; errors are one line naming the key, in the same form as
the platform config (core.config.ConfigError).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from core.config import ConfigError, describe_validation_error, read_yaml
from device_agents.protocol import SourceKind
from media_server.streams import is_camera_url, is_local_path


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StreamConfig(_Model):
    """One stream the agent publishes: its id on the platform and its RTMP key."""

    stream_id: str
    key: str


class SourceConfig(_Model):
    """A camera (or file, test pattern, local device) and the streams made from it."""

    kind: SourceKind
    url: str  # rtsp://user:pass@cam/..., a file path, "test:" or /dev/videoN
    sub_url: str | None = None  # the camera's second (smaller) stream, RTSP only
    main: StreamConfig
    sub: StreamConfig | None = None
    onvif_url: str | None = None  # http://cam/onvif/device_service: PTZ presets, sub stream

    @model_validator(mode="after")
    def _url_of_its_kind(self) -> SourceConfig:
        # FFmpeg opens whatever protocol a URL names: a "camera" must not be http://
        ok = {
            "rtsp": is_camera_url(self.url),
            "file": is_local_path(self.url),
            "test": self.url.startswith("test:"),
            "v4l2": self.url.startswith("/dev/"),
        }[self.kind]
        if not ok:
            raise ValueError(f"url {self.url.split(':')[0]}:... does not fit kind {self.kind}")
        if self.sub_url is not None and not is_camera_url(self.sub_url):
            raise ValueError("sub_url must be an rtsp:// or rtsps:// URL")
        return self


class SpoolConfig(_Model):
    dir: Path = Path("./spool")
    max_bytes: int = Field(default=20 << 30, gt=0)
    segment_s: float = Field(default=2.0, ge=1.0, le=4.0)


RtmpUrl = Annotated[str, Field(pattern=r"^rtmp://")]


class AgentConfig(_Model):
    server: str = Field(pattern=r"^https?://")  # the control plane's HTTP base URL
    rtmp_url: RtmpUrl  # rtmp://host:port/live: the media node it publishes to first
    # more media nodes of a cluster, tried in turn when the one in use fails or refuses
    rtmp_urls: list[RtmpUrl] = []
    device_id: str
    device_secret: str
    court: str
    room: str
    heartbeat_s: float = Field(default=5.0, gt=0)
    model: str = ""
    sources: dict[str, SourceConfig] = {}
    spool: SpoolConfig = SpoolConfig()

    @property
    def media_servers(self) -> list[str]:
        """rtmp_url then rtmp_urls, each once: the order a publisher tries them in."""
        return list(dict.fromkeys([self.rtmp_url, *self.rtmp_urls]))


def load_agent_config(path: Path) -> AgentConfig:
    """Read and validate; ConfigError (one line) on any problem."""
    return parse_agent_config(read_yaml(path, "agent config"), path)


def parse_agent_config(data: dict[str, Any], path: Path | None = None) -> AgentConfig:
    try:
        return AgentConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(
            describe_validation_error(exc, path, {}).replace("config file", "agent config", 1)
        ) from None


def write_agent_config(path: Path, config: AgentConfig, *, exclusive: bool = True) -> None:
    """Write atomically with mode 0600 from the start (never a moment world-readable).
    exclusive: refuse to replace an existing file (FileExistsError)."""
    if exclusive and path.exists():
        raise FileExistsError(str(path))
    data = config.model_dump(mode="json", exclude_none=True)
    if not data.get("rtmp_urls"):
        data.pop("rtmp_urls", None)  # a one-node agent's file stays as it always was
    text = "# courtcast device agent: holds secrets, keep it 0600\n" + yaml.safe_dump(
        data, sort_keys=False
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mkstemp: 0600
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        if exclusive:
            os.link(tmp, path)  # fails if someone created the file meanwhile
            os.unlink(tmp)
        else:
            os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
