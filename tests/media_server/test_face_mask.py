"""The privacy mask on its own (media_server/face_mask.py): a real clip with a face, the
video decoded, masked and encoded again, checked by decoding what came out and looking
for faces with OpenCV."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pytest

from media_server import face_mask
from media_server.face_mask import FaceMask, FaceMasker, blur_faces, grow
from media_server.media import Item, Packet, Skipped, StreamStart
from tests.fixtures.face import face_picture, faces_in, make_face_clip
from tests.mediafiles import load_clip


def decoded_grey(config: bytes, video: list[Packet]) -> list[np.ndarray]:
    decoder = av.CodecContext.create("h264", "r")
    decoder.extradata = config
    out = []
    for packet in video:
        source = av.Packet(packet.data)
        source.pts = packet.pts
        out += [f.to_ndarray(format="gray") for f in decoder.decode(source)]  # type: ignore[union-attr]
    return out


def test_faces_are_blurred_and_the_stream_keeps_its_shape(tmp_path: Path) -> None:
    tracks, packets = load_clip(make_face_clip(tmp_path, seconds=4, size=(320, 240), gop=25))
    packets = [replace(p, arrival=1000.0 + k) for k, p in enumerate(packets)]
    source_video = [p for p in packets if p.track == 0]
    with av.open(str(make_face_clip(tmp_path, seconds=4, size=(320, 240), gop=25))) as clip:
        source = [f.to_ndarray(format="gray") for f in clip.decode(video=0)]
    assert all(faces_in(f) for f in source[::5])  # the detector fires on the source

    masker = FaceMasker()
    out: list[Item] = masker.handle(StreamStart(tracks, 7))
    for packet in packets:
        out += masker.handle(packet)

    start = out[0]
    assert isinstance(start, StreamStart) and start.epoch == 7
    video_track = start.tracks[0]
    assert (video_track.codec, video_track.width, video_track.height) == ("h264", 320, 240)
    assert start.tracks[1] == tracks[1]  # audio as it was
    assert not any(isinstance(item, StreamStart) for item in out[1:])
    video = [p for p in out if isinstance(p, Packet) and p.track == 0]
    audio = [p for p in out if isinstance(p, Packet) and p.track == 1]
    first_video = packets.index(source_video[0])  # audio before it waits for no picture
    assert audio == [p for p in packets[first_video:] if p.track == 1]
    assert [p.pts for p in video] == [p.pts for p in source_video]
    assert [p.arrival for p in video] == [p.arrival for p in source_video]
    keyframes = [p.pts for p in source_video if p.keyframe]
    assert [p.pts for p in video if p.keyframe] == keyframes and len(keyframes) == 4
    masked = decoded_grey(video_track.config, video)
    assert len(masked) == len(source)
    assert not any(faces_in(f) for f in masked), [faces_in(f) for f in masked]


def test_a_masker_starting_mid_gop_waits_for_a_keyframe(tmp_path: Path) -> None:
    tracks, packets = load_clip(make_face_clip(tmp_path, seconds=2, size=(320, 240), gop=25))
    masker = FaceMasker()
    assert masker.handle(StreamStart(tracks, 1)) == []
    video = [p for p in packets if p.track == 0]
    for packet in video[5:25]:  # the middle of the first GOP
        assert masker.handle(packet) == []
    out = masker.handle(video[25])
    assert isinstance(out[0], StreamStart) and isinstance(out[1], Packet) and out[1].keyframe


def test_a_blurred_face_is_not_found_again() -> None:
    picture = np.full((240 * 3 // 2, 320), 128, np.uint8)  # yuv420p, grey
    face = face_picture(120)[:, :, 0]
    picture[40 : 40 + face.shape[0], 80 : 80 + face.shape[1]] = face
    luma = picture[:240]
    found = [tuple(int(v) for v in box) for box in faces_in_boxes(luma)]
    assert len(found) == 1
    blur_faces(picture, 320, 240, [grow(found[0], 320, 240)])  # type: ignore[arg-type]
    assert faces_in(picture[:240]) == 0


def faces_in_boxes(grey: np.ndarray) -> list[tuple[int, int, int, int]]:
    from media_server.face_mask import FaceDetector

    return FaceDetector().detect(grey)


async def test_a_mask_that_falls_behind_drops_to_the_next_keyframe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Items offered faster than the worker masks them: what waits is dropped, counted,
    and masking starts again at a keyframe; what comes out is delivered on the loop."""
    monkeypatch.setattr(face_mask, "MAX_BACKLOG", 20)
    tracks, packets = load_clip(make_face_clip(tmp_path, seconds=4, size=(320, 240), gop=25))
    got: list[Item] = []
    mask = FaceMask("test", got.append)
    mask.offer(StreamStart(tracks, 1))
    half = len(packets) // 2
    for packet in packets[:half]:  # all at once: far faster than the worker
        mask.offer(packet)
    await asyncio.sleep(0.5)
    for k in range(half, len(packets), 10):  # then at a pace it keeps
        for packet in packets[k : k + 10]:
            mask.offer(packet)
        await asyncio.sleep(0.05)
    seen = -1
    while seen != len(got):
        seen = len(got)
        await asyncio.sleep(0.5)
    mask.close()
    video = [p for p in got if isinstance(p, Packet) and p.track == 0]
    assert mask.dropped > 0 and 0 < len(video) < sum(p.track == 0 for p in packets)
    skips = [k for k, item in enumerate(got) if isinstance(item, Skipped)]
    assert skips
    for k in skips:
        after = next((p for p in got[k:] if isinstance(p, Packet) and p.track == 0), None)
        assert after is None or after.keyframe
