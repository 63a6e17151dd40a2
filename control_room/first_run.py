"""What a start tells a newcomer about signing in (issue 15, item 8).

A demo run (`courtcast up --demo`, what `make run` starts) makes the demo operator, scoped to
the whole province, with a new random password each run: the welcome prints it once, so a
newcomer signs in to the console and the wall within a minute. Only a demo run makes it; a
run without --demo disables a demo user an earlier demo run left (its password was
printed to a console). A node where nobody can sign in (no user, or only disabled and
demo ones) says how to add the first admin.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass

from control_room.users import Users
from control_room.walls import WallStore
from media_server.demo import demo_court_tree

log = logging.getLogger(__name__)

DEMO_USER = "demo"
DEMO_WALL = "main"  # the wall the welcome points at
DEMO_ROLE = "operator"
FIRST_ADMIN_HINT = "courtcast users add NAME --role admin"


@dataclass(frozen=True)
class FirstRun:
    demo_user: str = ""  # set on a demo run: sign in with these
    demo_password: str = ""
    no_users: bool = False  # nobody can sign in: print FIRST_ADMIN_HINT


async def prepare(users: Users, demo: bool) -> FirstRun:
    """The demo operator on a demo run (a fresh password); otherwise retire demo users and
    tell whether anybody can sign in at all."""
    records = await users.records()
    if demo:
        return await _demo_operator(users)
    for record in records:
        if record.get("demo") and not record.get("disabled"):
            await users.disable(str(record["id"]))
            log.info("demo user %s disabled: this is not a demo run", record["id"])
    usable = [r for r in records if not r.get("demo") and not r.get("disabled")]
    return FirstRun(no_users=not usable)


async def _demo_operator(users: Users) -> FirstRun:
    existing = await users.get_record(DEMO_USER)
    if existing is not None and not existing.get("demo"):
        # somebody's own account of that name: never overwritten by a demo
        log.warning("user %s exists and is not the demo's: no demo operator made", DEMO_USER)
        return FirstRun()
    password = secrets.token_urlsafe(12)
    await users.add(DEMO_USER, DEMO_ROLE, password, demo=True)
    return FirstRun(demo_user=DEMO_USER, demo_password=password)


async def demo_wall(walls: WallStore) -> None:
    """On a demo run, the main wall shows the demo rooms (2x2) unless someone has set it:
    a newcomer opening /wall/main sees video, not an empty screen."""
    if await walls.get(DEMO_WALL) is not None:
        return
    tiles: list[str | None] = [r.stream_id for r in demo_court_tree()[:4]]
    await walls.put(DEMO_WALL, "2x2", tiles + [None] * (4 - len(tiles)), "demo")
