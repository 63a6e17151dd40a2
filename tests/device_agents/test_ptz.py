"""The agent's `ptz` command against a real ONVIF camera (ipycam's ONVIF service).

The camera holds a preset; ONVIF AbsoluteMove takes it elsewhere; the agent's goto_preset
(and its `ptz` command through run_command) must bring it back to the preset's position.
A wrong password must come back as a readable command error, not an exception.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from device_agents.commands import CommandError, run_command
from device_agents.onvif import goto_preset
from device_agents.protocol import Command

pytestmark = pytest.mark.timeout(60)

BENCH = (0.5, -0.25, 0.3)
WITNESS = (-0.4, 0.6, 0.1)


async def _move_away(port: int, user: str, password: str) -> None:
    """ONVIF AbsoluteMove to a corner, through the same client library the agent uses."""
    from onvif import ONVIFCamera

    camera = ONVIFCamera("127.0.0.1", port, user, password)
    try:
        await camera.update_xaddrs()
        media = await camera.create_media_service()
        ptz = await camera.create_ptz_service()
        token = (await media.GetProfiles())[0].token
        await ptz.AbsoluteMove(
            {
                "ProfileToken": token,
                "Position": {"PanTilt": {"x": -1.0, "y": 1.0}, "Zoom": {"x": 1.0}},
            }
        )
    finally:
        await camera.close()


def _agent(onvif_url: str) -> Any:
    """All that run_command's ptz handler reads of an agent: its units and their config."""
    unit = SimpleNamespace(name="cam", config=SimpleNamespace(onvif_url=onvif_url))
    return SimpleNamespace(units={"cam": unit})


async def test_ptz_goes_to_preset_on_a_real_onvif_camera(onvif_camera: Any) -> None:
    cam = await asyncio.to_thread(
        onvif_camera,
        user="clerk",
        password="p@ss:w/rd",
        presets={"bench": BENCH, "witness": WITNESS},
    )
    # the endpoint carries the password percent-encoded, as an operator writes it in YAML
    endpoint = f"http://clerk:p%40ss%3Aw%2Frd@127.0.0.1:{cam.port}"
    assert await asyncio.to_thread(cam.position) == (0.0, 0.0, 0.0)

    await _move_away(cam.port, "clerk", "p@ss:w/rd")
    assert await asyncio.to_thread(cam.position) == (-1.0, 1.0, 1.0)
    await goto_preset(endpoint, "bench")
    assert await asyncio.to_thread(cam.position) == pytest.approx(BENCH)

    # the agent's command, as the control plane sends it
    result = await run_command(
        _agent(endpoint), Command(id="p1", name="ptz", args={"preset": "witness"})
    )
    assert result.ok, result.error
    assert result.data == {"preset": "witness"}
    assert await asyncio.to_thread(cam.position) == pytest.approx(WITNESS)


async def test_ptz_wrong_password_is_a_clear_error(onvif_camera: Any) -> None:
    cam = await asyncio.to_thread(
        onvif_camera, user="clerk", password="right", presets={"bench": BENCH}
    )
    wrong = f"http://clerk:wrong@127.0.0.1:{cam.port}"
    with pytest.raises(CommandError) as caught:
        await goto_preset(wrong, "bench")
    message = str(caught.value)
    assert f"ONVIF camera 127.0.0.1:{cam.port} refused user 'clerk'" in message, message
    assert "wrong user or password" in message

    result = await run_command(
        _agent(wrong), Command(id="p2", name="ptz", args={"preset": "bench"})
    )
    assert not result.ok and result.error == message
    assert await asyncio.to_thread(cam.position) == (0.0, 0.0, 0.0)  # it did not move

    # nobody listening: also an error an operator can read
    cam.stop()
    result = await run_command(
        _agent(f"http://clerk:right@127.0.0.1:{cam.port}"),
        Command(id="p3", name="ptz", args={"preset": "bench"}),
    )
    assert not result.ok
    assert result.error.startswith(f"ONVIF camera 127.0.0.1:{cam.port} unreachable"), result.error
