"""The one error family bad RTMP input raises, so the server can tell "the peer sent
garbage" (log the reason, drop that connection) from a bug of ours."""


class RtmpProtocolError(ValueError):
    """The peer broke the protocol; the message says how, in words an operator can act on."""
