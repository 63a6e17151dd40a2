"""Pulling a source (an IP camera over RTSP, a local file, a video device) into the hub.

pull.py (RtspPull: what callers hold; the publication and the source's state, on the
event loop), worker.py (the worker thread: connect, read, hand over, retry), tracks.py
(one source stream -> one hub track). The PyAV clock patch that lets stop() end a blocked
read is media_server/patches/pyav_interrupt_clock.py.
"""
