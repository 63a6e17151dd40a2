"""Fuzzing: random and mutated bytes into every RTMP parser; only the parser's own error
type may come out, and memory stays bounded. Then the same at socket level: garbage
connections are closed with a logged reason while a real publish keeps flowing.

bench/fuzz_rtmp.py runs the same targets for 100k+ cases."""

from __future__ import annotations

import asyncio
import logging
import random
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from media_server.hub import Hub
from media_server.rtmp import amf0, flv, handshake
from media_server.rtmp.chunk import (
    AUDIO,
    SET_CHUNK_SIZE,
    VIDEO,
    ChunkError,
    ChunkReader,
    ChunkWriter,
)
from media_server.rtmp.errors import RtmpProtocolError
from media_server.rtmp.publish import Ingest
from media_server.rtmp.server import RtmpServer
from tests.fixtures.rtmp import FfmpegRunner, RawRtmpClient, push_args, wait_for
from tests.media_server.test_rtmp_flv import (
    ASC_44K_STEREO,
    ASC_48K_MONO,
    AVCC_320,
    AVCC_1080,
    HVCC_720,
)

# -- targets: bytes in, the module's own error (or nothing) out --


def chunk_target(data: bytes) -> None:
    reader = ChunkReader(max_message=64 * 1024, max_streams=16, max_pending=256 * 1024)
    step = 1 + (data[0] if data else 0) % 160  # split points vary with the input
    try:
        for pos in range(0, len(data), step):
            reader.feed(data[pos : pos + step])
            assert reader.buffered <= len(data), "reader holds more than it was given"
    except ChunkError:
        pass


def amf0_target(data: bytes) -> None:
    try:
        amf0.decode(data)
    except amf0.AmfError:
        pass


def flv_target(data: bytes) -> None:
    try:
        if not data or data[0] & 1:
            tag = flv.parse_video(data[1:])
            if tag.kind == flv.SEQUENCE_HEADER:
                flv.video_track(0, tag.codec, bytes(tag.data))
        else:
            audio = flv.parse_audio(data[1:])
            if audio.kind == flv.SEQUENCE_HEADER:
                flv.audio_track(0, bytes(audio.data))
        flv.split_aggregate(data, 0)
    except flv.FlvError:
        pass


def handshake_target(data: bytes) -> None:
    try:
        handshake.server_response(data[: handshake.C0C1_SIZE].ljust(handshake.C0C1_SIZE, b"\0"), 0)
    except handshake.HandshakeError:
        pass


def ingest_target(data: bytes) -> None:
    """A publication fed messages cut from the bytes: [kind, ts(2), len(2), payload]...,
    on an event loop as in the server (audio to transcode goes to a pool thread from it)."""
    asyncio.run(_ingest(data))


async def _ingest(data: bytes) -> None:
    hub = Hub()
    ing = Ingest(hub.publish("fuzz", (), "fuzz"), "fuzz")
    pos = 0
    try:
        while pos + 5 <= len(data):
            kind, ts, size = (
                data[pos],
                int.from_bytes(data[pos + 1 : pos + 3], "big"),
                int.from_bytes(data[pos + 3 : pos + 5], "big") % 512,
            )
            body = data[pos + 5 : pos + 5 + size]
            pos += 5 + size
            if kind % 3 == 0:
                ing.on_video(ts, body, 0.0)
            elif kind % 3 == 1:
                ing.on_audio(ts, body, 0.0)
            else:
                ing.on_metadata(amf0.decode(body))
    except RtmpProtocolError:
        pass


# -- seeds: valid inputs the mutator starts from --


def _session_bytes() -> bytes:
    w = ChunkWriter()
    out = w.message(3, 20, 0, 0, amf0.encode("connect", 1.0, {"app": "live", "tcUrl": "x"}))
    out += w.message(2, SET_CHUNK_SIZE, 0, 0, struct.pack(">I", 300))
    w.chunk_size = 300
    out += w.message(6, VIDEO, 1, 0, b"\x17\x00\x00\x00\x00" + AVCC_320)
    for i in range(3):
        out += w.message(6, VIDEO, 1, 0xFFFFF0 + 33 * i, bytes(400 + i), b"\x27\x01\x00\x00\x00")
        out += w.message(4, AUDIO, 1, 0xFFFFF0 + 21 * i, bytes(30), b"\xaf\x01")
    return out


