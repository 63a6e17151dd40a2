// /control (control_room/pages/control.html): the operator console. The court tree with
// each stream's live / offline / recording badges (kept by the events websocket, never
// polled), a split screen of tiles (static/js/tile.js) filled by click or drag, tours,
// layouts saved per operator, dispatch of the layout or one tile to a wall or another
// operator's console, and the alerts panel (read once from /api/v1/alerts, then kept by the
// websocket's alert messages; acknowledged with a note here). The console's own layout is the wall "@<me>": every change is PUT
// there, and a change someone dispatches to it is applied and acknowledged.
// window.control exposes the state to tests.

import { connectEvents } from "/static/js/events.js";
import { ready, setText, t } from "/static/js/i18n.js";
import { showSignedIn } from "/static/js/shell.js";
import { createTile } from "/static/js/tile.js";

const SIZES = {"1": 1, "2x2": 4, "3x3": 9, "4x4": 16, "5x5": 25, "1+5": 6};
const DISPATCH_CHECK_MS = 2000;  // a GET of the target while no ack has come over the socket
const DISPATCH_GIVE_UP_MS = 60000;
const $ = (id) => document.getElementById(id);

const state = window.control = {
  me: null,
  courts: [],
  streams: new Map(),  // id -> {id, court, room, class, state, recording, sub}
  layout: "2x2",
  tiles: [],  // per cell: {cell, tile, stream (main id), tour}
  selected: null,  // index of the selected tile
  armed: null,  // a stream clicked while no tile was free: the next tile clicked takes it
  maximised: null,
  tourPick: new Set(),
  wall: null,  // "@<me>"
  version: 0,  // of our own wall, as the server last numbered it
  sent: [],  // what our last PUTs of it carried (wallKey), to know their echoes
  dispatches: [],
  events: null,  // static/js/events.js: the one websocket
  showStats: false,
  alerts: new Map(),  // id -> the alert as GET /api/v1/alerts and the socket give it
  reconnecting: false,  // the socket dropped: its next hello reads the alerts again
};
const ALERT_TYPES = new Set(["motion", "person", "covered", "defocused", "moved", "frozen",
  "signal_loss"]);
const ALERTS_KEPT = 200;

async function api(path, options = {}) {
  const response = await fetch(path, {credentials: "same-origin",
    headers: {"Content-Type": "application/json"}, ...options});
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const err = new Error(body.detail || response.statusText);
    err.status = response.status;
    throw err;
  }
  return body;
}

function say(key, params) {
  setText($("status"), key, params);
}

function fail(err) {
  setText($("error"), "control.error", {reason: err.message || String(err)});
}

async function guarded(work) {
  try {
    $("error").textContent = "";
    await work();
  } catch (err) {
    fail(err);
  }
}

// ---- streams and the court tree ----

function isSub(id) {
  for (const s of state.streams.values()) if (s.sub === id) return true;
  return false;
}

/** What a tile plays for a stream: the room's sub stream, the main one when maximised. */
function source(id, maximised) {
  const stream = state.streams.get(id);
  return !maximised && stream && stream.sub ? stream.sub : id;
}

function courtName(court) {
  const en = document.documentElement.lang === "en";
  return (en && court.name_en) || court.name || court.id;
}

function badges(stream) {
  const out = [];
  const live = document.createElement("span");
  live.className = `badge ${stream.state}`;
  live.dataset.badge = "state";
  setText(live, `control.state.${stream.state}`);
  out.push(live);
  if (stream.recording) {
    const rec = document.createElement("span");
    rec.className = "badge recording";
    rec.dataset.badge = "recording";
    setText(rec, "control.state.recording");
    out.push(rec);
  }
  return out;
}

