"""`/api/v1/events`: the one websocket of signed-in staff pages (console, walls).

Server to browser (JSON text frames):
    {"type": "hello", "user": NAME, "role": ROLE, "streams": [{"id", "court", "room",
     "class", "title", "state": "live"|"offline", "recording": bool, "sub": ID|null}]}
    {"type": "stream", "id", "state": "live"|"offline", "recording": bool}
    {"type": "wall", "name", "layout", "tiles", "version", "acked_version", "updated_by",
     "updated_at"}                      (layout null, version 0: no such wall yet)
Browser to server:
    {"type": "subscribe", "walls": [NAME, ...]}  -> each wall now and on every change
    {"type": "ack", "wall": NAME, "version": N}  -> the page shows version N of the wall

Only the caller's scope is told: streams of other courts are never named, and walls show
their tiles as null (control_room/stream_scope.py). Refused: 4401 nobody signed in, 4403 no
right. A client that does not read its messages is closed (4429) when its bounded queue is
full, so one slow screen never holds up the others; its page reconnects and starts over.

The streams' state (StreamBoard) comes from the media servers' and recorders' news on the
`stream-events` channel (core/stream_events.py), and from their presence entries: read at
start, and every SWEEP_S to catch a node that died without a word.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from control_room.stream_scope import StreamScope
from control_room.walls import CHANGES as WALL_CHANGES
from control_room.walls import WallStore
from core import presence
from core.identity import SESSION_COOKIE, caller_of_session, public
from core.rights import Caller, may
from core.stream_events import CHANNEL
from media_server.streams import StreamDefinition
from media_server.webrtc.rendition import SUB_SUFFIX
from storage.state import StateStore

log = logging.getLogger(__name__)

PATH = "/api/v1/events"
QUEUE_MESSAGES = 256  # per client: a wall of 25 tiles changing 10 times is still well within
MAX_WALLS = 32  # walls one client may follow
SWEEP_S = 2.0
# a stream said live whose presence is gone this long is offline (media server: 5 s TTL)
LIVE_GRACE_S = 6.0
RECORDING_GRACE_S = 7.0  # recorder: 6 s TTL
CLOSE_UNSIGNED, CLOSE_FORBIDDEN, CLOSE_TOO_SLOW = 4401, 4403, 4429

Fact = tuple[bool, float]  # (value, when the sender said it)


class StreamBoard:
    """Every stream's live and recording state, as the news and presence say."""

    def __init__(self, state: StateStore) -> None:
        self._state = state
        self.live: dict[str, Fact] = {}
        self.recording: dict[str, Fact] = {}
        self.listeners: list[Callable[[str], None]] = []  # told a stream id on each change

    def is_live(self, stream_id: str) -> bool:
        return self.live.get(stream_id, (False, 0.0))[0]

    def is_recording(self, stream_id: str) -> bool:
        return self.recording.get(stream_id, (False, 0.0))[0]

    def take(self, news: dict[str, Any]) -> None:
        """One message of the stream-events channel."""
        stream_id, at = str(news.get("id", "")), float(news.get("at", 0.0))
        changed = False
        if "live" in news:
            changed |= _set(self.live, stream_id, bool(news["live"]), at)
        if "recording" in news:
            changed |= _set(self.recording, stream_id, bool(news["recording"]), at)
        if changed:
            self._tell(stream_id)

    async def sweep(self) -> None:
        """Bring the board in line with presence: news missed (Redis blip, a node that
        started before us) or never sent (a node that died)."""
        now = time.time()
        live = await self._state.present(presence.STREAM_LIVE)
        on_air = {sid: float(i.get("at", 0.0)) for sid, i in live.items() if i.get("live")}
        recording = await self._state.present(presence.STREAM_RECORDING)
        recorded = {sid: float(i.get("at", 0.0)) for sid, i in recording.items()}
        changed = _align(self.live, on_air, now, LIVE_GRACE_S)
        changed |= _align(self.recording, recorded, now, RECORDING_GRACE_S)
        for stream_id in sorted(changed):
            self._tell(stream_id)

    async def run(self) -> None:
        """Follow the news, and sweep every SWEEP_S."""
        listen = asyncio.create_task(self._listen(), name="stream-news-listen")
        try:
            while True:
                with contextlib.suppress(Exception):  # Redis away: the next sweep
                    await self.sweep()
                await asyncio.sleep(SWEEP_S)
        finally:
            listen.cancel()
            await asyncio.gather(listen, return_exceptions=True)

    async def _listen(self) -> None:
        async with self._state.subscribe(CHANNEL) as news:
            async for message in news:
                self.take(message)

    def _tell(self, stream_id: str) -> None:
        for listener in list(self.listeners):
            listener(stream_id)


