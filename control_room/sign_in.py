"""Sign-in with limits: per user name and per client address, failures past the free ones
hold the subject with a doubling back-off (storage/attempts.py, in Redis, so it holds
across control-room processes). While held, the password is not even checked, so a flood
costs a Redis read per attempt rather than an argon2 check.

The audit trail gets every sign-in that succeeded (who, from where), every wrong password
for an account that exists and was checked (not held), and one entry per hold started (how
many failures, from where). Attempts on names nobody has, and attempts refused while held,
are counted (storage/attempts.py), not written one by one: the holds bound how many checked
failures an account can get, so a flood cannot bury the trail or fill Redis through it.
"""

from __future__ import annotations

import math

from control_room.users import Users
from core.audit import EventLog, audit
from storage.attempts import Attempts, Limit
from storage.state import StateStore

# a person mistypes a few times; a guesser is held 1 s, 2 s, 4 s, ... up to 15 minutes
PER_USER = Limit("signin-user", free=5)
# one address trying many names (a spray); a court's NAT has many users, so more are free
PER_ADDRESS = Limit("signin-ip", free=20)


class TooManyAttempts(Exception):
    """Held: try again in `retry_after_s` seconds."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"too many failed sign-ins: try again in {retry_after_s} s")
        self.retry_after_s = retry_after_s


class SignInDesk:
    def __init__(self, users: Users, state: StateStore, events: EventLog) -> None:
        self._users = users
        self._attempts = Attempts(state, PER_USER, PER_ADDRESS)
        self._events = events

    async def sign_in(self, name: str, password: str, peer: str) -> str | None:
        """A session token; None for a wrong name or password; TooManyAttempts while held."""
        subjects = {PER_USER.scope: name, PER_ADDRESS.scope: peer}
        wait_s = await self._attempts.wait_s(subjects)
        if wait_s > 0:
            raise TooManyAttempts(max(1, math.ceil(wait_s)))
        token = await self._users.sign_in(name, password)
        if token is not None:
            await self._attempts.succeeded({PER_USER.scope: name})
            await audit(self._events, "signin", name, peer=peer)
            return token
        if await self._users.get_record(name) is not None:
            await audit(self._events, "signin.failed", name, peer=peer)
        for lockout in await self._attempts.failed(subjects):
            await audit(
                self._events,
                "signin.locked",
                f"peer {peer}",
                scope="user" if lockout.scope == PER_USER.scope else "address",
                subject=lockout.subject,
                failures=lockout.failures,
                hold_s=lockout.hold_s,
                peer=peer,
            )
        return None
