"""Users, roles and sign-in sessions, kept in Redis; passwords hashed with argon2.

Sign-in writes a session; every role reads it back through core.identity (cookie
`cc_session` or `Authorization: Bearer`). Sessions are presence keys with a TTL, so any
number of control room processes can serve the same users (DESIGN.md §9: control_room is
stateless). A session is keyed by its token's digest (core.identity.session_key): what
Redis holds cannot be replayed as a token.

argon2 is slow on purpose (about 0.1 s and 64 MiB a check): it runs in worker threads,
at most HASHING_THREADS at once (a core is left to the event loop that serves media),
never on that loop.
"""

from __future__ import annotations

import asyncio
import functools
import os
import re
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from core import presence
from core.courts import CourtTree
from core.identity import session_key
from core.rights import PROVINCE, ROLES
from storage.state import StateStore

USER_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{1,63}$")
SESSION_TTL_S = 12 * 3600
HASHING_THREADS = max(1, (os.cpu_count() or 2) - 1)
_hasher = PasswordHasher()


class UserError(Exception):
    """Something about a user the caller can fix (bad name, unknown role, short password)."""


@functools.cache
def _no_user_hash() -> str:
    """What a sign-in with an unknown name is checked against: it takes as long as a real one."""
    return _hasher.hash(secrets.token_urlsafe(16))


def _matches(stored: str | None, password: str) -> bool:
    try:
        return _hasher.verify(stored or _no_user_hash(), password)
    except (VerificationError, InvalidHashError):
        return False


class Users:
    def __init__(self, state: StateStore) -> None:
        self._state = state
        self._hashing = asyncio.Semaphore(HASHING_THREADS)

    async def add(
        self, name: str, role: str, password: str, court: str = PROVINCE, demo: bool = False
    ) -> None:
        """Add a user, or set an existing one's role, scope and password (its sessions
        end). `court` (id or name of an existing court) scopes the user to its subtree;
        none: the province. `demo`: made by a demo run, disabled by any other run."""
        if not USER_NAME.match(name):
            raise UserError(f"user name {name!r}: 2-64 lower-case letters, digits, '.', '_', '-'")
        _check_role(role)
        if len(password) < 8:
            raise UserError("password: at least 8 characters")
        scope = PROVINCE
        if court:
            found = await CourtTree(self._state).resolve(court)
            if found is None:
                raise UserError(f"no court {court!r}: add it first (courtcast courts add)")
            scope = found
        async with self._hashing:
            hashed = await asyncio.to_thread(_hasher.hash, password)
        record: dict[str, object] = {"name": name, "role": role, "password": hashed}
        record |= {"court": scope} | ({"demo": True} if demo else {})
        await self._state.put_record("user", name, record)
        await self.end_sessions(name)

    async def records(self) -> list[dict[str, object]]:
        """Every user's record (with its password hash: never to be shown)."""
        return [dict(record) for record in await self._state.list_records("user")]

    async def get_record(self, name: str) -> dict[str, object] | None:
        record = await self._state.get_record("user", name)
        return dict(record) if record else None

    async def get_role(self, name: str) -> str | None:
        record = await self._state.get_record("user", name)
        return str(record["role"]) if record else None

    async def set_role(self, name: str, role: str) -> None:
        """Change a user's role; the sessions signed in under the old one end."""
        _check_role(role)
        await self._update(name, role=role)

    async def disable(self, name: str) -> None:
        """The user can no longer sign in; its sessions end."""
        await self._update(name, disabled=True)

    async def _update(self, name: str, **changes: object) -> None:
        record = await self._state.get_record("user", name)
        if record is None:
            raise UserError(f"no user {name!r}")
        await self._state.put_record("user", name, {**record, **changes})
        await self.end_sessions(name)

    async def check_password(self, name: str, password: str) -> str | None:
        """The user's role if the password is right and the user enabled, else None (the
        same answer, in the same time, for an unknown name)."""
        record = await self._checked(name, password)
        return str(record["role"]) if record else None

    async def _checked(self, name: str, password: str) -> dict[str, object] | None:
        record = await self._state.get_record("user", name)
        stored = str(record["password"]) if record else None
        async with self._hashing:
            right = await asyncio.to_thread(_matches, stored, password)
        if not right or record is None or record.get("disabled"):
            return None
        return record

    async def sign_in(self, name: str, password: str) -> str | None:
        """A new session token, or None for a wrong name or password (same answer). The
        session carries the user's role and scope (a court id, or the province)."""
        record = await self._checked(name, password)
        if record is None:
            return None
        token = secrets.token_urlsafe(32)
        info = {"name": name, "role": record["role"], "scope": record.get("court") or PROVINCE}
        await self._state.touch_presence(presence.SESSION, session_key(token), SESSION_TTL_S, info)
        return token

    async def sign_out(self, token: str) -> None:
        await self._state.drop_presence(presence.SESSION, session_key(token))

    async def end_sessions(self, name: str) -> int:
        """End every session of a user, on every control room; how many there were."""
        sessions = await self._state.present(presence.SESSION)
        ended = [key for key, info in sessions.items() if info.get("name") == name]
        for key in ended:
            await self._state.drop_presence(presence.SESSION, key)
        return len(ended)


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise UserError(f"role {role!r} is not one of {', '.join(ROLES)}")
