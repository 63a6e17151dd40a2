"""The agents' websocket (`GET /api/v1/agents/ws`), commands to devices, and liveness.

An agent dials out and keeps one websocket (device_agents/protocol.py). The process that
holds it subscribes to the device's command channel in Redis, so a command asked of any
control-room process reaches the device; the result comes back on a channel per command.
A newer connection of the same device takes over (the older one is closed), so a command
is never sent twice. Liveness is a loop every process may run: transitions are made by
compare-and-set scripts in Redis (control_room/devices.py), so each happens once.
"""

# No `from __future__ import annotations`: FastAPI must see the websocket annotation.
import asyncio
import contextlib
import json
import logging
import secrets
import time
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from pydantic import ValidationError
from redis.exceptions import RedisError

from control_room.devices import (
    Device,
    DeviceAuthError,
    DeviceNotFound,
    DeviceRegistry,
    command_channel,
    result_channel,
)
from core.identity import public
from device_agents.protocol import (
    WS_CLOSE_REFUSED,
    WS_PATH,
    Command,
    CommandResult,
    Heartbeat,
    HeartbeatAck,
)
from storage.state import StateStore

log = logging.getLogger(__name__)

WS_CLOSE_UNSUPPORTED = 1003  # RFC 6455: a type of data the endpoint cannot accept
WS_CLOSE_REPLACED = 4409  # a newer connection of the same device took over


class CommandUndelivered(Exception):
    """No process holds the device's websocket."""


class CommandTimeout(Exception):
    """The device did not answer in time."""


