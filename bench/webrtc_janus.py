"""Janus (Debian package, streaming plugin) against courtcast's WHEP: same clip, same viewers.

Janus offers no loopback candidates, so each server in turn runs in a network namespace
joined to this one by a veth pair (10.99.77.1 there, 10.99.77.2 here: private test
addresses, removed afterwards); the aiortc viewers of webrtc_viewers.py (they decrypt and
count packets, no decode) run here. Janus is fed the test clip over RTP by ffmpeg (H.264
copied, AAC -> Opus in ffmpeg, outside Janus); courtcast plays the same clip from its hub
(AAC -> Opus inside the server). Both are fixed costs: the per-viewer cost is the slope of
server CPU (from /proc) between the smallest and the largest N, and the ratio of the two
slopes is printed. Needs root (ip netns) and `apt-get install janus`.

    .venv/bin/python bench/webrtc_janus.py [--viewers 1,20] [--seconds 6]
                                           [--janus-event-loops 0] [--python-too]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from webrtc_viewers import counting, measure, report, report_received

NS = "ccbench"
VETH_HOST, VETH_NS = "ccb-host", "ccb-ns"
HOST_IP, NS_IP = "10.99.77.2", "10.99.77.1"
JANUS_LIB = Path("/usr/lib/x86_64-linux-gnu/janus")
JANUS_PORT = 8088
MOUNTPOINT = 1
VIDEO_PORT, AUDIO_PORT = 5004, 5002
VIEWERS = str(ROOT / "bench" / "webrtc_viewers.py")


# -- the network namespace --


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True)


@contextlib.contextmanager
def namespace() -> Iterator[None]:
    teardown()
    sh("ip", "netns", "add", NS)
    try:
        sh("ip", "link", "add", VETH_HOST, "type", "veth", "peer", "name", VETH_NS)
        sh("ip", "link", "set", VETH_NS, "netns", NS)
        sh("ip", "addr", "add", f"{HOST_IP}/30", "dev", VETH_HOST)
        sh("ip", "link", "set", VETH_HOST, "up")
        for cmd in (
            ("addr", "add", f"{NS_IP}/30", "dev", VETH_NS),
            ("link", "set", VETH_NS, "up"),
            ("link", "set", "lo", "up"),
        ):
            sh("ip", "netns", "exec", NS, "ip", *cmd)
        yield
    finally:
        teardown()


def teardown() -> None:
    subprocess.run(["ip", "link", "del", VETH_HOST], check=False, capture_output=True)
    subprocess.run(["ip", "netns", "del", NS], check=False, capture_output=True)


def in_ns(*cmd: str, **kwargs: Any) -> subprocess.Popen[str]:
    """`ip netns exec` execs the command: the pid is the server's own."""
    return subprocess.Popen(["ip", "netns", "exec", NS, *cmd], text=True, **kwargs)


def stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# -- courtcast --


def run_courtcast(
    clip: Path, counts: list[int], seconds: float, compiled: bool = True
) -> list[dict[str, Any]]:
    from webrtc_viewers import wait_up

    port = 8000
    server = in_ns(
        sys.executable,
        VIEWERS,
        "--role",
        "server",
        "--port",
        str(port),
        "--clip",
        str(clip),
        "--shared",
        "1",
        "--host",
        NS_IP,
        "--compiled",
        "1" if compiled else "0",
    )
    try:
        wait_up(port, NS_IP)
        cmd = [
            sys.executable,
            VIEWERS,
            "--role",
            "viewers",
            "--port",
            str(port),
            "--host",
            HOST_IP,
            "--server",
            NS_IP,
        ]
        return rows(port, server.pid, counts, seconds, cmd)
    finally:
        stop(server)


def rows(
    port: int, pid: int, counts: list[int], seconds: float, cmd: list[str]
) -> list[dict[str, Any]]:
    from webrtc_viewers import cpu_seconds

    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(3.0)
    out = [
        {
            "n": 0,
            "cpu": (cpu_seconds(pid) - cpu0) / (time.monotonic() - t0),
            "mbps_min": 0.0,
            "mbps_avg": 0.0,
        }
    ]
    for count in counts:
        out.append(measure(port, pid, count, seconds, cmd))
        time.sleep(1.0)
    return out


