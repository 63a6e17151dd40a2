"""The media playlist, tag by tag, for scripted streams."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from media_server.hls import playlist
from media_server.hls.segmenter import Segmenter
from media_server.media import Item, StreamEnd, StreamStart, Track
from tests.media_server.test_hls_segmenter import AUDIO, T0, VIDEO, av_stream
from tests.mediafiles import load_clip, make_clip


def segmenter_with(*items: Item, window: int = 6) -> Segmenter:
    seg = Segmenter(window_segments=window)
    for item in items:
        seg.feed(item)
    return seg


def test_live_playlist_exact() -> None:
    seg = segmenter_with(StreamStart((VIDEO, AUDIO), 1), *av_stream(4.6))
    assert playlist.render(seg, "?token=t1") == "\n".join(
        [
            "#EXTM3U",
            "#EXT-X-VERSION:6",
            "#EXT-X-TARGETDURATION:2",
            "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.500",
            "#EXT-X-PART-INF:PART-TARGET=0.500",
            "#EXT-X-MEDIA-SEQUENCE:0",
            "#EXT-X-DISCONTINUITY-SEQUENCE:0",
            '#EXT-X-MAP:URI="init-0.mp4?token=t1"',
            "#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:20.000Z",
            '#EXT-X-PART:DURATION=0.50000,URI="part-0.0.m4s?token=t1",INDEPENDENT=YES',
            '#EXT-X-PART:DURATION=0.50000,URI="part-0.1.m4s?token=t1"',
            '#EXT-X-PART:DURATION=0.50000,URI="part-0.2.m4s?token=t1"',
            '#EXT-X-PART:DURATION=0.50000,URI="part-0.3.m4s?token=t1"',
            "#EXTINF:2.00000,",
            "seg-0.m4s?token=t1",
            "#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:22.000Z",
            '#EXT-X-PART:DURATION=0.50000,URI="part-1.0.m4s?token=t1",INDEPENDENT=YES',
            '#EXT-X-PART:DURATION=0.50000,URI="part-1.1.m4s?token=t1"',
            '#EXT-X-PART:DURATION=0.50000,URI="part-1.2.m4s?token=t1"',
            '#EXT-X-PART:DURATION=0.50000,URI="part-1.3.m4s?token=t1"',
            "#EXTINF:2.00000,",
            "seg-1.m4s?token=t1",
            "#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:24.000Z",
            '#EXT-X-PART:DURATION=0.50000,URI="part-2.0.m4s?token=t1",INDEPENDENT=YES',
            '#EXT-X-PRELOAD-HINT:TYPE=PART,URI="part-2.1.m4s?token=t1"',
            "",
        ]
    )


def test_old_parts_leave_the_playlist_and_segments_slide() -> None:
    seg = segmenter_with(StreamStart((VIDEO, AUDIO), 1), *av_stream(16.6), window=4)
    text = playlist.render(seg)
    assert "#EXT-X-MEDIA-SEQUENCE:4" in text
    assert text.count("#EXTINF:") == 4
    # parts only within three target durations (6 s) of the end: segments 6, 7 and 8
    assert 'URI="part-5.3.m4s"' not in text and 'URI="part-6.0.m4s"' in text


def test_discontinuity_new_map_and_sequence() -> None:
    restarted = (Track(0, "video", "h264", 90000, b"\x01\x4d", 640, 480), AUDIO)
    seg = segmenter_with(
        StreamStart((VIDEO, AUDIO), 1),
        *av_stream(4.2),
        StreamEnd("publisher left"),
        StreamStart(restarted, 2),
        *av_stream(4.2),
        window=3,
    )
    lines = playlist.render(seg).splitlines()
    # window: segment 1, segment 2 (the short end of publication 1), segment 3 (new epoch)
    assert "#EXT-X-DISCONTINUITY-SEQUENCE:0" in lines
    disc = lines.index("#EXT-X-DISCONTINUITY")
    assert lines[disc + 1] == '#EXT-X-MAP:URI="init-3.mp4"'
    assert lines[disc + 2].startswith("#EXT-X-PROGRAM-DATE-TIME:")
    assert lines.count("#EXT-X-DISCONTINUITY") == 1
    # two more segments later the discontinuity has slid out of the window
    for item in av_stream(4.2, start_s=4.2, first_frame=126):
        seg.feed(item)
    text = playlist.render(seg)
    assert "#EXT-X-DISCONTINUITY-SEQUENCE:1" in text and "#EXT-X-DISCONTINUITY\n" not in text


def test_the_hint_goes_on_across_a_cut_to_a_new_run() -> None:
    """A cut to the slate (or a resume) ends the run; the next one starts behind a
    discontinuity with a new init. The playlist never ends on a complete segment while
    the output goes on: hls.js (1.7.4) takes the last segment for the part being built
    when nothing follows it, and refuses the next playlist ("discontinuity sequence
    mismatch"), which restarted the player at every cut and resume. So the next part is
    hinted all along, and the new init too once it is known (RFC 8216bis, 4.4.5.3)."""
    slate = (Track(0, "video", "h264", 90000, b"\x01\x4d", 640, 360), AUDIO)
    seg = segmenter_with(StreamStart((VIDEO, AUDIO), 1), *av_stream(4.2))
    seg.end_run()  # the cut: the part being built is closed, the slate is not there yet
    lines = playlist.render(seg).splitlines()
    assert lines[-1] == '#EXT-X-PRELOAD-HINT:TYPE=PART,URI="part-3.0.m4s"', lines[-4:]
    assert seg.is_future_part(3, 0)
    seg.feed(StreamStart(slate, 2))  # the slate's init is known, its first part is not
    lines = playlist.render(seg, "?t=1").splitlines()
    assert lines[-2:] == [
        '#EXT-X-PRELOAD-HINT:TYPE=PART,URI="part-3.0.m4s?t=1"',
        '#EXT-X-PRELOAD-HINT:TYPE=MAP,URI="init-3.mp4?t=1"',
    ], lines[-4:]
    for item in av_stream(0.6):
        seg.feed(item)  # its first part: the segment is listed with its discontinuity
    lines = playlist.render(seg).splitlines()
    disc = lines.index("#EXT-X-DISCONTINUITY")
    assert lines[disc + 1] == '#EXT-X-MAP:URI="init-3.mp4"'
    assert lines[-1] == '#EXT-X-PRELOAD-HINT:TYPE=PART,URI="part-3.1.m4s"', lines[-4:]


def test_target_duration_follows_long_gops_and_stream_end_drops_the_hint() -> None:
    seg = segmenter_with(StreamStart((VIDEO, AUDIO), 1), *av_stream(8, gop=105))
    text = playlist.render(seg)
    assert "#EXT-X-TARGETDURATION:4" in text  # 3.5 s segments round to 4
    assert "#EXT-X-PRELOAD-HINT" in text
    seg.feed(StreamEnd("publisher left"))
    text = playlist.render(seg)
    assert "#EXT-X-PRELOAD-HINT" not in text and "#EXT-X-ENDLIST" not in text


def test_no_playlist_before_the_first_part() -> None:
    with pytest.raises(LookupError):
        playlist.render(segmenter_with(StreamStart((VIDEO, AUDIO), 1)))


def test_program_date_time_format() -> None:
    assert playlist.program_date_time(T0 + 0.0456) == "2023-11-14T22:13:20.046Z"
    assert playlist.program_date_time(T0 + 0.9996) == "2023-11-14T22:13:21.000Z"


def test_a_plain_client_plays_across_a_publisher_restart(tmp_path: Path) -> None:
    """ffprobe (FFmpeg's HLS demuxer, no LL-HLS) reads the playlist across a restart with a
    new resolution: every frame of both publications decodes, timestamps keep rising."""
    seg = Segmenter(window_segments=10)
    for epoch, size in enumerate(((320, 240), (640, 360)), start=1):
        tracks, packets = load_clip(make_clip(tmp_path, seconds=3, fps=25, gop=25, size=size))
        items: list[Item] = [StreamStart(tracks, epoch), *packets, StreamEnd("publisher left")]
        for item in items:
            seg.feed(item)
    (tmp_path / "index.m3u8").write_text(playlist.render(seg) + "#EXT-X-ENDLIST\n")
    for init_id, data in seg.inits.items():
        (tmp_path / f"init-{init_id}.mp4").write_bytes(data)
    for s in seg.segments:
        (tmp_path / f"seg-{s.msn}.m4s").write_bytes(s.data())
    out = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-show_entries",
            "frame=media_type,pts_time,width,height",
            "-of",
            "json",
            str(tmp_path / "index.m3u8"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    video = [f for f in json.loads(out.stdout)["frames"] if f["media_type"] == "video"]
    sizes = [(f["width"], f["height"]) for f in video]
    assert sizes == [(320, 240)] * 75 + [(640, 360)] * 75
    times = [float(f["pts_time"]) for f in video]
    assert times == sorted(times) and times[-1] == pytest.approx(6.0 - 0.04, abs=0.05)
