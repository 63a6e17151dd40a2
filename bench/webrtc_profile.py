"""Where a WHEP server's time goes with N viewers: py-spy on the server of webrtc_viewers.py.

Starts the same server and viewers as bench/webrtc_viewers.py (shared packetization),
samples the server with py-spy (`pip install py-spy` into the venv; not a project
dependency) and splits the samples into the costs that matter per viewer. A sample goes
to the first group whose rule matches its innermost C frames (py-spy --native: libc's
sendmsg/sendto, libsrtp) or its innermost Python frame (the source line it was on: a line
calling sendmsg/sendto is the syscall, one calling protect() is SRTP), else to the first
group whose rule matches any frame of its stack.

    .venv/bin/python bench/webrtc_profile.py [--viewers 20] [--seconds 10] [--raw out.txt]
                                             [--python]  (frame_send_c off)
"""

from __future__ import annotations

import argparse
import linecache
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>.*?):(?P<line>\d+)\)$")

Frame = tuple[str, str, str]  # function, file, source line text
Rule = Callable[[Frame], bool]


def line_has(*words: str) -> Rule:
    return lambda f: any(w in f[2] for w in words)


def in_file(*parts: str) -> Rule:
    return lambda f: any(p in f[1] for p in parts)


IDLE = "idle: epoll_wait, worker waiting for work"
# innermost frame rules, in order (py-spy's own idle detection does not work on this VM)
LEAF: tuple[tuple[str, Rule], ...] = (
    (
        IDLE,
        lambda f: (
            ("selectors.py" in f[1] and ".poll(" in f[2])
            or ("thread.py" in f[1] and "work_queue.get(" in f[2])
        ),
    ),
    ("UDP send syscalls (sendmsg with GSO / sendto)", line_has(".sendmsg(", "sendto(")),
    (
        "UDP send syscalls (sendmsg with GSO / sendto)",
        lambda f: f[0].startswith(("sendmsg (libc", "sendto (libc")),  # --native
    ),
    (
        "SRTP protect (pylibsrtp)",
        lambda f: (
            any(s in f[0] + f[1] for s in ("pylibsrtp", "srtp.c", "libcrypto"))
            or "protect(" in f[2]
        ),
    ),
    (
        "task wake-ups, callbacks, futures (asyncio)",
        in_file(
            "asyncio/base_events.py",
            "asyncio/events.py",
            "selectors.py",
            "asyncio/selector_events.py",
            "asyncio/locks.py",
            "asyncio/queues.py",
            "asyncio/tasks.py",
            "asyncio/futures.py",
        ),
    ),
)
# any-frame rules, in order
STACK: tuple[tuple[str, Rule], ...] = (
    ("AAC->Opus transcoder (worker thread)", in_file("webrtc/audio.py")),
    ("compiled send path: RTP headers, history, copies (frame_send_c)", in_file("frame_send_c")),
    (
        "our send path: RTP headers, history, batching (rtp_out, udp_path, the sender patch)",
        in_file("webrtc/rtp_out.py", "webrtc/udp_path.py", "patches/aiortc_fast_sender.py"),
    ),
    ("payloads once per frame (codecs: h264, bitstream)", in_file("media_server/codecs/")),
    ("fan-out + viewer routing (egress, tracks)", in_file("webrtc/egress.py", "webrtc/tracks.py")),
    ("publisher (test clip -> hub)", in_file("fixtures/clip.py", "media_server/hub.py")),
    ("aiortc/aioice: RTCP, ICE consent, DTLS", in_file("aiortc/", "aioice/")),
)


def parse(frame: str) -> Frame:
    m = FRAME.match(frame.strip())
    if m is None:
        return (frame.strip(), "", "")
    # py-spy names files relative to sys.path; linecache searches sys.path (ROOT first)
    path = str(ROOT / m["file"]) if (ROOT / m["file"]).is_file() else m["file"]
    return m["func"], m["file"], linecache.getline(path, int(m["line"]))


def group(stack: list[Frame]) -> str:
    # with py-spy --native, C frames (libc, libsrtp, frame_send_c) follow the Python ones:
    # a syscall or SRTP among them decides; else the innermost Python frame does, as before
    python = [i for i, f in enumerate(stack) if f[1].endswith(".py")]
    native = stack[python[-1] + 1 :] if python else stack
    for name, rule in LEAF[1:]:
        if any(rule(f) for f in native):
            return name
    for name, rule in LEAF:
        if python and rule(stack[python[-1]]):
            return name
    for name, rule in STACK:
        if any(rule(f) for f in stack):
            return name
    return "other (uvicorn, ...)"


def summarize(raw: Path) -> Counter[str]:
    groups: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        frames, _, count = line.rpartition(" ")
        if not frames or not count.isdigit():
            continue
        stack = [parse(f) for f in frames.split(";")]
        groups[group(stack)] += int(count)
    return groups


def profile(viewers: int, seconds: float, raw: Path, compiled: bool = True) -> None:
    from webrtc_viewers import free_port, wait_up

    from tests.fixtures.clip import make_test_clip

    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if spy is None:
        raise SystemExit("py-spy not found: .venv/bin/pip install py-spy")
    with tempfile.TemporaryDirectory() as tmp:
        clip = make_test_clip(
            Path(tmp) / "bench.mp4", seconds=6, width=1280, height=720, gop=60, bitrate="2000k"
        )
        port = free_port()
        script = str(ROOT / "bench" / "webrtc_viewers.py")
        server = subprocess.Popen(
            [
                sys.executable,
                script,
                "--role",
                "server",
                "--port",
                str(port),
                "--clip",
                str(clip),
                "--shared",
                "1",
                "--compiled",
                "1" if compiled else "0",
            ]
        )
        try:
            wait_up(port)
            _record(spy, script, port, server.pid, viewers, seconds, raw)
        finally:
            server.terminate()
            server.wait(15)


def _record(
    spy: str, script: str, port: int, pid: int, viewers: int, seconds: float, raw: Path
) -> None:
    cmd = [
        sys.executable,
        script,
        "--role",
        "viewers",
        "--port",
        str(port),
        "--count",
        str(viewers),
        "--seconds",
        str(seconds + 6),
    ]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdin is not None
        assert proc.stdout.readline().strip() == "ready", "viewers did not connect"
        time.sleep(3.0)
        subprocess.run(
            [
                spy,
                "record",
                "--pid",
                str(pid),
                "--duration",
                str(int(seconds)),
                "--rate",
                "200",
                "--native",
                "--format",
                "raw",
                "--output",
                str(raw),
            ],
            check=True,
            capture_output=True,
        )
        proc.stdout.readline()
        proc.stdin.write("\n")
        proc.stdin.flush()
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def report(groups: Counter[str]) -> None:
    idle = groups.pop(IDLE, 0)
    total = sum(groups.values())
    print(f"{'share':>6}  group ({total} busy samples, all threads; {idle} idle left out)")
    for name, count in groups.most_common():
        print(f"{count * 100 / total:>5.1f}%  {name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--viewers", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--raw", type=Path, default=Path("/tmp/webrtc_profile.txt"))
    parser.add_argument("--summarize", action="store_true", help="only read an existing --raw")
    parser.add_argument(
        "--python", action="store_true", help="the compiled send path off (frame_send_c)"
    )
    args = parser.parse_args()
    if not args.summarize:
        profile(args.viewers, args.seconds, args.raw, compiled=not args.python)
    report(summarize(args.raw))


if __name__ == "__main__":
    main()
