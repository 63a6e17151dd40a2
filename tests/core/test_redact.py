"""Credentials never reach logs, APIs or pages (DESIGN.md §7)."""

from __future__ import annotations

import pytest

from core.redact import redact_url


@pytest.mark.parametrize(
    "url,expected",
    [
        ("rtsp://admin:secret@10.0.0.5:554/Streaming/101", "rtsp://***@10.0.0.5:554/Streaming/101"),
        ("rtsp://admin@cam/x", "rtsp://***@cam/x"),
        ("rtsp://u:p@ss/w@rd@cam:554/s", "rtsp://***@cam:554/s"),
        (
            "rtsp://cam/live?user=admin&password=secret&ch=1",
            "rtsp://cam/live?user=***&password=***&ch=1",
        ),
        ("rtsp://cam:554/s", "rtsp://cam:554/s"),
        ("/var/media/loop.mp4", "/var/media/loop.mp4"),
        ("error opening 'rtsp://a:b@h/x': refused", "error opening 'rtsp://***@h/x': refused"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected
