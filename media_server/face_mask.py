"""Faces blurred in a public rendition (issue 16, item 5): the one place a broadcast is
decoded and encoded again, and only for a session that asks for it (`--mask faces`).

A FaceMask sits between a stream's tap and its delayed rendition. Items go in as the hub
pushes them and come out on the event loop in the same order: video decoded, faces blurred,
encoded again as H.264 at the source size with a keyframe wherever the source had one (so
the segmenter cuts where it would have); audio and markers pass as they are. A packet keeps
its capture wall-clock, so the rendition's delay still counts from capture. The live stream
and the recording never see any of this: they have their own hub consumers.

Detection: OpenCV's Haar frontal-face cascade (it ships in cv2.data, nothing to download),
on the luma plane scaled to DETECT_WIDTH, on every DETECT_EVERY-th frame. Between two
detections the boxes of the last two are blurred, each grown by MARGIN, so a face that moves
a little or is missed once stays covered. A blur shrinks the box to BLUR_CELLS across and
blows it back up (smoothly): nothing recognisable is left, at a cost that does not grow with
the box. The cascade finds frontal faces only, as big as MIN_FACE_PX at DETECT_WIDTH or
more: a profile or a far face is missed; the public page says the mask is best effort.

All of it runs in one worker thread per masked stream (PyAV and OpenCV release the GIL
while they work). A worker that falls MAX_BACKLOG items behind drops what waits and starts
again at the next keyframe (logged and counted): late or missing, never unmasked.
CPU per stream and streams per core: bench/RESULTS.md (bench/face_mask.py).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
from av.video.codeccontext import VideoCodecContext
from av.video.frame import PictureType

from media_server.codecs.bitstream import nals_to_avcc, split_annexb
from media_server.codecs.h264 import avcc_record, nal_type
from media_server.media import Item, Packet, Skipped, StreamEnd, StreamStart, Track, video_track

log = logging.getLogger(__name__)

MASKS = ("faces",)  # what a session may ask for
DETECT_WIDTH = 640  # px: detection runs on the luma scaled to this width
DETECT_EVERY = 5  # frames: detect on one, carry its boxes over the next ones
MIN_FACE_PX = 20  # at DETECT_WIDTH: 40 px faces in 720p
SCALE_FACTOR = 1.2  # between the cascade's scales (1.1 finds no more here, at twice the CPU)
MARGIN = 0.3  # each side of a box grows by this share of its size
BLUR_CELLS = 5  # a blurred box keeps this many cells across
MAX_BACKLOG = 300  # items waiting for the worker (~4 s of 30 fps video with audio)
ENCODER_OPTIONS = {
    "preset": "superfast",  # veryfast: ~1.5x the encode CPU, about the same bitrate here
    "tune": "zerolatency",  # no lookahead, no B-frames: one frame in, one packet out
    "crf": "23",
    "forced-idr": "1",
    "x264-params": "keyint=infinite:scenecut=0",  # keyframes only where the source has one
}
CASCADE = "haarcascade_frontalface_default.xml"

Box = tuple[int, int, int, int]  # x, y, width, height
_STOP = object()


# -- detection and blur (pure, on numpy planes) ---------------------------------------------


class FaceDetector:
    def __init__(self) -> None:
        cv2.setNumThreads(1)  # a stream per worker thread: no pool of OpenCV's own beside it
        self._cascade = cv2.CascadeClassifier(str(Path(cv2.__file__).parent / "data" / CASCADE))
        if self._cascade.empty():
            raise RuntimeError(f"OpenCV's {CASCADE} did not load: is opencv-python installed?")

    def detect(self, luma: np.ndarray) -> list[Box]:
        """Faces in a grey picture, in its own pixels."""
        height, width = luma.shape
        scale = min(1.0, DETECT_WIDTH / width)
        small = luma
        if scale < 1.0:
            size = (round(width * scale), round(height * scale))
            small = cv2.resize(luma, size, interpolation=cv2.INTER_AREA)
        found = self._cascade.detectMultiScale(
            small, scaleFactor=SCALE_FACTOR, minNeighbors=4, minSize=(MIN_FACE_PX, MIN_FACE_PX)
        )
        return [
            (round(x / scale), round(y / scale), round(w / scale), round(h / scale))
            for x, y, w, h in found
        ]


def grow(box: Box, width: int, height: int) -> Box:
    """box grown by MARGIN on each side, inside the picture, on even pixels (chroma)."""
    x, y, w, h = box
    dx, dy = round(w * MARGIN), round(h * MARGIN)
    x0, y0 = max(0, x - dx) & ~1, max(0, y - dy) & ~1
    x1, y1 = min(width, x + w + dx), min(height, y + h + dy)
    return x0, y0, x1 - x0, y1 - y0


def blur_region(plane: np.ndarray, box: Box) -> None:
    """Blur box of one plane in place: shrunk to BLUR_CELLS across, blown back up."""
    x, y, w, h = box
    region = plane[y : y + h, x : x + w]
    if region.size == 0:
        return
    cells = (min(BLUR_CELLS, w), max(1, min(h, round(BLUR_CELLS * h / w))))
    small = cv2.resize(region, cells, interpolation=cv2.INTER_AREA)
    region[:] = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def yuv_planes(picture: np.ndarray, width: int, height: int) -> list[np.ndarray]:
    """Views of the Y, U and V planes of a yuv420p picture as PyAV lays it out."""
    flat = picture.reshape(-1)
    cw, ch = width // 2, height // 2
    luma = flat[: width * height].reshape(height, width)
    u = flat[width * height : width * height + cw * ch].reshape(ch, cw)
    v = flat[width * height + cw * ch : width * height + 2 * cw * ch].reshape(ch, cw)
    return [luma, u, v]


def blur_faces(picture: np.ndarray, width: int, height: int, boxes: list[Box]) -> None:
    """Blur each box (already grown) of a yuv420p picture in place."""
    luma, u, v = yuv_planes(picture, width, height)
    for x, y, w, h in boxes:
        blur_region(luma, (x, y, w, h))
        half = (x // 2, y // 2, max(1, w // 2), max(1, h // 2))
        blur_region(u, half)
        blur_region(v, half)


# -- the work, item by item (blocking: the worker thread runs it) ---------------------------


class FaceMasker:
    """Items in, items out, in order: the stream with its video re-encoded, faces blurred."""

    def __init__(self, detector: FaceDetector | None = None) -> None:
        self.detector = detector or FaceDetector()
        self.frames = 0
        self.detections = 0
        self._start: StreamStart | None = None
        self._video: Track | None = None
        self._decoder: VideoCodecContext | None = None
        self._encoder: VideoCodecContext | None = None
        self._announced = False  # the masked StreamStart went out for this publication
        self._want_keyframe = True
        self._arrivals: dict[int, tuple[float, bool]] = {}  # pts -> (capture, keyframe)
        self._boxes: list[list[Box]] = [[], []]  # the last two detections

    def handle(self, item: Item) -> list[Item]:
        if isinstance(item, StreamStart):
            self._begin(item)
            return [] if self._video is not None else [item]
        if isinstance(item, (StreamEnd, Skipped)):
            if isinstance(item, StreamEnd):
                self._begin(None)
            else:
                self._restart()
            return [item]
        if self._video is None:
            return [item] if self._start is not None else []
        if item.track != self._video.index:
            return [item] if self._announced else []  # audio: as it is
        return self._video_packet(item)

    def _begin(self, start: StreamStart | None) -> None:
        self._start = start
        self._video = video_track(start.tracks) if start is not None else None
        self._encoder = None
        self._announced = False
        self._restart()

    def _restart(self) -> None:
        """Decode again from the next keyframe (a new publication, or packets lost)."""
        self._decoder = None
        self._want_keyframe = True
        self._arrivals.clear()
        self._boxes = [[], []]

    def _video_packet(self, packet: Packet) -> list[Item]:
        assert self._video is not None
        if self._want_keyframe:
            if not packet.keyframe:
                return []
            self._want_keyframe = False
        if self._decoder is None:
            self._decoder = _decoder(self._video)
        source = av.Packet(packet.data)
        source.pts, source.dts = packet.pts, packet.dts
        self._arrivals[packet.pts] = (packet.arrival, packet.keyframe)
        out: list[Item] = []
        try:
            frames = self._decoder.decode(source)
        except av.error.FFmpegError as exc:
            log.warning("face mask: undecodable video (%s), again from the next keyframe", exc)
            self._restart()
            return []
        for frame in frames:
            out += self._mask(frame)
        return out

    def _capture_of(self, pts: int) -> tuple[float, bool]:
        """Capture clock and keyframe flag of the packet a frame came from. Frames come
        out in pts order, so older entries are of frames the decoder dropped. A frame of
        no known packet takes the newest capture clock: held longer, never shorter."""
        found = self._arrivals.pop(pts, None)
        for stale in [k for k in self._arrivals if k < pts]:
            del self._arrivals[stale]
        if found is None:
            return max((a for a, _ in self._arrivals.values()), default=time.time()), False
        return found

    def _mask(self, frame: av.VideoFrame) -> list[Item]:
        assert self._video is not None and frame.pts is not None
        arrival, keyframe = self._capture_of(frame.pts)
        width, height = frame.width & ~1, frame.height & ~1
        picture = frame.to_ndarray(format="yuv420p", width=width, height=height)
        if self.frames % DETECT_EVERY == 0:
            luma = yuv_planes(picture, width, height)[0]
            self._boxes = [self._boxes[1], self.detector.detect(luma)]
            self.detections += 1
        self.frames += 1
        boxes = [grow(b, width, height) for b in self._boxes[0] + self._boxes[1]]
        blur_faces(picture, width, height, boxes)
        masked = av.VideoFrame.from_ndarray(picture, format="yuv420p")
        masked.pts, masked.time_base = frame.pts, Fraction(1, self._video.timescale)
        if keyframe or frame.key_frame:
            masked.pict_type = PictureType.I
        return self._encode(masked, arrival)

    def _encode(self, frame: av.VideoFrame, arrival: float) -> list[Item]:
        assert self._video is not None
        encoder = self._encoder
        if encoder is None or (encoder.width, encoder.height) != (frame.width, frame.height):
            encoder = self._encoder = _encoder(self._video, frame.width, frame.height)
            self._announced = False
            frame.pict_type = PictureType.I
        out: list[Item] = []
        for encoded in encoder.encode(frame):
            nals = split_annexb(bytes(encoded))
            if not self._announced:
                out.append(self._announcement(nals, frame.width, frame.height))
            media = [n for n in nals if nal_type(n) not in (7, 8, 9)]  # SPS, PPS, AUD
            pts = encoded.pts if encoded.pts is not None else frame.pts or 0
            out.append(
                Packet(
                    self._video.index, pts, pts, encoded.is_keyframe, nals_to_avcc(media), arrival
                )
            )
        return out

    def _announcement(self, nals: list[memoryview], width: int, height: int) -> StreamStart:
        """The masked publication: the source's tracks with the video as we encode it."""
        assert self._start is not None and self._video is not None
        sps = [n for n in nals if nal_type(n) == 7]
        pps = [n for n in nals if nal_type(n) == 8]
        video = replace(
            self._video, codec="h264", config=avcc_record(sps, pps), width=width, height=height
        )
        self._announced = True
        tracks = tuple(video if t.index == video.index else t for t in self._start.tracks)
        return StreamStart(tracks, self._start.epoch)


