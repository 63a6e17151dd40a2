"""An agent's sources open only what their kind says (issue 14, item 5): a hand-edited
config cannot make FFmpeg fetch http:// or any other protocol as a "camera" or "file"."""

from __future__ import annotations

from typing import Any

import pytest

from core.config import ConfigError
from device_agents.config import parse_agent_config


def agent(source: dict[str, Any]) -> dict[str, Any]:
    return {
        "server": "http://127.0.0.1:8080",
        "rtmp_url": "rtmp://127.0.0.1:1935/live",
        "device_id": "dev-1",
        "device_secret": "s",
        "court": "c",
        "room": "r",
        "sources": {"cam": {**source, "main": {"stream_id": "c-r-cam", "key": "k"}}},
    }


@pytest.mark.parametrize(
    "source",
    [
        {"kind": "rtsp", "url": "http://127.0.0.1:9/x"},
        {"kind": "rtsp", "url": "rtsp://cam/main", "sub_url": "ftp://cam/sub"},
        {"kind": "file", "url": "http://127.0.0.1:9/clip.mp4"},
        {"kind": "file", "url": "concat:/a.mp4|/b.mp4"},
        {"kind": "v4l2", "url": "http://127.0.0.1:9/"},
        {"kind": "test", "url": "file:///etc/hostname"},
    ],
)
def test_a_source_url_must_match_its_kind(source: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match=r"sources\.cam"):
        parse_agent_config(agent(source))


@pytest.mark.parametrize(
    "source",
    [
        {"kind": "rtsp", "url": "rtsps://cam/main", "sub_url": "rtsp://cam/sub"},
        {"kind": "file", "url": "/srv/clips/talk.mp4"},
        {"kind": "v4l2", "url": "/dev/video0"},
        {"kind": "test", "url": "test:1280x720"},
    ],
)
def test_sources_of_every_kind_still_load(source: dict[str, Any]) -> None:
    assert parse_agent_config(agent(source)).sources["cam"].url == source["url"]
