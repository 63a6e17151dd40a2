"""The public renditions of this node, by name, and how many watch each.

A name is whatever the driver chose (recorder/broadcast.py uses the session id), and it
is the whole of the public URL: /public/{name}/index.m3u8. A name that is not here
answers 404 on every public route, exactly as a name that never existed: so between
sessions, after a close, and for every stream never broadcast, nothing is served.

Viewers are counted the way a CDN edge would see them, without a per-viewer record: each
LL-HLS player fetches every part once, so the most fetches of any recent part is the
audience. Only the last few parts' counters are kept, whatever the audience.
"""

from __future__ import annotations

import logging

from media_server.hls.delayed import DelayedRendition
from media_server.hls.output import HlsOptions
from media_server.hub import Hub
from media_server.slate import SlateCache

log = logging.getLogger(__name__)

COUNTED_PARTS = 12  # ~6 s of 0.5 s parts


class PartFetches:
    """Fetches per part, for the last COUNTED_PARTS parts only."""

    def __init__(self) -> None:
        self._counts: dict[tuple[int, int], int] = {}

    def count(self, msn: int, index: int) -> None:
        key = (msn, index)
        self._counts[key] = self._counts.get(key, 0) + 1
        if len(self._counts) > COUNTED_PARTS:
            del self._counts[min(self._counts)]

    @property
    def viewers(self) -> int:
        return max(self._counts.values(), default=0)


class PublicRenditions:
    def __init__(self, hub: Hub, options: HlsOptions) -> None:
        self.hub = hub
        self.options = options
        self.slates = SlateCache()
        self._renditions: dict[str, DelayedRendition] = {}
        self._fetches: dict[str, PartFetches] = {}

    def get(self, name: str) -> DelayedRendition | None:
        return self._renditions.get(name)

    def names(self) -> list[str]:
        return list(self._renditions)

    async def ensure(
        self, name: str, stream_id: str, delay_s: float, mask: str = ""
    ) -> DelayedRendition:
        """The rendition called name, of stream_id delay_s late, masked as mask says
        ("faces" or ""); made (or remade, if any of these changed) now."""
        found = self._renditions.get(name)
        wanted = (stream_id, delay_s, mask)
        if found is not None and (found.stream_id, found.delay_s, found.mask) == wanted:
            return found
        if found is not None:
            await self.drop(name)
        made = DelayedRendition(self.hub, stream_id, delay_s, self.options, self.slates, mask=mask)
        self._renditions[name] = made
        self._fetches[name] = PartFetches()
        masked = f", {mask} masked" if mask else ""
        log.info("public %s: broadcasting %s, %.0f s late%s", name, stream_id, delay_s, masked)
        return made

    async def drop(self, name: str) -> None:
        """Stop serving name: every public request for it answers 404 from now on, the
        ones waiting included."""
        found = self._renditions.pop(name, None)
        self._fetches.pop(name, None)
        if found is not None:
            await found.close()
            log.info("public %s: broadcast ended", name)

    def counted(self, name: str, msn: int, index: int) -> None:
        fetches = self._fetches.get(name)
        if fetches is not None:
            fetches.count(msn, index)

    def viewers(self, name: str) -> int:
        fetches = self._fetches.get(name)
        return fetches.viewers if fetches is not None else 0

    async def close(self) -> None:
        for name in list(self._renditions):
            await self.drop(name)