function streamItem(stream) {
  const li = document.createElement("li");
  li.className = "stream";
  li.dataset.streamId = stream.id;
  li.draggable = true;
  li.setAttribute("role", "treeitem");
  const pick = document.createElement("input");
  pick.type = "checkbox";
  pick.checked = state.tourPick.has(stream.id);
  pick.setAttribute("aria-label", t("control.tour.pick"));
  pick.addEventListener("click", (event) => event.stopPropagation());
  pick.addEventListener("change", () => {
    if (pick.checked) state.tourPick.add(stream.id);
    else state.tourPick.delete(stream.id);
    $("tour-count").textContent = String(state.tourPick.size);
  });
  const name = document.createElement("span");
  name.className = "name";
  name.textContent = stream.id;
  name.title = stream.id;
  li.append(pick, name, ...badges(stream));
  li.classList.toggle("armed", state.armed === stream.id);
  li.addEventListener("click", () => streamClicked(stream.id));
  li.addEventListener("dragstart", (event) => {
    event.dataTransfer.setData("text/plain", stream.id);
    event.dataTransfer.effectAllowed = "copy";
  });
  return li;
}

function node(className, label, children) {
  const li = document.createElement("li");
  li.className = className;
  const span = document.createElement("span");
  span.textContent = label;
  const ul = document.createElement("ul");
  ul.append(...children);
  li.append(span, ul);
  return li;
}

/** Courts (nested by parent) -> rooms -> streams; streams of a court the caller cannot see
 * as a court (none in scope) go under their court's id. */
function renderTree() {
  const visible = [...state.streams.values()].filter((s) => !isSub(s.id));
  const byCourt = new Map();
  for (const s of visible) {
    if (!byCourt.has(s.court)) byCourt.set(s.court, new Map());
    const rooms = byCourt.get(s.court);
    if (!rooms.has(s.room)) rooms.set(s.room, []);
    rooms.get(s.room).push(s);
  }
  const known = new Set(state.courts.map((c) => c.id));
  const courtNode = (court) => {
    const rooms = byCourt.get(court.id) || new Map();
    const roomNodes = [...rooms.entries()].sort().map(([room, streams]) =>
      node("room", room || "-", streams.sort((a, b) => a.id.localeCompare(b.id)).map(streamItem)));
    const children = state.courts.filter((c) => c.parent === court.id).map(courtNode);
    const li = node("court", courtName(court), [...roomNodes, ...children]);
    li.dataset.court = court.id;
    return li;
  };
  const roots = state.courts.filter((c) => !c.parent || !known.has(c.parent)).map(courtNode);
  for (const court of byCourt.keys()) {
    if (!known.has(court)) roots.push(courtNode({id: court, name: court || "-", parent: ""}));
  }
  $("tree").replaceChildren(...roots);
  $("tree-empty").hidden = visible.length > 0;
}

function streamChanged(id) {
  const stream = state.streams.get(id);
  const item = document.querySelector(`#tree [data-stream-id="${CSS.escape(id)}"]`);
  if (item && stream) item.replaceWith(streamItem(stream));
  for (const entry of state.tiles) {  // news of what a tile plays (a sub stream, maybe)
    if (entry.stream && source(entry.stream, state.maximised === entry) === id) {
      entry.tile.streamState(stream ? stream.state : "offline");
    }
  }
}

// ---- the split screen ----

