"""Commands from the control plane, each answered with a CommandResult (ok or an error an
operator can read). The agent passes itself in; nothing here keeps state.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from core.config import ConfigError
from device_agents.onvif import goto_preset, sub_stream_h264
from device_agents.protocol import Command, CommandResult
from device_agents.snapshot import SnapshotError, snapshot
from device_agents.unit import SourceUnit

if TYPE_CHECKING:
    from device_agents.agent import Agent

log = logging.getLogger(__name__)


class CommandError(Exception):
    """The command cannot be done; the message goes back to the operator."""


Handler = Callable[["Agent", Command], Awaitable[dict[str, Any]]]


def _unit(agent: Agent, command: Command) -> SourceUnit:
    name = command.args.get("source")
    if not name and len(agent.units) == 1:
        return next(iter(agent.units.values()))  # one camera: no need to name it
    unit = agent.units.get(str(name))
    if unit is None:
        known = ", ".join(sorted(agent.units)) or "none"
        raise CommandError(f"unknown source {name!r} (sources: {known})")
    return unit


async def _start(agent: Agent, command: Command) -> dict[str, Any]:
    _unit(agent, command).start_publishing()
    return {}


async def _stop(agent: Agent, command: Command) -> dict[str, Any]:
    await _unit(agent, command).stop_publishing()
    return {}


async def _switch(agent: Agent, command: Command) -> dict[str, Any]:
    which = command.args.get("stream", "main")
    if which not in ("main", "sub"):
        raise CommandError(f"stream must be 'main' or 'sub', not {which!r}")
    unit = _unit(agent, command)
    try:
        await unit.switch(which)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    return {"active": which}


async def _snapshot(agent: Agent, command: Command) -> dict[str, Any]:
    unit = _unit(agent, command)
    which = command.args.get("stream", unit.active)
    feed = unit.feeds.get(which)
    if feed is None:
        raise CommandError(f"source {unit.name!r} has no {which} stream")
    try:
        jpeg, width, height = await snapshot(
            agent.hub, feed.id, timeout_s=max(1.0, command.timeout_s - 1)
        )
    except SnapshotError as exc:
        raise CommandError(str(exc)) from None
    return {"jpeg_b64": base64.b64encode(jpeg).decode(), "width": width, "height": height}


async def _restart(agent: Agent, command: Command) -> dict[str, Any]:
    await _unit(agent, command).restart()
    return {}


async def _reload(agent: Agent, command: Command) -> dict[str, Any]:
    try:
        changed = await agent.reload()
    except ConfigError as exc:  # a broken file: nothing was changed, say what is wrong
        raise CommandError(str(exc)) from None
    return {"restarted": changed}


async def _ptz(agent: Agent, command: Command) -> dict[str, Any]:
    unit = _unit(agent, command)
    preset = command.args.get("preset")
    if preset is None:
        raise CommandError("ptz needs a preset")
    if not unit.config.onvif_url:
        raise CommandError("camera has no ONVIF endpoint")
    await goto_preset(unit.config.onvif_url, str(preset))
    return {"preset": str(preset)}


async def _sub_stream_h264(agent: Agent, command: Command) -> dict[str, Any]:
    """The camera's sub stream set to H.264 without B-frames, so a wall tile plays it as is."""
    unit = _unit(agent, command)
    if not unit.config.onvif_url:
        raise CommandError("camera has no ONVIF endpoint")
    data = await sub_stream_h264(unit.config.onvif_url)
    feed = unit.feeds.get("sub")
    if data["changed"] and feed is not None:
        await feed.restart()  # ONVIF: a running stream may keep its old encoding until re-opened
    return data


HANDLERS: dict[str, Handler] = {
    "start": _start,
    "stop": _stop,
    "switch": _switch,
    "snapshot": _snapshot,
    "restart": _restart,
    "reload": _reload,
    "ptz": _ptz,
    "sub-stream-h264": _sub_stream_h264,
}


async def run_command(agent: Agent, command: Command) -> CommandResult:
    handler = HANDLERS.get(command.name)
    if handler is None:
        return CommandResult(id=command.id, ok=False, error=f"unknown command {command.name!r}")
    try:
        data = await handler(agent, command)
    except CommandError as exc:
        return CommandResult(id=command.id, ok=False, error=str(exc))
    except Exception as exc:  # a bug must still be answered, not leave the caller waiting
        log.exception("command %s (%s) failed", command.id, command.name)
        return CommandResult(id=command.id, ok=False, error=f"agent error: {exc!r}")
    log.info("command %s (%s) done", command.id, command.name)
    return CommandResult(id=command.id, ok=True, data=data)