# -- Janus --


def janus_config(folder: Path, event_loops: int) -> Path:
    """A config folder with only the HTTP transport and the streaming plugin.
    event_loops 0 is Janus's default: one loop thread per handle."""
    for kind, keep in (
        ("plugins", "libjanus_streaming.so"),
        ("transports", "libjanus_http.so"),
        ("events", ""),
        ("loggers", ""),
    ):
        (folder / kind).mkdir()
        if keep:
            (folder / kind / keep).symlink_to(JANUS_LIB / kind / keep)
    (folder / "janus.jcfg").write_text(f"""general: {{
    configs_folder = "{folder}"
    plugins_folder = "{folder}/plugins"
    transports_folder = "{folder}/transports"
    events_folder = "{folder}/events"
    loggers_folder = "{folder}/loggers"
    debug_level = 2
    session_timeout = 0
    event_loops = {event_loops}
}}
media: {{ rtp_port_range = "20000-40000" }}
nat: {{ ice_enforce_list = "{NS_IP}" }}
""")
    (folder / "janus.transport.http.jcfg").write_text(f"""general: {{
    base_path = "/janus"
    http = true
    port = {JANUS_PORT}
    ip = "{NS_IP}"
}}
admin: {{ admin_http = false }}
""")
    (folder / "janus.plugin.streaming.jcfg").write_text(f"""general: {{ }}
bench: {{
    type = "rtp"
    id = {MOUNTPOINT}
    description = "bench"
    audio = true
    video = true
    audioport = {AUDIO_PORT}
    audiopt = 111
    audiocodec = "opus"
    videoport = {VIDEO_PORT}
    videopt = 96
    videocodec = "h264"
    videofmtp = "profile-level-id=42e01f;packetization-mode=1"
}}
""")
    return folder / "janus.jcfg"


def feed_rtp(clip: Path) -> subprocess.Popen[str]:
    """The clip, looped in real time, as RTP: H.264 copied, AAC -> Opus. (SPS/PPS stay in
    the SDP: h264_mp4toannexb fails on -stream_loop in ffmpeg 5.1; ~30 bytes per GOP.)"""
    return in_ns(
        "ffmpeg",
        "-nostdin",
        "-hide_banner",
        "-loglevel",
        "error",
        "-re",
        "-stream_loop",
        "-1",
        "-i",
        str(clip),
        "-map",
        "0:v",
        "-c:v",
        "copy",
        "-f",
        "rtp",
        "-payload_type",
        "96",
        f"rtp://127.0.0.1:{VIDEO_PORT}?pkt_size=1212",
        "-map",
        "0:a",
        "-c:a",
        "libopus",
        "-b:a",
        "64k",
        "-ar",
        "48000",
        "-ac",
        "2",
        "-f",
        "rtp",
        "-payload_type",
        "111",
        f"rtp://127.0.0.1:{AUDIO_PORT}",
        stdout=subprocess.DEVNULL,
    )  # it prints the SDP


def wait_janus() -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"http://{NS_IP}:{JANUS_PORT}/janus/info").status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError("Janus did not start")


def run_janus(
    clip: Path, counts: list[int], seconds: float, event_loops: int
) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        janus = in_ns(
            "janus",
            "-C",
            str(janus_config(Path(tmp), event_loops)),
            "-N",
            stdout=subprocess.DEVNULL,
        )
        feed = feed_rtp(clip)
        try:
            wait_janus()
            time.sleep(2.0)  # the mountpoint has seen a keyframe
            cmd = [sys.executable, __file__, "--role", "viewers", "--host", HOST_IP]
            return rows(JANUS_PORT, janus.pid, counts, seconds, cmd)
        finally:
            stop(feed)
            stop(janus)


# -- Janus viewers (this process runs them when called with --role viewers) --


def tx() -> str:
    return secrets.token_hex(6)


