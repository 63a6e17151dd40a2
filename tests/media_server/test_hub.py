"""The hub with scripted packets: GOP cache, slow subscribers, publisher takeover."""

from __future__ import annotations

import asyncio

import pytest

from media_server.consumer import Consumer
from media_server.hub import Hub, Stream, StreamBusy
from media_server.media import Item, Packet, Skipped, StreamEnd, StreamStart, Track

VIDEO = Track(0, "video", "h264", 1000, b"\x01avcC", width=1280, height=720)
AUDIO = Track(1, "audio", "aac", 1000, b"\x12\x10", sample_rate=48000, channels=2)
TRACKS = (VIDEO, AUDIO)


def video(dts: int, key: bool = False, size: int = 1000) -> Packet:
    return Packet(0, dts, dts, key, bytes(size))


def audio(dts: int) -> Packet:
    return Packet(1, dts, dts, False, bytes(100))


def drain(sub) -> list:  # type: ignore[no-untyped-def]
    items = []
    while (item := sub.get_nowait()) is not None:
        items.append(item)
    return items


async def test_new_subscriber_starts_from_last_keyframe() -> None:
    hub = Hub()
    pub = hub.publish("room1", TRACKS, "test")
    for i in range(10):
        pub.push(video(i * 40, key=i in (0, 5)))
        pub.push(audio(i * 40))
    sub = hub.subscribe("room1", "viewer")
    items = drain(sub)
    assert isinstance(items[0], StreamStart) and items[0].tracks == TRACKS
    packets = [i for i in items if isinstance(i, Packet)]
    assert packets[0].keyframe and packets[0].dts == 200
    assert len(packets) == 10  # 5 video + 5 audio since the keyframe at 200 ms


async def test_subscriber_before_first_keyframe_gets_nothing_cached() -> None:
    hub = Hub()
    pub = hub.publish("room1", TRACKS, "test")
    pub.push(video(0))
    pub.push(audio(0))
    sub = hub.subscribe("room1", "viewer")
    assert [type(i) for i in drain(sub)] == [StreamStart]


async def test_slow_subscriber_skips_to_next_keyframe_and_others_get_everything() -> None:
    hub = Hub()
    pub = hub.publish("room1", TRACKS, "test")
    slow = hub.subscribe("room1", "slow", max_packets=20)
    fast = hub.subscribe("room1", "fast", max_packets=1000)
    for i in range(100):
        pub.push(video(i * 40, key=i % 25 == 0))
    fast_packets = [i for i in drain(fast) if isinstance(i, Packet)]
    assert len(fast_packets) == 100
    items = drain(slow)
    skips = [i for i in items if isinstance(i, Skipped)]
    assert skips, "the slow subscriber must be told it skipped"
    for at, item in enumerate(items[:-1]):
        if isinstance(item, Skipped):
            after_skip = items[at + 1]
            assert isinstance(after_skip, Packet) and after_skip.keyframe
    assert slow.queued == 0 and slow.drops > 0
    assert hub.find("room1").stats.drops == slow.drops  # type: ignore[union-attr]


async def test_slow_subscriber_memory_stays_bounded() -> None:
    hub = Hub()
    pub = hub.publish("room1", TRACKS, "test")
    sub = hub.subscribe("room1", "never-reads", max_packets=50)
    for i in range(10_000):
        pub.push(video(i * 40, key=i % 50 == 0))
        assert sub.queued <= 50
    assert len(sub._queue) <= 52  # packets plus at most a merged Skipped and markers


async def test_second_publisher_refused_while_first_is_alive() -> None:
    hub = Hub()
    pub = hub.publish("room1", TRACKS, "rtmp 10.0.0.1")
    pub.push(video(0, key=True))
    with pytest.raises(StreamBusy, match=r"already being published by rtmp 10\.0\.0\.1"):
        hub.publish("room1", TRACKS, "rtmp 10.0.0.2")


async def test_silent_publisher_taken_over_with_new_epoch() -> None:
    hub = Hub(stale_publisher_s=0.05)
    evicted: list[str] = []
    old = hub.publish("room1", TRACKS, "old", on_evict=evicted.append)
    sub = hub.subscribe("room1", "viewer")
    old.push(video(0, key=True))
    await asyncio.sleep(0.1)
    new = hub.publish("room1", TRACKS, "new")
    assert evicted == ["taken over by new"] and not old.alive
    old.push(video(40))  # a late packet from the dead session is ignored
    new.push(video(0, key=True))
    items = drain(sub)
    starts = [i for i in items if isinstance(i, StreamStart)]
    assert [s.epoch for s in starts] == [1, 2]
    assert any(isinstance(i, StreamEnd) for i in items)
    assert sum(isinstance(i, Packet) for i in items) == 2


