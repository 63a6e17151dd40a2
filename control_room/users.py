"""Users, roles and sign-in sessions, kept in Redis; passwords hashed with argon2.

Sign-in writes a session; every role reads it back through core.identity (cookie
`cc_session` or `Authorization: Bearer`). Sessions are presence keys with a TTL, so any
number of control room processes can serve the same users (DESIGN.md §9: control_room is
stateless).
"""

from __future__ import annotations

import re
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from core import presence
from core.rights import ROLES
from storage.state import StateStore

USER_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{1,63}$")
SESSION_TTL_S = 12 * 3600
_hasher = PasswordHasher()


class UserError(Exception):
    """Something about a user the caller can fix (bad name, unknown role, short password)."""


class Users:
    def __init__(self, state: StateStore) -> None:
        self._state = state

    async def add(self, name: str, role: str, password: str) -> None:
        if not USER_NAME.match(name):
            raise UserError(f"user name {name!r}: 2-64 lower-case letters, digits, '.', '_', '-'")
        if role not in ROLES:
            raise UserError(f"role {role!r} is not one of {', '.join(ROLES)}")
        if len(password) < 8:
            raise UserError("password: at least 8 characters")
        record = {"name": name, "role": role, "password": _hasher.hash(password)}
        await self._state.put_record("user", name, record)

    async def get_role(self, name: str) -> str | None:
        record = await self._state.get_record("user", name)
        return str(record["role"]) if record else None

    async def sign_in(self, name: str, password: str) -> str | None:
        """A new session token, or None for a wrong name or password (same answer)."""
        record = await self._state.get_record("user", name)
        if record is None:
            _hasher.hash(password)  # spend the same time as a real check
            return None
        try:
            _hasher.verify(str(record["password"]), password)
        except (VerificationError, InvalidHashError):
            return None
        token = secrets.token_urlsafe(32)
        info = {"name": name, "role": str(record["role"])}
        await self._state.touch_presence(presence.SESSION, token, SESSION_TTL_S, info)
        return token

    async def sign_out(self, token: str) -> None:
        await self._state.drop_presence(presence.SESSION, token)
