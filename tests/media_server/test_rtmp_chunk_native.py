"""The chunk reader that runs is the one setup.py compiles (chunk.py with the C types of
chunk.pxd), and it parses exactly as chunk.py does as plain Python: the same messages,
errors and bounds, for valid streams cut anywhere, for streams with bytes overwritten, and
for a real ffmpeg publish. The other chunk tests (test_rtmp_chunk.py, the fuzz targets)
run against the compiled reader."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import itertools
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from media_server import native
from media_server.hub import Hub
from media_server.rtmp import chunk as compiled
from media_server.rtmp import transport as transport_module
from media_server.rtmp.chunk import AUDIO, VIDEO
from media_server.rtmp.server import RtmpServer
from tests.fixtures.rtmp import FfmpegRunner, push_args
from tests.media_server.test_rtmp_chunk import written


def _as_python() -> ModuleType:
    """chunk.py loaded from its source under another name: the plain-Python reader."""
    name = "media_server.rtmp._chunk_as_python"
    spec = importlib.util.spec_from_file_location(name, native.ROOT / native.SOURCES[0])
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its dataclass looks its module up
    spec.loader.exec_module(module)
    return module


python = _as_python()
# as in test_rtmp_chunk.py, with stream ids over the full 32 bits: C ints must not overflow
messages = st.lists(
    st.tuples(
        st.sampled_from([3, 4, 5, 6, 7, 70, 400]),
        st.sampled_from([AUDIO, VIDEO, 18, 20]),
        st.integers(0, 0xFFFFFFFF),
        st.integers(0, 0xFFFFFFFF),
        st.binary(max_size=700),
        st.binary(max_size=6),
    ),
    max_size=12,
)
LIMITS = {"max_message": 64 * 1024, "max_streams": 16, "max_pending": 256 * 1024}


def trace(module: ModuleType, data: bytes, cuts: list[int]) -> list[Any]:
    """What a reader of this module makes of data fed in these pieces, step by step."""
    reader = module.ChunkReader(**LIMITS)
    out: list[Any] = []
    pos = 0
    for end in [*sorted(set(cuts)), len(data)]:
        try:
            msgs = reader.feed(data[pos:end])
        except module.ChunkError as exc:
            return [*out, ("error", str(exc))]
        out += [(m.csid, m.type_id, m.stream_id, m.timestamp, bytes(m.payload)) for m in msgs]
        out.append(("state", reader.buffered, reader.chunk_size))
        pos = end
    return out


def test_the_compiled_reader_is_what_runs() -> None:
    assert native.problems() == []
    assert compiled.__file__.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))
    assert str(python.__file__).endswith("chunk.py")
    assert type(compiled.ChunkReader()) is not type(python.ChunkReader())


@settings(max_examples=300, deadline=None)
@given(
    msgs=messages,
    chunk_size=st.sampled_from([1, 7, 128, 4096]),
    cuts=st.lists(st.integers(0, 9000), max_size=20),
    hits=st.lists(st.tuples(st.integers(0, 9000), st.integers(0, 255)), max_size=4),
)
def test_compiled_and_python_readers_agree(
    msgs: list[Any], chunk_size: int, cuts: list[int], hits: list[tuple[int, int]]
) -> None:
    data = bytearray(written(msgs, chunk_size))
    for at, value in hits:  # overwritten bytes: bad headers, lengths, chunk sizes
        if at < len(data):
            data[at] = value
    expected = trace(python, bytes(data), cuts)
    assert trace(compiled, bytes(data), cuts) == expected
    if not hits:
        assert expected[-1] == ("state", 0, chunk_size)  # all of it parsed, nothing held


async def test_compiled_and_python_readers_agree_on_an_ffmpeg_publish(
    rtmp_media: dict[str, Path], rtmp_ffmpeg: FfmpegRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What ffmpeg sent a real server after the handshake, in the pieces it was read in."""
    reads: list[bytes] = []

    class Recording(compiled.ChunkReader):  # the server's reader, noting each read
        def feed(self, data: bytes | bytearray | memoryview) -> list[compiled.Message]:
            reads.append(bytes(data))
            return super().feed(data)

    monkeypatch.setattr(transport_module, "ChunkReader", Recording)
    server = RtmpServer(Hub(), "127.0.0.1", 0)
    await server.start()
    try:
        rc, _, err = await rtmp_ffmpeg.run(
            *push_args(rtmp_media["nobf"], f"rtmp://127.0.0.1:{server.port}/live/x", realtime=True)
        )
        assert rc == 0, err
    finally:
        await server.stop()
    data = b"".join(reads)
    cuts = list(itertools.accumulate(len(r) for r in reads))[:-1]
    got = trace(compiled, data, cuts)
    assert got == trace(python, data, cuts)
    kinds = [step[1] for step in got if step[0] != "state"]
    assert kinds.count(VIDEO) >= 100 and kinds.count(AUDIO) >= 100, kinds[:20]
    assert got[-1] == ("state", 0, 4096)  # ffmpeg's chunk size; nothing left unparsed