async def test_reconnect_after_clean_close_is_a_new_epoch() -> None:
    hub = Hub()
    first = hub.publish("room1", TRACKS, "a")
    first.close("publisher left")
    second = hub.publish("room1", TRACKS, "b")
    assert second.stream.epoch == 2 and hub.find("room1").live  # type: ignore[union-attr]


async def test_get_waits_for_packets_and_close_ends_iteration() -> None:
    hub = Hub()
    pub = hub.publish("room1", TRACKS, "test")
    sub = hub.subscribe("room1", "viewer")
    got: list = []

    async def reader() -> None:
        async for item in sub:
            got.append(item)

    task = asyncio.create_task(reader())
    await asyncio.sleep(0)
    pub.push(video(0, key=True))
    await asyncio.sleep(0.01)
    sub.close()
    await asyncio.wait_for(task, 1)
    assert isinstance(got[0], StreamStart) and isinstance(got[1], Packet)
    assert hub.find("room1").subscribers == []  # type: ignore[union-attr]


async def test_stats_measure_fps_bitrate_and_gop() -> None:
    hub = Hub()
    pub = hub.publish("room1", TRACKS, "test")
    t0 = 1_000_000.0
    for i in range(100):  # 25 fps for 4 s, a keyframe every 2 s
        p = video(i * 40, key=i % 50 == 0, size=5000)
        p.arrival = t0 + i * 0.04
        pub.push(p)
    stats = hub.find("room1").stats  # type: ignore[union-attr]
    assert stats.fps == pytest.approx(25, rel=0.05)
    assert stats.bitrate_bps == pytest.approx(25 * 5000 * 8, rel=0.05)
    assert stats.gop_seconds == pytest.approx(2.0) and stats.gop_frames == 50


async def test_drop_idle_forgets_idle_streams_but_keeps_pulled_ones() -> None:
    hub = Hub()
    hub.stream("camera").source.state = "failed"
    hub.stream("nobody")
    pub = hub.publish("live", TRACKS, "test")
    hub.drop_idle(keep=["camera"])
    assert hub.find("nobody") is None
    assert hub.find("camera").source.state == "failed"  # type: ignore[union-attr]
    assert hub.find("live") is pub.stream


async def test_subscribers_ask_the_live_ingest_for_a_keyframe() -> None:
    hub = Hub()
    asked: list[str] = []
    assert not hub.stream("cam").request_keyframe(), "nobody publishes yet"
    pub = hub.publish("cam", TRACKS, "whip", on_keyframe_request=lambda: asked.append("pli"))
    assert hub.stream("cam").request_keyframe() and asked == ["pli"]
    assert pub.keyframe_requests == 1
    pub.close()
    assert not hub.stream("cam").request_keyframe() and asked == ["pli"]
    hub.publish("rtmp-cam", TRACKS, "rtmp")
    assert not hub.stream("rtmp-cam").request_keyframe(), "an ingest that cannot be asked"


class Recorder(Consumer):
    """The smallest consumer: the contract alone."""

    def __init__(self, stream: Stream) -> None:
        super().__init__(stream, "recorder")
        self.items: list[Item] = []

    def offer(self, item: Item) -> None:
        self.items.append(item)


async def test_the_hub_replays_start_and_gop_to_any_consumer_that_attaches() -> None:
    hub = Hub()
    stream = hub.stream("room1")
    idle = stream.attach(Recorder(stream))
    assert idle.items == [], "nothing to replay while nobody publishes"
    pub = hub.publish("room1", TRACKS, "test")
    for i in range(4):
        pub.push(video(i * 40, key=i == 2))
    late = stream.attach(Recorder(stream))
    assert isinstance(late.items[0], StreamStart) and late.items[0].epoch == 1
    assert [p.dts for p in late.items[1:]] == [80, 120]  # type: ignore[union-attr]
    assert (late.queued, late.drops, late.viewers, late.realtime) == (0, 0, 1, False)
    late.close()
    assert stream.subscribers == [idle]
