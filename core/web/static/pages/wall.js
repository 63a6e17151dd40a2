// /wall/{name} (control_room/pages/wall.html): the wall full screen. It follows the wall over
// /api/v1/events, applies each version it is sent (layout and tiles) and acknowledges it, so
// the operator who dispatched sees it arrive. A tile plays the room's sub stream when it has
// one (`<id>-sub`). window.wall exposes the state to tests.

import { ready, setText } from "/static/js/i18n.js";
import { showSignedIn } from "/static/js/shell.js";
import { createTile } from "/static/js/tile.js";
import { connectEvents } from "/static/js/events.js";

const LAYOUTS = {"1": 1, "2x2": 4, "3x3": 9, "4x4": 16, "5x5": 25, "1+5": 6};
const name = decodeURIComponent(location.pathname.split("/").filter(Boolean).pop());
const $ = (id) => document.getElementById(id);
const state = window.wall = {name, layout: null, version: 0, tiles: [], wallTiles: [],
  streams: {}};

function say(key, params, error) {
  setText($("status"), key, params);
  $("status").classList.toggle("error", Boolean(error));
}

function build(layout) {
  for (const tile of state.tiles) tile.destroy();
  const grid = $("wall");
  grid.replaceChildren();
  grid.dataset.layout = layout || "";
  state.layout = layout;
  state.tiles = [];
  for (let i = 0; i < (LAYOUTS[layout] || 0); i++) {
    const element = document.createElement("div");
    grid.appendChild(element);
    state.tiles.push(createTile(element, i));
  }
}

function apply(wall) {
  if (wall.name !== name) return;
  if (!wall.layout) {
    build(null);
    say("wall.status.no-wall", {name});
    return;
  }
  if (wall.layout !== state.layout) build(wall.layout);
  state.wallTiles = wall.tiles;
  playTiles();
  state.version = wall.version;
  events.ack(name, wall.version);
  say("wall.status.applied", {version: wall.version});
}

/** What a tile plays for a stream: the room's sub stream when it has one, as the console's
 * tiles do (a wall is small tiles; main streams would fill a thin WAN link). */
function source(streamId) {
  const known = streamId && state.streams[streamId];
  return known && known.sub ? known.sub : streamId;
}

function playTiles() {
  state.wallTiles.forEach((streamId, i) => {
    const tile = state.tiles[i];
    if (!tile) return;
    const playing = source(streamId);
    tile.play(playing);
    const known = playing && state.streams[playing];
    if (known && known.state === "offline") tile.streamState("offline");
  });
}

function streamNews(id, news) {
  state.streams[id] = {...state.streams[id], ...news};
  for (const tile of state.tiles) {
    if (tile.streamId === id) tile.streamState(news.state);
  }
}

function signInForm() {
  $("signin").hidden = false;
  $("wall").hidden = true;
  $("signin-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = Object.fromEntries(new FormData(event.target));
    const answer = await fetch("/api/v1/login", {method: "POST", credentials: "same-origin",
      headers: {"Content-Type": "application/json"}, body: JSON.stringify(form)});
    if (answer.ok) { location.reload(); return; }
    const body = await answer.json().catch(() => ({detail: answer.statusText}));
    setText($("signin-error"), "wall.signin.failed", {reason: body.detail});
  });
}

let events = null;

async function start() {
  await ready;
  $("name").textContent = name;
  const me = await showSignedIn();
  if (!me) {
    signInForm();
    setText($("status"), "wall.signin.prompt");
    return;
  }
  events = connectEvents({
    hello(message) {
      for (const stream of message.streams) streamNews(stream.id, stream);
      playTiles();  // a wall applied before the streams were known: their sub streams now
    },
    stream(message) { streamNews(message.id, message); },
    wall: apply,
    refused() { say("wall.status.refused", null, true); },
    lost() { say("wall.status.lost", null, true); },
  });
  events.subscribe([name]);
}

start();
