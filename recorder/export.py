"""Export a stretch of a recording as one MP4: remuxed with PyAV, never re-encoded.

The stretch plays in wall-clock order, as playback does: a backfilled part (a device
agent's own recording of a WAN cut, behind its own init segment) plays in the gap it
fills, although the manifest lists it after the live segments. The segments are grouped
into pieces: segments that continue one another on one media timeline behind one init.
Each piece is demuxed on its own (its init followed by its segments) and its packets go
to one output with continuous timestamps:
- a gap between pieces takes no time in the clip (as before backfill existed);
- where two pieces overlap in wall-clock (an agent's segment reaches a little past its
  gap's edges, keyframes do not fall on the edges), the earlier piece ends in decode order
  where the later one starts, so nothing is shown twice and every kept frame decodes;
- the inits of the pieces may differ in their parameter sets (another encoder); the
  segments carry them in-band on keyframes (media_server/hls/segmenter.py), they are added
  where missing, and the video track is then tagged avc3/hev1, the sample entries that
  allow parameter sets in-band;
- a join may show the last frame before it a little longer (up to the B-frame reorder
  delay and a frame; pieces start on the clip's frame grid), never a frame twice.

The clip starts at the keyframe at or before `from`: packets before `from` get negative
times, so the MP4's edit list starts presentation at `from` exactly (what ffmpeg's input
seek with stream copy did before); it ends at `to`.

Every init and segment is hashed as it is read and must match the manifest: a changed
object is refused by name (ExportError), never remuxed into a clip that would be signed.

The clip comes with a sidecar, CLIP.sig, so that anyone holding the court's public key
(and nothing else: no data dir, no access to the recording) can check it:
    {"algorithm": "ed25519", "key_id": ..., "signature": base64, "statement": {...}}
The statement (kind courtcast-export/2) says what the clip is: the recording, case, court,
room, the stretch (from/to, requested_from/requested_to), the clip's SHA-256 and size,
and an excerpt of the manifest it was cut from: the SHA-256 of the manifest's bytes,
every init and segment used (name, SHA-256, start, duration) and every gap inside the
stretch. Who holds the recording can match each entry against its signed manifest.
The signature is over the statement's canonical form: UTF-8 JSON, keys sorted, no
whitespace (recorder.manifest.canonical; `jq -cjS .statement CLIP.sig` prints the same
bytes). Its values are strings and integers only (times as ISO 8601 UTC strings, durations
in microseconds), so no tool can print a number differently. README.md shows the check
with sha256sum, jq, base64 and openssl.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
from av.audio.codeccontext import AudioCodecContext
from av.container import InputContainer, OutputContainer
from av.packet import Packet as AvPacket
from av.stream import Stream
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from media_server.codecs.bitstream import BitstreamError, split_avcc
from media_server.codecs.h264 import parse_avcc_record
from media_server.codecs.h265 import parse_hvcc_record
from media_server.codecs.video import nal_type
from recorder.manifest import Manifest, SegmentEntry, canonical, overlap
from recorder.playback import TimeError, select
from recorder.signing import SignatureError, Signer, verify_signature
from storage.objects import ObjectStore
from storage.recording_keys import recording_prefix

Progress = Callable[[float], None]  # fraction done, 0..1

JOIN_S = 0.05  # segments whose media times meet this closely continue one another
MIN_PIECE_S = 0.01  # a piece shorter than this after trimming is left out
EPS_S = 1e-6  # manifest times are rounded to microseconds
KINDS = ("video", "audio")
STATEMENT_KIND = "courtcast-export/2"
IN_BAND_TAGS = {"h264": "avc3", "hevc": "hev1"}
PARAMETER_SET_TYPES = {"h264": (7, 8), "hevc": (32, 33, 34)}


class ExportError(Exception):
    """An export that cannot be made, phrased for the user."""


@dataclass
class ExportResult:
    path: Path
    start: float  # wall-clock where presentation starts (`from`, or the first segment)
    end: float
    duration_s: float
    sha256: str
    bytes: int
    signature_path: Path


# -- which media, in which order (pure) ---------------------------------------------------


@dataclass
class Piece:
    """Segments that continue one another (one init, one media timeline), and the
    wall-clock stretch of them that goes into the clip."""

    init: str
    segments: list[SegmentEntry]
    wall_from: float
    wall_to: float

    def media_at(self, wallclock: float) -> float:
        """The piece's media time (tfdt seconds) at a wall-clock time inside it."""
        seg = self.segments[0]
        for s in self.segments:
            if s.start > wallclock:
                break
            seg = s
        return seg.media_start + min(max(wallclock - seg.start, 0.0), seg.duration)

    @property
    def media_from(self) -> float:
        return self.media_at(self.wall_from)

    @property
    def media_to(self) -> float:
        return self.media_at(self.wall_to)


