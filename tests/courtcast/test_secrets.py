"""A node that others can reach refuses to start on a guessable secret (issue 14, item 3):
one line naming the secret, exit 2, before it connects to anything. Loopback-only nodes
(a laptop trial, the tests) may keep the built-in defaults."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.config import ConfigError, check_secrets, load_config
from courtcast.cli import main

STRONG = "k3Jq9v2LxT7pWm4RzB8nYc6Hd1Fg5Sa0"  # 32 characters, not a placeholder


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A port that stands for Redis and S3: it notes whether anything connected."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.setblocking(False)
    yield sock
    sock.close()


def write_config(path: Path, port: int, url_secret: str, s3_secret: str) -> Path:
    path.write_text(
        f"""
node: {{data_dir: {path.parent / "data"}}}
http: {{host: 0.0.0.0, port: 0}}
rtmp: {{host: 0.0.0.0, port: 0}}
state: {{redis_url: "redis://:{STRONG}@127.0.0.1:{port}/0"}}
objects:
  backend: s3
  s3: {{endpoint: "127.0.0.1:{port}", access_key: courtcast, secret_key: "{s3_secret}"}}
security: {{url_signing_secret: "{url_secret}"}}
"""
    )
    return path


@pytest.mark.parametrize(
    ("url_secret", "s3_secret", "named"),
    [
        ("change-me-in-env", STRONG, "security.url_signing_secret"),
        ("short-but-random-9f3k", STRONG, "security.url_signing_secret"),
        (STRONG, "change-me-in-env", "objects.s3.secret_key"),
        (STRONG, "minioadmin", "objects.s3.secret_key"),
    ],
)
@pytest.mark.parametrize("command", ["media-server", "control-room", "recorder"])
def test_a_reachable_node_refuses_a_weak_secret_before_connecting(
    tmp_path: Path,
    listener: socket.socket,
    capsys: pytest.CaptureFixture[str],
    command: str,
    url_secret: str,
    s3_secret: str,
    named: str,
) -> None:
    port = listener.getsockname()[1]
    config = write_config(tmp_path / "c.yaml", port, url_secret, s3_secret)
    assert main([command, "--config", str(config)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and named in lines[0], lines
    assert url_secret not in lines[0] or named != "security.url_signing_secret"
    with pytest.raises(BlockingIOError):
        listener.accept()  # nothing connected: refused before Redis or S3 was tried


def test_a_reachable_node_refuses_redis_without_a_password(tmp_path: Path) -> None:
    config = load_config(
        overrides={
            "http.host": "0.0.0.0",
            "state.redis_url": "redis://redis:6379/0",
            "security.url_signing_secret": STRONG,
        },
        environ={},
    )
    with pytest.raises(ConfigError, match=r"state.redis_url: .*password"):
        check_secrets(config)


def test_loopback_only_nodes_and_strong_secrets_start(tmp_path: Path) -> None:
    check_secrets(load_config(environ={}))  # the laptop defaults: generated secret, loopback
    check_secrets(
        load_config(
            overrides={"security.url_signing_secret": "change-me", "state.redis_url": "redis://x"},
            environ={},
        )
    )
    check_secrets(
        load_config(
            overrides={
                "http.host": "0.0.0.0",
                "security.url_signing_secret": STRONG,
                "state.redis_url": f"redis://:{STRONG}@redis:6379/0",
            },
            environ={},
        )
    )