function makeCell(index) {
  const cell = document.createElement("div");
  cell.className = "cell";
  const screen = document.createElement("div");
  screen.className = "screen";
  const tools = document.createElement("div");
  tools.className = "tools";
  const overlay = document.createElement("span");
  overlay.className = "overlay";
  overlay.hidden = true;
  cell.append(screen, overlay, tools);
  const entry = {cell, screen, overlay, tools, tile: null, stream: null, tour: null};
  entry.tile = createTile(screen, index);
  for (const [action, key, text] of [["max", "control.tile.maximise", "⤢"],
    ["tour-stop", "control.tour.stop", "⟳"], ["remove", "control.tile.remove", "✕"]]) {
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.action = action;
    button.textContent = text;
    button.dataset.i18nTitle = key;
    button.title = t(key);
    button.hidden = action === "tour-stop";
    button.addEventListener("click", (event) => {
      event.stopPropagation();
      tileAction(entry, action);
    });
    tools.append(button);
  }
  cell.addEventListener("click", () => tileClicked(entry));
  cell.addEventListener("dblclick", () => maximise(entry));
  cell.addEventListener("dragover", (event) => {
    event.preventDefault();
    cell.classList.add("drop");
  });
  cell.addEventListener("dragleave", () => cell.classList.remove("drop"));
  cell.addEventListener("drop", (event) => {
    event.preventDefault();
    cell.classList.remove("drop");
    const id = event.dataTransfer.getData("text/plain");
    if (id && state.streams.has(id)) assign(indexOf(entry), id);
  });
  return entry;
}

function indexOf(entry) {
  return state.tiles.indexOf(entry);
}

/** Shows `layout` with these streams (main ids) in its tiles; tiles that keep their stream
 * keep playing. */
function show(layout, streams) {
  const size = SIZES[layout];
  unmaximise();
  while (state.tiles.length > size) {
    const entry = state.tiles.pop();
    stopTour(entry);
    entry.tile.stop();
    entry.cell.remove();
  }
  while (state.tiles.length < size) {
    const entry = makeCell(state.tiles.length);
    state.tiles.push(entry);
    $("grid").append(entry.cell);
  }
  state.layout = layout;
  $("grid").dataset.layout = layout;
  for (const button of document.querySelectorAll("#layouts [data-layout]")) {
    button.setAttribute("aria-pressed", String(button.dataset.layout === layout));
  }
  state.tiles.forEach((entry, i) => {
    const id = streams[i] || null;
    if (entry.stream !== id) {
      stopTour(entry);
      put(entry, id);
    }
  });
  if (state.selected !== null && state.selected >= size) select(null);
}

/** Plays a stream (main id, or null: empty) in a tile. */
function put(entry, id) {
  entry.stream = id;
  if (id) entry.tile.play(source(id, state.maximised === entry));
  else entry.tile.stop();
}

function assign(index, id) {
  const entry = state.tiles[index];
  stopTour(entry);
  put(entry, id);
  changed();
}

function select(index) {
  state.selected = index;
  state.tiles.forEach((entry, i) => entry.cell.classList.toggle("selected", i === index));
}

function arm(id) {
  state.armed = id;
  for (const item of document.querySelectorAll("#tree .stream")) {
    item.classList.toggle("armed", item.dataset.streamId === id);
  }
}

function streamClicked(id) {
  if (state.selected !== null) {
    assign(state.selected, id);
    select(null);
    arm(null);
    return;
  }
  const free = state.tiles.findIndex((entry) => !entry.stream);
  if (free >= 0) {
    assign(free, id);
    arm(null);
  } else {
    arm(state.armed === id ? null : id);
    say("control.hint.pick-tile");
  }
}

function tileClicked(entry) {
  const index = indexOf(entry);
  if (state.armed) {
    assign(index, state.armed);
    arm(null);
    return;
  }
  select(state.selected === index ? null : index);
}

function tileAction(entry, action) {
  if (action === "max") maximise(entry);
  else if (action === "remove") assign(indexOf(entry), null);
  else if (action === "tour-stop") stopTour(entry);
}

/** Maximised: the tile fills the screen and plays the main stream; again: back to the sub. */
function maximise(entry) {
  if (state.maximised === entry) {
    unmaximise();
    return;
  }
  unmaximise();
  state.maximised = entry;
  entry.cell.classList.add("maximised");
  $("grid").classList.add("has-max");
  if (entry.stream && source(entry.stream, true) !== source(entry.stream, false)) {
    entry.tile.play(source(entry.stream, true));
  }
}

