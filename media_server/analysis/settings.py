"""A stream's analysis settings (`PUT /api/v1/streams/{id}/analysis`), kept in Redis.

Every `security` stream is analysed with the defaults (whole-frame motion, tamper and
signal loss) until settings are stored for it; a stream of another class is analysed only
when settings say `enabled`. Zones and masks are polygons in 0..1 picture coordinates.
Schedules limit motion and person alerts (tamper and signal loss always count: a covered
camera matters at any hour).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from storage.state import StateStore

KIND = "analysis"  # records: stream id -> settings JSON
CHANGES = "analysis"  # pub/sub: {"id": stream id}: a stream's settings changed
TYPES = ("motion", "person", "covered", "defocused", "moved", "frozen", "signal_loss")
FRAME_TYPES = TYPES[:-1]  # what pictures tell; signal loss is told by the packets
SCHEDULED = ("motion", "person")  # the types a schedule limits

Point = tuple[Annotated[float, Field(ge=0, le=1)], Annotated[float, Field(ge=0, le=1)]]
_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


class Polygon(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(default="", max_length=100)
    points: list[Point] = Field(min_length=3, max_length=64)


class Window(BaseModel):
    """Active from `start` to `end` (HH:MM, the server's local time); an end before the
    start crosses midnight ("18:00" to "08:00": only outside office hours)."""

    model_config = ConfigDict(extra="forbid")
    start: str
    end: str

    @field_validator("start", "end")
    @classmethod
    def _hhmm(cls, value: str) -> str:
        if not _HHMM.match(value):
            raise ValueError("a time of day is HH:MM, 00:00 to 23:59")
        return value

    def holds(self, minute: int) -> bool:
        start, end = _minutes(self.start), _minutes(self.end)
        if start <= end:
            return start <= minute < end
        return minute >= start or minute < end


def _minutes(hhmm: str) -> int:
    hours, minutes = hhmm.split(":")
    return int(hours) * 60 + int(minutes)


def _default_detectors() -> dict[str, bool]:
    return {t: t != "person" for t in TYPES}


class AnalysisSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    fps: float = Field(default=2.0, ge=0, le=10)  # analysed frames a second; 0: keyframes only
    width: int = Field(default=320, ge=64, le=1280)  # pictures are analysed this wide
    zones: list[Polygon] = Field(default_factory=list, max_length=32)  # none: the whole frame
    masks: list[Polygon] = Field(default_factory=list, max_length=32)  # ignored for motion
    sensitivity: float = Field(default=0.5, ge=0, le=1)  # 1: the faintest change counts
    min_area: float = Field(default=0.002, ge=0, le=1)  # share of the frame a moving blob needs
    schedule: list[Window] = Field(default_factory=list, max_length=16)  # none: always
    detectors: dict[str, bool] = Field(default_factory=_default_detectors)
    signal_loss_s: float = Field(default=5.0, ge=1, le=3600)
    pre_roll_s: float = Field(default=5.0, ge=0, le=30)
    post_roll_s: float = Field(default=5.0, ge=0, le=60)

    @field_validator("detectors")
    @classmethod
    def _known(cls, value: dict[str, bool]) -> dict[str, bool]:
        unknown = set(value) - set(TYPES)
        if unknown:
            raise ValueError(f"unknown detectors {sorted(unknown)}; known: {', '.join(TYPES)}")
        return {**_default_detectors(), **value}

    def wants(self, kind: str, now: datetime | None = None) -> bool:
        """Whether alerts of this type count now (its detector on, its schedule open)."""
        if not self.detectors.get(kind, False):
            return False
        if kind not in SCHEDULED or not self.schedule:
            return True
        now = now or datetime.now()
        minute = now.hour * 60 + now.minute
        return any(w.holds(minute) for w in self.schedule)


class SettingsStore:
    """Settings by stream id in the state store; a change is announced on CHANGES."""

    def __init__(self, state: StateStore) -> None:
        self._state = state

    async def get(self, stream_id: str) -> AnalysisSettings | None:
        record = await self._state.get_record(KIND, stream_id)
        if record is None:
            return None
        return AnalysisSettings.model_validate(record.get("settings") or {})

    async def put(self, stream_id: str, settings: AnalysisSettings) -> None:
        await self._state.put_record(KIND, stream_id, {"settings": settings.model_dump()})
        await self._state.publish(CHANGES, {"id": stream_id})

    async def all(self) -> dict[str, AnalysisSettings]:
        out: dict[str, AnalysisSettings] = {}
        for record in await self._state.list_records(KIND):
            out[str(record["id"])] = AnalysisSettings.model_validate(record.get("settings") or {})
        return out


def as_json(settings: AnalysisSettings) -> dict[str, Any]:
    return settings.model_dump()
