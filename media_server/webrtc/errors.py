"""The one error the signaling endpoints raise: an HTTP status and a reason to show."""

from __future__ import annotations


class SignalingError(Exception):
    """A WHIP/WHEP request refused; `status` is the HTTP answer, the message the reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