function unmaximise() {
  const entry = state.maximised;
  if (!entry) return;
  state.maximised = null;
  entry.cell.classList.remove("maximised");
  $("grid").classList.remove("has-max");
  if (entry.stream && source(entry.stream, true) !== source(entry.stream, false)) {
    entry.tile.play(source(entry.stream, false));
  }
}

// ---- tours ----

function startTour() {
  const streams = [...state.tourPick];
  const period = Math.max(2, Number($("tour-period").value) || 10);
  if (streams.length < 2) {
    say("control.tour.need-two");
    return;
  }
  const index = state.selected !== null ? state.selected : 0;
  const entry = state.tiles[index];
  stopTour(entry);
  put(entry, streams[0]);
  changed();
  entry.tour = {streams, period, at: 0,
    timer: setInterval(() => tourStep(entry), period * 1000)};
  entry.tools.querySelector("[data-action=tour-stop]").hidden = false;
  entry.cell.dataset.tour = String(period);
  say("control.tour.running", {count: streams.length, period});
}

function tourStep(entry) {
  const tour = entry.tour;
  tour.at = (tour.at + 1) % tour.streams.length;
  put(entry, tour.streams[tour.at]);
  changed();
}

function stopTour(entry) {
  if (!entry.tour) return;
  clearInterval(entry.tour.timer);
  entry.tour = null;
  entry.tools.querySelector("[data-action=tour-stop]").hidden = true;
  delete entry.cell.dataset.tour;
}

// ---- stats overlay ----

function formatStats(stats) {
  if (!stats) return t("control.stats.none");
  const lines = [];
  if (stats.bitrate !== undefined) lines.push(t("control.stats.bitrate", {kbps: Math.round(stats.bitrate)}));
  if (stats.fps !== undefined) lines.push(t("control.stats.fps", {fps: Math.round(stats.fps)}));
  if (stats.width) lines.push(`${stats.width}×${stats.height}`);
  if (stats.latency !== undefined) lines.push(t("control.stats.latency", {ms: Math.round(stats.latency)}));
  return lines.join("\n");
}

/** Receive-side latency in ms, as far as the browser can tell: the jitter buffer's mean
 * delay plus half the round trip; undefined when not measurable (yet). */
async function latency(pc) {
  if (!pc) return undefined;
  let buffer, rtt;
  (await pc.getStats()).forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "video" && s.jitterBufferEmittedCount) {
      buffer = s.jitterBufferDelay / s.jitterBufferEmittedCount;
    }
    if (s.type === "candidate-pair" && s.nominated && s.currentRoundTripTime !== undefined) {
      rtt = s.currentRoundTripTime;
    }
  });
  return buffer === undefined ? undefined : 1000 * (buffer + (rtt || 0) / 2);
}

async function refreshStats() {
  for (const entry of state.tiles) {
    entry.overlay.hidden = !state.showStats || !entry.stream;
    if (entry.overlay.hidden) continue;
    try {
      const stats = await entry.tile.stats();
      if (stats && stats.latency === undefined) stats.latency = await latency(entry.tile.pc);
      entry.overlay.textContent = formatStats(stats);
    } catch (err) {
      entry.overlay.textContent = t("control.stats.none");
    }
  }
}

function toggleStats() {
  state.showStats = !state.showStats;
  $("stats").setAttribute("aria-pressed", String(state.showStats));
  refreshStats();
}

// ---- our own wall (@me), saved layouts ----

function current() {
  return {layout: state.layout, tiles: state.tiles.map((entry) => entry.stream)};
}

/** A change made here: our wall @me follows, so another operator can see and dispatch to it. */
function changed() {
  if (!state.wall) return;
  const body = current();
  state.sent.push(wallKey(body));
  if (state.sent.length > 50) state.sent.shift();
  api(`/api/v1/walls/${encodeURIComponent(state.wall)}`, {method: "PUT", body: JSON.stringify(body)})
    .then((answer) => { state.version = Math.max(state.version, answer.version || 0); })
    .catch(fail);
}

