"""The LL-HLS window in files (media_server/hls/window_files.py): parts leave memory once
written, come back byte for byte, leave the disk with their segment, and stay in memory
when the disk fails. Over HTTP, with ffprobe and hls.js, the same files serve
test_hls_http.py and test_hls_browser.py (their server keeps windows in files)."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
from pathlib import Path

import pytest

from media_server.hls.output import HlsOutput, HlsOutputs
from media_server.hls.window_files import WindowFiles
from media_server.hub import Hub
from tests.device_agents.helpers import until
from tests.media_server.test_hls_segmenter import AUDIO, VIDEO, av_stream


def _window(output: HlsOutput) -> list:  # type: ignore[type-arg]
    seg = output.segmenter
    return list(seg.segments) + ([seg.open] if seg.open is not None else [])


def _bytes_in_memory(output: HlsOutput) -> int:
    return sum(len(p.data) for s in _window(output) for p in s.parts)


async def _two_outputs(tmp_path: Path, seconds: float) -> tuple[HlsOutputs, HlsOutputs]:
    """The same stream through an output in memory and one in files."""
    hub = Hub()
    in_memory, in_files = HlsOutputs(hub), HlsOutputs(hub, files=WindowFiles(tmp_path))
    pub = hub.publish("court-1", (VIDEO, AUDIO), "test")
    assert in_memory.get("court-1") is not None and in_files.get("court-1") is not None
    for p in av_stream(seconds):
        pub.push(p)
    return in_memory, in_files


async def test_parts_leave_memory_for_files_and_come_back_byte_for_byte(tmp_path: Path) -> None:
    in_memory, in_files = await _two_outputs(tmp_path, seconds=20)
    mem, filed = in_memory.get("court-1"), in_files.get("court-1")
    assert mem is not None and filed is not None
    window, expected = _window(filed), _window(mem)
    newest = window[-1].parts[-1]
    await until(lambda: _bytes_in_memory(filed) == len(newest.data), 5, "every part written")
    assert _bytes_in_memory(mem) > 50_000  # ~14 s of the synthetic stream
    assert newest.data  # the part LL-HLS players ask for now: kept in memory too
    assert len(window) == 7 and [len(s.parts) for s in window] == [len(s.parts) for s in expected]
    for got, want in zip(window, expected, strict=True):
        if got.complete:
            assert filed.segment_bytes(got) == mem.segment_bytes(want)
        for p, q in zip(got.parts, want.parts, strict=True):
            assert filed.part_bytes(p) == mem.part_bytes(q) == q.data
    # 10 segments made, through a ring of 6 + 2 files, each written over once its
    # segment left the window (the bytes above came back right from reused files)
    assert window[-1].msn - window[0].msn == 6 and window[0].msn > window[0].init_id + 2
    files = sorted(p.name for p in tmp_path.glob(f"{os.getpid()}/*/*.m4s"))
    assert files == sorted(f"{k}.m4s" for k in range(8))
    await in_memory.close()
    await in_files.close()


async def test_an_output_s_files_go_when_it_closes(tmp_path: Path) -> None:
    in_memory, in_files = await _two_outputs(tmp_path, seconds=6)
    filed = in_files.get("court-1")
    assert filed is not None
    await until(lambda: any(tmp_path.glob("*/*/*.m4s")), 5, "files written")
    await filed.close()
    await until(lambda: not any(tmp_path.glob("*/*")), 5, "window directory removed")
    assert (tmp_path / str(os.getpid())).is_dir()  # the process's own stays while it runs
    await in_files.close()
    assert not (tmp_path / str(os.getpid())).exists()
    await in_memory.close()


async def test_a_window_that_cannot_be_written_stays_in_memory_and_served(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    hub = Hub()
    (tmp_path / "disk").write_text("not a directory")  # no directory can be made under it
    with caplog.at_level(logging.ERROR, "media_server.hls.window_files"):
        files = WindowFiles(tmp_path / "disk" / "hls-window")  # starts all the same
    assert "cannot make" in caplog.text
    outputs = HlsOutputs(hub, files=files)
    pub = hub.publish("court-1", (VIDEO, AUDIO), "test")
    output = outputs.get("court-1")
    assert output is not None
    with caplog.at_level(logging.ERROR, "media_server.hls.window_files"):
        for p in av_stream(6):
            pub.push(p)
        await until(lambda: files.failures >= 8, 5, "the writes failed")
    assert "cannot write the live window" in caplog.text
    seg = output.segmenter.segments[-1]
    assert all(p.data for p in seg.parts)  # kept: the window bounds them
    assert output.segment_bytes(seg) == b"".join(p.data for p in seg.parts)
    assert output.part_bytes(seg.parts[1]) == seg.parts[1].data
    await outputs.close()


async def test_what_a_killed_process_left_is_removed(tmp_path: Path) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    (tmp_path / str(gone.pid) / "0-court-1").mkdir(parents=True)
    (tmp_path / str(gone.pid) / "0-court-1" / "5.m4s").write_bytes(b"x")
    alive = tmp_path / str(os.getppid())  # another process that still runs
    alive.mkdir()
    files = WindowFiles(tmp_path)
    assert not (tmp_path / str(gone.pid)).exists() and alive.is_dir()
    files.close()
    await asyncio.sleep(0)
