"""The agent's in-push hub readers: Tap (selector, ring) and the publisher's _Uplink."""

from __future__ import annotations

from typing import Any

from device_agents.publisher import _Uplink
from media_server.hub import Hub
from media_server.media import Item, Packet, StreamEnd, StreamStart, Track
from media_server.tap import tap

VIDEO = Track(0, "video", "h264", 90000, b"\x01avcC")


def packet(dts: int, key: bool = False) -> Packet:
    return Packet(0, dts, dts, key, b"frame", 0.0)


class FakeSession:
    def __init__(self) -> None:
        self.ok = True

    def writable(self) -> bool:
        return self.ok


class FakeOut:
    def __init__(self) -> None:
        self.items: list[Item] = []

    def handle(self, item: Item) -> None:
        self.items.append(item)


def test_tap_starts_from_the_cached_gop_and_sees_pushes_in_order() -> None:
    hub = Hub()
    pub = hub.publish("s", (VIDEO,), source="test")
    pub.push(packet(0, key=True))
    pub.push(packet(3600))
    seen: list[Any] = []
    sub = tap(hub.stream("s"), "t", seen.append)
    pub.push(packet(7200))
    sub.close()
    pub.push(packet(10800))
    assert isinstance(seen[0], StreamStart)
    assert [p.dts for p in seen[1:]] == [0, 3600, 7200]
    assert sub not in hub.stream("s").subscribers


def test_tap_survives_a_failing_reader() -> None:
    hub = Hub()
    pub = hub.publish("s", (VIDEO,), source="test")
    seen: list[Any] = []

    def flaky(item: Item) -> None:
        if isinstance(item, Packet) and item.dts == 3600:
            raise ValueError("bug")
        seen.append(item)

    errors: list[int] = []
    tap(hub.stream("s"), "t", flaky, on_error=lambda: errors.append(len(seen)))
    for dts in (0, 3600, 7200):
        pub.push(packet(dts, key=dts == 0))
    assert [p.dts for p in seen if isinstance(p, Packet)] == [0, 7200]
    assert errors == [2]  # told once, right after the failure (StreamStart, 0 seen then)


def test_uplink_writes_directly_then_queues_in_order_once_the_link_is_full() -> None:
    hub = Hub()
    pub = hub.publish("s", (VIDEO,), source="test")
    session, out = FakeSession(), FakeOut()
    sub = _Uplink(hub.stream("s"), "p", session, out)  # type: ignore[arg-type]
    hub.stream("s").subscribers = [sub]  # no start marker: the test drives it by hand
    sub.direct = True
    pub.push(packet(0, key=True))
    assert [p.dts for p in out.items] == [0] and sub.get_nowait() is None  # type: ignore[union-attr]
    session.ok = False
    pub.push(packet(3600))
    session.ok = True  # still queued: what follows must not overtake the queue
    pub.push(packet(7200))
    pub.close("gone")
    queued = [sub.get_nowait() for _ in range(3)]
    assert not sub.direct and len(out.items) == 1
    assert [q.dts for q in queued[:2]] == [3600, 7200]  # type: ignore[union-attr]
    assert isinstance(queued[2], StreamEnd)