function wallKey(wall) {
  return `${wall.layout} ${JSON.stringify(wall.tiles)}`;
}

function same(a, b) {
  return wallKey(a) === wallKey(b);
}

/** Is this push of our wall the echo of one of our own PUTs? Its version may come before
 * the PUT's answer, while newer changes of ours are on their way: applying it would undo
 * them. A change by someone else (a dispatch) is not an echo. */
function echo(wall) {
  return wall.updated_by === state.me.name && state.sent.includes(wallKey(wall));
}

/** A wall pushed over the socket: ours (someone dispatched to us, or our own echo), or a
 * target of a dispatch whose acknowledgement we wait for. */
function wallPushed(wall) {
  if (wall.name === state.wall && SIZES[wall.layout] && wall.version > state.version) {
    state.version = wall.version;
    const pushed = {layout: wall.layout, tiles: wall.tiles || [], updated_by: wall.updated_by};
    if (!echo(pushed) && !same(current(), pushed)) {
      show(pushed.layout, pushed.tiles);
      say("control.dispatch.received");
    }
    state.events.ack(state.wall, wall.version);
  } else if (wall.name === state.wall && wall.version === state.version) {
    state.events.ack(state.wall, wall.version);  // our own change, as the server has it
  }
  if (wall.acked_version !== undefined) acked(wall.name, wall.acked_version);
}

async function loadSaved(selectName) {
  const saved = await api("/api/v1/layouts");
  const items = Array.isArray(saved) ? saved : saved.layouts || [];
  state.saved = items;
  const options = items.map((item) => {
    const option = document.createElement("option");
    option.value = option.textContent = typeof item === "string" ? item : item.name;
    return option;
  });
  $("saved").replaceChildren(...options);
  if (selectName) $("saved").value = selectName;
}

async function saveLayout(event) {
  event.preventDefault();
  const name = $("save-name").value.trim();
  if (!name) return;
  await guarded(async () => {
    await api(`/api/v1/layouts/${encodeURIComponent(name)}`,
              {method: "PUT", body: JSON.stringify(current())});
    await loadSaved(name);
    say("control.saved.done", {name});
  });
}

async function loadLayout() {
  const name = $("saved").value;
  if (!name) return;
  await guarded(async () => {
    await loadSaved(name);
    const item = state.saved.find((x) => (typeof x === "string" ? x : x.name) === name);
    if (!item || typeof item === "string") throw new Error(name);
    show(item.layout, item.tiles || []);
    changed();
    say("control.saved.loaded", {name});
  });
}

async function deleteLayout() {
  const name = $("saved").value;
  if (!name) return;
  await guarded(async () => {
    await api(`/api/v1/layouts/${encodeURIComponent(name)}`, {method: "DELETE"});
    await loadSaved();
  });
}

// ---- dispatch ----

function dispatchRow(item) {
  const li = document.createElement("li");
  li.dataset.dispatch = item.target;
  li.dataset.version = String(item.version);
  li.dataset.state = item.state;
  const name = document.createElement("span");
  name.textContent = `${item.target} v${item.version}`;
  const status = document.createElement("span");
  status.className = `badge ${item.state === "applied" ? "live" : "connecting"}`;
  setText(status, `control.dispatch.${item.state}`);
  li.append(name, status);
  return li;
}

function renderDispatches() {
  $("dispatches").replaceChildren(...state.dispatches.map(dispatchRow));
}

function acked(target, ackedVersion) {
  let moved = false;
  for (const item of state.dispatches) {
    if (item.target === target && item.state === "pending" && ackedVersion >= item.version) {
      item.state = "applied";
      clearInterval(item.check);
      moved = true;
    }
  }
  if (moved) renderDispatches();
}

/** What a dispatch sends: the whole layout, or the selected tile into the target's tile of
 * the same place (a target with no wall yet gets our layout around it; one with fewer
 * tiles shows it alone). */
