// The console's shell: sign-in, the live connection, the pending requests it keeps up to date,
// and the router (#/inbox, #/requests/ID, #/runs?…, #/runs/ID) that renders each view into <main>.

import { api, loadSession, session, setSignedOutHandler, signIn, signOut } from "./api.js";
import { connectLive } from "./live.js";
import { renderInbox } from "./inbox.js";
import { refreshNotifications } from "./notifications.js";
import { renderCard } from "./card.js";
import { renderRuns } from "./runs.js";
import { renderTimeline } from "./timeline.js";
import { renderTemplate, renderTemplates } from "./templates.js";
import { h, toast } from "./ui.js";

const view = document.getElementById("view");
let live = null;

/** Pending requests, re-fetched in full on every (re)connection and on request events. */
export const inbox = { requests: [], fetches: 0, loaded: false };

async function refreshInbox() {
  try {
    inbox.requests = await api("/api/requests");
    inbox.loaded = true;
    inbox.fetches += 1;
    document.body.dataset.inboxFetches = String(inbox.fetches);
    const count = document.getElementById("inbox-count");
    count.textContent = String(inbox.requests.length);
    if (route().name === "inbox") render();
  } catch (e) {
    if (e.status !== 401) toast(`Could not load the inbox: ${e.message}`);
  }
}

function route() {
  const hash = location.hash.replace(/^#/, "") || "/inbox";
  const [path, query = ""] = hash.split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  const params = new URLSearchParams(query);
  if (parts[0] === "requests" && parts[1]) return { name: "card", id: parts[1] };
  if (parts[0] === "runs" && parts[1]) return { name: "timeline", id: parts[1] };
  if (parts[0] === "runs") return { name: "runs", params };
  if (parts[0] === "templates" && parts[1]) return { name: "template", id: parts[1] };
  if (parts[0] === "templates") return { name: "templates" };
  return { name: "inbox" };
}

let current = null; // { name, id, refresh }
let renderGen = 0; // bumped on every navigation: a view whose data arrives late does not draw over the next

async function render() {
  if (!session.user) return;
  const r = route();
  for (const a of document.querySelectorAll("[data-nav]")) {
    if (a.dataset.nav === (r.name === "timeline" ? "runs" : r.name === "card" ? "inbox" : r.name === "template" ? "templates" : r.name)) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  const sameView = current && current.name === r.name && current.id === r.id;
  const gen = ++renderGen;
  const ctx = { inbox, go: (hash) => { location.hash = hash; }, stale: () => gen !== renderGen };
  if (r.name === "inbox") current = { name: "inbox", refresh: () => renderInbox(view, ctx) };
  else if (r.name === "card") current = { name: "card", id: r.id, refresh: () => renderCard(view, r.id, ctx) };
  else if (r.name === "runs") current = { name: "runs", refresh: () => renderRuns(view, r.params, ctx) };
  else if (r.name === "templates") current = { name: "templates", refresh: () => renderTemplates(view, ctx) };
  // A form is not redrawn by live events (it would lose what was typed).
  else if (r.name === "template") {
    let drawn = sameView && current.drawn;
    current = { name: "template", id: r.id, drawn: true, refresh: () => { if (drawn) return Promise.resolve(); drawn = true; return renderTemplate(view, r.id, ctx); } };
  }
  else current = { name: "timeline", id: r.id, refresh: () => renderTimeline(view, r.id, ctx) };
  await current.refresh();
  if (!sameView) view.focus({ preventScroll: true });
}

function onEvent(name, data) {
  if (name === "request" || name === "paged" || name === "decided" || name === "lagged") refreshInbox();
  if (name === "notification" || name === "lagged") refreshNotifications({ announce: name === "notification" }).then(() => { if (route().name === "inbox") render(); });
  if (!current) return;
  if (current.name === "timeline" && (data.run === current.id || name === "lagged")) current.refresh();
  // Someone else decided the request on screen: show its decision instead of the form.
  if (current.name === "card" && name === "decided" && data.request === current.id) current.refresh();
  if (current.name === "runs" && (name === "run" || name === "lagged")) current.refresh();
}

function setLive(state) {
  const el = document.getElementById("live");
  el.dataset.state = state;
  el.textContent = { live: "live", connecting: "connecting…", reconnecting: "reconnecting…", off: "offline" }[state] || state;
}

function showSignIn(message) {
  if (live) { live.close(); live = null; }
  document.getElementById("nav").hidden = true;
  document.getElementById("who").hidden = true;
  const error = h("p", { class: "error", id: "sign-in-error", role: "alert" }, message || "");
  const form = h("form", { class: "sign-in", id: "sign-in", "aria-labelledby": "sign-in-title" },
    h("h1", { id: "sign-in-title" }, "Sign in"),
    h("label", { for: "token" }, "API token"),
    h("p", { class: "muted", id: "token-help" }, "Your token from `tollgate users add`; your decisions are recorded under your name."),
    h("input", { id: "token", name: "token", type: "password", autocomplete: "current-password", "aria-describedby": "token-help" }),
    h("button", { type: "submit", class: "primary" }, "Sign in"),
    error);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      await signIn(form.token.value);
      start();
    } catch (err) {
      error.textContent = err.status === 401 ? "That token is not valid." : err.message;
      form.token.select();
    }
  });
  view.replaceChildren(form);
  form.token.focus();
}

function start() {
  document.getElementById("nav").hidden = false;
  document.getElementById("who").hidden = false;
  document.getElementById("who-name").textContent = session.user;
  current = null;
  if (live) live.close();
  live = connectLive({ onHello: () => { refreshInbox(); refreshNotifications().then(() => { if (route().name === "inbox") render(); }); if (current) current.refresh(); }, onEvent, onState: setLive, onSignedOut: () => showSignIn("Your session has ended; sign in again.") });
  render();
}

setSignedOutHandler(() => showSignIn("Your session has ended; sign in again."));
window.addEventListener("hashchange", () => render());
document.getElementById("sign-out").addEventListener("click", async () => { await signOut(); showSignIn(); });

// Keyboard: g i → inbox, g r → runs (outside form fields).
let pendingG = false;
document.addEventListener("keydown", (e) => {
  if (e.target.closest("input, textarea, select") || e.ctrlKey || e.metaKey || e.altKey) return;
  if (pendingG && (e.key === "i" || e.key === "r")) { location.hash = e.key === "i" ? "#/inbox" : "#/runs"; pendingG = false; return; }
  pendingG = e.key === "g";
});

const s = await loadSession().catch(() => null);
if (s) start(); else showSignIn();