def _set(table: dict[str, Fact], stream_id: str, value: bool, at: float) -> bool:
    """Record a fact unless older news than what is known; True when the value changed."""
    old = table.get(stream_id)
    if old is not None and old[1] > at:
        return False
    table[stream_id] = (value, at)
    return (old[0] if old else False) != value


def _align(
    table: dict[str, Fact], present: dict[str, float], now: float, grace_s: float
) -> set[str]:
    """Present and newer than the last news: true. Said true but absent for grace_s: false."""
    changed = set()
    for stream_id, at in present.items():
        old = table.get(stream_id)
        if old is None or at > old[1]:
            table[stream_id] = (True, at)
            if not (old and old[0]):
                changed.add(stream_id)
    for stream_id, (value, at) in list(table.items()):
        if value and stream_id not in present and now - at > grace_s:
            table[stream_id] = (False, now)
            changed.add(stream_id)
    return changed


class Client:
    """One websocket: its caller, the walls it follows, and its bounded outbox."""

    def __init__(self, ws: WebSocket, caller: Caller | None) -> None:
        self.ws = ws
        self.caller = caller
        self.walls: set[str] = set()
        self.outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue(QUEUE_MESSAGES)
        self.too_slow = asyncio.Event()

    def offer(self, message: dict[str, Any]) -> None:
        if self.too_slow.is_set():
            return
        try:
            self.outbox.put_nowait(message)
        except asyncio.QueueFull:
            self.too_slow.set()