def _continues(prev: SegmentEntry, seg: SegmentEntry) -> bool:
    """Whether seg carries on prev's media: same init, same origin, timelines that meet.
    Backfilled entries are all marked discontinuous (each one arrived alone), so for them
    only the media timeline tells."""
    joined = abs(prev.media_start + prev.duration - seg.media_start) <= JOIN_S
    same = seg.init == prev.init and seg.backfilled == prev.backfilled
    return same and joined and (seg.backfilled or not seg.discontinuity)


def _runs(segments: list[SegmentEntry]) -> list[list[SegmentEntry]]:
    runs: list[list[SegmentEntry]] = []
    for seg in segments:
        if runs and _continues(runs[-1][-1], seg):
            runs[-1].append(seg)
        else:
            runs.append([seg])
    return runs


def _shown(segments: list[SegmentEntry]) -> list[SegmentEntry]:
    """In wall-clock order, without the segments an earlier one covers whole: a live
    recording's short last segment before a gap, inside the agent's backfilled segment
    that began before it, would otherwise end that one (and the rest of its gap)."""
    out: list[SegmentEntry] = []
    reach = -math.inf
    for seg in sorted(segments, key=lambda s: s.start):
        if seg.end > reach + EPS_S:
            out.append(seg)
            reach = max(reach, seg.end)
    return out


def plan(manifest: Manifest, start: float, end: float) -> list[Piece]:
    """The pieces of [start, end) in wall-clock order. A piece ends where the next one
    starts (overlaps at a backfilled gap's edges are shown once), `from` and `to` cut
    the first and the last."""
    runs = _runs(_shown(select(manifest, start, end)))
    pieces = []
    for n, run in enumerate(runs):
        following = runs[n + 1][0].start if n + 1 < len(runs) else math.inf
        wall_from, wall_to = max(run[0].start, start), min(run[-1].end, following, end)
        if wall_to - wall_from < MIN_PIECE_S:
            continue
        kept = [s for s in run if s.end > wall_from and s.start < wall_to]
        pieces.append(Piece(run[0].init, kept, wall_from, wall_to))
    return pieces


# -- the export ---------------------------------------------------------------------------


async def export_clip(
    store: ObjectStore,
    manifest: Manifest,
    start: float,
    end: float,
    out: Path,
    signer: Signer,
    progress: Progress | None = None,
) -> ExportResult:
    if end <= start:
        raise TimeError("--to must be after --from")
    pieces = plan(manifest, start, end)
    if not pieces:
        raise TimeError("nothing was recorded between --from and --to")
    with tempfile.TemporaryDirectory(prefix="courtcast-export-") as tmp:
        sources = [
            await _fetch(store, manifest, piece, Path(tmp) / f"piece-{n}.mp4")
            for n, piece in enumerate(pieces)
        ]
        # PyAV blocks: a thread, so the API keeps serving while a long clip is written
        media_s = await asyncio.to_thread(_join, pieces, sources, out, progress)
    data_sha = await asyncio.to_thread(_file_sha256, out)
    size = (await asyncio.to_thread(out.stat)).st_size
    first, last = round(pieces[0].wall_from, 6), round(pieces[-1].wall_to, 6)
    statement = {
        "kind": STATEMENT_KIND,
        "recording_id": manifest.recording_id,
        "stream": manifest.stream,
        "session": manifest.session,
        "court": manifest.court,
        "room": manifest.room,
        "case_number": manifest.case_number,
        "from": iso(first),
        "to": iso(last),
        "requested_from": iso(start),
        "requested_to": iso(end),
        "sha256": data_sha,
        "bytes": size,
        **excerpt(manifest, pieces, first, last),
    }
    sig_path = out.with_name(out.name + ".sig")
    await asyncio.to_thread(sig_path.write_bytes, sign_statement(signer, statement))
    return ExportResult(out, first, last, media_s, data_sha, size, sig_path)