async function payload(target, what) {
  if (what === "layout") return current();
  const index = state.selected !== null ? state.selected : 0;
  const stream = state.tiles[index] ? state.tiles[index].stream : null;
  let wall = {layout: state.layout, tiles: []};
  try {
    wall = await api(`/api/v1/walls/${encodeURIComponent(target)}`);
  } catch (err) {
    if (err.status !== 404) throw err;
  }
  if (!SIZES[wall.layout]) wall = {layout: state.layout, tiles: []};  // layout null: none yet
  const tiles = [...(wall.tiles || [])];
  if (index >= (SIZES[wall.layout] || 0)) return {layout: "1", tiles: [stream]};
  while (tiles.length < SIZES[wall.layout]) tiles.push(null);
  tiles[index] = stream;
  return {layout: wall.layout, tiles};
}

async function dispatch(event) {
  event.preventDefault();
  const target = $("dispatch-target").value.trim();
  const what = new FormData(event.target).get("what");
  if (!target) return;
  await guarded(async () => {
    const body = await payload(target, what);
    const answer = await api(`/api/v1/walls/${encodeURIComponent(target)}`,
                             {method: "PUT", body: JSON.stringify(body)});
    const item = {target, version: answer.version, state: "pending", started: Date.now()};
    state.dispatches = [item, ...state.dispatches.filter((x) => x.target !== target)].slice(0, 10);
    state.events.subscribe([target]);
    // the socket tells us when the target acknowledges; a GET now and then covers a target
    // whose acknowledgement is not pushed, and stops once applied or after a minute
    item.check = setInterval(() => checkDispatch(item), DISPATCH_CHECK_MS);
    renderDispatches();
    if (answer.acked_version !== undefined) acked(target, answer.acked_version);
  });
}

async function checkDispatch(item) {
  if (item.state !== "pending" || Date.now() - item.started > DISPATCH_GIVE_UP_MS) {
    clearInterval(item.check);
    return;
  }
  try {
    const wall = await api(`/api/v1/walls/${encodeURIComponent(item.target)}`);
    acked(item.target, wall.acked_version || 0);
  } catch (err) { /* the next check, or the socket, will tell */ }
}

// ---- alerts ----

/** Folds what we learn of an alert into what we hold: a field the news leaves empty keeps
 * its value (a live start knows no ack yet; a GET may answer after the socket's ack). */
function alertNews(item) {
  if (!item || !item.id) return;
  const held = state.alerts.get(item.id) || {};
  const merged = {...held};
  for (const [key, value] of Object.entries(item)) {
    if (value !== null && value !== undefined) merged[key] = value;
  }
  state.alerts.set(item.id, merged);
}

function newestFirst() {
  const items = [...state.alerts.values()].sort((a, b) => (b.start || 0) - (a.start || 0));
  for (const old of items.slice(ALERTS_KEPT)) state.alerts.delete(old.id);
  return items.slice(0, ALERTS_KEPT);
}

async function loadAlerts() {
  const answer = await api("/api/v1/alerts");
  for (const item of answer.items || []) alertNews(item);
  renderAlerts();
}

function alertPushed(message) {
  alertNews(message.alert);
  renderAlerts();
}

function typeText(element, type) {
  if (ALERT_TYPES.has(type)) setText(element, `control.alert.type.${type}`);
  else setText(element, "control.alert.type.other", {type: type || "?"});
}

function when(seconds) {
  if (!seconds) return "";
  return new Date(seconds * 1000).toLocaleString(document.documentElement.lang,
    {dateStyle: "short", timeStyle: "medium"});
}

function part(tag, className, text) {
  const element = document.createElement(tag);
  element.className = className;
  if (text !== undefined) element.textContent = text;
  return element;
}

