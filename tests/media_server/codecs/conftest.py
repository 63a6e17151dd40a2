"""Encoded streams shared by the codec tests (encoded once per test run)."""

from __future__ import annotations

import pytest

from tests.media_server.codecs.samples import X265, encode


@pytest.fixture(scope="package")
def h264_baseline() -> list[bytes]:
    return encode("libx264", 640, 360)


@pytest.fixture(scope="package")
def h264_high() -> list[bytes]:
    return encode("libx264", 854, 480, options={"preset": "veryfast", "bf": "0"})


@pytest.fixture(scope="package")
def h265() -> list[bytes]:
    return encode("libx265", 640, 360, options=X265)
