// A video tile of the console (/control) and the walls (/wall/{name}): plays one stream over
// WHEP (POST /whep/{id}, the session cookie signs it) and never shows a frozen last frame.
//
//   import { createTile } from "/static/js/tile.js";
//   const tile = createTile(element, 0);  // element gets data-tile="0" and a <video>
//   tile.play("room1-sub");   // connect (again) to a stream; same id while playing: nothing
//   tile.stop();              // empty tile
//   tile.streamState("offline" | "live");  // news from /api/v1/events: hide, or retry now
//   await tile.stats();       // {bitrate (kbit/s), fps, framesDecoded, width, height}
//
// The element carries data-tile (index), data-stream (stream id, "" when empty) and
// data-state: "connecting" (asking, or waiting for a first decoded frame), "live" (frames
// are being decoded) or "offline" (nothing to show: no stream, not on air, or frames
// stopped). Each change is also a "tile:state" event ({detail: {state, stream}}, bubbles).
// Offline means the <video> is hidden and detached and a translated status shows instead
// ("tile.*" messages: pages using tiles list "tile" in <html data-catalogues>). While a
// stream is set the tile retries by itself, 1 s growing to 5 s, and at once on
// streamState("live"), so it is live again as soon as the publisher is back.
// Styles: /static/css/tile.css.

import { setText } from "/static/js/i18n.js";

const TICK_MS = 500;         // how often decoding progress is read (getStats, local only)
const RATE_WINDOW_MS = 400;  // bitrate and fps are measured over at least this long
const STALL_MS = 2000;       // no new decoded frame for this long: no signal
const FIRST_FRAME_MS = 8000; // connected but nothing decoded for this long: start again
const RETRY_MS = [1000, 2000, 3000, 5000];

export function createTile(el, index) {
  return new Tile(el, index);
}

class Tile {
  constructor(el, index) {
    this.el = el;
    this.index = index;
    this.video = document.createElement("video");
    this.video.autoplay = this.video.muted = this.video.playsInline = true;
    this.video.hidden = true;
    this.label = document.createElement("span");
    this.label.className = "tile-label";
    this.status = document.createElement("span");
    this.status.className = "tile-status";
    el.classList.add("tile");
    el.replaceChildren(this.video, this.label, this.status);
    el.dataset.tile = String(index);
    this.streamId = "";
    this.pc = null;
    this.location = null;
    this.generation = 0;     // bumped on every (re)connect and stop: late callbacks ignore
    this.failures = 0;
    this.retryTimer = null;
    this.last = null;        // last stats sample {at, bytes, frames}
    this.numbers = {bitrate: 0, fps: 0, framesDecoded: 0, width: 0, height: 0};
    this.watch = setInterval(() => this.tick(), TICK_MS);
    this.show("offline");
  }

  /** Plays streamId (null or "" empties the tile). The same stream again: nothing. */
  play(streamId) {
    if (!streamId) { this.stop(); return; }
    if (streamId === this.streamId && (this.pc || this.retryTimer)) return;
    this.teardown();
    this.streamId = streamId;
    this.failures = 0;
    this.label.textContent = streamId;
    this.connect();
  }

  /** Empties the tile. */
  stop() {
    this.teardown();
    this.streamId = "";
    this.label.textContent = "";
    this.show("offline");
  }

  /** Server news for this tile's stream: "offline" hides it now; "live" retries now. */
  streamState(state) {
    if (!this.streamId) return;
    if (state === "offline") {
      this.teardown();
      this.show("offline", "tile.offline");
      this.retryLater();
    } else if (state === "live" && this.el.dataset.state === "offline") {
      this.teardown();
      this.failures = 0;
      this.connect();
    }
  }

  /** What the tile receives now: bitrate (kbit/s), fps, frames decoded, picture size. */
  async stats() {
    await this.sample();
    return {...this.numbers};
  }

  /** Stops the tile for good (the element stays). */
  destroy() {
    this.stop();
    clearInterval(this.watch);
  }

  // -- the connection --