def _decoder(track: Track) -> VideoCodecContext:
    decoder = av.CodecContext.create({"h264": "h264", "h265": "hevc"}[track.codec], "r")
    assert isinstance(decoder, VideoCodecContext)
    decoder.extradata = track.config  # avcC / hvcC: the packets are length-prefixed
    decoder.thread_count = 1  # no frame-threading delay; one core's worth per stream
    return decoder


def _encoder(track: Track, width: int, height: int) -> VideoCodecContext:
    encoder = av.CodecContext.create("libx264", "w")
    assert isinstance(encoder, VideoCodecContext)
    encoder.width, encoder.height, encoder.pix_fmt = width, height, "yuv420p"
    encoder.time_base = Fraction(1, track.timescale)
    encoder.framerate = Fraction(30)  # nominal: the timestamps are the source's own
    encoder.thread_count = 1
    encoder.options = dict(ENCODER_OPTIONS)
    encoder.open()
    return encoder


# -- the worker thread ---------------------------------------------------------------------


class FaceMask:
    """A FaceMasker in its own thread: offer() items on the event loop, on_item gets the
    masked ones there, in order."""

    def __init__(self, name: str, on_item: Callable[[Item], None]) -> None:
        self.name = name
        self.dropped = 0  # packets dropped because the worker fell behind
        self._on_item = on_item
        self._loop = asyncio.get_running_loop()
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._closed = False
        self.masker = FaceMasker()
        self._thread = threading.Thread(target=self._run, name=f"face mask {name}", daemon=True)
        self._thread.start()

    def offer(self, item: Item) -> None:
        if not self._closed:
            self._queue.put(item)

    def close(self) -> None:
        """Stop: what waits is dropped; nothing more is delivered."""
        self._closed = True
        self._queue.put(_STOP)

    def _run(self) -> None:
        while (item := self._queue.get()) is not _STOP:
            if self._closed:
                return
            if self._queue.qsize() > MAX_BACKLOG:
                item = self._shed(item)  # type: ignore[arg-type]
            try:
                out = self.masker.handle(item)  # type: ignore[arg-type]
            except Exception:  # a bug must not end masking (nor let media through)
                log.exception("face mask %s: failed, again from the next keyframe", self.name)
                out = [Skipped(0)]
                self.masker.handle(Skipped(0))
            if out and not self._closed:
                try:
                    self._loop.call_soon_threadsafe(self._deliver, out)
                except RuntimeError:  # the loop is closed: the process is stopping
                    return

    def _shed(self, item: Item) -> Item:
        """Drop the packets waiting (markers still count) and go on from a keyframe."""
        lost = 0
        while True:
            if isinstance(item, Packet):
                lost += 1
            else:
                self.masker.handle(item)
            try:
                got = self._queue.get_nowait()
            except queue.Empty:
                break
            if got is _STOP:
                self._queue.put(_STOP)
                break
            item = got  # type: ignore[assignment]
        self.dropped += lost
        log.warning("face mask %s: %d packets behind, dropped", self.name, lost)
        return Skipped(lost)

    def _deliver(self, items: list[Item]) -> None:
        for item in items:
            if self._closed:
                return
            self._on_item(item)
