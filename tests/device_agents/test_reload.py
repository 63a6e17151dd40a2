"""`reload`: the agent re-reads its config file; sources added, removed or changed are
(re)started, the others keep running untouched; a broken file changes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from device_agents.agent import Agent
from device_agents.config import write_agent_config
from device_agents.protocol import Command
from tests.device_agents.helpers import agent_config, source, until
from tests.fixtures.rtsp_camera import free_port

pytestmark = pytest.mark.timeout(60)


async def test_reload_starts_new_sources_stops_removed_ones_and_keeps_the_rest(
    tmp_path: Path,
) -> None:
    port = free_port()  # nobody listens: publishing is down, which reload does not care about
    keep = source("test", "test:160x120", ("c-r-keep", "k1"))
    path = tmp_path / "agent.yaml"
    write_agent_config(path, agent_config(tmp_path, port, {"keep": keep}))
    agent = Agent(agent_config(tmp_path, port, {"keep": keep}), config_path=path, link=False)
    await agent.start()
    try:
        await until(lambda: agent.units["keep"].health().state == "up", 20)
        kept_unit = agent.units["keep"]

        added = source("test", "test:160x120", ("c-r-new", "k2"))
        write_agent_config(
            path, agent_config(tmp_path, port, {"keep": keep, "new": added}), exclusive=False
        )
        result = await agent.handle(Command(id="1", name="reload"))
        assert result.ok and result.data == {"restarted": ["new"]}, result
        assert agent.units["keep"] is kept_unit, "an unchanged source is not restarted"
        await until(lambda: agent.units["new"].health().state == "up", 20)

        path.write_text("sources: [not, a, mapping\n")
        broken = await agent.handle(Command(id="2", name="reload"))
        assert not broken.ok and "agent config" in broken.error, broken
        assert set(agent.units) == {"keep", "new"}, "a broken file changes nothing"

        write_agent_config(path, agent_config(tmp_path, port, {"new": added}), exclusive=False)
        result = await agent.handle(Command(id="3", name="reload"))
        assert result.ok and result.data == {"restarted": ["keep"]}, result
        assert set(agent.units) == {"new"}
    finally:
        await agent.stop()
