"""The agent config (0600, atomic, one-line errors naming the key, the example file is
valid) and the ring's bookkeeping (bounded, oldest first, index, reload after a restart)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from core.config import ConfigError
from device_agents.config import load_agent_config, write_agent_config
from device_agents.ring import Ring
from tests.device_agents.helpers import agent_config, source

EXAMPLE = Path(__file__).resolve().parents[2] / "configs" / "agent.example.yaml"


def test_config_is_written_0600_and_read_back(tmp_path: Path) -> None:
    config = agent_config(
        tmp_path, 1935, {"cam": source("rtsp", "rtsp://u:p@cam/1", ("c-r-cam", "key1"))}
    )
    path = tmp_path / "agent.yaml"
    write_agent_config(path, config)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_agent_config(path) == config
    with pytest.raises(FileExistsError):
        write_agent_config(path, config)
    assert [p.name for p in tmp_path.iterdir()] == ["agent.yaml"]  # no temp file left


def test_a_list_of_media_servers_extends_the_one_rtmp_url(tmp_path: Path) -> None:
    """rtmp_url stays (a one-node agent's file is unchanged); rtmp_urls adds failover
    nodes, tried after it in order, each once."""
    cams = {"cam": source("test", "test:", ("c-r-cam", "key1"))}
    one = agent_config(tmp_path, 1935, cams)
    assert one.media_servers == ["rtmp://127.0.0.1:1935/live"]
    write_agent_config(tmp_path / "one.yaml", one)
    assert "rtmp_urls" not in (tmp_path / "one.yaml").read_text()
    more = ["rtmp://127.0.0.1:1936/live", "rtmp://127.0.0.1:1935/live"]
    many = agent_config(tmp_path, 1935, cams, rtmp_urls=more)
    assert many.media_servers == ["rtmp://127.0.0.1:1935/live", "rtmp://127.0.0.1:1936/live"]
    write_agent_config(tmp_path / "many.yaml", many)
    assert load_agent_config(tmp_path / "many.yaml") == many
    path = tmp_path / "bad.yaml"
    path.write_text(
        (tmp_path / "many.yaml").read_text().replace("rtmp://127.0.0.1:1936", "http://x")
    )
    with pytest.raises(ConfigError, match=r"rtmp_urls\.0: String should match"):
        load_agent_config(path)


def test_config_errors_are_one_line_naming_the_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    text = EXAMPLE.read_text().replace("heartbeat_s: 5", "heartbeat_s: 5\nheartbeat: 3")
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_agent_config(path)
    assert str(err.value) == f"agent config {path}: heartbeat: unknown key"
    path.write_text(EXAMPLE.read_text().replace("kind: rtsp ", "kind: onvif "))
    with pytest.raises(ConfigError, match=r"sources\.bench\.kind: Input should be"):
        load_agent_config(path)
    with pytest.raises(ConfigError, match="not found"):
        load_agent_config(tmp_path / "none.yaml")


def test_example_config_is_valid() -> None:
    config = load_agent_config(EXAMPLE)
    assert config.sources["bench"].sub is not None and config.spool.max_bytes == 20 << 30


def test_ring_is_bounded_oldest_first_and_survives_a_restart(tmp_path: Path) -> None:
    ring = Ring(tmp_path, max_bytes=10_000)
    for stream in ("a", "b"):
        assert ring.add_init(stream, b"init-" + stream.encode()) == "init-0.mp4"
        assert ring.add_init(stream, b"init-" + stream.encode()) == "init-0.mp4"  # same bytes
    for i in range(10):
        for n, stream in enumerate(("a", "b")):
            ring.add_segment(
                stream, "init-0.mp4", 1000.0 + 2 * i + n * 0.5, 2.0, 2.0 * i, bytes(1000)
            )
        assert ring.size_bytes() <= 10_000
    kept = {s: [e.start for e in ring.entries(s)] for s in ("a", "b")}
    assert kept["a"][-1] == 1018.0 and kept["b"][-1] == 1018.5
    assert len(kept["a"]) + len(kept["b"]) == 9 and ring.evicted == 11
    assert min(kept["a"] + kept["b"]) > 1008.0  # the oldest went first, across streams
    for stream in ("a", "b"):
        for entry in ring.entries(stream):
            assert ring.path(stream, entry.file).stat().st_size == entry.bytes
    with pytest.raises(ValueError):
        ring.path("a", "../../etc/passwd")
    again = Ring(tmp_path, max_bytes=10_000)  # a restart reads what is there
    assert {s: [e.start for e in again.entries(s)] for s in ("a", "b")} == kept
    assert again.size_bytes() == ring.size_bytes()
    assert again.add_init("a", b"other codec") == "init-1.mp4"