function ackPart(alert) {
  if (alert.ack) {
    const done = part("p", "acked");
    setText(done, alert.ack.note ? "control.alert.acked-note" : "control.alert.acked",
            {who: alert.ack.who || "", note: alert.ack.note || ""});
    return done;
  }
  const form = part("form", "ack-form");
  const note = part("input", "note");
  note.name = "note";
  note.maxLength = 2000;
  note.dataset.i18nPlaceholder = "control.alert.note";
  note.placeholder = t("control.alert.note");
  const button = part("button");
  button.type = "submit";
  setText(button, "control.alert.ack");
  form.append(note, button);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    button.disabled = true;
    guarded(async () => {
      try {
        alertNews(await api(`/api/v1/alerts/${encodeURIComponent(alert.id)}/ack`,
                            {method: "POST", body: JSON.stringify({note: note.value})}));
      } finally {
        button.disabled = false;
      }
      renderAlerts();
    });
  });
  return form;
}

function alertRow(alert) {
  const li = part("li", "alert");
  li.dataset.alertId = alert.id;
  li.dataset.type = alert.type || "";
  li.dataset.state = alert.end ? "ended" : "open";
  li.dataset.acked = String(Boolean(alert.ack));
  if (alert.snapshot) {
    const img = part("img", "snapshot");
    img.src = alert.snapshot;
    img.loading = "lazy";
    img.dataset.i18nAlt = "control.alert.snapshot";
    img.alt = t("control.alert.snapshot");
    li.append(img);
  }
  const head = part("div", "head");
  const camera = part("button", "camera", alert.stream || "-");
  camera.type = "button";
  camera.dataset.i18nTitle = "control.alert.to-tile";
  camera.title = t("control.alert.to-tile");
  camera.disabled = !alert.stream;
  camera.addEventListener("click", () => streamClicked(alert.stream));
  const type = part("span", "type");
  typeText(type, alert.type);
  const phase = part("span", `badge ${alert.end ? "offline" : "live"}`);
  phase.dataset.badge = "phase";
  setText(phase, alert.end ? "control.alert.ended" : "control.alert.open");
  head.append(camera, type, phase);
  const time = part("time", "start", when(alert.start));
  if (alert.start) time.dateTime = new Date(alert.start * 1000).toISOString();
  li.append(head, time);
  if (alert.message && !ALERT_TYPES.has(alert.type)) li.append(part("p", "message", alert.message));
  if (alert.clip) {
    const clip = part("a", "clip");
    clip.href = alert.clip;
    clip.target = "_blank";
    clip.rel = "noopener";
    setText(clip, "control.alert.clip");
    li.append(clip);
  }
  li.append(ackPart(alert));
  return li;
}

/** The whole list again: a note being typed, and the focus in it, stay as they were. */
function renderAlerts() {
  const typed = new Map();
  for (const input of document.querySelectorAll("#alerts .note")) {
    typed.set(input.closest("[data-alert-id]").dataset.alertId, input.value);
  }
  const focused = document.activeElement && document.activeElement.closest("#alerts .alert");
  const focusedId = focused ? focused.dataset.alertId : null;
  const items = newestFirst();
  $("alerts").replaceChildren(...items.map(alertRow));
  for (const input of document.querySelectorAll("#alerts .note")) {
    const id = input.closest("[data-alert-id]").dataset.alertId;
    if (typed.has(id)) input.value = typed.get(id);
    if (id === focusedId) input.focus();
  }
  const open = items.filter((alert) => !alert.ack).length;
  $("alerts-count").textContent = String(open);
  $("alerts-count").dataset.count = String(open);
  $("alerts-empty").hidden = items.length > 0;
}

// ---- the events websocket ----

function linkState(up) {
  $("link").className = `badge ${up ? "live" : "offline"}`;
  setText($("link"), up ? "control.link.up" : "control.link.down");
}