async def _fetch(store: ObjectStore, manifest: Manifest, piece: Piece, path: Path) -> Path:
    """The piece's init and segments into path, each checked against its manifest entry."""
    prefix = recording_prefix(manifest.recording_id)
    init = next((i for i in manifest.inits if i.name == piece.init), None)
    if init is None:
        raise ExportError(f"the manifest lists no init {piece.init}")
    with open(path, "wb") as f:  # noqa: ASYNC230 - local temp file, small writes
        for name, expected in [(init.name, init.sha256)] + [
            (s.name, s.sha256) for s in piece.segments
        ]:
            digest = hashlib.sha256()
            async for chunk in store.stream(prefix + name):
                digest.update(chunk)
                f.write(chunk)
            if digest.hexdigest() != expected:
                raise ExportError(
                    f"{name} does not match the manifest (its SHA-256 differs): the "
                    "recording was altered; nothing was exported (courtcast recordings verify)"
                )
    return path


def iso(ts: float) -> str:
    """A wall-clock time as the statement writes it: ISO 8601 UTC, microseconds."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def excerpt(manifest: Manifest, pieces: list[Piece], first: float, last: float) -> dict[str, Any]:
    """What of the manifest the clip was cut from (strings and integers only)."""
    used = sorted({s.seq: s for p in pieces for s in p.segments}.values(), key=lambda s: s.seq)
    inits = {s.init for s in used}
    return {
        "manifest_sha256": hashlib.sha256(manifest.to_bytes()).hexdigest(),
        "manifest_state": manifest.state,
        "signing_key_id": manifest.signing_key_id,
        "inits": [{"name": i.name, "sha256": i.sha256} for i in manifest.inits if i.name in inits],
        "segments": [
            {
                "name": s.name,
                "sha256": s.sha256,
                "start": iso(s.start),
                "duration_us": round(s.duration * 1e6),
                "init": s.init,
                "backfilled": int(s.backfilled),
            }
            for s in used
        ],
        "gaps": [
            {"from": iso(g.start), "to": iso(g.end), "cause": g.cause, "filled_by": g.filled_by}
            for g in manifest.gaps
            if overlap(g.start, g.end, first, last) > 0
        ],
    }


def _join(pieces: list[Piece], sources: list[Path], out: Path, progress: Progress | None) -> float:
    """Remux the pieces into out; returns the clip's media seconds."""
    total = sum(p.media_to - p.media_from for p in pieces)
    inputs = [av.open(str(path), format="mp4") for path in sources]
    try:
        with av.open(str(out), "w", format="mp4", options={"movflags": "+faststart"}) as output:
            joiner = _Joiner(output, inputs, total, progress)
            for piece, source in zip(pieces, inputs, strict=True):
                joiner.write(piece, source)
    except (av.FFmpegError, BitstreamError) as exc:
        raise ExportError(f"the clip could not be remuxed: {exc}") from None
    finally:
        for source in inputs:
            source.close()
    if progress is not None:
        progress(1.0)
    return total


def _first_of_kinds(container: InputContainer) -> dict[str, Stream]:
    found: dict[str, Stream] = {}
    for stream in container.streams:
        if stream.type in KINDS and stream.type not in found:
            found[stream.type] = stream
    return found


