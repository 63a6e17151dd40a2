"""The control link: one websocket the agent dials out (it works behind NAT), with the
device's bearer credential. Heartbeats go up every heartbeat_s; acks come back and give
the clock offset; commands come down and each gets one CommandResult.

It reconnects for ever with a growing wait, except when the server refuses the device
(close code 4403: revoked, disabled, unknown): that is logged plainly and retried only
every refused_retry_s, since only an administrator can change it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable

import websockets
from pydantic import ValidationError
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus

from core.backoff import Backoff
from device_agents.protocol import (
    WS_CLOSE_REFUSED,
    WS_PATH,
    Command,
    CommandResult,
    Heartbeat,
    HeartbeatAck,
    bearer,
)

log = logging.getLogger(__name__)

OFFSET_SMOOTHING = 0.2  # weight of a new clock offset sample
CommandHandler = Callable[[Command], Awaitable[CommandResult]]
HeartbeatMaker = Callable[[], Heartbeat]


def ws_url(server: str) -> str:
    """http(s)://host:port[/prefix] -> ws(s)://host:port[/prefix]/api/v1/agents/ws"""
    base = server.rstrip("/")
    if base.startswith("https://"):
        return "wss://" + base.removeprefix("https://") + WS_PATH
    return "ws://" + base.removeprefix("http://") + WS_PATH


class ClockOffset:
    """server - agent, from ack midpoints, smoothed so one slow round trip barely moves it."""

    def __init__(self) -> None:
        self.value: float | None = None
        self.rtt_s: float | None = None

    def sample(self, sent_at: float, server_time: float, received_at: float) -> float:
        offset = server_time - (sent_at + received_at) / 2
        self.rtt_s = received_at - sent_at
        if self.value is None:
            self.value = offset
        else:
            self.value += OFFSET_SMOOTHING * (offset - self.value)
        return self.value


class ControlLink:
    def __init__(
        self,
        server: str,
        device_id: str,
        secret: str,
        heartbeat_s: float,
        make_heartbeat: HeartbeatMaker,
        handle: CommandHandler,
        *,
        refused_retry_s: float = 60.0,
        backoff: Backoff | None = None,
    ) -> None:
        self.url = ws_url(server)
        self.headers = {"Authorization": bearer(device_id, secret)}
        self.heartbeat_s = heartbeat_s
        self.make_heartbeat = make_heartbeat
        self.handle = handle
        self.refused_retry_s = refused_retry_s
        self.backoff = backoff or Backoff(first_s=0.5, cap_s=30.0)
        self.clock = ClockOffset()
        self.state = "stopped"
        self.problem = ""
        self.connects = 0
        self.acks = 0
        self._task: asyncio.Task[None] | None = None
        self._commands: set[asyncio.Task[None]] = set()

    @property
    def connected(self) -> bool:
        return self.state == "connected"

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="control link")

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._commands) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._task = None
        self.state = "stopped"

    async def _run(self) -> None:
        while True:
            wait = await self._connect_once()
            await asyncio.sleep(wait)

    async def _connect_once(self) -> float:
        """One connection, to its end; the wait before the next."""
        self.state = "connecting"
        try:
            async with websockets.connect(
                self.url,
                additional_headers=self.headers,
                open_timeout=10,
                ping_interval=20,
                ping_timeout=20,
                max_size=2**22,
            ) as ws:
                self.connects += 1
                self.state, self.problem = "connected", ""
                log.info("control link: connected to %s", self.url)
                await self._session(ws)
        except ConnectionClosed as exc:
            return self._closed(
                exc.rcvd.code if exc.rcvd else None, exc.rcvd.reason if exc.rcvd else ""
            )
        except InvalidStatus as exc:
            code = exc.response.status_code
            if code in (401, 403):
                return self._refused(f"HTTP {code}: {exc.response.body!r}"[:200])
            self._down(f"server answered HTTP {code}")
        except (OSError, TimeoutError, websockets.InvalidHandshake) as exc:
            self._down(f"cannot reach the control plane: {exc}")
        return self.backoff.next()

    def _closed(self, code: int | None, reason: str) -> float:
        if code == WS_CLOSE_REFUSED:
            return self._refused(reason or "refused")
        self._down(f"connection closed ({code} {reason})".strip())
        if self.connects:
            self.backoff.reset()  # it was up: try again soon
        return self.backoff.next()

    def _refused(self, reason: str) -> float:
        self.state, self.problem = "refused", f"refused by the control plane: {reason}"
        log.error(
            "control link: %s; an administrator must enable this device (or enrol it "
            "again); retrying every %.0f s",
            self.problem,
            self.refused_retry_s,
        )
        return self.refused_retry_s

    def _down(self, problem: str) -> None:
        self.state, self.problem = "down", problem
        log.warning("control link: %s", problem)

    async def _session(self, ws: ClientConnection) -> None:
        beat = asyncio.create_task(self._heartbeats(ws), name="heartbeats")
        try:
            async for raw in ws:
                self._on_message(ws, raw)
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat

    async def _heartbeats(self, ws: ClientConnection) -> None:
        while True:
            beat = self.make_heartbeat()
            beat.clock_offset_s = self.clock.value
            beat.sent_at = time.time()
            await ws.send(beat.model_dump_json())
            await asyncio.sleep(self.heartbeat_s)

    def _on_message(self, ws: ClientConnection, raw: str | bytes) -> None:
        data: object = None
        try:
            data = json.loads(raw)
            kind = data.get("type") if isinstance(data, dict) else None
            if kind == "heartbeat-ack":
                ack = HeartbeatAck.model_validate(data)
                self.acks += 1
                self.clock.sample(ack.sent_at, ack.server_time, time.time())
            elif kind == "command":
                self._start_command(ws, Command.model_validate(data))
            else:
                log.info("control link: ignored a message of type %r", kind)
        except (ValueError, ValidationError) as exc:
            log.warning("control link: unreadable message: %s", str(exc)[:200])
            if isinstance(data, dict) and data.get("type") == "command" and data.get("id"):
                self._reply(
                    ws,
                    CommandResult(
                        id=str(data["id"]), ok=False, error=f"bad command: {str(exc)[:200]}"
                    ),
                )

    def _start_command(self, ws: ClientConnection, command: Command) -> None:
        task = asyncio.create_task(self._run_command(ws, command), name=f"cmd {command.id}")
        self._commands.add(task)
        task.add_done_callback(self._commands.discard)

    async def _run_command(self, ws: ClientConnection, command: Command) -> None:
        try:
            async with asyncio.timeout(command.timeout_s):
                result = await self.handle(command)
        except TimeoutError:
            result = CommandResult(
                id=command.id,
                ok=False,
                error=f"{command.name} took longer than {command.timeout_s:g} s",
            )
        except Exception as exc:  # a failing command is answered, never fatal
            log.exception("command %s (%s) failed", command.id, command.name)
            result = CommandResult(id=command.id, ok=False, error=f"{type(exc).__name__}: {exc}")
        self._reply(ws, result)

    def _reply(self, ws: ClientConnection, result: CommandResult) -> None:
        task = asyncio.create_task(self._send(ws, result.model_dump_json()))
        self._commands.add(task)
        task.add_done_callback(self._commands.discard)

    async def _send(self, ws: ClientConnection, text: str) -> None:
        with contextlib.suppress(ConnectionClosed):
            await ws.send(text)
