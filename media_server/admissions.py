"""Viewers let in once and then fed (WHEP, RTMP play), checked again while they watch.

LL-HLS is checked at every request; a WHEP or RTMP player is let in once and then fed for
as long as it stays. Each is admitted here with what let it in (a play token, a signed-in
caller), and the media server checks them all again when a stream definition changes and
every part: a stream made private or disabled, or a play token that expired, ends them
within about one part, as it ends an LL-HLS player's next request.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from core.rights import Caller
from media_server.access import AccessDenied, AccessPolicy

log = logging.getLogger(__name__)

CUT_REASON = "no longer allowed to watch this stream"


@dataclass(eq=False)
class Admission:
    """One viewer: its stream, what let it in, how to end it and whether it ended."""

    stream_id: str
    token: str | None
    caller: Caller | None
    cut: Callable[[str], object]
    ended: Callable[[], bool]


class Admissions:
    def __init__(self, access: AccessPolicy) -> None:
        self._access = access
        self._viewers: set[Admission] = set()

    def admit(self, admission: Admission) -> None:
        self._viewers.add(admission)

    def __len__(self) -> int:
        return len(self._viewers)

    async def check(self) -> int:
        """Ask the access policy again for every viewer (definitions are cached, so this
        is cheap); cut those it refuses now. Returns how many were cut."""
        cut = 0
        for viewer in list(self._viewers):
            if viewer.ended():
                self._viewers.discard(viewer)
                continue
            try:
                await self._access.check_play(viewer.stream_id, viewer.token, viewer.caller)
            except AccessDenied:
                self._viewers.discard(viewer)
                log.info("a viewer of %s is cut off: %s", viewer.stream_id, CUT_REASON)
                viewer.cut(CUT_REASON)
                cut += 1
        return cut
