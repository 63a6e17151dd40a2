"""Episodes: a flapping condition raises one alert per episode, with a start and an end.

A type's condition must hold for `rise` seconds (a short "no" of at most `gap` seconds
between does not break it) before the episode starts; the episode's start is when the
condition was first seen. It ends when the condition has not held for `hold` seconds;
its end is the last time it was seen. Times are the media's (the sampler's pts seconds),
so a source sent faster than real time is judged by what it shows; each transition also
carries the wall-clock of the picture it is about, for the alert.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Debounce:
    rise: float = 0.0
    hold: float = 5.0
    gap: float = 0.0


DEBOUNCE = {
    "motion": Debounce(rise=0.0, hold=5.0),
    "person": Debounce(rise=0.0, hold=5.0),
    "covered": Debounce(rise=1.5, hold=2.0, gap=0.6),
    "defocused": Debounce(rise=2.0, hold=3.0, gap=0.6),
    "moved": Debounce(rise=2.0, hold=3.0, gap=0.6),
    "frozen": Debounce(rise=3.0, hold=1.6, gap=1.6),  # a frozen encoder's keyframes differ
}


@dataclass
class Transition:
    kind: str
    phase: str  # "start" or "end"
    at: float  # wall-clock (UNIX seconds) of the episode's start or end
    score: float  # the highest score of the episode so far


@dataclass
class _State:
    first: float = 0.0  # media time the condition was first seen (pending or active)
    first_wall: float = 0.0
    last: float = 0.0  # media time it was last seen
    last_wall: float = 0.0
    score: float = 0.0
    active: bool = False


class Episodes:
    """Conditions of every type of one stream, told picture by picture."""

    def __init__(self, debounce: dict[str, Debounce] | None = None) -> None:
        self._debounce = debounce or DEBOUNCE
        self._states: dict[str, _State] = {}

    @property
    def active(self) -> list[str]:
        return [kind for kind, state in self._states.items() if state.active]

    def update(self, media: float, wall: float, scores: dict[str, float]) -> list[Transition]:
        """One picture's scores (the types absent do not hold); the transitions it makes."""
        out: list[Transition] = []
        for kind in set(self._states) | set(scores):
            rule = self._debounce.get(kind, Debounce())
            state = self._states.get(kind)
            if kind in scores:
                if state is None or (not state.active and media - state.last > rule.gap):
                    state = self._states[kind] = _State(media, wall, media, wall, 0.0)
                state.last, state.last_wall = media, wall
                state.score = max(state.score, scores[kind])
                if not state.active and media - state.first >= rule.rise:
                    state.active = True
                    out.append(Transition(kind, "start", state.first_wall, state.score))
            elif state is not None:
                quiet = media - state.last
                if state.active and quiet >= rule.hold:
                    out.append(Transition(kind, "end", state.last_wall, state.score))
                    del self._states[kind]
                elif not state.active and quiet > rule.gap:
                    del self._states[kind]
        return out

    def close(self) -> list[Transition]:
        """The stream ended: every active episode ends where it was last seen."""
        out = [
            Transition(kind, "end", s.last_wall, s.score)
            for kind, s in self._states.items()
            if s.active
        ]
        self._states.clear()
        return out