function hello(message) {
  linkState(true);
  if (state.reconnecting) {  // alerts raised while the socket was down
    state.reconnecting = false;
    loadAlerts().catch(fail);
  }
  state.streams = new Map((message.streams || []).map((s) => [s.id, {...s}]));
  renderTree();
  // news for tiles that need it: one still connecting is not made to start again
  for (const entry of state.tiles) {
    if (!entry.stream) continue;
    const played = state.streams.get(source(entry.stream, state.maximised === entry));
    if (played && (played.state === "offline" || entry.screen.dataset.state === "offline")) {
      entry.tile.streamState(played.state);
    }
  }
}

function streamPushed(message) {
  const stream = state.streams.get(message.id);
  if (!stream) return;
  stream.state = message.state;
  if (message.recording !== undefined) stream.recording = message.recording;
  streamChanged(message.id);
}

/** The server will not give this caller the console (4403: a role without the right to
 * see walls, e.g. a technician; 4401: signed out meanwhile): say so instead of a dead page. */
function refused(code) {
  linkState(false);
  state.events = null;  // it does not reconnect by itself: a new sign-in connects again
  $("console").hidden = true;
  $("signin").hidden = false;
  setText($("signin-prompt"), code === 4403 ? "control.signin.no-right" : "control.signin.prompt",
          {name: state.me ? state.me.name : ""});
}

function connect() {
  state.events = connectEvents({
    hello,
    stream: streamPushed,
    wall: wallPushed,
    alert: alertPushed,
    refused,
    lost: () => {
      linkState(false);
      state.reconnecting = true;
    },
  });
  state.events.subscribe([state.wall]);
}

/** The streams before the socket's hello (and if it never comes): read once, not polled. */
async function loadStreams() {
  const streams = await api("/api/v1/streams");
  const ids = new Set(streams.map((s) => s.id));
  for (const s of streams) {
    if (state.streams.has(s.id)) continue;
    state.streams.set(s.id, {id: s.id, court: s.court, room: s.room, class: s.stream_class,
      state: s.stats ? "live" : "offline", recording: false,
      sub: ids.has(`${s.id}-sub`) ? `${s.id}-sub` : null});
  }
}

// ---- start ----

async function start() {
  const me = await showSignedIn();
  $("signin").hidden = Boolean(me);
  $("console").hidden = !me;
  if (!me) return;
  state.me = me;
  state.wall = `@${me.name}`;
  // the grid first, then the tree: a stream clicked at once has a tile to go to
  const [courts, mine] = await Promise.all([
    api("/api/v1/courts").catch(() => []),
    api(`/api/v1/walls/${encodeURIComponent(state.wall)}`).catch(() => null),  // none yet
    loadStreams(),
  ]);
  if (mine && SIZES[mine.layout]) {
    state.version = mine.version || 0;
    show(mine.layout, mine.tiles || []);
  } else {
    show("2x2", []);
  }
  state.courts = courts;
  renderTree();
  loadSaved().catch(() => {});
  loadAlerts().catch(fail);
  if (!state.events) connect();
}

function signIn(event) {
  event.preventDefault();
  const form = Object.fromEntries(new FormData(event.target));
  guarded(async () => {
    await api("/api/v1/login", {method: "POST", body: JSON.stringify(form)});
    await start();
  });
}

$("signin-form").addEventListener("submit", signIn);
for (const button of document.querySelectorAll("#layouts [data-layout]")) {
  button.addEventListener("click", () => {
    show(button.dataset.layout, current().tiles);
    changed();
  });
}
$("stats").addEventListener("click", toggleStats);
$("clear").addEventListener("click", () => {
  show(state.layout, []);
  changed();
});
$("tour-start").addEventListener("click", startTour);
$("save-form").addEventListener("submit", saveLayout);
$("load").addEventListener("click", loadLayout);
$("delete").addEventListener("click", deleteLayout);
$("dispatch-form").addEventListener("submit", dispatch);
document.addEventListener("i18n:change", () => {
  renderTree();
  renderAlerts();  // times in the language's format
});
setInterval(() => { if (state.showStats) refreshStats(); }, 1000);
await ready;
start().catch(fail);