class EventHub:
    """The websocket's clients, fed by the StreamBoard and the walls' change channel."""

    def __init__(self, state: StateStore, walls: WallStore, scope: StreamScope) -> None:
        self._state = state
        self._walls = walls
        self._scope = scope
        self.board = StreamBoard(state)
        self.clients: set[Client] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._pending: set[asyncio.Task[None]] = set()
        self.board.listeners.append(self._stream_changed)

    async def start(self) -> None:
        with contextlib.suppress(Exception):  # Redis away: the board's loop sweeps again
            await self.board.sweep()
        self._tasks = [
            asyncio.create_task(self.board.run(), name="stream-board"),
            asyncio.create_task(self._follow_walls(), name="wall-changes"),
        ]

    async def stop(self) -> None:
        for task in [*self._tasks, *self._pending]:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._pending, return_exceptions=True)
        for client in list(self.clients):
            with contextlib.suppress(Exception):
                await client.ws.close(1001, "server stopping")

    def router(self, open_mode: bool) -> APIRouter:
        router = APIRouter()

        @router.websocket(
            PATH, dependencies=[public("signs the caller in on connect (cookie or bearer)")]
        )
        async def events(ws: WebSocket) -> None:
            await self.serve(ws, open_mode)

        return router

    # -- one connection --

    async def serve(self, ws: WebSocket, open_mode: bool) -> None:
        # accept first: a close before accept is an HTTP 403 and the code would be lost
        await ws.accept()
        caller = await caller_of_session(self._state, _token(ws))
        if caller is None and not open_mode:
            await ws.close(CLOSE_UNSIGNED, "sign in first")
            return
        if caller is not None and not may(caller, "see_walls") and not open_mode:
            await ws.close(CLOSE_FORBIDDEN, f"role {caller.role} may not follow the streams")
            return
        client = Client(ws, caller)
        client.offer(await self._hello(caller))
        self.clients.add(client)
        sender = asyncio.create_task(self._send(client))
        try:
            await self._receive(client)
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            self.clients.discard(client)
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)

    async def _hello(self, caller: Caller | None) -> dict[str, Any]:
        definitions = await self._scope.visible(caller)
        ids = {d.id for d in definitions}
        return {
            "type": "hello",
            "user": caller.name if caller else None,
            "role": caller.role if caller else None,
            "streams": [self._stream_view(d, ids) for d in definitions],
        }

    def _stream_view(self, d: StreamDefinition, ids: set[str]) -> dict[str, Any]:
        sub = d.id + SUB_SUFFIX
        return {
            "id": d.id,
            "court": d.court,
            "room": d.room,
            "class": str(d.stream_class),
            "title": d.title,
            "state": "live" if self.board.is_live(d.id) else "offline",
            "recording": self.board.is_recording(d.id),
            "sub": sub if sub in ids else None,
        }

    async def _send(self, client: Client) -> None:
        slow = asyncio.create_task(client.too_slow.wait())
        try:
            while True:
                get = asyncio.create_task(client.outbox.get())
                await asyncio.wait({get, slow}, return_when=asyncio.FIRST_COMPLETED)
                if slow.done():
                    get.cancel()
                    log.info("events: %s does not keep up; closed", _name(client))
                    await client.ws.close(CLOSE_TOO_SLOW, "too slow: reconnect")
                    return
                await client.ws.send_text(json.dumps(get.result()))
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            slow.cancel()

    async def _receive(self, client: Client) -> None:
        while True:
            try:
                message = json.loads(await client.ws.receive_text())
            except ValueError:
                continue  # not JSON: ignored
            if not isinstance(message, dict):
                continue
            if message.get("type") == "subscribe":
                await self._subscribe(client, message.get("walls"))
            elif message.get("type") == "ack":
                await self._ack(message.get("wall"), message.get("version"))

    async def _subscribe(self, client: Client, names: Any) -> None:
        if not isinstance(names, list):
            return
        for name in names:
            if not isinstance(name, str) or name in client.walls:
                continue
            if len(client.walls) >= MAX_WALLS:
                break
            client.walls.add(name)
            client.offer(await self._wall_message(client.caller, name))

    async def _ack(self, name: Any, version: Any) -> None:
        if isinstance(name, str) and isinstance(version, int) and not isinstance(version, bool):
            await self._walls.ack(name, version)  # publishes the change: consoles see it

    async def _wall_message(self, caller: Caller | None, name: str) -> dict[str, Any]:
        wall = await self._walls.get(name)
        if wall is None:
            return {"type": "wall", "name": name, "layout": None, "tiles": [], "version": 0,
                    "acked_version": 0, "updated_by": "", "updated_at": 0.0}  # fmt: skip
        return {"type": "wall", **await self._scope.wall_view(caller, wall)}

    # -- news to clients --

    def _stream_changed(self, stream_id: str) -> None:
        if self.clients:
            task = asyncio.create_task(self._tell_stream(stream_id))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _tell_stream(self, stream_id: str) -> None:
        definition = await self._scope.registry.get(stream_id)
        if definition is None:
            return  # not defined (an open-mode stream of the moment): nobody's to follow
        message = {
            "type": "stream",
            "id": stream_id,
            "state": "live" if self.board.is_live(stream_id) else "offline",
            "recording": self.board.is_recording(stream_id),
        }
        for client in list(self.clients):
            if await self._scope.sees_definition(client.caller, definition):
                client.offer(message)

    async def _follow_walls(self) -> None:
        async with self._state.subscribe(WALL_CHANGES) as changes:
            async for change in changes:
                name = str(change.get("name", ""))
                for client in list(self.clients):
                    if name in client.walls:
                        try:
                            client.offer(await self._wall_message(client.caller, name))
                        except Exception:  # Redis away: the next change says it
                            log.debug("wall %s not sent", name, exc_info=True)


def _token(ws: WebSocket) -> str | None:
    auth = ws.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return ws.cookies.get(SESSION_COOKIE)


def _name(client: Client) -> str:
    return client.caller.name if client.caller else "open-mode"
