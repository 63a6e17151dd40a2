"""RTMP ingest and play: our own asyncio server over pure parsers.

amf0, chunk, flv and handshake are pure functions / small state machines over bytes (no
I/O), so they can be unit-tested from bytes and fuzzed, as are publish.py and play.py
(FLV tags to and from the hub's packets). Only the server touches sockets and the hub:
server.py listens, transport.py moves one connection's bytes (flow control, read
batching), session.py answers its commands (connect, publish, play).
"""
