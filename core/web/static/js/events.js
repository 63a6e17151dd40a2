// The one websocket of signed-in staff pages: /api/v1/events (control_room/events.py).
//
//   import { connectEvents } from "/static/js/events.js";
//   const events = connectEvents({
//     hello(msg) {},    // {type:"hello", user, role, streams:[{id, court, room, class, title,
//                       //   state:"live"|"offline", recording, sub}]}  (again after a reconnect)
//     stream(msg) {},   // {type:"stream", id, state, recording}
//     wall(msg) {},     // {type:"wall", name, layout, tiles, version, acked_version,
//                       //   updated_by, updated_at}  (layout null: no such wall yet)
//     alert(msg) {},    // {type:"alert", phase:"start"|"clip"|"end"|"ack", alert:{id, stream,
//                       //   type, court, start, end, score, snapshot, clip, message, ack}}
//                       //   (operators who may see alerts of that stream)
//     refused(code) {}, // 4401 not signed in, 4403 no right: it does not reconnect
//     lost() {},        // the connection dropped; it reconnects by itself (1 s .. 10 s)
//   });
//   events.subscribe(["big"]);          // walls to follow (kept across reconnects)
//   events.ack("big", 7);               // this page has applied version 7 of wall big
//
// No polling: the server pushes every change.

const REFUSED = new Set([4401, 4403]);

export function connectEvents(handlers) {
  const walls = new Set();
  let socket = null;
  let failures = 0;

  function send(message) {
    if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(message));
  }

  function open() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    socket = new WebSocket(`${scheme}//${location.host}/api/v1/events`);
    socket.onopen = () => {
      failures = 0;
      if (walls.size) send({type: "subscribe", walls: [...walls]});
    };
    socket.onmessage = (event) => {
      const message = JSON.parse(event.data);
      const handler = handlers[message.type];
      if (handler) handler(message);
    };
    socket.onclose = (event) => {
      socket = null;
      if (REFUSED.has(event.code)) {
        if (handlers.refused) handlers.refused(event.code);
        return;
      }
      if (handlers.lost) handlers.lost();
      const wait = Math.min(10000, 1000 * 2 ** failures++);
      setTimeout(open, wait);
    };
  }

  open();
  return {
    subscribe(names) {
      const added = names.filter((name) => !walls.has(name));
      added.forEach((name) => walls.add(name));
      if (added.length) send({type: "subscribe", walls: added});
    },
    ack(wall, version) { send({type: "ack", wall, version}); },
    send,
  };
}