class AgentLink:
    """Websocket endpoint, command routing and the liveness loop of one process."""

    def __init__(
        self, state: StateStore, registry: DeviceRegistry, heartbeat_s: float, clock_limit_s: float
    ) -> None:
        self.state = state
        self.registry = registry
        self.heartbeat_s = heartbeat_s
        self.clock_limit_s = clock_limit_s
        self._loop_task: asyncio.Task[None] | None = None
        self._sockets: set[WebSocket] = set()

    # -- lifecycle --

    async def start(self) -> None:
        if self._loop_task is None:
            self._loop_task = asyncio.create_task(self._liveness_loop(), name="device-liveness")

    async def stop(self) -> None:
        for ws in list(self._sockets):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(1001, "server shutting down"), 0.5)
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
            self._loop_task = None

    async def _liveness_loop(self) -> None:
        interval = min(1.0, max(0.05, self.heartbeat_s / 4))
        while True:
            try:
                await self.registry.mark_offline_if_silent()
            except (RedisError, OSError) as exc:  # Redis away: health says so; try again
                log.debug("liveness check failed: %s", exc)
            await asyncio.sleep(interval)

    # -- the websocket --

    def router(self) -> APIRouter:
        router = APIRouter()

        @router.websocket(
            WS_PATH, dependencies=[public("a device's own credential, checked on connect")]
        )
        async def agent_ws(ws: WebSocket) -> None:
            await self.serve(ws)

        return router

    async def serve(self, ws: WebSocket) -> None:
        # accept first: a close before accept is an HTTP 403 and the reason would be lost
        await ws.accept()
        try:
            device = await self.registry.authenticate(ws.headers.get("authorization"))
        except DeviceAuthError as exc:
            log.info("agent websocket refused: %s", exc.reason)
            await ws.close(WS_CLOSE_REFUSED, exc.reason)
            return
        self._sockets.add(ws)
        try:
            await self._session(ws, device)
        finally:
            self._sockets.discard(ws)

    async def _session(self, ws: WebSocket, device: Device) -> None:
        conn = secrets.token_hex(6)
        send_lock = asyncio.Lock()
        async with self.state.subscribe(command_channel(device.id)) as inbox:
            await self.state.publish(command_channel(device.id), {"type": "takeover", "conn": conn})
            forward = asyncio.create_task(self._forward(ws, inbox, conn, send_lock))
            try:
                await self._receive(ws, device, send_lock)
            except (WebSocketDisconnect, RuntimeError):
                pass  # the agent left, or _forward closed the socket under the receive
            finally:
                forward.cancel()
                await asyncio.gather(forward, return_exceptions=True)

    async def _forward(self, ws: WebSocket, inbox: Any, conn: str, lock: asyncio.Lock) -> None:
        """Commands from any process to this device; refusals and takeovers close it."""
        async for msg in inbox:
            kind = msg.get("type")
            if kind == "takeover" and msg.get("conn") != conn:
                await ws.close(WS_CLOSE_REPLACED, "replaced by a newer connection")
                return
            if kind == "refuse":
                await ws.close(WS_CLOSE_REFUSED, str(msg.get("reason", "refused")))
                return
            if kind == "command":
                async with lock:
                    await ws.send_text(Command(**msg["command"]).model_dump_json())

    async def _receive(self, ws: WebSocket, device: Device, lock: asyncio.Lock) -> None:
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                raise WebSocketDisconnect(message.get("code", 1000))
            text = message.get("text")
            if text is None:  # a binary frame: the protocol is JSON text only
                log.warning("device %s sent a binary frame; closing", device.id)
                await ws.close(WS_CLOSE_UNSUPPORTED, "JSON text messages only")
                return
            try:
                msg = json.loads(text)
                kind = msg.get("type") if isinstance(msg, dict) else None
                if kind == "heartbeat":
                    device = await self._heartbeat(ws, device, Heartbeat(**msg), lock)
                elif kind == "command-result":
                    result = CommandResult(**msg)
                    await self.state.publish(result_channel(result.id), result.model_dump())
                else:
                    log.warning("device %s sent a message of unknown type %r", device.id, kind)
            except (ValueError, ValidationError) as exc:
                log.warning("device %s sent a bad message: %s", device.id, exc)
            except DeviceAuthError as exc:
                await ws.close(WS_CLOSE_REFUSED, exc.reason)
                return

    async def _heartbeat(
        self, ws: WebSocket, device: Device, beat: Heartbeat, lock: asyncio.Lock
    ) -> Device:
        received = time.time()
        current = await self.registry.get(device.id)
        if current.revoked or not current.enabled:
            # pub/sub may have lost the refusal (Redis restart): the record decides
            raise DeviceAuthError("device revoked" if current.revoked else "device disabled")
        async with lock:
            await ws.send_text(
                HeartbeatAck(sent_at=beat.sent_at, server_time=received).model_dump_json()
            )
        await self.registry.heartbeat(current, beat, self.heartbeat_s, self.clock_limit_s)
        return current

    # -- commands --

    async def command(
        self, device_id: str, name: str, args: dict[str, Any], timeout_s: float
    ) -> tuple[Command, CommandResult]:
        """Send a command to the device wherever its websocket is; wait for its result."""
        device = await self.registry.get(device_id)  # DeviceNotFound for the caller
        cmd = Command(
            id=f"cmd-{secrets.token_hex(6)}",
            name=name,  # type: ignore[arg-type]
            args=args,
            timeout_s=timeout_s,
        )
        async with self.state.subscribe(result_channel(cmd.id)) as results:
            got = await self.state.publish(
                command_channel(device.id), {"type": "command", "command": cmd.model_dump()}
            )
            if got == 0:
                await self.registry.event(device, "command-undelivered", command=cmd.id, name=name)
                raise CommandUndelivered(f"device {device.id} is not connected")
            try:
                async with asyncio.timeout(timeout_s):
                    async for msg in results:
                        return cmd, CommandResult(**msg)
            except TimeoutError:
                pass
        await self.registry.event(
            device, "command-timeout", command=cmd.id, name=name, timeout_s=timeout_s
        )
        raise CommandTimeout(f"device did not answer within {timeout_s:g} s")


__all__ = ["AgentLink", "CommandTimeout", "CommandUndelivered", "DeviceNotFound"]