async def janus_viewer(client: httpx.AsyncClient, host: str, counter: dict[str, int]) -> Any:
    from aiortc import RTCSessionDescription

    from media_server.patches.aiortc_ice_addresses import bind_candidate_addresses
    from media_server.webrtc.ice import IceConfig, new_peer_connection

    session = (await client.post("", json={"janus": "create", "transaction": tx()})).json()
    sid = session["data"]["id"]
    handle = (
        await client.post(
            f"/{sid}",
            json={"janus": "attach", "plugin": "janus.plugin.streaming", "transaction": tx()},
        )
    ).json()
    hid = handle["data"]["id"]
    await client.post(
        f"/{sid}/{hid}",
        json={
            "janus": "message",
            "transaction": tx(),
            "body": {"request": "watch", "id": MOUNTPOINT},
        },
    )
    offer = await next_jsep(client, sid)
    pc = new_peer_connection(IceConfig())
    await pc.setRemoteDescription(RTCSessionDescription(offer["sdp"], "offer"))
    for transceiver in pc.getTransceivers():
        transceiver.receiver._handle_rtp_packet = counting(counter)  # type: ignore[method-assign]
    bind_candidate_addresses(pc, [host])
    await pc.setLocalDescription(await pc.createAnswer())
    await client.post(
        f"/{sid}/{hid}",
        json={
            "janus": "message",
            "transaction": tx(),
            "body": {"request": "start"},
            "jsep": {"type": "answer", "sdp": pc.localDescription.sdp},
        },
    )
    return pc


async def next_jsep(client: httpx.AsyncClient, sid: int) -> dict[str, str]:
    """Long-poll the session's events until the plugin's offer comes."""
    for _ in range(20):
        event = (await client.get(f"/{sid}", params={"maxev": 1})).json()
        if "jsep" in event:
            return dict(event["jsep"])
    raise RuntimeError("Janus sent no offer")


async def _viewers(count: int, seconds: float, host: str) -> None:
    counters = [{"packets": 0, "bytes": 0} for _ in range(count)]
    async with httpx.AsyncClient(
        base_url=f"http://{NS_IP}:{JANUS_PORT}/janus", timeout=40
    ) as client:
        pcs = [await janus_viewer(client, host, c) for c in counters]
    await report_received(pcs, counters, seconds)


# -- the orchestrator --


def bench(counts: list[int], seconds: float, event_loops: int, python_too: bool) -> None:
    from tests.fixtures.clip import make_test_clip

    with tempfile.TemporaryDirectory() as tmp, namespace():
        clip = make_test_clip(
            Path(tmp) / "bench.mp4", seconds=6, width=1280, height=720, gop=60, bitrate="2000k"
        )
        print(
            f"clip: 1280x720 30 fps H.264 2 Mbit/s + audio; servers in netns {NS} "
            f"({NS_IP}), viewers here ({HOST_IP}) over veth; {seconds:.0f} s per measurement"
        )
        ours = report("courtcast WHEP (shared packetization)", run_courtcast(clip, counts, seconds))
        python = None
        if python_too:
            python = report(
                "courtcast WHEP, compiled send path off (frame_send, its Python twin)",
                run_courtcast(clip, counts, seconds, compiled=False),
            )
        janus = report(
            f"Janus 1.1.2 streaming plugin (RTP from ffmpeg), event_loops={event_loops}",
            run_janus(clip, counts, seconds, event_loops),
        )
    if ours and janus:
        print(
            f"\nJanus / courtcast CPU per viewer: {janus / ours:.2f} "
            f"(viewers per core: Janus ~{1 / janus:.0f}, courtcast ~{1 / ours:.0f})"
        )
    if python and janus:
        print(f"Janus / courtcast without frame_send_c: {janus / python:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--role", default="bench", choices=["bench", "viewers"])
    parser.add_argument("--viewers", default="1,20")
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--port", type=int, default=JANUS_PORT)
    parser.add_argument("--host", default=HOST_IP)
    parser.add_argument(
        "--janus-event-loops",
        type=int,
        default=0,
        help="0 (Janus default): a loop thread per handle; N: N shared loops",
    )
    parser.add_argument(
        "--python-too",
        action="store_true",
        help="also measure courtcast with its compiled send path off, in the same run",
    )
    args = parser.parse_args()
    if args.role == "viewers":
        asyncio.run(_viewers(args.count, args.seconds, args.host))
    else:
        counts = [int(n) for n in args.viewers.split(",")]
        bench(counts, args.seconds, args.janus_event_loops, args.python_too)


if __name__ == "__main__":
    main()
