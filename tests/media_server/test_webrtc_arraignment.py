"""Remote arraignment rooms: one-time join codes, seat tokens that open only the seat's own
streams, and two Chromium pages (courtroom, detention centre) that see and hear each other
through /arraignment/{room}."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from media_server.webrtc.arraignment import ArraignmentRooms, RoomError, room_stream
from tests.media_server.test_webrtc_http import LiveServer, webrtc_clips  # noqa: F401


def test_join_codes_are_one_time_and_tokens_open_only_their_seat() -> None:
    rooms = ArraignmentRooms()
    codes = rooms.create("r1", "Court 3", "Zhengzhou detention centre")
    assert set(codes) == {"court", "detention"} and codes["court"] != codes["detention"]
    court = rooms.join("r1", codes["court"])
    assert (court.side, court.publish, court.play) == (
        "court", "arraignment-r1-court", "arraignment-r1-detention")
    assert court.other_label == "Zhengzhou detention centre"
    with pytest.raises(RoomError, match="used already") as spent:
        rooms.join("r1", codes["court"])
    assert spent.value.status == 403
    assert rooms.may_publish(court.publish, court.token)
    assert rooms.may_play(court.play, court.token)
    assert not rooms.may_publish(court.play, court.token), "cannot publish as the other side"
    assert not rooms.may_play(court.publish, court.token)
    assert not rooms.may_play(court.play, "forged") and not rooms.may_play(court.play, None)
    assert not rooms.may_play("arraignment-nosuch-court", court.token)
    rooms.leave("r1", court.token)
    assert not rooms.may_publish(court.publish, court.token), "leaving revokes the token"
    again = rooms.join("r1", rooms.reissue("r1", "court"))
    assert rooms.may_publish(again.publish, again.token)
    with pytest.raises(RoomError) as unknown:
        rooms.join("nosuch", "123")
    assert unknown.value.status == 404
    with pytest.raises(RoomError):
        rooms.create("bad id!")


@pytest.fixture(scope="module")
def server(webrtc_clips: dict[str, Path]) -> Iterator[LiveServer]:  # noqa: F811
    live = LiveServer({}).start()
    yield live
    live.stop()


def open_room(browser: Any, server: LiveServer, room: str) -> Any:
    page = browser.new_page()
    page.goto(f"{server.url}/arraignment/{room}")
    page.wait_for_function("window.arraignment && window.arraignment.media", timeout=10_000)
    return page


def join(page: Any, code: str) -> None:
    page.fill("#code", code)
    page.click("#join")


def remote_frames(page: Any) -> int:
    return int(page.evaluate("""async () => {
        let n = 0;
        (await window.arraignment.viewer.getStats()).forEach(s => {
            if (s.type === 'inbound-rtp' && s.kind === 'video') n = s.framesDecoded; });
        return n; }"""))


def test_courtroom_and_detention_centre_see_each_other(chromium_browser: Any,
                                                       server: LiveServer) -> None:
    assert server.service is not None
    rooms = server.service.rooms

    async def create() -> dict[str, str]:
        codes = rooms.create("r7", "Courtroom 3", "Detention centre")
        return {"court": codes["court"], "detention": codes["detention"]}

    codes = server.call(create())
    court = open_room(chromium_browser, server, "r7")
    detention = open_room(chromium_browser, server, "r7")
    started = time.monotonic()
    join(court, codes["court"])
    court.wait_for_function("document.getElementById('status').textContent.includes('Waiting')",
                            timeout=10_000)
    join(detention, codes["detention"])
    for page in (court, detention):
        page.wait_for_function("window.arraignment.playing === true", timeout=15_000)
        page.wait_for_function("document.getElementById('remote').videoWidth > 0", timeout=10_000)
    first = {p: remote_frames(p) for p in (court, detention)}
    time.sleep(1.0)
    for page in (court, detention):
        assert remote_frames(page) > first[page] > 0
    print(f"\narraignment: both sides see each other {time.monotonic() - started:.1f} s after "
          "the first join")

    with httpx.Client(base_url=server.url) as client:
        reuse = client.post("/arraignment/r7/join", json={"code": codes["court"]})
        assert reuse.status_code == 403 and "used already" in reuse.json()["detail"]
        stranger = client.post(f"/whep/{room_stream('r7', 'court')}", content="v=0\n",
                               headers={"Content-Type": "application/sdp"})
        assert stranger.status_code == 403, "a room stream plays only for its seats"

    court.click("#leave")
    court.wait_for_function("document.getElementById('status').textContent.includes('left')",
                            timeout=5_000)
    deadline = time.monotonic() + 5
    while (s := server.hub.find(room_stream("r7", "court"))) is not None and s.live:
        assert time.monotonic() < deadline, "the court's stream did not end on leave"
        time.sleep(0.1)
    detention.click("#leave")
    court.close()
    detention.close()
