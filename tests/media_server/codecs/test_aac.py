"""The AudioSpecificConfig."""

from __future__ import annotations

from media_server.codecs.aac import rate_and_channels


def test_aac_config_parsing() -> None:
    assert rate_and_channels(bytes([0x11, 0x90])) == (48000, 2)
    assert rate_and_channels(bytes([0x12, 0x08])) == (44100, 1)
    assert rate_and_channels(b"") == (0, 0)
