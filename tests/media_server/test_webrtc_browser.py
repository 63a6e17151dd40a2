"""Headless Chromium against the WebRTC endpoints: it plays a hub stream over WHEP (frames
decoded, picture not blank, audio arriving), and publishes its fake camera over WHIP into
the hub (H.264 track with avcC, keyframes on request), which a second page plays back."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from media_server.codecs.h264 import parse_avcc_record, parse_h264_sps
from media_server.media import Packet
from tests.media_server.test_webrtc_http import (
    PUBLISH_KEY,
    LiveServer,
    webrtc_clips,  # noqa: F401  (fixture)
)

PAGE = """<!doctype html><html><body>
<video id="v" autoplay muted playsinline width="320"></video>
<canvas id="c" width="64" height="36"></canvas>
<script>
async function gathered(pc) {  // non-trickle: the offer carries every candidate
  if (pc.iceGatheringState === 'complete') return;
  await new Promise(done => {
    pc.addEventListener('icegatheringstatechange', () => {
      if (pc.iceGatheringState === 'complete') done(); });
    setTimeout(done, 3000);
  });
}
async function post(url, sdp, headers) {
  const res = await fetch(url, {method: 'POST', body: sdp,
    headers: Object.assign({'Content-Type': 'application/sdp'}, headers || {})});
  return {status: res.status, text: await res.text(), location: res.headers.get('Location')};
}
window.whepPlay = async function(url) {
  const pc = window.pc = new RTCPeerConnection({iceServers: []});
  pc.addTransceiver('video', {direction: 'recvonly'});
  pc.addTransceiver('audio', {direction: 'recvonly'});
  const v = document.getElementById('v');
  pc.ontrack = e => {
    v.srcObject = e.streams[0] || new MediaStream([e.track]);
    if (e.track.kind === 'audio') listen(new MediaStream([e.track]));
  };
  await pc.setLocalDescription(await pc.createOffer());
  await gathered(pc);
  v.requestVideoFrameCallback(() => { window.firstFrame = performance.now(); });
  window.t0 = performance.now();
  const r = await post(url, pc.localDescription.sdp);
  window.tAnswer = performance.now();
  if (r.status === 201) await pc.setRemoteDescription({type: 'answer', sdp: r.text});
  return r;
};
function listen(stream) {  // loudness of the received audio, through WebAudio
  const a = new Audio(); a.srcObject = stream; a.muted = true; a.play();
  const ctx = new AudioContext(), an = ctx.createAnalyser();
  ctx.createMediaStreamSource(stream).connect(an);
  const buf = new Float32Array(2048);
  window.loudness = 0;
  setInterval(() => { an.getFloatTimeDomainData(buf);
    let s = 0; for (const x of buf) s += x * x;
    window.loudness = Math.max(window.loudness, Math.sqrt(s / buf.length)); }, 100);
}
window.whipPublish = async function(url, key) {
  const media = await navigator.mediaDevices.getUserMedia(
    {video: {width: 640, height: 360}, audio: true});
  const pc = window.pc = new RTCPeerConnection({iceServers: []});
  for (const track of media.getTracks()) {
    const t = pc.addTransceiver(track, {direction: 'sendonly'});
    if (track.kind === 'video') {  // prefer H.264: it goes to HLS and recordings as sent
      const caps = RTCRtpSender.getCapabilities('video').codecs;
      t.setCodecPreferences(caps.filter(c => c.mimeType === 'video/H264')
        .concat(caps.filter(c => c.mimeType !== 'video/H264')));
    }
  }
  await pc.setLocalDescription(await pc.createOffer());
  await gathered(pc);
  const r = await post(url, pc.localDescription.sdp, {'Authorization': 'Bearer ' + key});
  if (r.status === 201) await pc.setRemoteDescription({type: 'answer', sdp: r.text});
  return r;
};
window.rtpStats = async function() {
  const out = {}, report = await window.pc.getStats();
  report.forEach(s => {
    if (s.type === 'inbound-rtp' || s.type === 'outbound-rtp') out[s.type + ':' + s.kind] = {
      framesDecoded: s.framesDecoded, framesEncoded: s.framesEncoded,
      framesDropped: s.framesDropped,
      packets: s.packetsReceived || s.packetsSent, samples: s.totalSamplesReceived,
      encoder: s.encoderImplementation, pli: s.pliCount,
      codec: (report.get(s.codecId) || {}).mimeType};
  });
  return out;
};
window.pixels = function() {
  const v = document.getElementById('v'), c = document.getElementById('c');
  const g = c.getContext('2d', {willReadFrequently: true});
  g.drawImage(v, 0, 0, 64, 36);
  const d = g.getImageData(0, 0, 64, 36).data;
  let lo = 765, hi = 0;
  for (let i = 0; i < d.length; i += 4) {
    const y = d[i] + d[i + 1] + d[i + 2]; lo = Math.min(lo, y); hi = Math.max(hi, y); }
  return {lo, hi, width: v.videoWidth, height: v.videoHeight};
};
window.hangUp = async function(location) {
  const res = await fetch(location, {method: 'DELETE'});
  window.pc.close();
  return res.status;
};
</script></body></html>"""


@pytest.fixture(scope="module")
def server(webrtc_clips: dict[str, Path]) -> Iterator[LiveServer]:  # noqa: F811
    live = LiveServer({"court1": webrtc_clips["court1"]}, page=PAGE).start()
    yield live
    live.stop()


def open_page(browser: Any, server: LiveServer) -> Any:
    page = browser.new_page()
    page.goto(f"{server.url}/test/page")
    return page


def assert_playing(page: Any) -> dict[str, Any]:
    """Frames decoded and still being decoded, a real picture, audio arriving."""
    page.wait_for_function("window.firstFrame !== undefined", timeout=10_000)
    first = page.evaluate("rtpStats()")["inbound-rtp:video"]["framesDecoded"]
    time.sleep(1.0)
    stats = page.evaluate("rtpStats()")
    later = stats["inbound-rtp:video"]["framesDecoded"]
    assert later > first > 0, f"frames decoded not increasing: {first} -> {later}"
    picture = page.evaluate("pixels()")
    assert picture["width"] > 0 and picture["height"] > 0
    assert picture["hi"] - picture["lo"] > 60, f"blank picture: {picture}"
    assert stats["inbound-rtp:audio"]["packets"] > 0
    return stats


def test_chromium_plays_a_hub_stream_over_whep(chromium_browser: Any, server: LiveServer) -> None:
    page = open_page(chromium_browser, server)
    answer = page.evaluate("whepPlay('/whep/court1')")
    assert answer["status"] == 201, answer["text"]
    stats = assert_playing(page)
    assert page.evaluate("pixels()")["width"] == 640
    post_to_frame = page.evaluate("window.firstFrame - window.t0")
    post_to_answer = page.evaluate("window.tAnswer - window.t0")
    page.wait_for_function("window.loudness > 0.01", timeout=5_000)  # AAC became Opus
    print(
        f"\nWHEP in Chromium: answer {post_to_answer:.0f} ms, first decoded frame "
        f"{post_to_frame:.0f} ms after the POST; {stats['inbound-rtp:video']['framesDecoded']}"
        f" frames, audio level {page.evaluate('window.loudness'):.2f}"
    )
    assert post_to_frame < 3000
    assert page.evaluate(f"hangUp('{answer['location']}')") == 200
    page.close()


def test_chromium_publishes_over_whip_and_a_second_page_plays_it(
    chromium_browser: Any, server: LiveServer
) -> None:
    publisher = open_page(chromium_browser, server)
    started = time.monotonic()
    answer = publisher.evaluate(f"whipPublish('/whip/cam1', '{PUBLISH_KEY}')")
    assert answer["status"] == 201, answer["text"]
    assert answer["location"].startswith("/whip/cam1/")
    live = _wait(lambda: _hub_view(server, "cam1")["live"], 10)
    into_hub = time.monotonic() - started
    time.sleep(2.5)  # long enough for the periodic keyframe request to be answered
    view = _hub_view(server, "cam1")
    video = view["tracks"][0]
    assert (video.kind, video.codec, view["tracks"][1].codec) == ("video", "h264", "opus")
    sps = parse_h264_sps(parse_avcc_record(video.config)[0][0])
    assert (sps.width, sps.height) == (video.width, video.height) and video.width > 0
    assert view["keyframes"] >= 2, "periodic keyframe requests answered"
    assert view["packets"] > 50
    print(
        f"\nWHIP from Chromium: in the hub {into_hub * 1000:.0f} ms after the POST, "
        f"{video.width}x{video.height}, {view['keyframes']} keyframes in "
        f"{time.monotonic() - started:.1f} s"
    )

    viewer = open_page(chromium_browser, server)
    replay = viewer.evaluate("whepPlay('/whep/cam1')")
    assert replay["status"] == 201, replay["text"]
    assert_playing(viewer)
    first = viewer.evaluate("window.firstFrame - window.t0")
    print(f"WHEP of the WHIP stream: first frame {first:.0f} ms after the POST")

    assert publisher.evaluate(f"hangUp('{answer['location']}')") == 200
    assert live and _wait(lambda: not _hub_view(server, "cam1")["live"], 5)
    viewer.close()
    publisher.close()


def _hub_view(server: LiveServer, stream_id: str) -> dict[str, Any]:
    async def look() -> dict[str, Any]:
        stream = server.hub.find(stream_id)
        if stream is None:
            return {"live": False}
        gop: list[Packet] = stream.gop()
        return {
            "live": stream.live,
            "tracks": stream.tracks,
            "packets": stream.stats.packets,
            "keyframes": stream.stats.keyframes,
            "gop": len(gop),
        }

    return server.call(look())


def _wait(check: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
    return True
