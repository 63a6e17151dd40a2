// /watch/{session_id} (control_room/pages/watch.html): one trial, live (delayed) or replay.
// The case header and the state come from GET /api/v1/public/sessions/{id}; the video
// plays the item's `hls` with hls.js (/static/vendor/hls.min.js), or natively where the
// browser has HLS and no MSE (iPhone Safari).
//
// The player never leaves a frozen picture up: #player[data-state] is one of connecting,
// live, replay, paused, offline, ended, upcoming, unavailable, unsupported, and every state
// but live and replay covers the video with the catalogue's words. "paused": what plays
// is the slate (its program date-time lies in one of the item's paused_periods), or the
// broadcast is paused and nothing tells the time of what plays. "offline": the picture
// has not moved for STALL_MS, or the stream cannot be loaded; the player retries.
// window.watch exposes the state to tests.

import { ready, setText, t } from "/static/js/i18n.js";

const POLL_MS = 3000;
const CHECK_MS = 500;
const STALL_MS = 5000;
const RETRY_MS = 2000;
const sessionId = decodeURIComponent(location.pathname.split("/").filter(Boolean).pop());
const $ = (id) => document.getElementById(id);
const video = $("video");
const state = window.watch = {
  state: "connecting", item: null, hls: null, url: null, lastTime: -1, movedAt: 0,
  endedLive: false,  // the trial closed while watched: its replay waits for the link
  playingDate: () => playingDate(),
};

function when(iso) {
  if (!iso) return "";
  return new Intl.DateTimeFormat(document.documentElement.lang,
    {dateStyle: "medium", timeStyle: "short"}).format(new Date(iso));
}

function show(next, key, params) {
  state.state = next;
  $("player").dataset.state = next;
  if (key) setText($("overlay-text"), key, params);
  const replay = next === "ended" && state.item && state.item.hls;
  $("replay-link").hidden = !replay;
  if (replay) $("replay-link").href = `${location.pathname}?replay`;
}

function header(item) {
  $("case-number").textContent = item.case;
  $("case-title").textContent = item.title;
  $("court").textContent = item.court;
  $("room").textContent = item.room;
  $("parties").textContent = item.parties || "—";
  $("start").textContent = item.end ? `${when(item.start)} – ${when(item.end)}` : when(item.start);
  document.title = `${item.case} — ${t("watch.title")}`;
  const live = item.status === "live";
  const kind = live ? (item.paused ? "paused" : "live") : item.status === "upcoming" ? "upcoming"
    : item.hls ? "replay" : "finished";
  $("badge").className = `badge ${kind}`;
  setText($("badge"), `portal.badge.${kind}`);
  if (live && typeof item.viewers === "number") setText($("viewers"), "portal.viewers", {count: item.viewers});
  else { delete $("viewers").dataset.i18n; $("viewers").textContent = ""; }
  if (live) setText($("delay-note"), "watch.delay", {delay: Math.round(item.delay)});
  else if (item.status === "finished" && item.hls) setText($("delay-note"), "watch.replay-note");
  else { delete $("delay-note").dataset.i18n; $("delay-note").textContent = ""; }
}

/** The wall-clock time (program date-time) of the frame on screen, or null. */
function playingDate() {
  if (state.hls) return state.hls.playingDate || null;
  if (typeof video.getStartDate === "function") {
    const start = video.getStartDate().getTime();
    if (!Number.isNaN(start)) return new Date(start + video.currentTime * 1000);
  }
  return null;
}

function onSlate() {
  const item = state.item;
  if (!item || item.status !== "live") return false;
  const at = playingDate();
  if (!at) return Boolean(item.paused);
  return (item.paused_periods || []).some((p) =>
    at >= new Date(p.from) && (p.to === null || at < new Date(p.to)));
}

function stop() {
  if (state.hls) state.hls.destroy();
  state.hls = null;
  state.url = null;
  video.removeAttribute("src");
  video.load();
}

