"""How many of a thing (connections, sessions) each client address holds, under a cap.

One address must not take what a whole server has: the RTMP server, the HTTP door and
WebRTC count per address with this, beside their totals.
"""

from __future__ import annotations


class PerAddress:
    """Counts per address; acquire() refuses the one over `cap`."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._held: dict[str, int] = {}

    def acquire(self, address: str) -> bool:
        held = self._held.get(address, 0)
        if held >= self.cap:
            return False
        self._held[address] = held + 1
        return True

    def release(self, address: str) -> None:
        held = self._held.get(address, 0) - 1
        if held > 0:
            self._held[address] = held
        else:
            self._held.pop(address, None)  # no entry per address ever seen

    def held(self, address: str) -> int:
        return self._held.get(address, 0)
