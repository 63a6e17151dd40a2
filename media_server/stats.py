"""Per-stream statistics as JSON for the API and as Prometheus metrics.

Both read the hub's counters when asked (a scrape, an API call); nothing is updated per
packet here, so statistics cost the hot path nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from media_server.hub import Hub, Stream

if TYPE_CHECKING:
    from media_server.rtmp.server import RtmpStats


def stream_stats(stream: Stream) -> dict[str, Any]:
    s = stream.stats
    video = next((t for t in stream.tracks if t.is_video), None)
    audio = next((t for t in stream.tracks if not t.is_video), None)
    return {
        "id": stream.id,
        "live": stream.live,
        "publisher": stream.publication.source if stream.live and stream.publication else None,
        "epoch": stream.epoch,
        "uptime_s": round(stream.uptime, 1),
        "video": {"codec": video.codec, "width": video.width, "height": video.height}
        if video
        else None,
        "audio": {
            "codec": audio.codec,
            "sample_rate": audio.sample_rate,
            "channels": audio.channels,
            "source_codec": audio.source_codec,  # set when the audio is a transcode of it
        }
        if audio
        else None,
        # every track the source sends and its state: carried, transcoded from X, dropped: why
        "tracks": [
            {"kind": t.kind, "codec": t.codec, "state": t.state} for t in stream.source_tracks
        ]
        if stream.live
        else [],
        "fps": round(s.fps, 2),
        "bitrate_kbps": round(s.bitrate_bps / 1000, 1),
        "gop_s": round(s.gop_seconds, 3),
        "gop_frames": s.gop_frames,
        "viewers": sum(sub.viewers for sub in stream.subscribers),
        "subscribers": [
            {"name": sub.name, "viewers": sub.viewers, "queued": sub.queued, "drops": sub.drops}
            for sub in stream.subscribers
        ],
        "packets": s.packets,
        "bytes": s.bytes,
        "drops": s.drops,
        "source": {
            "state": stream.source.state,
            "reason": stream.source.reason,
            "reconnects": stream.source.reconnects,
        },
        "last_end_reason": stream.last_end_reason,
    }


class HubCollector(Collector):
    """Prometheus view of the hub, computed at scrape time."""

    def __init__(self, hub: Hub) -> None:
        self._hub = hub

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        label = ["stream"]
        live = GaugeMetricFamily(
            "courtcast_stream_live", "1 while the stream has a publisher", labels=label
        )
        viewers = GaugeMetricFamily(
            "courtcast_stream_subscribers", "Subscribers (outputs, viewers)", labels=label
        )
        bitrate = GaugeMetricFamily("courtcast_stream_bitrate_bps", "Ingest bitrate", labels=label)
        fps = GaugeMetricFamily("courtcast_stream_fps", "Ingest video frame rate", labels=label)
        packets = CounterMetricFamily("courtcast_stream_packets", "Packets received", labels=label)
        bytes_in = CounterMetricFamily("courtcast_stream_bytes", "Bytes received", labels=label)
        drops = CounterMetricFamily(
            "courtcast_stream_drops", "Packets dropped for slow subscribers", labels=label
        )
        for stream in self._hub.streams():
            sid = [stream.id]
            live.add_metric(sid, 1.0 if stream.live else 0.0)
            viewers.add_metric(sid, len(stream.subscribers))
            bitrate.add_metric(sid, stream.stats.bitrate_bps)
            fps.add_metric(sid, stream.stats.fps)
            packets.add_metric(sid, stream.stats.packets)
            bytes_in.add_metric(sid, stream.stats.bytes)
            drops.add_metric(sid, stream.stats.drops)
        yield from (live, viewers, bitrate, fps, packets, bytes_in, drops)


# (metric, kind, help, RtmpStats field)
_RTMP_METRICS = (
    (
        "courtcast_rtmp_connections",
        CounterMetricFamily,
        "RTMP connections accepted",
        "connections_total",
    ),
    (
        "courtcast_rtmp_connections_open",
        GaugeMetricFamily,
        "RTMP connections open",
        "connections_open",
    ),
    ("courtcast_rtmp_publishing", GaugeMetricFamily, "RTMP connections publishing", "publishing"),
    ("courtcast_rtmp_playing", GaugeMetricFamily, "RTMP connections playing", "playing"),
    (
        "courtcast_rtmp_received_bytes",
        CounterMetricFamily,
        "Bytes read from RTMP peers",
        "bytes_in",
    ),
    ("courtcast_rtmp_sent_bytes", CounterMetricFamily, "Bytes written to RTMP peers", "bytes_out"),
    (
        "courtcast_rtmp_reads",
        CounterMetricFamily,
        "Socket reads (publishers are read in batches)",
        "reads",
    ),
    (
        "courtcast_rtmp_refused",
        CounterMetricFamily,
        "Connections, publishes and plays refused",
        "refused",
    ),
    (
        "courtcast_rtmp_protocol_errors",
        CounterMetricFamily,
        "Connections closed for malformed RTMP",
        "protocol_errors",
    ),
)


class RtmpCollector(Collector):
    """Prometheus view of the RTMP server's counters, read at scrape time."""

    def __init__(self, stats: RtmpStats) -> None:
        self._stats = stats

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        for name, kind, text, field in _RTMP_METRICS:
            yield kind(name, text, value=getattr(self._stats, field))
