"""Dropped-track alerts: once when a track is first dropped, not per stats tick, not again
when the source reconnects with the same track dropped, again after it was carried."""

from __future__ import annotations

from media_server.hub import Hub
from media_server.media import SourceTrack
from media_server.track_alerts import DroppedTracks, describe

VIDEO = SourceTrack("video", "h264", "carried")
LOST = SourceTrack("audio", "g729", "dropped: no decoder for g729")
KEPT = SourceTrack("audio", "g729", "transcoded from g729")


def publish(hub: Hub, *tracks: SourceTrack) -> None:
    stream = hub.find("cam")
    if stream is not None and stream.publication is not None:
        stream.publication.close()
    hub.publish("cam", (), source="test").describe_source(tracks)


def test_a_dropped_track_is_told_once_per_time_it_is_dropped() -> None:
    hub, told = Hub(), DroppedTracks()
    publish(hub, VIDEO, LOST)
    assert told.new(hub.streams()) == [("cam", LOST)]
    assert told.new(hub.streams()) == []  # the next stats tick
    publish(hub, VIDEO, LOST)  # the camera reconnected: same track, same reason
    assert told.new(hub.streams()) == []
    publish(hub, VIDEO, KEPT)
    assert told.new(hub.streams()) == []
    publish(hub, VIDEO, LOST)  # dropped again after it was carried
    assert told.new(hub.streams()) == [("cam", LOST)]


def test_a_failed_write_is_told_again() -> None:
    hub, told = Hub(), DroppedTracks()
    publish(hub, VIDEO, LOST)
    [(stream_id, track)] = told.new(hub.streams())
    told.retry(stream_id, track)
    assert told.new(hub.streams()) == [("cam", LOST)]


def test_the_message_names_stream_track_codec_and_reason() -> None:
    message, fields = describe("cam", LOST)
    assert fields == {
        "stream": "cam",
        "track": "audio",
        "codec": "g729",
        "reason": "no decoder for g729",
    }
    assert message.startswith("stream cam: the source's audio track (g729) is dropped: no decoder")
