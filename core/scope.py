"""Scope: the one place that decides whether a caller may see a thing of a court.

A user is scoped to one court's subtree, or to the province (every court). Streams,
recordings, trial sessions, devices and audit entries each name their court; every route
and protocol asks `sees(caller, court, tree)` and answers a thing out of scope exactly as
it answers an unknown one (404), so a scoped user cannot even learn what exists elsewhere.
What the caller may *do* to a thing it sees is core.rights' question.
"""

from __future__ import annotations

from core.courts import CourtTree
from core.rights import PROVINCE, Caller


async def sees(caller: Caller | None, court: str, tree: CourtTree) -> bool:
    """A province-wide caller sees every court; a scoped one its court's subtree only (a
    thing with no court, or an unknown one, belongs to the province). Nobody signed in
    sees nothing by scope: public things are public by their own rule."""
    if caller is None:
        return False
    if caller.scope == PROVINCE:
        return True
    return await tree.within(court, caller.scope)
