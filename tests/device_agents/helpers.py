"""Shared bits of the device agent tests: configs, waiting, decoding what the ring holds."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av

from device_agents.config import AgentConfig, SourceConfig, StreamConfig
from device_agents.ring import Ring


def source(
    kind: str,
    url: str,
    main: tuple[str, str],
    sub: tuple[str, str] | None = None,
    sub_url: str | None = None,
) -> SourceConfig:
    return SourceConfig(
        kind=kind,
        url=url,
        sub_url=sub_url,  # type: ignore[arg-type]
        main=StreamConfig(stream_id=main[0], key=main[1]),
        sub=StreamConfig(stream_id=sub[0], key=sub[1]) if sub else None,
    )


def agent_config(
    tmp_path: Path,
    rtmp_port: int,
    sources: dict[str, SourceConfig],
    server: str = "http://127.0.0.1:9",
    **more: Any,
) -> AgentConfig:
    return AgentConfig(
        server=server,
        rtmp_url=f"rtmp://127.0.0.1:{rtmp_port}/live",
        device_id="dev-1",
        device_secret="s3cret",
        court="c",
        room="r",
        sources=sources,
        spool={
            "dir": tmp_path / "spool",  # type: ignore[arg-type]
            "max_bytes": 1 << 30,
        },
        **more,
    )


async def until(check: Callable[[], Any], timeout: float = 15.0, what: str = "") -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while not (value := check()):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not reached in {timeout} s: {what or check}")
        await asyncio.sleep(0.05)
    return value


def decode_ring(ring: Ring, stream_id: str, out: Path) -> tuple[int, int, int]:
    """Join the ring's segments (with their init) into one file and decode every frame:
    (frames, width, height). Raises if any segment does not decode."""
    entries = ring.entries(stream_id)
    assert entries, f"ring has nothing for {stream_id}"
    assert len({e.init for e in entries}) == 1, "one init expected in this test"
    data = ring.path(stream_id, entries[0].init).read_bytes()
    data += b"".join(ring.path(stream_id, e.file).read_bytes() for e in entries)
    out.write_bytes(data)
    frames, size = 0, (0, 0)
    with av.open(str(out)) as container:
        for frame in container.decode(video=0):
            frames += 1
            size = (frame.width, frame.height)
    return frames, *size
