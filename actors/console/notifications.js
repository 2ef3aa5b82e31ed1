// Notifications from `notify` steps: fetched in full on every (re)connection and when the live
// stream says one arrived (its `notification` event carries ids only); the newest are listed
// above the inbox, and a new one is announced in the toast.

import { api } from "./api.js";
import { h, time, toast } from "./ui.js";

export const notifications = { items: [], fetches: 0 };

export async function refreshNotifications({ announce = false } = {}) {
  try {
    const before = new Set(notifications.items.map((n) => n.id));
    notifications.items = (await api("/api/notifications?limit=20")).notifications;
    notifications.fetches += 1;
    document.body.dataset.notificationFetches = String(notifications.fetches);
    const fresh = notifications.items.filter((n) => !before.has(n.id));
    if (announce && fresh.length) toast(`Notification: ${fresh[0].subject}`);
  } catch (e) {
    if (e.status !== 401) toast(`Could not load notifications: ${e.message}`);
  }
}

export function renderNotifications() {
  if (!notifications.items.length) return null;
  const list = h("ul", { class: "notifications", id: "notifications", "aria-label": "Notifications" });
  for (const n of notifications.items) {
    list.append(h("li", { dataset: { notification: n.id, run: n.run } },
      h("strong", {}, n.subject), " ", h("span", {}, n.message),
      h("span", { class: "muted" }, ` · ${n.workflow} · ${time(n.at)} · `),
      h("a", { href: `#/runs/${encodeURIComponent(n.run)}` }, "run")));
  }
  return h("section", { "aria-label": "Notifications" }, h("h2", {}, "Notifications"), list);
}
