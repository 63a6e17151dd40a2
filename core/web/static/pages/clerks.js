// What the clerks' pages (/sessions, /recordings) share: the sign-in gate, calls to the
// API with errors turned into words, and times shown in the page's language.
//
//   import { signedIn, api, ApiError, say, when } from "/static/pages/clerks.js";

import { ready, setText, t } from "/static/js/i18n.js";
import { showSignedIn } from "/static/js/shell.js";

const $ = (id) => document.getElementById(id);

/** An answer that is not 2xx, with the server's own explanation. */
export class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
    this.detail = detail;
  }
}

/** The body of a JSON call; ApiError when it is refused. */
export async function api(path, options = {}) {
  const init = {credentials: "same-origin", ...options};
  if (options.json !== undefined) {
    init.method = init.method || "POST";
    init.headers = {"Content-Type": "application/json", ...(options.headers || {})};
    init.body = JSON.stringify(options.json);
  }
  const response = await fetch(path, init);
  if (!response.ok) throw new ApiError(response.status, await detailOf(response));
  return response.status === 204 ? null : response.json();
}

export async function detailOf(response) {
  try {
    const body = await response.json();
    if (typeof body.detail === "string") return body.detail;
    if (Array.isArray(body.detail)) {  // FastAPI's validation errors: field and message
      return body.detail.map((d) => `${(d.loc || []).slice(1).join(".")}: ${d.msg}`).join("; ");
    }
  } catch (err) { /* not JSON */ }
  return response.statusText;
}

/** The status line: a message key with parameters; error=true colours it. */
export function say(key, params, error = false) {
  const line = $("status");
  setText(line, key, params);
  line.classList.toggle("error", error);
}

/** An error as words: what kind of refusal it was, and the server's reason. */
export function sayError(err) {
  if (err instanceof ApiError) {
    const known = [400, 401, 403, 404, 409, 422, 503];
    const kind = known.includes(err.status) ? String(err.status) : "other";
    say(`clerks.error.${kind}`, {detail: err.detail, status: err.status}, true);
  } else {
    say("clerks.error.network", {detail: err.message}, true);
  }
}

/** A UNIX time as the page's language writes a date and time. */
export function when(at) {
  if (at === null || at === undefined || at === "") return "";
  return new Date(Number(at) * 1000).toLocaleString(document.documentElement.lang, {
    year: "numeric", month: "2-digit", day: "2-digit",
    hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false,
  });
}

/** Only the time of day. */
export function clock(at) {
  return new Date(Number(at) * 1000).toLocaleTimeString(document.documentElement.lang,
    {hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false});
}

/** The signed-in caller ({name, role}); until there is one, the sign-in form is shown and
 * this waits for it. */
export async function signedIn() {
  await ready;
  let me = await showSignedIn();
  if (me) {
    say("clerks.ready");
    return me;
  }
  $("signin").hidden = false;
  say("clerks.sign-in-first");
  await new Promise((done) => {
    $("signin-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      const form = new FormData(event.target);
      try {
        await api("/api/v1/login", {json: {name: form.get("name"), password: form.get("password")}});
        me = await showSignedIn();
        if (me) done();
      } catch (err) {
        sayError(err);
      }
    });
  });
  $("signin").hidden = true;
  say("clerks.ready");
  return me;
}

export { $, t };