def _ingest_seed() -> bytes:
    def msg(kind: int, ts: int, body: bytes) -> bytes:
        return bytes((kind,)) + ts.to_bytes(2, "big") + len(body).to_bytes(2, "big") + body

    return (
        msg(
            2,
            0,
            amf0.encode(
                "@setDataFrame", "onMetaData", amf0.EcmaArray(videocodecid=7.0, audiocodecid=10.0)
            ),
        )
        + msg(0, 0, b"\x17\x00\x00\x00\x00" + AVCC_320)
        + msg(1, 0, b"\xaf\x00" + ASC_48K_MONO)
        + msg(0, 0, b"\x17\x01\x00\x00\x21\x00\x00\x00\x01e")
        + msg(1, 21, b"\xaf\x01ab")
        + msg(0, 33, b"\x91hvc1\x00\x00\x00x")
        + msg(0, 66, b"\x1c\x00\x00\x00\x00" + HVCC_720)
    )


SEEDS: dict[str, list[bytes]] = {
    "chunk": [_session_bytes()],
    "amf0": [
        amf0.encode("connect", 1.0, {"app": "live", "flashVer": "FMLE/3.0", "n": [1.0, None]}),
        amf0.encode("@setDataFrame", "onMetaData", amf0.EcmaArray(width=320.0, stereo=True)),
        amf0.encode(amf0.TypedObject("c", {"d": amf0.AmfDate(1.0, 0)}), "x" * 300),
    ],
    "flv": [
        b"\x01\x17\x00\x00\x00\x00" + AVCC_320,
        b"\x01\x17\x00\x00\x00\x00" + AVCC_1080,
        b"\x01\x90hvc1" + HVCC_720,
        b"\x01\x1c\x00\x00\x00\x00" + HVCC_720,
        b"\x00\xaf\x00" + ASC_44K_STEREO,
        b"\x00\x90mp4a" + ASC_48K_MONO,
        b"\x01\x27\x01\xff\xff\xdfdata",
    ],
    "handshake": [b"\x03" + bytes(1536)],
    "ingest": [_ingest_seed()],
}
TARGETS: dict[str, Callable[[bytes], None]] = {
    "chunk": chunk_target,
    "amf0": amf0_target,
    "flv": flv_target,
    "handshake": handshake_target,
    "ingest": ingest_target,
}
_INTERESTING = (0, 1, 2, 3, 0x7F, 0x80, 0xFE, 0xFF)


def mutate(rng: random.Random, data: bytes, pool: list[bytes]) -> bytes:
    """A few random edits: flips, interesting bytes, inserts, deletes, splices, cuts."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        op = rng.randrange(7)
        at = rng.randrange(len(buf) + 1)
        if op == 0 and buf:
            buf[at % len(buf)] ^= 1 << rng.randrange(8)
        elif op == 1 and buf:
            buf[at % len(buf)] = rng.choice(_INTERESTING)
        elif op == 2:
            buf[at:at] = rng.randbytes(rng.randint(1, 16))
        elif op == 3:
            del buf[at : at + rng.randint(1, 64)]
        elif op == 4:
            other = rng.choice(pool)
            start = rng.randrange(len(other) + 1)
            buf[at:] = other[start : start + rng.randint(1, 200)]
        elif op == 5:
            buf = buf[:at]
        elif buf:
            size = rng.randint(1, 4)
            buf[at : at + size] = b"\xff" * size
    return bytes(buf)


def run_random(name: str, cases: int, seed: int = 0) -> int:
    """Run a target on `cases` inputs (mutated seeds, some pure noise); returns how many
    ended normally or with the module's own error."""
    rng = random.Random(seed)
    target, pool = TARGETS[name], SEEDS[name]
    clean = 0
    for i in range(cases):
        data = (
            rng.randbytes(rng.randint(0, 64))
            if i % 10 == 0
            else mutate(rng, rng.choice(pool), pool)
        )
        target(data)  # anything but the module's own error propagates and fails
        clean += 1
    return clean


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_mutated_inputs_raise_only_the_module_error(name: str) -> None:
    assert run_random(name, 1500, seed=hash(name) & 0xFFFF) == 1500
    for seed in SEEDS[name]:
        TARGETS[name](seed)  # and the seeds themselves parse


