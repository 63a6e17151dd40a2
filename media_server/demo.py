"""Demo courtrooms: simulated rooms of a small court tree publishing a live test picture,
so a first run (`courtcast up --demo`) shows moving video within a second or two.

Each room encodes one loop (60 s by default) once, with PyAV's libx264 and AAC, in a
worker thread, publishing while it encodes (a couple of seconds ahead, no faster, so four
rooms starting together do not saturate the machine); afterwards it only replays the
packets with timestamps shifted by the loop length. So CPU is spent during the first loop
only, and the replay costs next to nothing.

The picture: the room's title, a big ":SS" showing the wall clock's seconds, a bar
filling across each minute and a block crossing the frame each second; the audio ticks
each second. Text is drawn with a built-in 5x7 block font in numpy (PyAV's FFmpeg has no
drawtext filter, and no font renderer is a dependency), so titles are shown in upper-case
ASCII. The loop starts on a whole wall-clock second and is paced by the clock, so with a
loop of a whole number of minutes the seconds shown stay right for ever; hours and
minutes are not burned in, since a pre-encoded loop cannot know them (players overlay
wall-clock time from program date-time anyway, DESIGN.md section 6).
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
import numpy as np

from core.courts import Court
from media_server.codecs.video import AccessUnitNormalizer
from media_server.hub import Hub, Publication
from media_server.media import Packet, Track

log = logging.getLogger(__name__)

VIDEO_TIMESCALE = 90000
AUDIO_RATE = 48000
AAC_FRAME = 1024
START_TIMEOUT_S = 30.0
ENCODE_LEAD_S = 2.0  # the first loop is encoded this far ahead of playback, not faster


# -- the court tree the control room registers --


@dataclass(frozen=True, slots=True)
class DemoRoom:
    """One simulated courtroom and where it sits in the demo court tree (courts are
    linked by court_id / parent)."""

    stream_id: str
    room: str  # the room's name
    court: str  # its court's name
    court_id: str
    level: str  # "high" | "intermediate" | "basic"
    parent: str | None  # court_id of the court above, None at the top

    @property
    def title(self) -> str:
        """What the picture shows and listings call it."""
        return f"{self.court.removeprefix('Demo ')} - {self.room}"


_HIGH = ("Demo Province High People's Court", "demo-high", "high", None)
_CITY = ("Demo City Intermediate People's Court", "demo-city", "intermediate", "demo-high")
_EAST = ("Demo East District People's Court", "demo-east", "basic", "demo-city")


def demo_court_tree() -> list[DemoRoom]:
    """Three court levels, four rooms: enough for a wall, a portal and a tour. Room names
    differ across courts: a trial session finds its room's cameras by the room's name."""
    return [
        DemoRoom("demo-high-1", "Courtroom 1", *_HIGH),
        DemoRoom("demo-city-3", "Courtroom 3", *_CITY),
        DemoRoom("demo-east-1", "Courtroom 5", *_EAST),
        DemoRoom("demo-east-2", "Courtroom 6", *_EAST),
    ]


# the courts' own (Chinese) names; the English ones are what DemoRoom.court says
_COURT_NAMES_ZH = {
    "demo-high": "演示省高级人民法院",
    "demo-city": "演示市中级人民法院",
    "demo-east": "演示市东区人民法院",
}


def demo_courts() -> list[Court]:
    """The demo tree's courts, each after its parent, named in Chinese and English."""
    courts: dict[str, Court] = {}
    for room in demo_court_tree():
        courts.setdefault(
            room.court_id,
            Court(
                id=room.court_id,
                name=_COURT_NAMES_ZH[room.court_id],
                name_en=room.court,
                level=room.level,
                parent=room.parent or "",
            ),
        )
    return list(courts.values())


# -- a 5x7 block font: rows as 5-bit numbers, most significant bit on the left --

