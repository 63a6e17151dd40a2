// /arraignment/{room} (media_server/webrtc/arraignment.html): a seat joins its room with a
// one-time code, sends its camera over WHIP and plays the other seats over WHEP.
// window.arraignment exposes the state to tests.

import { ready, setText } from "/static/js/i18n.js";

const roomId = decodeURIComponent(location.pathname.split("/").filter(Boolean).pop());
const $ = (id) => document.getElementById(id);
const state = window.arraignment = {seat: null, media: null, publisher: null, viewer: null,
  publishLocation: null, playLocation: null, playing: false, left: false, extras: []};

function say(key, params, error) {
  setText($("status"), key, params);
  $("status").classList.toggle("error", Boolean(error));
}

// a label chosen for the room (data, shown as written); null: the catalogue's word again
function caption(element, label, key) {
  if (label === null) {
    setText(element, key);
  } else {
    delete element.dataset.i18n;
    element.textContent = label;
  }
}

async function preview() {
  try {
    state.media = await navigator.mediaDevices.getUserMedia(
      {video: {width: 1280, height: 720}, audio: true});
    $("local").srcObject = state.media;
    say("arraignment.status.ready");
  } catch (err) {
    say("arraignment.status.no-camera", {reason: err.message}, true);
  }
}

async function gathered(pc) {  // non-trickle: the offer carries every candidate
  if (pc.iceGatheringState === "complete") return;
  await new Promise((done) => {
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") done();
    });
    setTimeout(done, 3000);
  });
}

async function signal(url, pc) {
  await pc.setLocalDescription(await pc.createOffer());
  await gathered(pc);
  const res = await fetch(url, {method: "POST", body: pc.localDescription.sdp, headers: {
    "Content-Type": "application/sdp", "Authorization": "Bearer " + state.seat.token}});
  if (res.status !== 201) {
    let reason = res.statusText;
    try { reason = (await res.json()).detail; } catch (e) { /* not JSON */ }
    const err = new Error(reason);
    err.status = res.status;
    throw err;
  }
  await pc.setRemoteDescription({type: "answer", sdp: await res.text()});
  return new URL(res.headers.get("Location"), location.href).href;
}

async function publish() {
  const pc = state.publisher = new RTCPeerConnection({iceServers: []});
  for (const track of state.media.getTracks()) {
    const t = pc.addTransceiver(track, {direction: "sendonly"});
    if (track.kind === "video") {  // H.264 is recorded as sent; VP8 would be refused
      const caps = RTCRtpSender.getCapabilities("video").codecs;
      t.setCodecPreferences(caps.filter((c) => c.mimeType === "video/H264")
        .concat(caps.filter((c) => c.mimeType === "video/rtx")));
    }
  }
  state.publishLocation = await signal("/whip/" + encodeURIComponent(state.seat.publish), pc);
}

async function play() {
  while (!state.left && !state.playing) {
    const pc = state.viewer = new RTCPeerConnection({iceServers: []});
    pc.addTransceiver("video", {direction: "recvonly"});
    pc.addTransceiver("audio", {direction: "recvonly"});
    pc.ontrack = (e) => { $("remote").srcObject = e.streams[0] || new MediaStream([e.track]); };
    pc.onconnectionstatechange = () => {
      if (pc.connectionState === "failed" && !state.left) { state.playing = false; play(); }
    };
    try {
      state.playLocation = await signal("/whep/" + encodeURIComponent(state.seat.play), pc);
      state.playing = true;
      say("arraignment.status.connected", {label: state.seat.other_label});
    } catch (err) {
      pc.close();
      if (err.status !== 404) {
        say("arraignment.status.cannot-play", {reason: err.message}, true);
        return;
      }
      say("arraignment.status.waiting", {label: state.seat.other_label});
      await new Promise((r) => setTimeout(r, 1000));
    }
  }
}

// the other seats (lawyer, interpreter, ...) in small tiles; a seat not yet on air is
// asked for again every 2 s
async function playExtra(streamId) {
  const fig = document.createElement("figure");
  const label = document.createElement("figcaption");
  const video = document.createElement("video");
  fig.className = "video";
  video.autoplay = video.playsInline = true;
  setText(label, "arraignment.seat." + streamId.split("-").pop());
  fig.append(label, video);
  document.querySelector("main").appendChild(fig);
  const extra = {fig, pc: null, location: null};
  state.extras.push(extra);
  while (!state.left && !extra.location) {
    const pc = extra.pc = new RTCPeerConnection({iceServers: []});
    pc.addTransceiver("video", {direction: "recvonly"});
    pc.addTransceiver("audio", {direction: "recvonly"});
    pc.ontrack = (e) => { video.srcObject = e.streams[0] || new MediaStream([e.track]); };
    try {
      extra.location = await signal("/whep/" + encodeURIComponent(streamId), pc);
    } catch (err) {
      pc.close();
      if (err.status !== 404) return;
      await new Promise((r) => setTimeout(r, 2000));
    }
  }
}

// why a join was refused, in the page's language (the server's detail is English)
function refused(status, detail) {
  if (status === 403) return ["arraignment.error.code", {}];
  if (status === 404) return ["arraignment.error.room", {room: roomId}];
  if (status === 422) return ["arraignment.error.code-empty", {}];
  return ["arraignment.error.join", {reason: detail}];
}

async function join() {
  const code = $("code").value.trim();
  if (!state.media) { say("arraignment.status.need-camera", null, true); return; }
  $("join").disabled = true;
  const res = await fetch("/arraignment/" + encodeURIComponent(roomId) + "/join", {
    method: "POST", headers: {"Content-Type": "application/json"},
    body: JSON.stringify({code})});
  const body = await res.json().catch(() => ({detail: res.statusText}));
  if (!res.ok) {
    const [key, params] = refused(res.status, body.detail);
    say(key, params, true);
    $("join").disabled = false;
    return;
  }
  state.seat = body;
  state.left = false;
  caption($("remote-label"), body.other_label);
  $("leave").disabled = false;
  try {
    await publish();
  } catch (err) {
    say("arraignment.status.cannot-send", {reason: err.message}, true);
    return;
  }
  say("arraignment.status.joined", {label: body.label});
  play();
  for (const streamId of body.plays || []) if (streamId !== body.play) playExtra(streamId);
}

async function leave() {
  state.left = true;
  $("leave").disabled = true;
  const auth = {"Authorization": "Bearer " + (state.seat ? state.seat.token : "")};
  const extras = state.extras.splice(0);
  for (const url of [state.publishLocation, state.playLocation, ...extras.map((x) => x.location)]) {
    if (url) await fetch(url, {method: "DELETE", headers: auth}).catch(() => {});
  }
  await fetch("/arraignment/" + encodeURIComponent(roomId) + "/leave",
              {method: "POST", headers: auth}).catch(() => {});
  for (const pc of [state.publisher, state.viewer, ...extras.map((x) => x.pc)]) if (pc) pc.close();
  for (const x of extras) x.fig.remove();
  $("remote").srcObject = null;
  caption($("remote-label"), null, "arraignment.other-side");
  state.playing = false;
  state.publishLocation = state.playLocation = null;
  state.seat = null;
  $("join").disabled = false;
  say("arraignment.status.left");
}

$("room").textContent = roomId;
$("join").addEventListener("click", join);
$("leave").addEventListener("click", leave);
window.addEventListener("pagehide", () => { if (state.seat && !state.left) leave(); });
await ready;
preview();
