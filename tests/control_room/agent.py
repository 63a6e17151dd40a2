"""A stand-in for the device agent on the control plane's side of the contract: a real
websocket (the `websockets` client) speaking device_agents/protocol.py. It sends the
heartbeats a test asks for and answers commands with a handler the test gives."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable

import websockets
from websockets.asyncio.client import ClientConnection

from device_agents.protocol import (
    WS_PATH,
    Command,
    CommandResult,
    EnrolResponse,
    Heartbeat,
    HeartbeatAck,
    SourceHealth,
    bearer,
)

Handler = Callable[[Command], Awaitable[CommandResult | None]]


async def ignore(_: Command) -> CommandResult | None:
    return None  # an agent that never answers


class FakeAgent:
    def __init__(self, base_ws: str, enrolled: EnrolResponse, handler: Handler = ignore) -> None:
        self.url = base_ws + WS_PATH
        self.enrolled = enrolled
        self.handler = handler
        self.ws: ClientConnection | None = None
        self.acks: asyncio.Queue[HeartbeatAck] = asyncio.Queue()
        self.commands: list[Command] = []
        self._tasks: set[asyncio.Task[None]] = set()  # answers under way (kept referenced)
        self.sources = [
            SourceHealth(name=name, state="up", publishing=True, fps=25.0)
            for name in enrolled.streams
        ]
        self.last_beat = 0.0  # time.monotonic() of the last heartbeat sent
        self._reader: asyncio.Task[None] | None = None
        self._beats: asyncio.Task[None] | None = None

    async def connect(self, secret: str | None = None) -> ClientConnection:
        auth = bearer(self.enrolled.device_id, secret or self.enrolled.device_secret)
        self.ws = await websockets.connect(
            self.url, additional_headers={"Authorization": auth}, max_size=None
        )
        self._reader = asyncio.create_task(self._read(self.ws))
        return self.ws

    async def _read(self, ws: ClientConnection) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for text in ws:
                msg = json.loads(text)
                if msg["type"] == "heartbeat-ack":
                    self.acks.put_nowait(HeartbeatAck(**msg))
                elif msg["type"] == "command":
                    self._tasks.add(task := asyncio.create_task(self._answer(ws, Command(**msg))))
                    task.add_done_callback(self._tasks.discard)

    async def _answer(self, ws: ClientConnection, cmd: Command) -> None:
        self.commands.append(cmd)
        result = await self.handler(cmd)
        if result is not None:
            with contextlib.suppress(websockets.ConnectionClosed):
                await ws.send(result.model_dump_json())

    async def heartbeat(self, clock_offset_s: float | None = None) -> HeartbeatAck:
        assert self.ws is not None
        beat = Heartbeat(
            sent_at=time.time(),
            agent_version="0.1.0",
            sources=self.sources,
            spool_bytes=1 << 20,
            spool_limit_bytes=1 << 30,
            clock_offset_s=clock_offset_s,
        )
        await self.ws.send(beat.model_dump_json())
        self.last_beat = time.monotonic()
        return await asyncio.wait_for(self.acks.get(), 5)

    def start_heartbeats(self, interval_s: float) -> None:
        async def beat() -> None:
            while True:
                await self.heartbeat()
                await asyncio.sleep(interval_s)

        self._beats = asyncio.create_task(beat())

    async def stop_heartbeats(self) -> None:
        if self._beats is not None:
            self._beats.cancel()
            await asyncio.gather(self._beats, return_exceptions=True)
            self._beats = None

    async def closed(self, timeout: float = 5) -> tuple[int | None, str]:
        """Wait until the server closes the websocket: its close code and reason."""
        assert self.ws is not None
        await asyncio.wait_for(self.ws.wait_closed(), timeout)
        return self.ws.close_code, self.ws.close_reason or ""

    async def close(self) -> None:
        await self.stop_heartbeats()
        if self.ws is not None:
            await self.ws.close()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)


async def refused(base_ws: str, authorization: str) -> tuple[int | None, str]:
    """Connect with a credential the server should refuse: its close code and reason."""
    async with websockets.connect(
        base_ws + WS_PATH, additional_headers={"Authorization": authorization}
    ) as ws:
        with contextlib.suppress(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
    return ws.close_code, ws.close_reason or ""