_FONT: dict[str, tuple[int, ...]] = {
    "0": (14, 17, 19, 21, 25, 17, 14),
    "1": (4, 12, 4, 4, 4, 4, 14),
    "2": (14, 17, 1, 2, 4, 8, 31),
    "3": (31, 2, 4, 2, 1, 17, 14),
    "4": (2, 6, 10, 18, 31, 2, 2),
    "5": (31, 16, 30, 1, 1, 17, 14),
    "6": (6, 8, 16, 30, 17, 17, 14),
    "7": (31, 1, 2, 4, 8, 8, 8),
    "8": (14, 17, 17, 14, 17, 17, 14),
    "9": (14, 17, 17, 15, 1, 2, 12),
    "A": (14, 17, 17, 17, 31, 17, 17),
    "B": (30, 17, 17, 30, 17, 17, 30),
    "C": (14, 17, 16, 16, 16, 17, 14),
    "D": (28, 18, 17, 17, 17, 18, 28),
    "E": (31, 16, 16, 30, 16, 16, 31),
    "F": (31, 16, 16, 30, 16, 16, 16),
    "G": (14, 17, 16, 23, 17, 17, 15),
    "H": (17, 17, 17, 31, 17, 17, 17),
    "I": (14, 4, 4, 4, 4, 4, 14),
    "J": (7, 2, 2, 2, 2, 18, 12),
    "K": (17, 18, 20, 24, 20, 18, 17),
    "L": (16, 16, 16, 16, 16, 16, 31),
    "M": (17, 27, 21, 21, 17, 17, 17),
    "N": (17, 17, 25, 21, 19, 17, 17),
    "O": (14, 17, 17, 17, 17, 17, 14),
    "P": (30, 17, 17, 30, 16, 16, 16),
    "Q": (14, 17, 17, 17, 21, 18, 13),
    "R": (30, 17, 17, 30, 20, 18, 17),
    "S": (15, 16, 16, 14, 1, 1, 30),
    "T": (31, 4, 4, 4, 4, 4, 4),
    "U": (17, 17, 17, 17, 17, 17, 14),
    "V": (17, 17, 17, 17, 17, 10, 4),
    "W": (17, 17, 17, 21, 21, 21, 10),
    "X": (17, 17, 10, 4, 10, 17, 17),
    "Y": (17, 17, 17, 10, 4, 4, 4),
    "Z": (31, 1, 2, 4, 8, 16, 31),
    " ": (0, 0, 0, 0, 0, 0, 0),
    "-": (0, 0, 0, 31, 0, 0, 0),
    ":": (0, 12, 12, 0, 12, 12, 0),
    ".": (0, 0, 0, 0, 0, 12, 12),
    ",": (0, 0, 0, 0, 12, 4, 8),
    "'": (12, 4, 8, 0, 0, 0, 0),
    "(": (2, 4, 8, 8, 8, 4, 2),
    ")": (8, 4, 2, 2, 2, 4, 8),
    "/": (0, 1, 2, 4, 8, 16, 0),
    "#": (10, 10, 31, 10, 31, 10, 10),
    "&": (12, 18, 20, 8, 21, 18, 13),
    "?": (14, 17, 1, 2, 4, 0, 4),
}


def text_mask(text: str, scale: int) -> np.ndarray:
    """A boolean bitmap of text (upper-cased; unknown characters as '?')."""
    glyphs = [_FONT.get(ch, _FONT["?"]) for ch in text.upper()] or [_FONT[" "]]
    mask = np.zeros((7, 6 * len(glyphs)), dtype=bool)
    for i, rows in enumerate(glyphs):
        for y, bits in enumerate(rows):
            for x in range(5):
                mask[y, i * 6 + x] = bool(bits >> (4 - x) & 1)
    return np.kron(mask, np.ones((scale, scale), dtype=bool)).astype(bool)


