"""What the public replay of a finished broadcast leaves out (recorder/replay.py): every
stretch the broadcast showed its slate, from `delay_s` before a cut or recess to its resume
(or the close), whole segments at a time, with a discontinuity after each hole; and when
the replay is past its public retention."""

from __future__ import annotations

import math

from recorder.manifest import Manifest
from recorder.replay import SLACK_S, expired, hidden_windows, make_replay
from recorder.sessions import TrialSession

T0 = 1_800_000_000.0


def session(*events: tuple[str, float], delay: float = 10.0) -> TrialSession:
    return TrialSession(
        id="s-1",
        room="r",
        case_number="c",
        public=True,
        delay_s=delay,
        events=[{"event": "open", "at": T0, "who": "t"}]
        + [{"event": e, "at": T0 + at, "who": "t"} for e, at in events],
    )


def test_cuts_and_recesses_hide_the_delay_before_them_until_their_resume() -> None:
    windows = hidden_windows(
        session(
            ("cut", 30),
            ("broadcast-resume", 40),
            ("recess", 100),
            ("cut", 105),  # a cut during the recess: one stretch until both end
            ("resume", 120),
            ("broadcast-resume", 130),
            ("cut", 200),
            ("close", 210),
        )
    )
    lo = T0 - 10 - SLACK_S
    assert windows == [(lo + 30, T0 + 40), (lo + 100, T0 + 130), (lo + 200, T0 + 210)]


def test_a_pause_still_on_lasts_for_ever() -> None:
    assert hidden_windows(session(("recess", 50))) == [(T0 + 40 - SLACK_S, math.inf)]
    assert hidden_windows(session(("resume", 50))) == []  # nothing paused: nothing hidden


def test_the_replay_drops_every_segment_touching_a_window() -> None:
    manifest = Manifest(recording_id="rec-1", stream="cam", opened_at=T0, state="closed")
    for n in range(10):
        manifest.append(
            start=T0 + 4 * n,
            duration=4.0,
            data_sha256=f"{n:064x}",
            size=1,
            init="init.mp4",
            media_start=4.0 * n,
            discontinuity=False,
        )
    replay = make_replay(manifest, [(T0 + 9, T0 + 17), (T0 + 39.5, math.inf)])
    assert [s.seq for s in replay.segments] == [0, 1, 5, 6, 7, 8]
    text = replay.playlist()
    assert text.count("#EXT-X-DISCONTINUITY") == 1
    assert text.index("#EXT-X-DISCONTINUITY") < text.index("seg-5.m4s")
    assert "#EXT-X-ENDLIST" in text and "seg-2.m4s" not in text and "seg-9.m4s" not in text
    assert set(replay.names) == {"init.mp4", "seg-0.m4s", "seg-1.m4s"} | {
        f"seg-{n}.m4s" for n in (5, 6, 7, 8)
    }
    assert replay.closed


def test_a_replay_expires_after_its_days_from_the_close() -> None:
    closed = session(("close", 60))
    closed.state, closed.closed_at = "closed", T0 + 60
    assert not expired(closed, 1, T0 + 60 + 86399)
    assert expired(closed, 1, T0 + 60 + 86400)
    assert expired(closed, 0, T0 + 60)
