"""The node-to-node packet link: how a node proves it is one (a short-lived HMAC token on
the cluster's shared secret), and the framing of hub items on the wire.

A frame is a kind byte, a 4-byte big-endian body length, then the body:
  S  StreamStart: JSON {"epoch", "tracks": [Track fields, config in base64]}
  P  Packet: track u8, dts i64, pts i64, keyframe u8, arrival f64, then the payload
  E  StreamEnd: the reason, UTF-8
  K  Skipped: the count, u32 (the origin's queue for this node fell behind)
Packets are copied as they are: nothing is decoded or re-encoded.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import struct
import time
from pathlib import Path

from core.node_secrets import node_secret
from media_server.media import Item, Packet, Skipped, StreamEnd, StreamStart, Track

HEADER = struct.Struct(">BI")
PACKET = struct.Struct(">BqqBd")
COUNT = struct.Struct(">I")
MAX_FRAME = 64 * 1024 * 1024  # a bigger length is a broken link, not a frame


class LinkError(Exception):
    """The peer sent something that is not a frame of this protocol."""


class NodeTokens:
    """Tokens one node shows another to pull a stream; every node of a cluster must be
    given the same secret (security.url_signing_secret)."""

    def __init__(self, secret: bytes, ttl_s: int = 60) -> None:
        self._secret = secret
        self.ttl_s = ttl_s

    @classmethod
    def for_node(cls, data_dir: Path, configured: str | None) -> NodeTokens:
        return cls(node_secret(data_dir, "play-url", configured))

    def make(self, stream_id: str, node: str) -> str:
        expires = int(time.time()) + self.ttl_s
        return f"{expires}.{node}.{self._sign(stream_id, node, expires)}"

    def check(self, stream_id: str, token: str) -> str | None:
        """The name of the node the token was made by, or None if it is not valid."""
        expires_s, _, rest = token.partition(".")
        node, _, signature = rest.rpartition(".")
        if not (expires_s.isascii() and expires_s.isdigit()) or len(expires_s) > 12:
            return None
        if int(expires_s) < time.time() or not (node.isascii() and signature.isascii()):
            return None
        expected = self._sign(stream_id, node, int(expires_s))
        return node if hmac.compare_digest(signature, expected) else None

    def _sign(self, stream_id: str, node: str, expires: int) -> str:
        # a message of its own: a viewer's play token is never a node token
        message = f"node-relay:{stream_id}:{node}:{expires}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()


def encode_into(item: Item, out: list[bytes]) -> None:
    """Append the item's frame to out in parts (joined once per write: one copy)."""
    if isinstance(item, Packet):
        out.append(HEADER.pack(ord("P"), PACKET.size + len(item.data)))
        out.append(PACKET.pack(item.track, item.dts, item.pts, item.keyframe, item.arrival))
        out.append(item.data)
    else:
        out.append(encode(item))


def encode(item: Item) -> bytes:
    if isinstance(item, Packet):
        parts: list[bytes] = []
        encode_into(item, parts)
        return b"".join(parts)
    if isinstance(item, StreamStart):
        tracks = [_track_json(t) for t in item.tracks]
        body = json.dumps({"epoch": item.epoch, "tracks": tracks}).encode()
        return HEADER.pack(ord("S"), len(body)) + body
    if isinstance(item, StreamEnd):
        body = item.reason.encode()
        return HEADER.pack(ord("E"), len(body)) + body
    return HEADER.pack(ord("K"), COUNT.size) + COUNT.pack(item.count)


def _track_json(track: Track) -> dict[str, object]:
    fields = dataclasses.asdict(track)
    fields["config"] = base64.b64encode(track.config).decode()
    return fields


class Decoder:
    """Frames out of a byte stream, whatever the chunks it comes in."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, chunk: bytes) -> list[Item]:
        buffer = self._buffer
        buffer += chunk
        items: list[Item] = []
        offset = 0
        with memoryview(buffer) as view:  # released before the buffer is trimmed
            while len(buffer) - offset >= HEADER.size:
                kind, length = HEADER.unpack_from(view, offset)
                if length > MAX_FRAME:
                    raise LinkError(f"a frame of {length} bytes")
                end = offset + HEADER.size + length
                if len(buffer) < end:
                    break
                items.append(_decode(kind, view[offset + HEADER.size : end]))
                offset = end
        del buffer[:offset]
        return items


def _decode(kind: int, body: memoryview) -> Item:
    if kind == ord("P"):
        track, dts, pts, keyframe, arrival = PACKET.unpack_from(body)
        return Packet(track, dts, pts, bool(keyframe), bytes(body[PACKET.size :]), arrival)
    if kind == ord("S"):
        start = json.loads(bytes(body))
        tracks = tuple(
            Track(**{**t, "config": base64.b64decode(t["config"])}) for t in start["tracks"]
        )
        return StreamStart(tracks, int(start["epoch"]))
    if kind == ord("E"):
        return StreamEnd(bytes(body).decode(errors="replace"))
    if kind == ord("K"):
        return Skipped(COUNT.unpack_from(body)[0])
    raise LinkError(f"unknown frame kind {kind}")
