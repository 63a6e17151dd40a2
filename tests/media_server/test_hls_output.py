"""HlsOutputs on a real hub, no HTTP: made on demand only, dropped when idle, and how fast
a blocked reader wakes when its part appears."""

from __future__ import annotations

import asyncio
import time

import pytest

from media_server.hls.output import HlsOptions, HlsOutputs
from media_server.hub import Hub
from media_server.media import Packet
from tests.media_server.test_hls_segmenter import AUDIO, VIDEO, av_stream


async def test_no_output_for_a_stream_nobody_watches() -> None:
    hub = Hub()
    outputs = HlsOutputs(hub)
    hub.publish("court-1", (VIDEO, AUDIO), "test")
    await asyncio.sleep(0)
    assert len(outputs) == 0 and hub.stream("court-1").subscribers == []
    assert outputs.get("court-2") is None  # never published
    hub.stream("court-3")  # known (a recorder waits for it) but not live
    assert outputs.get("court-3") is None and len(outputs) == 0
    await outputs.close()


async def test_idle_output_unsubscribes_and_is_dropped() -> None:
    hub = Hub()
    outputs = HlsOutputs(hub, HlsOptions(idle_timeout_s=0.3))
    hub.publish("court-1", (VIDEO, AUDIO), "test")
    output = outputs.get("court-1")
    assert output is not None and len(hub.stream("court-1").subscribers) == 1
    assert outputs.get("court-1") is output  # one output, however many viewers
    await asyncio.sleep(0.6)
    assert "court-1" not in outputs and hub.stream("court-1").subscribers == []
    assert output.closed
    await outputs.close()


async def test_requests_keep_an_output_alive_and_it_outlives_the_publisher() -> None:
    hub = Hub()
    outputs = HlsOutputs(hub, HlsOptions(idle_timeout_s=0.3))
    pub = hub.publish("court-1", (VIDEO, AUDIO), "test")
    output = outputs.get("court-1")
    assert output is not None
    for p in av_stream(2.2):
        pub.push(p)
    pub.close("publisher left")
    for _ in range(5):
        await asyncio.sleep(0.1)
        assert outputs.get("court-1") is output  # still served: viewers finish the window
    assert output.segmenter.last_msn is not None and not output.segmenter.live
    await outputs.close()
    assert hub.stream("court-1").subscribers == []


@pytest.mark.serial  # a wake-up within 5 ms
async def test_a_blocked_reader_wakes_within_milliseconds_of_its_part() -> None:
    hub = Hub()
    outputs = HlsOutputs(hub)
    pub = hub.publish("court-1", (VIDEO, AUDIO), "test")
    output = outputs.get("court-1")
    assert output is not None
    packets = av_stream(3)
    woke: list[float] = []
    half = len(packets) // 2
    rest = packets[half:]
    for p in packets[:half]:
        pub.push(p)
    await asyncio.sleep(0.01)
    for _ in range(3):
        target = output.segmenter.next_part()
        assert target is not None
        waiter = asyncio.create_task(output.wait_for(target[0], target[1], timeout=2))
        await asyncio.sleep(0.01)
        # push video until the part closes; time from that push to the waiter's wake-up
        while not waiter.done():
            p = rest.pop(0)
            pushed = time.perf_counter()
            pub.push(p)
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            if waiter.done():
                woke.append(time.perf_counter() - pushed)
        assert waiter.result() is True
    assert max(woke) < 0.005, woke
    print(f"wake-up after the part's closing packet: {max(woke) * 1e6:.0f} us max")
    newest = output.segmenter.last_msn
    assert newest is not None
    assert await output.wait_for(newest + 5, None, timeout=0.05) is False
    await outputs.close()


async def test_wait_for_times_out_when_the_stream_stops() -> None:
    hub = Hub()
    outputs = HlsOutputs(hub)
    pub = hub.publish("court-1", (VIDEO,), "test")
    output = outputs.get("court-1")
    assert output is not None
    pub.push(Packet(0, 0, 0, True, b"v"))
    started = time.monotonic()
    assert await output.wait_for(0, 3, timeout=0.2) is False
    assert 0.2 <= time.monotonic() - started < 0.3
    await outputs.close()
