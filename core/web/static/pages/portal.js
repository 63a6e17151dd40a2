// / (control_room/pages/portal.html): the public portal. Lists the trials of
// GET /api/v1/public/sessions (live, upcoming, finished), filtered by court and date in the
// browser; the filter is kept in the address (?court=&date=) so a link shares it.
// window.portal exposes the state to tests.

import { ready, setText, t } from "/static/js/i18n.js";

const REFRESH_MS = 10_000;
const SECTIONS = ["live", "upcoming", "finished"];
const $ = (id) => document.getElementById(id);
const state = window.portal = {data: null, loaded: false, error: null};

/** A time in the page's language, in the viewer's time zone. */
function when(iso) {
  if (!iso) return "";
  return new Intl.DateTimeFormat(document.documentElement.lang,
    {dateStyle: "medium", timeStyle: "short"}).format(new Date(iso));
}

/** The local calendar day (YYYY-MM-DD) of an ISO time, as an <input type=date> gives it. */
function day(iso) {
  const d = new Date(iso);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
}

function field(className, key, params) {
  const element = document.createElement("span");
  element.className = className;
  setText(element, key, params);
  return element;
}

function text(tag, className, value) {
  const element = document.createElement(tag);
  element.className = className;
  element.textContent = value || "";
  return element;
}

function badge(section, item) {
  if (section === "live") return item.paused ? ["paused", "portal.badge.paused"] : ["live", "portal.badge.live"];
  if (section === "upcoming") return ["upcoming", "portal.badge.upcoming"];
  return item.hls ? ["replay", "portal.badge.replay"] : ["finished", "portal.badge.finished"];
}

function card(section, item) {
  const li = document.createElement("li");
  li.className = "card";
  li.dataset.session = item.id;
  li.dataset.status = section;
  const link = document.createElement(section === "upcoming" ? "div" : "a");
  if (section !== "upcoming") link.href = `/watch/${encodeURIComponent(item.id)}`;
  const [kind, key] = badge(section, item);
  const top = document.createElement("p");
  top.className = "card-top";
  top.append(field(`badge ${kind}`, key));
  if (section === "live" && typeof item.viewers === "number") {
    top.append(field("viewers muted", "portal.viewers", {count: item.viewers}));
  }
  const time = section === "upcoming" ? field("time", "portal.starts", {time: when(item.start)})
    : section === "live" ? field("time", "portal.started", {time: when(item.start)})
      : field("time", "portal.ran", {start: when(item.start), end: when(item.end)});
  link.append(
    top,
    text("h3", "case-number", item.case),
    text("p", "case-title", item.title),
    text("p", "parties", item.parties),
    text("p", "where muted", [item.court, item.room].filter(Boolean).join(" · ")),
    time,
  );
  if (section === "finished" && !item.hls) link.append(field("muted", "portal.no-replay"));
  li.append(link);
  return li;
}

function filters() {
  return {court: $("court").value, date: $("date").value};
}

function matches(item, {court, date}) {
  return (!court || item.court === court) && (!date || day(item.start) === date);
}

function fillCourts(data) {
  const select = $("court");
  const chosen = select.value || new URLSearchParams(location.search).get("court") || "";
  const courts = [...new Set(SECTIONS.flatMap((s) => data[s].map((i) => i.court)).filter(Boolean))].sort();
  if (chosen && !courts.includes(chosen)) courts.push(chosen);
  while (select.options.length > 1) select.remove(1);
  for (const court of courts) select.add(new Option(court, court));
  select.value = chosen;
}

function show() {
  const data = state.data;
  if (!data) return;
  const wanted = filters();
  let shown = 0, total = 0;
  for (const section of SECTIONS) {
    const root = document.querySelector(`[data-section="${section}"]`);
    const items = data[section].filter((item) => matches(item, wanted));
    root.querySelector("[data-list]").replaceChildren(...items.map((item) => card(section, item)));
    root.querySelector("[data-empty]").hidden = items.length > 0;
    shown += items.length;
    total += data[section].length;
  }
  if (state.error) return;
  if (wanted.court || wanted.date) setText($("status"), "portal.filtered", {shown, total});
  else { delete $("status").dataset.i18n; $("status").textContent = ""; }
}

function keepInAddress() {
  const {court, date} = filters();
  const query = new URLSearchParams();
  if (court) query.set("court", court);
  if (date) query.set("date", date);
  history.replaceState(null, "", query.size ? `?${query}` : location.pathname);
}

async function refresh() {
  try {
    const response = await fetch("/api/v1/public/sessions", {cache: "no-cache"});
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    state.data = await response.json();
    state.error = null;
    $("status").classList.remove("error");
    fillCourts(state.data);
  } catch (err) {
    state.error = err.message;
    setText($("status"), "portal.error", {reason: err.message});
    $("status").classList.add("error");
  }
  show();
  state.loaded = true;
}

await ready;
$("date").value = new URLSearchParams(location.search).get("date") || "";
for (const id of ["court", "date"]) {
  $(id).addEventListener("change", () => { keepInAddress(); show(); });
}
$("clear").addEventListener("click", () => {
  $("court").value = "";
  $("date").value = "";
  keepInAddress();
  show();
});
document.addEventListener("i18n:change", show);  // dates in the new language
await refresh();
setInterval(refresh, REFRESH_MS);