class DemoPicture:
    """Draws the frames of one room: planar YUV 4:2:0 as one (h*3/2, w) uint8 array."""

    def __init__(self, title: str, width: int, height: int) -> None:
        if width % 2 or height % 4 or width < 64 or height < 64:
            raise ValueError(
                f"demo picture {width}x{height}: needs an even width and a "
                "height divisible by 4, at least 64x64"
            )
        self.width, self.height = width, height
        self.base = self._background(title)
        self.digit_scale = max(2, height // 40)
        self._seconds = [text_mask(f":{s:02d}", self.digit_scale) for s in range(60)]

    def _background(self, title: str) -> np.ndarray:
        w, h = self.width, self.height
        image = np.empty((h * 3 // 2, w), np.uint8)
        image[:h] = np.linspace(40, 110, h, dtype=np.uint8)[:, None]
        image[h : h + h // 4], image[h + h // 4 :] = 150, 112  # U then V: a calm blue
        for top, bottom in ((0, h // 6), (h * 5 // 6, h)):  # neutral grey bands
            image[top:bottom] = 24
            image[h + top // 4 : h + bottom // 4] = 128
            image[h + h // 4 + top // 4 : h + h // 4 + bottom // 4] = 128
        title_scale = max(1, min(h // 100, (w - 32) // (6 * max(1, len(title)))))
        self._blit(image, text_mask(title, title_scale), (h // 6 - 7 * title_scale) // 2, 16)
        footer = text_mask("COURTCAST DEMO - LIVE TEST PICTURE", max(1, h // 240))
        self._blit(image, footer, h * 5 // 6 + h // 60, 16)
        return image

    @staticmethod
    def _blit(image: np.ndarray, mask: np.ndarray, top: int, left: int, luma: int = 235) -> None:
        rows = min(mask.shape[0], image.shape[0] - top)
        cols = min(mask.shape[1], image.shape[1] - left)
        region = image[top : top + rows, left : left + cols]
        region[mask[:rows, :cols]] = luma

    def frame(self, wall_s: float) -> np.ndarray:
        """The picture for wall-clock time wall_s (seconds; only its minute phase shows)."""
        w, h = self.width, self.height
        image = self.base.copy()
        second = int(wall_s) % 60
        fraction = wall_s - math.floor(wall_s)
        digits = self._seconds[second]
        self._blit(image, digits, (h - digits.shape[0]) // 2, (w - digits.shape[1]) // 2)
        bar_top = h - h // 30
        image[bar_top:h, : int(w * (second + fraction) / 60)] = 200
        block = h // 12
        x = int(fraction * (w - block))
        image[h // 6 + block : h // 6 + 2 * block, x : x + block] = 220
        return image


def tick_sound(seconds: float) -> np.ndarray:
    """Mono float samples: a short beep at every whole second, a higher one each minute
    start in loop time (the loop starts on a whole second)."""
    samples = np.zeros(round(seconds * AUDIO_RATE), np.float32)
    beep = int(0.05 * AUDIO_RATE)
    t = np.arange(beep) / AUDIO_RATE
    for second in range(math.ceil(seconds)):
        start = second * AUDIO_RATE
        pitch = 1760.0 if second % 60 == 0 else 880.0
        chunk = samples[start : start + beep]
        chunk += (0.25 * np.sin(2 * np.pi * pitch * t[: len(chunk)])).astype(np.float32)
    return samples


class _Loop:
    """The encoded loop, growing while the worker encodes it: (dts, keyframe, data)."""

    def __init__(self) -> None:
        self.video: list[tuple[int, bool, bytes]] = []
        self.audio: list[bytes] = []
        self.video_track: Track | None = None
        self.audio_config = b""
        self.complete = False
        self.error: BaseException | None = None


class DemoCourtroom:
    """A simulated courtroom camera publishing into hub stream `stream_id`."""

    def __init__(
        self,
        hub: Hub,
        stream_id: str,
        title: str,
        width: int = 1280,
        height: int = 720,
        fps: int = 25,
        gop_s: float = 2.0,
        *,
        loop_s: float = 60.0,
    ) -> None:
        if round(loop_s * fps) != loop_s * fps or loop_s <= 0:
            raise ValueError(f"loop_s={loop_s} must hold a whole number of frames at {fps} fps")
        self.hub, self.stream_id, self.title = hub, stream_id, title
        self.width, self.height, self.fps, self.gop_s = width, height, fps, gop_s
        self.loop_s = loop_s
        self.frames = round(loop_s * fps)
        self.audio_packets = math.ceil(loop_s * AUDIO_RATE / AAC_FRAME)
        self._loop = _Loop()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._task: asyncio.Task[None] | None = None
        self._publication: Publication | None = None
        self.started_at = 0.0  # wall clock of loop time 0: a whole second

    def __repr__(self) -> str:
        return f"<DemoCourtroom {self.stream_id} {self.width}x{self.height}@{self.fps}>"

    @property
    def encoded(self) -> bool:
        """True once the whole loop is encoded: from then on no more encoding."""
        return self._loop.complete

    async def start(self) -> None:
        self.started_at = float(math.floor(time.time()))
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._thread = threading.Thread(
            target=self._encode, args=(ready,), daemon=True, name=f"demo-{self.stream_id}"
        )
        self._thread.start()
        await asyncio.wait_for(ready, START_TIMEOUT_S)
        tracks = (
            self._video_track(),
            Track(
                1,
                "audio",
                "aac",
                AUDIO_RATE,
                self._loop.audio_config,
                sample_rate=AUDIO_RATE,
                channels=1,
            ),
        )
        self._publication = self.hub.publish(
            self.stream_id, tracks, source="demo", on_evict=self._evicted
        )
        self._task = asyncio.create_task(self._play(), name=f"demo-{self.stream_id}")
        log.info(
            "demo courtroom %s (%s) live, %dx%d@%d",
            self.stream_id,
            self.title,
            self.width,
            self.height,
            self.fps,
        )

    def _video_track(self) -> Track:
        assert self._loop.video_track is not None
        return self._loop.video_track

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if self._publication is not None:
            self._publication.close("demo stopped")
            self._publication = None
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 5.0)

    def _evicted(self, reason: str) -> None:
        log.info("demo courtroom %s: %s", self.stream_id, reason)
        self._publication = None
        if self._task is not None:
            self._task.cancel()

    # -- the replay: one wake-up per video frame --
    async def _play(self) -> None:
        clock0 = time.monotonic() - (time.time() - self.started_at)
        loop_ticks = round(self.loop_s * VIDEO_TIMESCALE)
        loop_samples = round(self.loop_s * AUDIO_RATE)
        rounds, frame, sent_audio = 0, 0, 0
        while self._publication is not None:
            due = rounds * self.loop_s + frame / self.fps
            await asyncio.sleep(max(0.0, clock0 + due - time.monotonic()))
            while frame >= len(self._loop.video):  # the first loop: wait for the encoder
                if self._loop.error is not None:
                    raise self._loop.error
                await asyncio.sleep(0.005)
            sent_audio = self._push_audio(rounds, due, sent_audio, loop_samples)
            dts, keyframe, data = self._loop.video[frame]
            self._push(
                Packet(0, dts + rounds * loop_ticks, dts + rounds * loop_ticks, keyframe, data)
            )
            frame += 1
            if frame == self.frames:  # the loop's last audio, then round again
                self._push_audio(rounds, self.loop_s, sent_audio, loop_samples)
                rounds, frame, sent_audio = rounds + 1, 0, 0

    def _push_audio(self, rounds: int, until_s: float, sent: int, loop_samples: int) -> int:
        """Audio of this loop up to the video frame's time; the last packet of a loop
        overlaps the next loop's start by a few ms rather than let the two drift."""
        wanted = min(
            self.audio_packets,
            math.floor((until_s - rounds * self.loop_s) * AUDIO_RATE / AAC_FRAME) + 1,
        )
        wanted = min(wanted, len(self._loop.audio))
        for i in range(sent, wanted):
            pts = rounds * loop_samples + i * AAC_FRAME
            self._push(Packet(1, pts, pts, True, self._loop.audio[i]))
        return max(sent, wanted)

    def _push(self, packet: Packet) -> None:
        if self._publication is not None:
            self._publication.push(packet)

    # -- the worker: encode the loop once --
    def _encode(self, ready: asyncio.Future[None]) -> None:
        loop = ready.get_loop()
        try:
            self._encode_loop(lambda: loop.call_soon_threadsafe(_resolve, ready))
        except (av.error.FFmpegError, ValueError, MemoryError) as exc:
            self._loop.error = exc
            log.error("demo courtroom %s: encoding failed: %s", self.stream_id, exc)
            loop.call_soon_threadsafe(_fail, ready, exc)

    def _encode_loop(self, on_first: Callable[[], object]) -> None:
        picture = DemoPicture(self.title, self.width, self.height)
        video, audio = self._video_encoder(), self._audio_encoder()
        self._loop.audio_config = bytes(audio.extradata or b"")
        normalizer = AccessUnitNormalizer("h264")
        sound = tick_sound(self.audio_packets * AAC_FRAME / AUDIO_RATE)
        audio_frames, signalled = 0, False
        for index in range(self.frames):
            at = self.started_at + index / self.fps
            # paced: a room costs a little CPU for one loop instead of a core for seconds
            if self._stopping.wait(max(0.0, at - ENCODE_LEAD_S - time.time())):
                return
            image = picture.frame(at)
            frame = av.VideoFrame.from_ndarray(image, format="yuv420p")
            frame.pts = index
            for packet in video.encode(frame):
                self._add_video(packet, normalizer)
            upto = min(
                self.audio_packets, math.ceil((index + 1) / self.fps * AUDIO_RATE / AAC_FRAME) + 1
            )
            audio_frames = self._add_audio(audio, sound, audio_frames, upto)
            if not signalled and self._loop.video_track is not None:
                signalled = True
                on_first()  # publish as soon as the first frame is there
        for packet in video.encode(None):
            self._add_video(packet, normalizer)
        self._add_audio(audio, sound, audio_frames, self.audio_packets, flush=True)
        self._loop.complete = True
        log.info(
            "demo courtroom %s: %.0f s loop encoded (%d kB)",
            self.stream_id,
            self.loop_s,
            sum(len(v[2]) for v in self._loop.video) // 1024,
        )

    def _video_encoder(self) -> av.video.codeccontext.VideoCodecContext:
        ctx = av.CodecContext.create("libx264", "w")
        ctx.width, ctx.height, ctx.pix_fmt = self.width, self.height, "yuv420p"
        ctx.time_base, ctx.framerate = Fraction(1, self.fps), Fraction(self.fps)
        gop = max(1, round(self.gop_s * self.fps))
        ctx.gop_size = gop
        ctx.options = {  # low bitrate, one thread, no B-frames, SPS/PPS at every IDR
            "preset": "ultrafast",
            "tune": "zerolatency",
            "crf": "30",
            "threads": "1",
            "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes=0:repeat-headers=1",
        }
        ctx.open()
        return ctx

    @staticmethod
    def _audio_encoder() -> av.audio.codeccontext.AudioCodecContext:
        ctx = av.CodecContext.create("aac", "w")
        ctx.sample_rate, ctx.layout, ctx.format = AUDIO_RATE, "mono", "fltp"
        ctx.bit_rate = 48000
        ctx.time_base = Fraction(1, AUDIO_RATE)
        ctx.open()
        return ctx

    def _add_video(self, packet: av.Packet[Any], normalizer: AccessUnitNormalizer) -> None:
        data, keyframe, changed = normalizer.convert(bytes(packet))
        if changed and self._loop.video_track is None:
            info = normalizer.params.sps_info()
            self._loop.video_track = Track(
                0,
                "video",
                "h264",
                VIDEO_TIMESCALE,
                normalizer.params.record(),
                width=info.width,
                height=info.height,
            )
        dts = round(len(self._loop.video) * VIDEO_TIMESCALE / self.fps)
        self._loop.video.append((dts, keyframe, data))

    def _add_audio(
        self,
        ctx: av.audio.codeccontext.AudioCodecContext,
        sound: np.ndarray,
        done: int,
        upto: int,
        flush: bool = False,
    ) -> int:
        """Encode AAC frames done..upto; packets are renumbered 0, 1, ... in loop time
        (the encoder's priming frame becomes the first; a tick 21 ms late is fine)."""
        for i in range(done, upto):
            chunk = sound[i * AAC_FRAME : (i + 1) * AAC_FRAME].reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
            frame.sample_rate, frame.pts = AUDIO_RATE, i * AAC_FRAME
            frame.time_base = Fraction(1, AUDIO_RATE)
            self._take_audio(ctx.encode(frame))
        if flush:
            self._take_audio(ctx.encode(None))
        return max(done, upto)

    def _take_audio(self, packets: list[av.Packet[Any]]) -> None:
        for packet in packets:
            if len(self._loop.audio) < self.audio_packets:
                self._loop.audio.append(bytes(packet))


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _fail(future: asyncio.Future[None], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
