"""Who may do what: the one definition of each role's rights, deny by default.

Every router and every protocol asks `may(caller, RIGHT)`; nothing else names role sets.
A right not listed here is held by nobody.
"""

from __future__ import annotations

from dataclasses import dataclass

ROLES = ("admin", "operator", "technician", "clerk")
PROVINCE = ""  # the scope of a user given no court: every court


@dataclass(frozen=True)
class Caller:
    """A signed-in user, as the control room resolved them: a role, and a scope (a court
    id: that court's subtree; PROVINCE: everything). core.scope decides what is in it."""

    name: str
    role: str
    scope: str = PROVINCE


# right -> the roles that hold it
RIGHTS: dict[str, frozenset[str]] = {
    # watch a private stream (arraignment, security, closed hearing) live
    "watch_private": frozenset({"admin", "operator"}),
    # open, close and manage arraignment rooms
    "manage_arraignment": frozenset({"admin", "operator"}),
    # list, play and verify every recording; list trial sessions
    "read_recordings": frozenset({"admin", "clerk", "operator"}),
    # open, recess, resume and close trial sessions; export recordings
    "manage_sessions": frozenset({"admin", "clerk"}),
    # cut a public broadcast to its slate, and resume it
    "cut_broadcasts": frozenset({"admin", "operator", "clerk"}),
    # define streams (and get their publish keys)
    "define_streams": frozenset({"admin", "technician"}),
    # change who may watch a stream or where it belongs: its privacy, class, court, room
    "change_stream_access": frozenset({"admin"}),
    # read /metrics and the per-role detail of /api/v1/health
    "read_metrics": frozenset({"admin", "operator", "technician"}),
    # mint a short-lived play URL for a private stream
    "mint_play_urls": frozenset({"admin", "operator"}),
    # enrol, edit and revoke devices
    "manage_devices": frozenset({"admin", "technician"}),
    # send commands to devices (snapshot, switch, PTZ ...)
    "command_devices": frozenset({"admin", "technician", "operator"}),
    # see the device list and its health
    "see_devices": frozenset({"admin", "operator", "technician", "clerk"}),
    # see the court tree (each user its own subtree)
    "see_courts": frozenset({"admin", "operator", "technician", "clerk"}),
    # add and change courts (within the admin's own subtree)
    "manage_courts": frozenset({"admin"}),
    # read the audit trail (of the admin's own subtree)
    "read_audit": frozenset({"admin"}),
    # see walls and consoles (tiles out of the caller's scope shown empty), open /wall/{name},
    # follow streams' live / recording state over /api/v1/events
    "see_walls": frozenset({"admin", "operator"}),
    # change a wall or an operator's console (dispatch), keep one's own saved layouts
    "change_walls": frozenset({"admin", "operator"}),
}


def may(caller: Caller | None, right: str) -> bool:
    return caller is not None and caller.role in RIGHTS[right]
