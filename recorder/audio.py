"""What a recording's manifest says of its audio: the camera's own codec when the recorded
AAC is a transcode of it (media_server/ingest_audio.py), and the stretches where the source's
audio stopped while its video went on (a pulled microphone cable), each an audio gap with
its cause, rather than silence nobody explains."""

from __future__ import annotations

from media_server.media import Packet, Track
from recorder.manifest import Gap, GapCause

AUDIO_LOST_S = 2.0  # video this long without any audio packet: the audio is lost


def audio_origin(tracks: tuple[Track, ...]) -> tuple[str, str]:
    """(the camera's codec, the transcode) for an init entry; empty when carried as sent."""
    audio = next((t for t in tracks if t.kind == "audio" and t.source_codec), None)
    if audio is None:
        return "", ""
    layout = "mono" if audio.channels == 1 else f"{audio.channels} channels"
    return audio.source_codec, (
        f"{audio.source_codec} -> AAC-LC {audio.sample_rate} Hz {layout}, at ingest"
    )


class AudioWatch:
    """Feeds on the recorder's items; appends an audio-lost gap to `gaps` for each stretch
    of AUDIO_LOST_S or more in which video came and audio did not."""

    def __init__(self, gaps: list[Gap]) -> None:
        self._gaps = gaps
        self._audio = -1  # the audio track's index, -1 when the stream has none
        self._last: float | None = None  # arrival of the last audio packet (or the first)
        self._open: Gap | None = None

    def start(self, tracks: tuple[Track, ...]) -> None:
        self.end()
        self._audio = next((t.index for t in tracks if t.kind == "audio"), -1)
        self._last = None

    def packet(self, packet: Packet) -> None:
        if self._audio < 0:
            return
        if packet.track == self._audio:
            if self._open is not None:
                self._open.end = round(packet.arrival, 6)
                self._gaps.append(self._open)
                self._open = None
            self._last = packet.arrival
            return
        if self._last is None:
            self._last = packet.arrival  # counted from the stream's first packet
        elif self._open is None and packet.arrival - self._last >= AUDIO_LOST_S:
            reason = f"the source sent no audio for {AUDIO_LOST_S:g} s while its video went on"
            self._open = Gap(round(self._last, 6), 0.0, str(GapCause.audio_lost), reason)
        if self._open is not None:
            self._open.end = round(packet.arrival, 6)

    def end(self) -> None:
        """The stream ended, skipped or went into recess (or the recording closed): an
        open audio gap ends with the video, and the count starts again after."""
        if self._open is not None:
            self._gaps.append(self._open)
            self._open = None
        self._last = None