  async connect() {
    const generation = ++this.generation;
    const streamId = this.streamId;
    this.show("connecting");
    const pc = this.pc = new RTCPeerConnection({iceServers: []});
    pc.addTransceiver("video", {direction: "recvonly"});
    pc.addTransceiver("audio", {direction: "recvonly"});
    pc.ontrack = (event) => {
      if (event.track.kind !== "video") return;
      this.video.srcObject = event.streams[0] || new MediaStream([event.track]);
      // live at the first frame shown, not at the next tick (a switch is timed by it)
      this.video.requestVideoFrameCallback(() => {
        if (generation === this.generation && this.video.videoWidth > 0) this.show("live");
      });
      event.track.onended = () => this.lost(generation, "tile.no-signal");
      event.track.onmute = () => this.lost(generation, "tile.no-signal");
    };
    pc.onconnectionstatechange = () => {
      if (["failed", "closed"].includes(pc.connectionState)) this.lost(generation, "tile.no-signal");
    };
    this.connectedAt = performance.now();
    this.last = null;
    try {
      await pc.setLocalDescription(await pc.createOffer());
      await gathered(pc);
      const answer = await fetch("/whep/" + encodeURIComponent(streamId), {
        method: "POST", body: pc.localDescription.sdp, credentials: "same-origin",
        headers: {"Content-Type": "application/sdp"}});
      if (generation !== this.generation) return;
      if (answer.status !== 201) throw new Error(`WHEP ${answer.status}`);
      const location = answer.headers.get("Location");
      this.location = location ? new URL(location, window.location.href).href : null;
      await pc.setRemoteDescription({type: "answer", sdp: await answer.text()});
    } catch (err) {
      this.lost(generation, "tile.offline");
    }
  }

  lost(generation, key) {
    if (generation !== this.generation || !this.streamId) return;
    this.teardown();
    this.show("offline", key);
    this.retryLater();
  }

  retryLater() {
    clearTimeout(this.retryTimer);
    const wait = RETRY_MS[Math.min(this.failures++, RETRY_MS.length - 1)];
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      if (this.streamId && !this.pc) this.connect();
    }, wait);
  }

  teardown() {
    this.generation++;
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    if (this.location) {  // the server frees the viewer at once (best effort)
      fetch(this.location, {method: "DELETE", credentials: "same-origin"}).catch(() => {});
      this.location = null;
    }
    if (this.pc) {
      this.pc.ontrack = this.pc.onconnectionstatechange = null;
      this.pc.close();
      this.pc = null;
    }
    this.video.srcObject = null;  // no last frame left behind
    this.video.hidden = true;
    this.last = null;
    this.numbers = {bitrate: 0, fps: 0, framesDecoded: 0, width: 0, height: 0};
  }

  // -- is it decoding? --

  async sample() {
    const pc = this.pc;
    if (!pc) return;
    const report = await pc.getStats();
    let inbound = null;
    report.forEach((s) => { if (s.type === "inbound-rtp" && s.kind === "video") inbound = s; });
    if (!inbound || pc !== this.pc) return;
    const now = performance.now();
    const frames = inbound.framesDecoded || 0;
    const bytes = inbound.bytesReceived || 0;
    const previous = this.last;
    // rates over at least RATE_WINDOW_MS: a stats() call just after the watch's own sample
    // would otherwise divide a few bytes by a few milliseconds (and read 0 kbit/s)
    const base = previous && now - previous.at < RATE_WINDOW_MS ? previous : null;
    if (previous && !base) {
      const seconds = (now - previous.at) / 1000;
      this.numbers.bitrate = Math.round((bytes - previous.bytes) * 8 / 1000 / seconds);
      this.numbers.fps = Math.round((frames - previous.frames) / seconds * 10) / 10;
    }
    const progress = !previous || frames > previous.frames ? now : previous.progress;
    this.last = base ? {...base, progress} : {at: now, bytes, frames, progress};
    Object.assign(this.numbers, {framesDecoded: frames,
      width: inbound.frameWidth || this.video.videoWidth, height: inbound.frameHeight || this.video.videoHeight});
  }

  async tick() {
    if (!this.pc) return;
    const generation = this.generation;
    try { await this.sample(); } catch (err) { return; }
    if (generation !== this.generation || !this.last) return;
    const now = performance.now();
    const decoding = this.last.frames > 0 && now - this.last.progress < STALL_MS;
    if (decoding && this.video.videoWidth > 0) {
      this.failures = 0;
      this.show("live");
    } else if (this.el.dataset.state === "live") {
      this.lost(generation, "tile.no-signal");
    } else if (now - this.connectedAt > FIRST_FRAME_MS) {
      this.lost(generation, "tile.no-signal");
    }
  }

  show(state, key) {
    const changed = this.el.dataset.state !== state || this.el.dataset.stream !== this.streamId;
    this.el.dataset.state = state;
    this.el.dataset.stream = this.streamId;
    this.video.hidden = state !== "live";
    if (state === "live") {
      this.status.hidden = true;
    } else {
      this.status.hidden = false;
      const word = !this.streamId ? "tile.empty" : state === "connecting" ? "tile.connecting" : key || "tile.offline";
      setText(this.status, word);
    }
    if (changed) {
      this.el.dispatchEvent(new CustomEvent("tile:state", {bubbles: true,
        detail: {state, stream: this.streamId, tile: this.index}}));
    }
  }
}

async function gathered(pc) {  // non-trickle WHEP: the offer carries every candidate
  if (pc.iceGatheringState === "complete") return;
  await new Promise((done) => {
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") done();
    });
    setTimeout(done, 2000);
  });
}
