"""Security analysis (issue 17): motion, person, tamper and signal-loss alerts per stream.

One module per concern: `settings` (what a stream asks for), `sampler` (decode what
analysis needs, in a worker thread, skipping when behind), `detectors` (OpenCV over small
grey pictures), `episodes` (one alert per episode), `clips` (pre-roll ring, MP4 remux,
JPEG), `alerts` (the alert entries and their live messages) and `service` (a stream's
pipeline, and every security stream of the hub). Nothing here is on the default media
path: the hub hands packets to an inline tap that only appends them to a queue.
"""