function play(url) {
  if (state.url === url) return;
  stop();
  state.url = url;
  state.movedAt = performance.now();
  state.lastTime = -1;
  const live = state.item.status === "live";
  if (window.Hls && window.Hls.isSupported()) {
    // The server holds the whole broadcast delay (a cut must still find that media), so
    // the player adds only its own hold-back from the playlist's live edge: the
    // playlist's PART-HOLD-BACK, which hls.js aims at but, by default (rate 1), never
    // catches up to once it starts or stalls further back, seen 1.5-2.9 s past the
    // delay. A barely audible 10 % speed-up brings it back to the hold-back.
    const hls = state.hls = new window.Hls({
      lowLatencyMode: true, maxLiveSyncPlaybackRate: 1.1, backBufferLength: 30,
      enableWorker: false,
    });
    hls.on(window.Hls.Events.ERROR, (event, data) => {
      if (!data.fatal) return;
      console.warn(`hls.js: ${data.type} ${data.details} ${data.error ? data.error.message : ""}`);
      if (data.type === window.Hls.ErrorTypes.MEDIA_ERROR) { hls.recoverMediaError(); return; }
      if (state.hls !== hls) return;
      if (data.details === window.Hls.ErrorDetails.LEVEL_PARSING_ERROR) {
        // hls.js 1.7 takes an LL-HLS playlist's last segment for the part hint when no
        // EXT-X-PRELOAD-HINT follows it and then refuses the next playlist. Our server
        // keeps the hint across cuts and resumes; a cache in front that serves an older
        // playlist still can: start afresh (hls.loadSource on the same instance stalls)
        state.url = null;
        play(url);
        return;
      }
      show("offline", "watch.state.offline");
      setTimeout(() => { if (state.hls === hls) { state.url = null; play(url); } }, RETRY_MS);
    });
    hls.loadSource(url);
    hls.attachMedia(video);
  } else if (video.canPlayType("application/vnd.apple.mpegurl")) {
    video.src = url;
  } else {
    show("unsupported", "watch.state.unsupported");
    return;
  }
  video.play().catch(() => { /* autoplay refused: the controls start it */ });
  if (live) show("connecting", "watch.state.starting", {delay: Math.round(state.item.delay)});
  else show("connecting", "watch.state.connecting");
}

function check() {
  const item = state.item;
  if (!item || !state.url) return;
  const now = performance.now();
  if (video.currentTime !== state.lastTime) {
    state.lastTime = video.currentTime;
    state.movedAt = now;
  }
  const moving = now - state.movedAt < STALL_MS && video.readyState >= 2 && state.lastTime > 0;
  if (video.ended) {
    show("ended", "watch.state.ended");
  } else if (item.status === "live" && onSlate() && (moving || item.paused)) {
    show("paused", "watch.state.paused");
  } else if (moving || (video.paused && video.readyState >= 2 && state.state !== "offline")) {
    show(item.status === "live" ? "live" : "replay");
  } else if (now - state.movedAt >= STALL_MS && state.state !== "connecting") {
    show("offline", "watch.state.offline");
  }
}

async function load() {
  let response;
  try {
    response = await fetch(`/api/v1/public/sessions/${encodeURIComponent(sessionId)}`,
      {cache: "no-cache"});
  } catch (err) {
    if (state.url) show("offline", "watch.state.offline");
    return;
  }
  if (response.status === 404) {
    stop();
    state.item = null;
    show("unavailable", "watch.state.unavailable");
    return;
  }
  if (!response.ok) return;
  const item = await response.json();
  const was = state.item;
  state.item = item;
  header(item);
  if (item.status === "upcoming") {
    show("upcoming", "watch.state.upcoming", {time: when(item.start)});
  } else if (item.status === "live") {
    play(item.hls);
  } else if (state.endedLive || (was && was.status === "live")) {
    if (!state.endedLive) stop();  // the trial closed while watched: say so, offer its replay
    state.endedLive = true;
    show("ended", "watch.state.ended");
  } else if (item.hls) {
    play(item.hls);
  } else {
    stop();
    show("ended", "watch.state.no-replay");
  }
}

await ready;
await load();
setInterval(load, POLL_MS);
setInterval(check, CHECK_MS);
video.addEventListener("timeupdate", check);
$("replay-link").addEventListener("click", (event) => {
  event.preventDefault();
  state.endedLive = false;
  play(state.item.hls);
});
document.addEventListener("i18n:change", () => { if (state.item) header(state.item); });
