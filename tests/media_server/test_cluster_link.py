"""The node-to-node link (media_server/cluster/link.py): items survive the wire byte for
byte in any chunking, and only a token signed with the cluster's secret for that stream is
taken."""

from __future__ import annotations

import time

import pytest

from media_server.cluster.link import Decoder, LinkError, NodeTokens, encode
from media_server.media import Item, Packet, Skipped, StreamEnd, StreamStart, Track

TRACKS = (
    Track(0, "video", "h264", 1000, b"\x01avcC-config", width=1280, height=720),
    Track(1, "audio", "aac", 48000, b"\x11\x90", sample_rate=48000, channels=2),
)
ITEMS: list[Item] = [
    StreamStart(TRACKS, 3),
    Packet(0, 1000, 1040, True, b"\x00\x00\x00\x05key" * 100, 1765000000.25),
    Packet(1, 48000, 48000, False, b"aac-frame", 1765000000.5),
    Skipped(7),
    Packet(0, 1040, 1080, False, b"", 1765000000.75),
    StreamEnd("publisher left"),
]


@pytest.mark.parametrize("chunk", [1, 7, 64, 1 << 20])
def test_items_survive_the_wire_in_any_chunking(chunk: int) -> None:
    wire = b"".join(encode(item) for item in ITEMS)
    decoder, out = Decoder(), []
    for i in range(0, len(wire), chunk):
        out += decoder.feed(wire[i : i + chunk])
    assert out == ITEMS


def test_a_broken_stream_is_an_error_not_a_hang() -> None:
    with pytest.raises(LinkError):
        Decoder().feed(b"P\xff\xff\xff\xff")
    with pytest.raises(LinkError):
        Decoder().feed(b"Z\x00\x00\x00\x00")


def test_node_tokens_are_per_stream_and_secret_and_expire() -> None:
    tokens = NodeTokens(b"cluster secret")
    token = tokens.make("court-1", "node-b")
    assert tokens.check("court-1", token) == "node-b"
    assert tokens.check("court-2", token) is None
    assert NodeTokens(b"another secret").check("court-1", token) is None
    assert tokens.check("court-1", token.replace("node-b", "node-c")) is None
    expired = NodeTokens(b"cluster secret", ttl_s=-10).make("court-1", "node-b")
    assert tokens.check("court-1", expired) is None
    assert tokens.check("court-1", "²." + token) is None
    assert int(token.split(".")[0]) > time.time()
