// /devices (control_room/pages/devices.html): the technicians' table of devices. Sign in,
// make an enrolment token, see each device's state, sources and tracks, disable, enable
// and revoke. The table is refreshed every few seconds and updated in place: a cell that
// shows the same as before keeps its elements, so what a person (or a test) is looking at
// is not swapped for a copy every few seconds (a replaced element is detached: it has no
// computed style, and a click on it goes nowhere).

import { ready, t, setText } from "/static/js/i18n.js";
import { showSignedIn } from "/static/js/shell.js";

const REFRESH_MS = 3000;
const $ = (id) => document.getElementById(id);
const shown = new Map();  // device id -> its <tr> on screen

async function api(path, options = {}) {
  const response = await fetch(path, {credentials: "same-origin",
    headers: {"Content-Type": "application/json"}, ...options});
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.detail || response.statusText);
  return body;
}

function cell(text) {
  const td = document.createElement("td");
  td.textContent = text;
  return td;
}

/** A state badge: the class is the state as the API says it, the text in the language. */
function badge(state) {
  const span = document.createElement("span");
  span.className = `badge ${state}`;
  span.dataset.state = state;
  span.textContent = t(`devices.state.${state}`);
  return span;
}

function ago(seen) {
  if (!seen) return t("devices.seen.never");
  const s = Math.max(0, Date.now() / 1000 - seen);
  return s < 90 ? t("devices.seen.seconds-ago", {seconds: Math.round(s)})
    : new Date(seen * 1000).toLocaleString(document.documentElement.lang);
}

// a track's state in the language; a reason or codec stays as the agent says it
function trackState(state) {
  if (state === "carried") return t("devices.track.carried");
  if (state.startsWith("transcoded from ")) {
    return t("devices.track.transcoded", {codec: state.slice("transcoded from ".length)});
  }
  const reason = state.replace(/^dropped:?\s*/, "");
  if (state.startsWith("dropped")) {
    return reason ? t("devices.track.dropped-because", {reason}) : t("devices.track.dropped");
  }
  return state;
}

function tracksList(source) {
  const ul = document.createElement("ul");
  ul.className = "tracks";
  for (const track of source.tracks) {
    const li = document.createElement("li");
    li.dataset.track = track.kind;
    if (track.state.startsWith("dropped")) {
      li.className = "dropped";
      li.title = t("devices.track.dropped-title");
    }
    const known = ["video", "audio", "data"].includes(track.kind);
    const kind = known ? t(`devices.track.${track.kind}`) : track.kind;
    li.textContent = t("devices.track", {kind, codec: track.codec, state: trackState(track.state)});
    ul.append(li);
  }
  return ul;
}

function sourcesCell(device) {
  const td = document.createElement("td");
  for (const source of device.sources) {
    const div = document.createElement("div");
    div.className = "source";
    div.append(`${source.name} `, badge(source.state));
    if (source.reason) div.append(` ${source.reason}`);
    if (source.fps) div.append(` ${t("devices.fps", {fps: source.fps.toFixed(0)})}`);
    td.append(div);
    if (source.tracks && source.tracks.length) td.append(tracksList(source));
  }
  return td;
}

function actionsCell(device) {
  const td = document.createElement("td");
  const verbs = device.revoked ? [] : [device.enabled ? "disable" : "enable", "revoke"];
  for (const verb of verbs) {
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.verb = verb;
    button.textContent = t(`devices.action.${verb}`);
    button.addEventListener("click", () => {
      if (verb === "revoke" && !confirm(t("devices.confirm.revoke", {device: device.id}))) return;
      act(() => api(`/api/v1/devices/${device.id}/${verb}`, {method: "POST"}));
    });
    td.append(button);
  }
  return td;
}

function row(device) {
  const tr = document.createElement("tr");
  tr.dataset.device = device.id;
  const state = document.createElement("td");
  state.append(badge(device.state));
  const clock = device.clock_offset_s == null ? "-"
    : t("devices.seconds", {seconds: device.clock_offset_s.toFixed(3)});
  tr.append(cell(device.court), cell(device.room), cell(device.id), cell(device.model || "-"),
            state, sourcesCell(device), cell(device.agent_version || "-"),
            cell(ago(device.last_seen)), cell(clock), actionsCell(device));
  return tr;
}

/** Puts fresh's cells into tr, keeping every cell that shows the same as before. */
function update(tr, fresh) {
  [...fresh.children].forEach((td, index) => {
    const old = tr.children[index];
    if (!old) tr.append(td);
    else if (!old.isEqualNode(td)) old.replaceWith(td);
  });
}

/** Shows the devices in the API's order, each in its own row, changed cells only. */
function show(devices) {
  const body = $("rows");
  devices.forEach((device, index) => {
    const fresh = row(device);
    let tr = shown.get(device.id);
    if (tr) update(tr, fresh);
    else shown.set(device.id, (tr = fresh));
    if (body.children[index] !== tr) body.insertBefore(tr, body.children[index] || null);
  });
  const ids = new Set(devices.map((device) => device.id));
  for (const [id, tr] of shown) {
    if (!ids.has(id)) {
      tr.remove();
      shown.delete(id);
    }
  }
  $("empty").hidden = devices.length > 0;
  body.dataset.shown = String(Number(body.dataset.shown || 0) + 1);  // refreshes shown so far
}

let last = [];

async function refresh() {
  last = await api("/api/v1/devices");
  show(last);
}

async function act(work) {
  try {
    $("error").textContent = "";
    await work();
    await refresh();
  } catch (err) {
    $("error").textContent = err.message;
  }
}

async function start() {
  const me = await showSignedIn();
  $("signin").hidden = Boolean(me);
  $("main").hidden = !me;
  if (me) await act(async () => {});
}

function signIn(event) {
  event.preventDefault();
  const form = Object.fromEntries(new FormData(event.target));
  act(async () => {
    await api("/api/v1/login", {method: "POST", body: JSON.stringify(form)});
    await start();
  });
}

function makeToken(event) {
  event.preventDefault();
  const form = Object.fromEntries(new FormData(event.target));
  act(async () => {
    const made = await api("/api/v1/devices/enrol-tokens",
                           {method: "POST", body: JSON.stringify(form)});
    const until = new Date(made.expires_at * 1000).toLocaleString(document.documentElement.lang);
    $("token").hidden = false;
    setText($("token"), "devices.token.made",
            {court: made.court, room: made.room, until, token: made.token});
  });
}

await ready;
$("signin-form").addEventListener("submit", signIn);
$("token-form").addEventListener("submit", makeToken);
document.addEventListener("i18n:change", () => show(last));  // every row in the new language
start().catch((err) => { $("error").textContent = err.message; });
setInterval(() => { if (!$("main").hidden) refresh().catch(() => {}); }, REFRESH_MS);