fuzz_settings = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@fuzz_settings
@given(st.binary(max_size=600))
def test_chunk_reader_random_bytes(data: bytes) -> None:
    chunk_target(data)


@fuzz_settings
@given(st.binary(max_size=300))
def test_amf0_random_bytes(data: bytes) -> None:
    amf0_target(data)


@fuzz_settings
@given(st.binary(max_size=300))
def test_flv_random_bytes(data: bytes) -> None:
    flv_target(data)


@fuzz_settings
@given(st.binary(max_size=600))
def test_ingest_random_bytes(data: bytes) -> None:
    ingest_target(data)


# -- socket level --

GARBAGE_CASES = {
    "http": (b"GET /live/x HTTP/1.1\r\nHost: x\r\n\r\n" + bytes(2000), "an HTTP request"),
    "tls": (b"\x16\x03\x01\x02\x00\x01" + bytes(2000), "a TLS handshake"),
    "chunks": (None, "protocol error"),
    "huge": (None, "exceeds the limit"),
    "vp6": (None, "unsupported video codec On2 VP6"),
}


async def _garbage_client(port: int, case: str) -> bytes:
    raw, _ = GARBAGE_CASES[case]
    client = await RawRtmpClient.connect(port)
    try:
        if raw is not None:
            client.writer.write(raw)
        else:
            await client.handshake()
            client.command(0, "connect", 1.0, {"app": "live"})
            if case == "chunks":
                client.writer.write(b"\xc9" + random.Random(7).randbytes(4000))
            elif case == "huge":
                client.writer.write(b"\x06" + b"\x00\x00\x00" + b"\xff\xff\xff\x09" + bytes(4))
            else:
                client.command(0, "createStream", 2.0, None)
                client.command(1, "publish", 0.0, None, "vp6cam", "live")
                client.writer.write(client.chunks.message(6, VIDEO, 1, 0, b"\x24\x00\x00"))
        await client.writer.drain()
        return await asyncio.wait_for(_read_all(client.reader), 10)
    finally:
        await client.close()


async def _read_all(reader: asyncio.StreamReader) -> bytes:
    out = b""
    while chunk := await reader.read(65536):
        out += chunk
    return out


async def test_garbage_connections_are_closed_and_a_publish_keeps_flowing(
    rtmp_server: RtmpServer,
    rtmp_media: dict[str, Path],
    rtmp_ffmpeg: FfmpegRunner,
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = f"rtmp://127.0.0.1:{rtmp_server.port}/live/court"
    sub = rtmp_server.hub.subscribe("court", "test", max_packets=100_000)
    publisher = await rtmp_ffmpeg.start(
        *push_args(rtmp_media["nobf"], url, realtime=True, loop=True)
    )
    await wait_for(lambda: sub.queued > 10)
    with caplog.at_level(logging.INFO, logger="media_server.rtmp"):
        await asyncio.gather(*(_garbage_client(rtmp_server.port, c) for c in GARBAGE_CASES))
        await wait_for(lambda: rtmp_server.stats.connections_open == 1)
    for case, (_, words) in GARBAGE_CASES.items():
        assert words in caplog.text, f"{case}: no logged reason with {words!r}"
    assert rtmp_server.stats.protocol_errors >= 4
    before = sub.queued
    await wait_for(lambda: sub.queued > before + 10)
    assert publisher.returncode is None and rtmp_server.hub.find("court").live  # type: ignore