def _mismatch(a: Stream, b: Stream) -> str:
    """Why b's packets cannot go on a's track ('' when they can)."""
    ca, cb = a.codec_context, b.codec_context
    if ca.name != cb.name:
        return f"the {a.type} codec changed ({ca.name} to {cb.name})"
    if (
        isinstance(ca, AudioCodecContext)
        and isinstance(cb, AudioCodecContext)
        and (ca.sample_rate, ca.channels) != (cb.sample_rate, cb.channels)
    ):
        return "the audio format changed (sample rate or channels)"
    return ""


class _Joiner:
    """Writes pieces one after another into one MP4 with continuous timestamps."""

    def __init__(
        self,
        output: OutputContainer,
        inputs: list[InputContainer],
        total_s: float,
        progress: Progress | None,
    ) -> None:
        self.output = output
        self.total_s = total_s
        self.progress = progress
        self.reported = 0.0
        self.at = 0.0  # clip time (s) where the next piece starts
        self.end = 0.0  # end (s) of what has been written
        self.grid: tuple[float, float] | None = None  # first video dts (s), frame duration
        self.tracks: dict[str, Stream] = {}  # kind -> output stream
        self.extradata: dict[str, bytes] = {}  # kind -> the output track's codec config
        self._add_tracks(inputs)

    def _add_tracks(self, inputs: list[InputContainer]) -> None:
        kinds = [_first_of_kinds(source) for source in inputs]
        for kind in KINDS:
            found = [k[kind] for k in kinds if kind in k]
            if not found:
                continue
            template = found[0]
            for other in found[1:]:
                if why := _mismatch(template, other):
                    raise ExportError(
                        f"{why} inside this stretch; export the parts before "
                        "and after the change separately"
                    )
            track = self.output.add_stream_from_template(template)
            self.extradata[kind] = bytes(template.codec_context.extradata or b"")
            name = template.codec_context.name
            if (
                any(bytes(f.codec_context.extradata or b"") != self.extradata[kind] for f in found)
                and name in IN_BAND_TAGS
            ):
                track.codec_context.codec_tag = IN_BAND_TAGS[name]
            self.tracks[kind] = track

    def write(self, piece: Piece, source: InputContainer) -> None:
        """The piece's packets between its media_from (from the keyframe before it) and
        its media_to, moved to start at self.at."""
        streams = _first_of_kinds(source)
        lead = streams.get("video") or streams["audio"]
        prefix = self._prefix(streams.get("video"))
        media_from, media_to = piece.media_from, piece.media_to
        shift = Fraction(self.at - media_from).limit_denominator(1_000_000)
        ticks = {
            s.index: round(shift / s.time_base) for s in streams.values() if s.time_base is not None
        }
        held: list[AvPacket[Any]] = []
        for pkt in _packets(source, list(streams.values())):
            t = _seconds(pkt)
            if t < media_from - EPS_S:
                held.append(pkt)  # before `from`: kept from the keyframe before it
                continue
            if held:
                for early in _from_keyframe(held, lead, media_from):
                    self._put(early, ticks, prefix)
                held = []
            if t < media_to - EPS_S:
                self._put(pkt, ticks, prefix)
        self.at = self._on_grid(max(self.end, self.at + media_to - media_from))

    def _on_grid(self, at: float) -> float:
        """at, moved up onto the first piece's frame grid: the next piece's frames keep
        the clip's frame rate (tools that guess a constant rate would collide frames)."""
        if self.grid is None:
            return at
        origin, frame = self.grid
        return origin + math.ceil((at - origin) / frame - 1e-6) * frame

    def _prefix(self, video: Stream | None) -> bytes:
        """Parameter sets to put in front of keyframes that lack them: only where this
        piece's codec config is not the output track's."""
        if video is None or "video" not in self.extradata:
            return b""
        config = bytes(video.codec_context.extradata or b"")
        if config == self.extradata["video"]:
            return b""
        return _parameter_sets(video.codec_context.name, config)

    def _put(self, pkt: AvPacket[Any], ticks: dict[int, int], prefix: bytes) -> None:
        stream = pkt.stream
        track = self.tracks[stream.type]
        if prefix and stream.type == "video" and pkt.is_keyframe:
            pkt = _with_parameter_sets(pkt, stream.codec_context.name, prefix)
        assert pkt.time_base is not None and pkt.dts is not None and pkt.pts is not None
        pkt.dts += ticks[stream.index]
        pkt.pts += ticks[stream.index]
        pkt.stream = track
        if self.grid is None and stream.type == "video" and pkt.duration:
            self.grid = (float(pkt.dts * pkt.time_base), float(pkt.duration * pkt.time_base))
        end = float((pkt.pts + (pkt.duration or 0)) * pkt.time_base)
        self.end = max(self.end, end)
        self.output.mux(pkt)
        self._report(end)

    def _report(self, at: float) -> None:
        if (
            self.progress is not None
            and self.total_s > 0
            and at - self.reported >= 0.01 * self.total_s
        ):
            self.reported = at
            self.progress(max(0.0, min(1.0, at / self.total_s)))


