"""The delayed rendition on its own clock (media_server/hls/delayed.py): what goes out
is the same packets, delay_s after capture; a cut drops what is held, keeps nothing while
it lasts, and the slate (encoded once per format) fills in until live media is due again.
Checked on the fragments the segmenter made, demuxed with PyAV."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

from media_server import fmp4
from media_server.hls.delayed import DelayedRendition
from media_server.hls.output import HlsOptions
from media_server.hls.segmenter import Change, Segment
from media_server.hub import Hub
from media_server.media import Packet
from media_server.public import COUNTED_PARTS, PartFetches
from media_server.slate import SlateCache, SlateFormat, picture
from tests.courtcast.test_public_broadcast import lookup, samples
from tests.mediafiles import load_clip, make_clip

T0 = 1_000_000.0
DELAY_S = 4.0


async def test_cut_drops_the_held_window_and_the_slate_fills_in(tmp_path: Path) -> None:
    tracks, packets = load_clip(make_clip(tmp_path, seconds=24, fps=25, gop=25))
    now = [T0]
    hub, slates = Hub(), SlateCache()
    publication = hub.publish("room", tracks, "test")
    rendition = DelayedRendition(hub, "room", DELAY_S, HlsOptions(), slates, lambda: now[0])
    made: list[tuple[bytes, bytes, float]] = []  # (init, part, released at)

    def on_change(change: Change, segment: Segment | None) -> None:
        if change is Change.part and segment is not None:
            init = rendition.segmenter.inits[segment.init_id]
            made.append((init, segment.parts[-1].data, now[0]))

    rendition.segmenter.listen(on_change)
    captured: dict[bytes, float] = {}
    pending = iter(packets)
    upcoming: list[Packet] = []

    def advance(until: float) -> None:
        """Push what was captured by each 0.1 s step and release what is due."""
        while now[0] < until:
            now[0] = round(now[0] + 0.1, 3)
            while True:
                p = upcoming.pop() if upcoming else next(pending, None)
                if p is None:
                    break
                at = T0 + p.dts / tracks[p.track].timescale
                if at > now[0]:
                    upcoming.append(p)
                    break
                p.arrival = at
                if p.track == 0:
                    captured[hashlib.sha1(p.data).digest()] = at
                publication.push(p)
            rendition.release(now[0])

    advance(T0 + 10)
    rendition.cut()
    await slates.get(SlateFormat.of(tracks))
    for _ in range(50):
        if rendition.showing_slate:
            break
        await asyncio.sleep(0.02)
    cut_at = now[0]
    advance(T0 + 14)
    rendition.resume()
    resumed_at = now[0]
    advance(T0 + 23)
    await rendition.close()

    slate = {hashlib.sha1(p.data).digest() for s in slates._slates.values() for p in s.packets}
    prefixes = [fmp4.parameter_sets(tracks[0])] + [
        fmp4.parameter_sets(s.tracks[0]) for s in slates._slates.values()
    ]
    lags, slate_parts = [], 0
    for init, part, released in made:
        kinds = set()
        for sample, keyframe in samples(init, part, decode=False):
            digest = lookup(sample, keyframe, prefixes, captured, slate)
            if digest in slate:
                kinds.add("slate")
                continue
            kinds.add("live")
            at = captured[digest]
            assert not cut_at - DELAY_S < at <= resumed_at, at - cut_at  # due at the cut: out
            lags.append(released - at)
        assert len(kinds) == 1, "a part is live or slate, never both"
        slate_parts += kinds == {"slate"}
    assert len(slates) == 1 and slate_parts >= 2 * (resumed_at + DELAY_S - cut_at) - 2
    # each part goes out when its last sample is due: no sample sooner than the delay
    assert min(lags) >= DELAY_S - 0.01 and max(lags) <= DELAY_S + 1.0, (min(lags), max(lags))


def test_viewers_are_counted_in_bounded_memory() -> None:
    fetches = PartFetches()
    for msn in range(1000):
        for _ in range(3 if msn < 990 else 7):  # seven viewers now, three before
            fetches.count(msn, 0)
    assert fetches.viewers == 7
    assert len(fetches._counts) == COUNTED_PARTS


def test_the_slate_picture_is_a_dark_card_with_a_light_sign() -> None:
    image = picture(640, 360)
    light = (image > 200).all(axis=2).mean()
    assert 0.005 < light < 0.2, light


async def test_after_a_resume_nothing_captured_before_it_is_kept(tmp_path: Path) -> None:
    """A masked rendition gets items late (they were being masked): a keyframe captured
    before the resume that arrives after it is not where the broadcast starts again."""
    from dataclasses import replace

    tracks, packets = load_clip(make_clip(tmp_path, seconds=4, fps=25, gop=25))
    now = [T0]
    hub, slates = Hub(), SlateCache()
    publication = hub.publish("room", tracks, "test")
    rendition = DelayedRendition(hub, "room", DELAY_S, HlsOptions(), slates, lambda: now[0])
    rendition.cut()
    await slates.get(SlateFormat.of(tracks))
    now[0] += 5
    rendition.resume()
    keyframes = [p for p in packets if p.track == 0 and p.keyframe]
    publication.push(replace(keyframes[0], arrival=now[0] - 1))  # captured during the cut
    assert not [item for _, item in rendition._held if isinstance(item, Packet)]
    fresh = replace(keyframes[1], arrival=now[0] + 0.1)
    publication.push(fresh)
    assert [item for _, item in rendition._held if isinstance(item, Packet)] == [fresh]
    await rendition.close()
