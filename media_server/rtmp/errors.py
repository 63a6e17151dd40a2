"""RTMP's errors: the one family bad RTMP input raises, so the server can tell "the peer
sent garbage" (log the reason, drop that connection) from a bug of ours; and the refusal
an authorize() callback raises."""


class RtmpProtocolError(ValueError):
    """The peer broke the protocol; the message says how, in words an operator can act on."""


class RtmpRefused(Exception):
    """Raised by the server's authorize() to refuse a publish or play; the reason goes to
    the client."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