def _packets(source: InputContainer, streams: list[Stream]) -> Iterator[AvPacket[Any]]:
    """The source's media packets (not the demuxer's empty flush packets)."""
    for pkt in source.demux(streams):
        if pkt.size and pkt.dts is not None and pkt.pts is not None:
            yield pkt


def _from_keyframe(
    held: list[AvPacket[Any]], lead: Stream, media_from: float
) -> list[AvPacket[Any]]:
    """Of the packets before `from`, those from the lead track's last keyframe at or
    before it on (every track: a decoder starts there, the edit list hides the rest)."""
    keys = [
        _seconds(p)
        for p in held
        if p.stream.index == lead.index and (p.is_keyframe or lead.type == "audio")
    ]
    first = max((k for k in keys if k <= media_from + EPS_S), default=-math.inf)
    return [p for p in held if _seconds(p) >= first - EPS_S]


def _seconds(pkt: AvPacket[Any]) -> float:
    """A demuxed packet's decode time (_packets lets only timed packets through)."""
    assert pkt.dts is not None and pkt.time_base is not None
    return float(pkt.dts * pkt.time_base)


def _parameter_sets(codec: str, config: bytes) -> bytes:
    """An avcC/hvcC record's parameter sets as 4-byte length-prefixed NAL units."""
    try:
        if codec == "h264":
            nals, size = parse_avcc_record(config)
        elif codec == "hevc":
            nals, size = parse_hvcc_record(config)
        else:
            return b""
    except BitstreamError:
        return b""
    if size != 4:
        raise ExportError(f"{codec} with {size}-byte NAL lengths cannot be exported")
    return b"".join(len(n).to_bytes(4, "big") + n for n in nals)


def _with_parameter_sets(pkt: AvPacket[Any], codec: str, prefix: bytes) -> AvPacket[Any]:
    """pkt, with the parameter sets in front unless it carries some already."""
    data = bytes(pkt)
    types = {nal_type(n, "h265" if codec == "hevc" else "h264") for n in split_avcc(data)}
    if types & set(PARAMETER_SET_TYPES[codec]):
        return pkt
    out = AvPacket(prefix + data)
    out.pts, out.dts, out.duration = pkt.pts, pkt.dts, pkt.duration
    out.time_base, out.is_keyframe, out.stream = pkt.time_base, True, pkt.stream
    return out


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def sign_statement(signer: Signer, statement: dict[str, Any]) -> bytes:
    body = json.loads(signer.sign(canonical(statement)))
    return json.dumps({"statement": statement, **body}, indent=1).encode() + b"\n"


def verify_export(public: Ed25519PublicKey, clip: Path, sig_file: bytes) -> dict[str, Any]:
    """The signed statement if the clip is the one it describes; SignatureError if not."""
    try:
        body = json.loads(sig_file)
        statement = body.pop("statement")
    except (ValueError, KeyError, TypeError, AttributeError):
        raise SignatureError("the export's signature file is not readable") from None
    if not isinstance(statement, dict):
        raise SignatureError("the export's signature file holds no statement")
    verify_signature(public, canonical(statement), json.dumps(body).encode())
    if _file_sha256(clip) != statement.get("sha256"):
        raise SignatureError("the clip's content differs from what was signed (SHA-256)")
    return dict(statement)
