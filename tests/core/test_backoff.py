"""Reconnect waits: doubling, capped, spread by jitter, reset after success."""

from __future__ import annotations

import pytest

from core.backoff import Backoff


def test_backoff_grows_with_jitter_caps_and_resets() -> None:
    backoff = Backoff(0.5, 30.0, jitter=0.2, rng=lambda: 1.0)
    assert [round(backoff.next(), 2) for _ in range(9)] == [
        0.6,
        1.2,
        2.4,
        4.8,
        9.6,
        19.2,
        36.0,
        36.0,
        36.0,
    ]
    backoff.reset()
    low = Backoff(0.5, 30.0, jitter=0.2, rng=lambda: 0.0)
    assert backoff.next() == pytest.approx(0.6) and low.next() == pytest.approx(0.4)
    spread = {round(Backoff(1.0, 30.0).next(), 3) for _ in range(20)}
    assert len(spread) > 10 and all(0.8 <= d <= 1.2 for d in spread)
