"""Public broadcasts follow sessions, not streams (issue 16, item 2).

A trial reaches the public only while a session approved for broadcast (`public`) is open
in its room, through one delayed rendition named for the session: /public/{session_id}/.
Its picture is the room's broadcast camera: the first (by id) enabled trial stream of the
room whose `public` flag says it may be broadcast, its faces blurred if the session asks
(`mask`, media_server/face_mask.py). A recess or a cut shows the slate; a
close, or anything else, removes the rendition, so every public URL of it answers 404
and a viewer's next request (a blocked one at once) is refused.

Driven by the recorder (it already hears every session and stream change and reconciles
every few seconds) and, for cuts and closes, at once by the API that made the change.
"""

from __future__ import annotations

import logging

from media_server.public import PublicRenditions
from media_server.streams import StreamDefinition, StreamRegistry
from recorder.sessions import TrialSession, TrialSessions

log = logging.getLogger(__name__)


def broadcast_stream(definitions: list[StreamDefinition], room: str) -> StreamDefinition | None:
    """The camera a public session of room broadcasts, if the room has one."""
    found = sorted(
        (d for d in definitions if d.room == room and d.broadcastable), key=lambda d: d.id
    )
    return found[0] if found else None


def public_playlist(session_id: str) -> str:
    """The URL form the pages rely on (DESIGN.md §5)."""
    return f"/public/{session_id}/index.m3u8"


class Broadcasts:
    def __init__(
        self, sessions: TrialSessions, registry: StreamRegistry, public: PublicRenditions
    ) -> None:
        self.sessions = sessions
        self.registry = registry
        self.public = public

    async def wanted(self) -> dict[str, tuple[TrialSession, StreamDefinition]]:
        definitions = await self.registry.list()
        wanted = {}
        for session in await self.sessions.active():
            if not session.public:
                continue
            camera = broadcast_stream(definitions, session.room)
            if camera is not None:
                wanted[session.id] = (session, camera)
        return wanted

    async def reconcile(self) -> None:
        wanted = await self.wanted()
        for name in self.public.names():
            if name not in wanted:
                await self.public.drop(name)
        for name, (session, camera) in wanted.items():
            rendition = await self.public.ensure(name, camera.id, session.delay_s, session.mask)
            if session.cut or session.state == "recess":
                rendition.cut()
            else:
                rendition.resume()

    def cut_now(self, session_id: str) -> None:
        """Cut the broadcast before the change is even stored: nothing held at the moment
        the operator asked goes out (the stored cut time is after this)."""
        rendition = self.public.get(session_id)
        if rendition is not None:
            rendition.cut()

    def viewers(self, session_id: str) -> int:
        return self.public.viewers(session_id)
