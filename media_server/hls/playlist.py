"""Render the LL-HLS media playlist (RFC 8216bis) from what the segmenter holds.

One playlist serves both kinds of client: low-latency players read the EXT-X-PART and
EXT-X-PRELOAD-HINT lines and block on reloads; plain HLS players (ffmpeg, hls.js without
low-latency mode, older devices) ignore those tags and play the complete segments.
"""

from __future__ import annotations

import time

from media_server.hls.segmenter import Segment, Segmenter

# EXT-X-MAP in a media playlist without EXT-X-I-FRAMES-ONLY needs version 6; nothing else
# used here needs more (EXT-X-SKIP, which would need 9, is not offered).
VERSION = 6
PARTS_KEPT_TARGETS = 3  # EXT-X-PART lines only within this many target durations of the end


def target_duration(s: Segmenter) -> int:
    """EXT-X-TARGETDURATION: every EXTINF rounded to the nearest integer must not exceed it.
    Segments end at keyframes, so a source GOP longer than the target raises it; it never
    goes down again while the output lives."""
    return max(1, round(s.segment_target_s), round(s.max_segment_s))


def part_hold_back(s: Segmenter) -> float:
    """PART-HOLD-BACK: at least three part targets (the spec's SHOULD; it MUST be two)."""
    return 3 * s.part_target_s


def program_date_time(wallclock: float) -> str:
    seconds, millis = divmod(round(wallclock * 1000), 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def render(s: Segmenter, query: str = "") -> str:
    """The media playlist. query (e.g. "?token=...") is appended to every URI so a signed
    play token reaches the init, part and segment requests too."""
    segments = list(s.segments)
    if s.open is not None and s.open.parts:
        segments.append(s.open)
    if not segments:
        raise LookupError("no segment yet")
    td = target_duration(s)
    first = segments[0]
    lines = [
        "#EXTM3U",
        f"#EXT-X-VERSION:{VERSION}",
        f"#EXT-X-TARGETDURATION:{td}",
        f"#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={part_hold_back(s):.3f}",
        f"#EXT-X-PART-INF:PART-TARGET={s.part_target_s:.3f}",
        f"#EXT-X-MEDIA-SEQUENCE:{first.msn}",
        # the first segment's own discontinuity tag is not written (see _segment_lines)
        f"#EXT-X-DISCONTINUITY-SEQUENCE:{first.discontinuity_sequence}",
    ]
    parts_from = _first_with_parts(segments, PARTS_KEPT_TARGETS * td)
    init_id: int | None = None
    for k, seg in enumerate(segments):
        lines += _segment_lines(seg, k == 0, seg.init_id != init_id, k >= parts_from, query)
        init_id = seg.init_id
    return "\n".join(lines + _preload_hints(s, init_id, query)) + "\n"


def _first_with_parts(segments: list[Segment], keep_s: float) -> int:
    """Index of the oldest segment whose parts are still listed."""
    total = 0.0
    for k in range(len(segments) - 1, -1, -1):
        total += (
            segments[k].duration
            if segments[k].complete
            else sum(p.duration for p in segments[k].parts)
        )
        if total > keep_s:
            return k + 1
    return 0


def _segment_lines(
    seg: Segment, first: bool, new_map: bool, with_parts: bool, query: str
) -> list[str]:
    if not seg.complete:
        return _render_segment(seg, first, new_map, with_parts, query)
    key = (first, new_map, with_parts, query)
    lines = seg.lines.get(key)
    if lines is None:
        if len(seg.lines) > 16:  # one entry per viewer query (token): keep it bounded
            seg.lines.clear()
        lines = seg.lines[key] = _render_segment(seg, first, new_map, with_parts, query)
    return lines


def _render_segment(
    seg: Segment, first: bool, new_map: bool, with_parts: bool, query: str
) -> list[str]:
    lines = []
    if seg.discontinuity and not first:
        lines.append("#EXT-X-DISCONTINUITY")
    if new_map:
        lines.append(f'#EXT-X-MAP:URI="init-{seg.init_id}.mp4{query}"')
    lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{program_date_time(seg.wallclock)}")
    if with_parts:
        for part in seg.parts:
            independent = ",INDEPENDENT=YES" if part.independent else ""
            lines.append(
                f"#EXT-X-PART:DURATION={part.duration:.5f},"
                f'URI="part-{part.msn}.{part.index}.m4s{query}"{independent}'
            )
    if seg.complete:
        lines.append(f"#EXTINF:{seg.duration:.5f},")
        lines.append(f"seg-{seg.msn}.m4s{query}")
    return lines


def _preload_hints(s: Segmenter, last_init: int | None, query: str) -> list[str]:
    """The part being built, hinted as long as the output goes on, also when it starts a
    segment the playlist cannot list yet (a cut to the slate or a resume: a new run
    behind a discontinuity): a playlist ending on a complete segment makes hls.js 1.7
    take that segment for the part being built and refuse the next playlist. A new init
    the next part needs is hinted too (TYPE=MAP, RFC 8216bis 4.4.5.3)."""
    hint = s.next_part()
    if hint is None:
        return []
    lines = [f'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="part-{hint[0]}.{hint[1]}.m4s{query}"']
    if hint[1] == 0 and s.next_init is not None and s.next_init != last_init:
        lines.append(f'#EXT-X-PRELOAD-HINT:TYPE=MAP,URI="init-{s.next_init}.mp4{query}"')
    return lines
