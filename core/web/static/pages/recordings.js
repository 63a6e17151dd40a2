// /recordings (recorder/pages/recordings.html): find recordings by court, room, case
// number and date; per courtroom and day a timeline (a bar per camera: recorded stretches,
// gaps labelled with their cause); playback with hls.js of one recording or of a session's
// cameras side by side on one clock (each player follows the first by program date-time);
// export of a time range with a progress bar; verify, the result in words.
// window.recordingsPage exposes the state to tests.

import { $, ApiError, api, clock, detailOf, say, sayError, signedIn, t, when } from "/static/pages/clerks.js";
import { setText } from "/static/js/i18n.js";

const SYNC_S = 0.5;  // a follower further than this from the first player's clock is moved
const LISTED = 200;  // recordings drawn at most (the newest); narrow the search for others
const state = window.recordingsPage = {
  me: null, recordings: [], timelines: {}, players: [], selected: null,
  exported: null, verified: null,
};

// -- search --------------------------------------------------------------------------

const FILTERS = ["court", "room", "case_number", "date", "session"];

async function loadCourts() {
  try {
    const courts = await api("/api/v1/courts");
    const lang = document.documentElement.lang;
    $("court").append(...courts.map((c) => {
      const option = document.createElement("option");
      option.value = c.id;
      option.textContent = (lang === "en" && c.name_en) || c.name || c.id;
      return option;
    }));
  } catch (err) { /* the court list is a convenience: search still works by room */ }
}

function query() {
  const form = new FormData($("search-form"));
  const params = new URLSearchParams();
  for (const name of FILTERS) {
    const value = String(form.get(name) || "").trim();
    if (value) params.set(name, value);
  }
  return params;
}

async function search(event) {
  if (event) event.preventDefault();
  const params = query();
  history.replaceState(null, "", params.size ? `?${params}` : location.pathname);
  say("clerks.loading");
  try {
    const found = await api(`/api/v1/recordings?${params}`);
    state.recordings = found.recordings.slice(0, LISTED);
    const timelines = await Promise.all(state.recordings.map(
      (r) => api(`/api/v1/recordings/${encodeURIComponent(r.id)}/timeline`).catch(() => null)));
    state.timelines = Object.fromEntries(state.recordings.map((r, i) => [r.id, timelines[i]]));
  } catch (err) {
    sayError(err);
    return;
  }
  drawGroups();
  say(state.recordings.length ? "recordings.found" : "recordings.none",
    {count: state.recordings.length});
}

// -- timelines -----------------------------------------------------------------------

