// The inbox: one card per pending request, oldest first, each with the smallest question and
// where it comes from; a card opens its typed form.

import { h, modeName, time } from "./ui.js";
import { renderNotifications } from "./notifications.js";

export function summaryLine(r) {
  const c = r.request.context || {};
  if (r.request.mode === "budget_extension") return `asks for at least ${c.needed} ${c.currency || ""} more (spent ${c.spent})`;
  if (r.request.mode === "guidance") return `gate: ${(c.rules || []).join(", ") || "policy"}`;
  return null;
}

export function renderInbox(view, { inbox }) {
  const list = h("ul", { class: "cards", id: "inbox", "aria-label": "Pending requests" });
  for (const r of inbox.requests) {
    const href = `#/requests/${encodeURIComponent(r.request.id)}`;
    list.append(h("li", {},
      h("article", { class: "card", dataset: { request: r.request.id, mode: r.request.mode, run: r.run } },
        h("header", {},
          h("span", { class: `mode m-${r.request.mode}` }, modeName(r.request.mode)),
          h("span", { class: "muted" }, `${r.workflow} · ${r.request.step || "run"}`)),
        h("h2", {}, h("a", { href, class: "card-link" }, r.request.question)),
        summaryLine(r) && h("p", { class: "muted" }, summaryLine(r)),
        h("footer", { class: "muted" },
          h("span", {}, `asked ${time(r.created_at)}`),
          r.request.assignee && h("span", {}, ` · for ${r.request.assignee}`),
          r.escalated_to && r.escalated_to.length ? h("span", { class: "escalated" }, ` · escalated to ${r.escalated_to.join(", ")}`) : null,
          " · ", h("a", { href: `#/runs/${encodeURIComponent(r.run)}` }, "run")))));
  }
  const body = inbox.requests.length ? list : h("p", { class: "empty", id: "inbox-empty" }, inbox.loaded ? "Nothing is waiting for you." : "Loading…");
  view.replaceChildren(h("h1", {}, "Inbox"), ...[renderNotifications()].filter(Boolean), body);
}
