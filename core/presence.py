"""The kinds of presence keys (Redis keys with a TTL) that roles share.

A presence kind is written by one role and read by others, so its name lives here.
"""

SESSION = "session"  # a signed-in user's session
DEVICE = "device"  # a device agent's last heartbeat
STREAM_LIVE = "stream-live"  # which node has which stream live, and its stats
STREAM_RECORDING = "stream-recording"  # which streams a recorder is writing now
MEDIA_NODE = "media-node"  # a media node's advertised URLs and load (media_server/cluster)
RECORDER = "recorder"  # a recorder process of a fleet, and how many recordings it holds