function groups() {
  const by = new Map();
  for (const r of state.recordings) {
    const key = `${r.court}|${r.room}|${r.date}`;
    if (!by.has(key)) by.set(key, {court: r.court, room: r.room, date: r.date, items: []});
    by.get(key).items.push(r);
  }
  return [...by.values()];
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function button(key, action) {
  const b = el("button");
  b.type = "button";
  setText(b, key);
  b.addEventListener("click", action);
  return b;
}

function causeText(gap) {
  const key = `recordings.cause.${gap.cause}`;
  const known = t(key) !== key;
  return known ? t(key) : gap.cause;
}

function drawGroups() {
  const now = Date.now() / 1000;
  $("groups").replaceChildren(...groups().map((g) => {
    const lo = Math.min(...g.items.map((r) => Number(r.opened_at)));
    const hi = Math.max(...g.items.map((r) => Number(r.closed_at || now)), lo + 1);
    const box = el("div", "room-group");
    box.dataset.room = g.room;
    box.dataset.court = g.court;
    const title = el("h3");
    setText(title, "recordings.group", {court: g.court || "—", room: g.room || "—", date: g.date});
    box.append(title, axis(lo, hi));
    for (const r of g.items) box.append(track(r, state.timelines[r.id], lo, hi));
    return box;
  }));
}

function axis(lo, hi) {
  const row = el("div", "axis");
  row.append(el("span", "", clock(lo)), el("span", "", clock((lo + hi) / 2)), el("span", "", clock(hi)));
  return row;
}

function place(node, a, b, lo, hi) {
  const span = hi - lo;
  node.style.left = `${((a - lo) / span) * 100}%`;
  node.style.width = `${Math.max(0.3, ((b - a) / span) * 100)}%`;
}

function track(r, line, lo, hi) {
  const row = el("div", "track");
  row.dataset.recording = r.id;
  row.dataset.state = r.state;
  const label = el("div", "track-label");
  label.append(el("strong", "", r.stream), el("span", "muted", ` ${r.case_number || ""}`));
  const bar = el("div", "bar");
  if (line) {
    for (const [a, b] of line.recorded) {
      const part = el("div", "rec");
      place(part, a, b, lo, hi);
      part.title = `${clock(a)} – ${clock(b)}`;
      bar.append(part);
    }
    for (const gap of line.gaps) {
      const part = el("div", `gap ${gap.cause}${gap.filled_by ? " filled" : ""}`);
      place(part, gap.start, Math.max(gap.end, gap.start + 0.5), lo, hi);
      part.dataset.cause = gap.cause;
      const words = causeText(gap) + (gap.reason ? ` (${gap.reason})` : "");
      part.append(el("span", "gap-label", words));
      part.title = `${words}: ${clock(gap.start)} – ${clock(gap.end)}`;
      bar.append(part);
    }
  }
  bar.addEventListener("click", (event) => {  // play from the moment clicked
    const box = bar.getBoundingClientRect();
    const at = lo + ((event.clientX - box.left) / box.width) * (hi - lo);
    play([r], at);
  });
  const tools = el("div", "track-tools");
  tools.append(button("recordings.play", () => play([r], null)));
  if (r.session) {
    tools.append(button("recordings.play-session", () => playSession(r.session)));
  }
  tools.append(button("recordings.tools", () => select(r)));
  row.append(label, bar, tools);
  return row;
}

// -- playback on one clock -----------------------------------------------------------

function fragments(player) {
  return player.fragments || [];
}

/** The wall clock (UNIX ms) at the player's media time t; null before it loaded. */
function wallAt(player, t) {
  const frags = fragments(player);
  const frag = frags.find((f) => f.start <= t && t < f.start + f.duration) || frags[frags.length - 1];
  if (!frag || !frag.programDateTime) return null;
  return frag.programDateTime + (t - frag.start) * 1000;
}

/** The media time holding wall clock ms; in a gap, the next recorded moment; null after. */
function timeAt(player, wall) {
  for (const f of fragments(player)) {
    if (!f.programDateTime) continue;
    const end = f.programDateTime + f.duration * 1000;
    if (wall < f.programDateTime) return f.start;
    if (wall < end) return f.start + (wall - f.programDateTime) / 1000;
  }
  return null;
}

function stopPlayers() {
  for (const p of state.players) p.hls.destroy();
  state.players = [];
  $("players").replaceChildren();
}

function makePlayer(item, index) {
  const figure = el("figure", "cam");
  figure.dataset.recording = item.recording;
  figure.dataset.stream = item.stream;
  const video = el("video");
  video.muted = true;
  video.playsInline = true;
  video.controls = index === 0;  // the first player leads; the others follow its clock
  const wall = el("div", "wallclock", "—");
  figure.append(el("figcaption", "", item.stream), video, wall);
  const hls = new window.Hls({enableWorker: true});
  const player = {hls, video, wall, figure, recording: item.recording, fragments: []};
  hls.on(window.Hls.Events.LEVEL_LOADED, (_, data) => {
    player.fragments = data.details.fragments;
    player.loaded?.();
  });
  hls.on(window.Hls.Events.ERROR, (_, data) => {
    if (data.fatal) say("recordings.play-failed", {stream: item.stream, detail: data.details}, true);
  });
  hls.loadSource(item.playlist);
  hls.attachMedia(video);
  video.addEventListener("timeupdate", () => showClock(player));
  return player;
}

function showClock(player) {
  const wall = wallAt(player, player.video.currentTime);
  player.wall.textContent = wall === null ? "—" : when(wall / 1000);
  player.wall.dataset.wallclock = wall === null ? "" : String(wall / 1000);
}

function follow() {
  const [lead, ...others] = state.players;
  const wall = wallAt(lead, lead.video.currentTime);
  if (wall === null) return;
  for (const p of others) {
    const target = timeAt(p, wall);
    if (target === null) {
      if (!p.video.paused) p.video.pause();
      continue;
    }
    if (Math.abs(p.video.currentTime - target) > SYNC_S) p.video.currentTime = target;
    if (!lead.video.paused && p.video.paused) p.video.play().catch(() => {});
    if (lead.video.paused && !p.video.paused) p.video.pause();
  }
}

async function seekAll(wallSeconds) {
  for (const p of state.players) {
    const target = timeAt(p, wallSeconds * 1000);
    if (target !== null) p.video.currentTime = target;
  }
}

async function play(recordings, at) {
  await startPlayers(recordings.map((r) => ({
    stream: r.stream, recording: r.id, playlist: `/api/v1/recordings/${encodeURIComponent(r.id)}/index.m3u8`,
  })), at, recordings[0].case_number || recordings[0].id);
}

async function playSession(sid) {
  try {
    const session = await api(`/api/v1/sessions/${encodeURIComponent(sid)}`);
    await startPlayers(session.playback, null, `${session.case_number} · ${session.room}`);
  } catch (err) {
    sayError(err);
  }
}

async function startPlayers(items, at, label) {
  if (!window.Hls || !window.Hls.isSupported()) {
    say("recordings.no-player", {}, true);
    return;
  }
  stopPlayers();
  $("viewer").hidden = false;
  $("viewing").textContent = label;
  state.players = items.map(makePlayer);
  $("players").append(...state.players.map((p) => p.figure));
  $("players").dataset.count = String(state.players.length);
  const [lead] = state.players;
  lead.video.addEventListener("timeupdate", follow);
  lead.video.addEventListener("play", follow);
  lead.video.addEventListener("pause", follow);
  await Promise.all(state.players.map((p) => new Promise((done) => {
    p.loaded = done;
    setTimeout(done, 5000);  // a camera that does not load does not hold up the others
  })));
  const first = Math.min(...state.players.map((p) => fragments(p)[0]?.programDateTime ?? Infinity));
  const start = at !== null ? at : (Number.isFinite(first) ? first / 1000 : null);
  if (start !== null) {
    $("goto").value = localInput(start);
    await seekAll(start);
  }
  lead.video.play().catch(() => {});
  say("recordings.playing", {count: state.players.length});
  state.selected || select(state.recordings.find((r) => r.id === items[0].recording) || null);
}

// -- export and verify ---------------------------------------------------------------

/** A UNIX time as a datetime-local input writes it (the browser's zone). */
function localInput(seconds) {
  const date = new Date(seconds * 1000);
  return new Date(date.getTime() - date.getTimezoneOffset() * 60000).toISOString().slice(0, 19);
}

function inputTime(input) {
  if (!input.value) return null;
  const date = new Date(input.value);  // a datetime-local value is read in the browser's zone
  return Number.isNaN(date.getTime()) ? null : date;
}

function select(r) {
  if (!r) return;
  state.selected = r;
  $("tools").hidden = false;
  $("tool-recording").textContent = `${r.stream} · ${r.case_number || ""} · ${r.id}`;
  const line = state.timelines[r.id];
  const spans = line ? line.recorded : [];
  const lo = spans.length ? spans[0][0] : Number(r.opened_at);
  const hi = spans.length ? spans[spans.length - 1][1] : Number(r.closed_at || Date.now() / 1000);
  $("export-from").value = localInput(lo);
  $("export-to").value = localInput(Math.ceil(hi));
  $("export-progress").hidden = true;
  $("export-percent").textContent = "";
  $("export-download").hidden = true;
  $("export-status").textContent = "";
  $("verify-result").textContent = "";
  state.verified = null;
}

function progress(received, total) {
  const bar = $("export-progress");
  bar.hidden = false;
  if (total) {
    const pct = Math.min(100, Math.floor((received / total) * 100));
    bar.value = pct;
    $("export-percent").textContent = `${pct}%`;
    $("export-percent").dataset.percent = String(pct);
  } else {
    bar.removeAttribute("value");  // indeterminate: the server is still cutting the clip
  }
}

async function exportRange() {
  const r = state.selected;
  const from = inputTime($("export-from"));
  const to = inputTime($("export-to"));
  if (!r || !from || !to) {
    say("recordings.export.need-range", {}, true);
    return;
  }
  const params = new URLSearchParams({from: from.toISOString(), to: to.toISOString()});
  $("export-download").hidden = true;
  $("export").disabled = true;
  progress(0, 0);
  $("export-percent").textContent = "";
  setText($("export-status"), "recordings.export.preparing");
  try {
    const response = await fetch(`/api/v1/recordings/${encodeURIComponent(r.id)}/export.mp4?${params}`,
      {credentials: "same-origin"});
    if (!response.ok) throw new ApiError(response.status, await detailOf(response));
    const total = Number(response.headers.get("Content-Length")) || 0;
    const reader = response.body.getReader();
    const chunks = [];
    let received = 0;
    setText($("export-status"), "recordings.export.downloading");
    for (;;) {
      const {done, value} = await reader.read();
      if (done) break;
      chunks.push(value);
      received += value.length;
      progress(received, total);
    }
    progress(received, received);
    const blob = new Blob(chunks, {type: "video/mp4"});
    const link = $("export-download");
    if (link.href) URL.revokeObjectURL(link.href);
    link.href = URL.createObjectURL(blob);
    link.download = `${r.id}-${from.toISOString().slice(0, 19).replace(/:/g, "")}.mp4`;
    link.hidden = false;
    state.exported = {bytes: received, total, signature: response.headers.get("X-Courtcast-Signature")};
    setText($("export-status"), "recordings.export.done",
      {size: (received / 1e6).toFixed(2), seconds: Math.round((to - from) / 1000)});
  } catch (err) {
    $("export-progress").hidden = true;
    sayError(err);
    setText($("export-status"), "recordings.export.failed");
  } finally {
    $("export").disabled = false;
  }
}

function problemText(problem) {
  const key = `recordings.problem.${problem.why.replace(/\s+/g, "-")}`;
  const why = t(key) !== key ? t(key) : problem.why;
  return t("recordings.verify.broken", {object: problem.object, why, detail: problem.detail || ""});
}

async function verify() {
  const r = state.selected;
  if (!r) return;
  const out = $("verify-result");
  out.className = "";
  state.verified = null;
  setText(out, "recordings.verify.running");
  try {
    state.verified = await api(`/api/v1/recordings/${encodeURIComponent(r.id)}/verify`);
    showVerified();
  } catch (err) {
    out.textContent = "";
    sayError(err);
  }
}

/** The verify report in words: valid (and what it holds), or the first broken object. */
function showVerified() {
  const report = state.verified;
  const out = $("verify-result");
  if (!report) return;
  out.dataset.ok = String(report.ok);
  out.className = report.ok ? "valid" : "error";
  delete out.dataset.i18n;
  if (report.ok) {
    const gaps = report.remaining_gaps.length
      ? t("recordings.verify.gaps", {count: report.remaining_gaps.length,
        causes: report.remaining_gaps.map(causeText).join(", ")})
      : t("recordings.verify.no-gaps");
    out.textContent = t("recordings.verify.valid", {
      segments: report.segments, duration: report.duration_s.toFixed(1), gaps,
      signature: t(report.signed ? "recordings.verify.signed" : "recordings.verify.unsigned"),
    });
  } else {
    const more = report.problems.length - 1;
    out.textContent = problemText(report.problems[0]) +
      (more > 0 ? ` ${t("recordings.verify.more", {count: more})}` : "");
  }
}

// -- start ---------------------------------------------------------------------------

async function main() {
  state.me = await signedIn();
  $("main").hidden = false;
  await loadCourts();
  const given = new URLSearchParams(location.search);
  for (const name of FILTERS) {
    const field = $("search-form").elements[name];
    if (given.get(name)) field.value = given.get(name);
  }
  $("search-form").addEventListener("submit", search);
  $("play-all").addEventListener("click", () => state.players[0]?.video.play());
  $("pause-all").addEventListener("click", () => state.players[0]?.video.pause());
  $("goto-button").addEventListener("click", () => {
    const at = inputTime($("goto"));
    if (at) seekAll(at.getTime() / 1000);
  });
  $("export").addEventListener("click", exportRange);
  $("verify").addEventListener("click", verify);
  document.addEventListener("i18n:change", () => {
    drawGroups();
    showVerified();
    for (const p of state.players) showClock(p);
  });
  await search();
}

main().catch(sayError);
