// /sessions (recorder/pages/sessions.html): a clerk opens a trial session in a courtroom of
// their courts, recesses (with a reason), resumes and closes it, and cuts or resumes the
// public broadcast of a public one. Every row is tr[data-session][data-state];
// window.sessionsPage exposes the loaded state to tests.

import { $, api, say, sayError, signedIn, t, when } from "/static/pages/clerks.js";
import { setText } from "/static/js/i18n.js";

const state = window.sessionsPage = {me: null, rooms: [], sessions: []};

function cell(row, text, key) {
  const td = document.createElement("td");
  if (key) setText(td, key); else td.textContent = text;
  row.append(td);
  return td;
}

function button(key, action) {
  const b = document.createElement("button");
  b.type = "button";
  setText(b, key);
  b.addEventListener("click", action);
  return b;
}

async function act(session, path, body, doneKey) {
  try {
    await api(`/api/v1/sessions/${encodeURIComponent(session.id)}/${path}`,
      body ? {json: body} : {method: "POST"});
    say(doneKey, {case: session.case_number});
    await refresh();
  } catch (err) {
    sayError(err);
  }
}

function actions(session) {
  const td = document.createElement("td");
  td.className = "actions";
  if (session.state === "open") {
    const reason = document.createElement("input");
    reason.className = "reason";
    reason.dataset.i18nPlaceholder = "sessions.reason";
    reason.dataset.i18nAriaLabel = "sessions.reason";
    reason.placeholder = t("sessions.reason");
    reason.setAttribute("aria-label", t("sessions.reason"));
    td.append(reason, button("sessions.action.recess", () => {
      if (!reason.value.trim()) {
        say("sessions.need-reason", {}, true);
        reason.focus();
        return;
      }
      act(session, "recess", {reason: reason.value.trim()}, "sessions.done.recess");
    }));
  }
  if (session.state === "recess") {
    td.append(button("sessions.action.resume", () => act(session, "resume", null, "sessions.done.resume")));
  }
  if (session.public && (session.state === "open" || session.state === "recess")) {
    td.append(session.cut
      ? button("sessions.action.uncut", () => act(session, "resume", null, "sessions.done.uncut"))
      : button("sessions.action.cut", () => act(session, "cut", null, "sessions.done.cut")));
  }
  if (["open", "recess", "scheduled"].includes(session.state)) {
    td.append(button("sessions.action.close", () => {
      if (confirm(t("sessions.confirm-close", {case: session.case_number}))) {
        act(session, "close", null, "sessions.done.close");
      }
    }));
  }
  if (session.state !== "scheduled") {
    const link = document.createElement("a");
    link.href = `/recordings?session=${encodeURIComponent(session.id)}`;
    setText(link, "sessions.action.recordings");
    td.append(link);
  }
  return td;
}

function row(session) {
  const tr = document.createElement("tr");
  tr.dataset.session = session.id;
  tr.dataset.state = session.state;
  const badge = document.createElement("span");
  badge.className = `badge ${session.state}`;
  setText(badge, `sessions.state.${session.state}`);
  const first = cell(tr, "");
  first.append(badge);
  if (session.cut) {
    const cut = document.createElement("span");
    cut.className = "badge cut";
    setText(cut, "sessions.cut");
    first.append(" ", cut);
  }
  if (session.state === "recess" && session.reason) {
    const why = document.createElement("div");
    why.className = "muted";
    why.textContent = session.reason;
    first.append(why);
  }
  cell(tr, session.court);
  cell(tr, session.room);
  cell(tr, session.case_number);
  cell(tr, session.title);
  cell(tr, session.parties || "");
  cell(tr, "", session.public ? "clerks.yes" : "clerks.no");
  cell(tr, "", null).textContent = `${Number(session.delay_s)} s`;
  cell(tr, when(session.opened_at));
  cell(tr, when(session.closed_at));
  tr.append(actions(session));
  return tr;
}

function showRooms() {
  const select = $("room");
  const chosen = select.value;
  select.replaceChildren(...state.rooms.map((r) => {
    const option = document.createElement("option");
    option.value = r.room;
    option.textContent = r.court ? `${r.court} · ${r.room}` : r.room;
    if (r.session) option.textContent += ` (${t("sessions.busy")})`;
    return option;
  }));
  if (chosen) select.value = chosen;
  $("no-rooms").hidden = state.rooms.length > 0;
}

async function refresh() {
  const filter = $("filter").value;
  const query = filter ? `?state=${encodeURIComponent(filter)}` : "";
  try {
    const [sessions, rooms] = await Promise.all([
      api(`/api/v1/sessions${query}`),
      api("/api/v1/sessions/rooms").catch(() => ({rooms: []})),  // read-only roles: none
    ]);
    state.sessions = sessions.sessions;
    state.rooms = rooms.rooms;
  } catch (err) {
    sayError(err);
    return;
  }
  $("rows").replaceChildren(...state.sessions.map(row));
  $("empty").hidden = state.sessions.length > 0;
  showRooms();
}

async function openSession(event) {
  event.preventDefault();
  const form = new FormData(event.target);
  const body = {
    room: form.get("room"),
    case_number: form.get("case_number").trim(),
    title: form.get("title").trim(),
    parties: form.get("parties").trim(),
    public: form.get("public") === "on",
    delay: Number(form.get("delay") || 0),
  };
  if (!body.room) {
    say("sessions.need-room", {}, true);
    return;
  }
  try {
    const opened = await api("/api/v1/sessions", {json: body});
    say("sessions.done.open", {case: opened.case_number, room: opened.room});
    event.target.reset();
    await refresh();
  } catch (err) {
    sayError(err);
  }
}

async function main() {
  state.me = await signedIn();
  $("main").hidden = false;
  $("open-form").addEventListener("submit", openSession);
  $("refresh").addEventListener("click", refresh);
  $("filter").addEventListener("change", refresh);
  document.addEventListener("i18n:change", showRooms);
  await refresh();
}

main().catch(sayError);
