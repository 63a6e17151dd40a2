// The page's language on the browser side. The server renders the page in the saved choice
// (cookie), else the browser's Accept-Language, else zh-CN (core/web/pages.py); this module
// loads the same catalogues (/static/i18n/{lang}/{name}.json: "common" and those named on
// <html data-catalogues>), formats dynamic text, and re-translates the page when the person
// presses a button of the language switch ([data-lang-switch] [data-lang]). The choice is
// kept in localStorage and in a cookie, so the next page is served in it from the start.
//
//   import { ready, t, setText } from "/static/js/i18n.js";
//   await ready;
//   setText(statusElement, "arraignment.status.connected", {label});  // stays translated

const STORE = "courtcast-lang";  // localStorage key and cookie name (core/web/i18n.py COOKIE)
const ATTRIBUTES = ["title", "placeholder", "aria-label", "alt"];  // as core/web/pages.py
const root = document.documentElement;
const names = ["common", ...(root.dataset.catalogues || "").split(/\s+/).filter(Boolean)];
let messages = {};

/** The languages the page offers: its switch's buttons (rendered by the server). */
export function languages() {
  return [...document.querySelectorAll("[data-lang-switch] [data-lang]")]
    .map((button) => button.dataset.lang);
}

async function load(lang) {
  const parts = await Promise.all(names.map(async (name) => {
    const response = await fetch(`/static/i18n/${lang}/${name}.json`);
    if (!response.ok) throw new Error(`catalogue ${lang}/${name}: HTTP ${response.status}`);
    return response.json();
  }));
  return Object.assign({}, ...parts);
}

/** The message for key in the page's language, {name} parameters filled from params. */
export function t(key, params = {}) {
  const text = messages[key];
  if (text === undefined) {
    console.error(`i18n: no message ${key} in ${root.lang}`);
    return key;
  }
  return text.replace(/\{(\w+)\}/g, (whole, name) => (name in params ? String(params[name]) : whole));
}

/** Sets an element's text from a key; it is re-translated on a switch of language. */
export function setText(element, key, params) {
  element.dataset.i18n = key;
  if (params) element.dataset.i18nParams = JSON.stringify(params);
  else delete element.dataset.i18nParams;
  element.textContent = t(key, params);
}

/** Translates every marked element and attribute under node. */
export function translatePage(node = document) {
  for (const element of node.querySelectorAll("[data-i18n]")) {
    const params = element.dataset.i18nParams ? JSON.parse(element.dataset.i18nParams) : {};
    element.textContent = t(element.dataset.i18n, params);
  }
  for (const attr of ATTRIBUTES) {
    for (const element of node.querySelectorAll(`[data-i18n-${attr}]`)) {
      element.setAttribute(attr, t(element.getAttribute(`data-i18n-${attr}`)));
    }
  }
}

function showChoice() {
  for (const button of document.querySelectorAll("[data-lang-switch] [data-lang]")) {
    button.setAttribute("aria-pressed", String(button.dataset.lang === root.lang));
  }
}

function remember(lang) {
  try {
    localStorage.setItem(STORE, lang);
  } catch (err) { /* storage refused (private mode): the cookie still carries it */ }
  document.cookie = `${STORE}=${encodeURIComponent(lang)}; Path=/; Max-Age=31536000; SameSite=Lax`;
}

/** Switches the page to lang, remembers it, and tells the page ("i18n:change" on document). */
export async function setLanguage(lang) {
  if (!languages().includes(lang)) throw new Error(`no language ${lang}`);
  messages = await load(lang);
  root.lang = lang;
  remember(lang);
  translatePage();
  showChoice();
  document.dispatchEvent(new CustomEvent("i18n:change", {detail: {lang}}));
}

function saved() {
  try {
    return localStorage.getItem(STORE);
  } catch (err) {
    return null;
  }
}

async function start() {
  for (const button of document.querySelectorAll("[data-lang-switch] [data-lang]")) {
    button.addEventListener("click", () => setLanguage(button.dataset.lang).catch(console.error));
  }
  const choice = saved();
  try {
    if (choice && choice !== root.lang && languages().includes(choice)) {
      await setLanguage(choice);  // chosen here before the cookie existed (or it was cleared)
    } else {
      messages = await load(root.lang);
    }
  } catch (err) {  // the server-rendered text stays; dynamic text shows its keys
    console.error(`i18n: ${err.message}`);
  }
}

/** Resolves (never rejects) once the catalogues are loaded; t() answers keys after it. */
export const ready = start();
