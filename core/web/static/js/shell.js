// The shared header's sign-in state. Pages for signed-in staff call showSignedIn(); pages
// whose visitors are not users (arraignment seats, the public portal) leave it out.
//
//   import { showSignedIn } from "/static/js/shell.js";
//   const me = await showSignedIn();  // {name, role} or null when nobody is signed in

import { ready, setText } from "/static/js/i18n.js";

/** Shows "signed in as NAME (ROLE)" in the header; the caller from /api/v1/me, or null. */
export async function showSignedIn() {
  await ready;
  const slot = document.querySelector("[data-shell-user]");
  const response = await fetch("/api/v1/me", {credentials: "same-origin"});
  const me = response.ok ? await response.json() : null;
  const signedIn = Boolean(me && me.role !== "public");
  if (slot) {
    slot.hidden = !signedIn;
    // the role in the page's language where the catalogue has it (it follows a switch)
    const known = ["admin", "operator", "technician", "clerk"].includes(me?.role);
    if (signedIn && known) setText(slot, `common.signed-in.${me.role}`, {name: me.name});
    else if (signedIn) setText(slot, "common.signed-in", {name: me.name, role: me.role});
  }
  return signedIn ? me : null;
}
