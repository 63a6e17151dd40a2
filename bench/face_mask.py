"""Privacy masking cost per stream: CPU of media_server/face_mask.py's FaceMasker (decode,
face detection, blur, H.264 encode) on a 720p clip with a face, per stream-second, and so
how many such streams one core can mask. Also each stage alone, the x264 presets and the
detection cadence, with the bitrate each gives.

    taskset -c 1 .venv/bin/python -m bench.face_mask [--seconds 20] [--size 1280x720]

CPU is this thread's (time.thread_time; OpenCV runs single-threaded in the masker), so
other load on the machine slows the run but hardly changes the figures.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import av

from media_server import face_mask
from media_server.face_mask import FaceDetector, FaceMasker, yuv_planes
from media_server.media import Packet, StreamStart, Track
from tests.fixtures.face import faces_in, make_face_clip
from tests.mediafiles import load_clip


def run_masker(
    tracks: tuple[Track, ...], packets: list[Packet]
) -> tuple[float, bytes, list[Packet]]:
    """CPU seconds of one masker over the packets, its video config and packets out."""
    masker = FaceMasker()
    out = masker.handle(StreamStart(tracks, 1))
    start = time.thread_time()
    for packet in packets:
        out += masker.handle(packet)
    cpu = time.thread_time() - start
    announced = next(item for item in out if isinstance(item, StreamStart))
    video = [p for p in out if isinstance(p, Packet) and p.track == 0]
    return cpu, announced.tracks[0].config, video


def stages(clip: Path) -> dict[str, float]:
    """CPU ms per frame of decode, detect (one detection), blur and encode, each alone."""
    with av.open(str(clip)) as container:
        start = time.thread_time()
        frames = list(container.decode(video=0))
        decode = time.thread_time() - start
    pictures = [f.to_ndarray(format="yuv420p") for f in frames]
    width, height = frames[0].width, frames[0].height
    detector = FaceDetector()
    start = time.thread_time()
    boxes = [detector.detect(yuv_planes(p, width, height)[0]) for p in pictures[::10]]
    detect = (time.thread_time() - start) / len(boxes)
    start = time.thread_time()
    for picture, found in zip(pictures[::10], boxes, strict=True):
        face_mask.blur_faces(
            picture, width, height, [face_mask.grow(b, width, height) for b in found]
        )
    blur = (time.thread_time() - start) / len(boxes)
    encoder = face_mask._encoder(Track(0, "video", "h264", 1000, b""), width, height)
    start = time.thread_time()
    for i, picture in enumerate(pictures):
        frame = av.VideoFrame.from_ndarray(picture, format="yuv420p")
        frame.pts = i * 40
        encoder.encode(frame)  # type: ignore[attr-defined]
    encode = (time.thread_time() - start) / len(pictures)
    n = len(frames)
    return {
        "decode": decode / n * 1e3,
        "detect": detect * 1e3,
        "blur": blur * 1e3,
        "encode": encode * 1e3,
    }


def detection_costs(clip: Path) -> None:
    """CPU ms of one detection at each detection width and scale factor, and in how many
    of the sampled frames it found the face."""
    with av.open(str(clip)) as container:
        grey = [f.to_ndarray(format="gray") for f in container.decode(video=0)][::10]
    detector = FaceDetector()
    for width in (640, 480, 320):
        for factor in (1.1, 1.2, 1.3):
            face_mask.DETECT_WIDTH, face_mask.SCALE_FACTOR = width, factor
            start = time.thread_time()
            hits = sum(len(detector.detect(g)) > 0 for g in grey)
            ms = (time.thread_time() - start) / len(grey) * 1e3
            print(
                f"  detect at width {width}, scale factor {factor}: {ms:5.1f} ms, "
                f"face found in {hits}/{len(grey)}"
            )
    face_mask.DETECT_WIDTH, face_mask.SCALE_FACTOR = 640, 1.2


def faces_left(config: bytes, video: list[Packet]) -> int:
    decoder = av.CodecContext.create("h264", "r")
    decoder.extradata = config
    found = 0
    for i, packet in enumerate(video):
        source = av.Packet(packet.data)
        source.pts = packet.pts
        for frame in decoder.decode(source):
            if i % 5 == 0:  # every 5th frame looked at
                found += faces_in(frame.to_ndarray(format="gray")) > 0  # type: ignore[union-attr]
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--size", default="1280x720")
    parser.add_argument("--fps", type=int, default=25)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        clip = make_face_clip(Path(tmp), args.seconds, (width, height), args.fps, args.fps * 2)
        tracks, packets = load_clip(clip)
        with av.open(str(clip)) as container:
            source_faces = sum(
                faces_in(f.to_ndarray(format="gray")) > 0
                for f in list(container.decode(video=0))[::25]
            )
        seconds = sum(p.track == 0 for p in packets) / args.fps
        print(
            f"clip {width}x{height} {args.fps} fps, {seconds:.0f} s; source frames with a face:"
            f" {source_faces}/{len(range(0, round(seconds * args.fps), 25))} sampled"
        )
        detection_costs(clip)
        print("stage CPU ms per frame:", {k: round(v, 2) for k, v in stages(clip).items()})
        print(
            f"{'preset':>10} {'detect every':>12} {'CPU ms/s':>9} {'streams/core':>12} "
            f"{'kbit/s':>7} {'faces left':>10}"
        )
        base_options = dict(face_mask.ENCODER_OPTIONS)
        for preset, every in (
            ("superfast", 5),  # the masker's defaults
            ("superfast", 1),
            ("superfast", 10),
            ("veryfast", 5),
            ("ultrafast", 5),
        ):
            face_mask.ENCODER_OPTIONS["preset"] = preset
            face_mask.DETECT_EVERY = every
            cpu, config, video = run_masker(tracks, packets)
            ms = cpu / seconds * 1e3
            kbits = sum(len(p.data) for p in video) * 8 / seconds / 1e3
            left = faces_left(config, video)
            print(
                f"{preset:>10} {every:>12} {ms:>9.0f} {1000 / ms:>12.2f} {kbits:>7.0f} {left:>10}"
            )
        face_mask.ENCODER_OPTIONS.update(base_options)
        face_mask.DETECT_EVERY = 5


if __name__ == "__main__":
    main()
