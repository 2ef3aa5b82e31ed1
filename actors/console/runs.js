// Runs, newest first, filtered by workflow, status and creation time (the filters live in the
// URL, so a filtered list can be bookmarked), a page at a time.

import { api } from "./api.js";
import { chip, h, time } from "./ui.js";

const STATUSES = ["", "pending", "running", "waiting", "succeeded", "failed", "cancelled"];

function toMs(local) { return local ? String(new Date(local).getTime()) : ""; }
function toLocal(ms) {
  if (!ms) return "";
  const d = new Date(Number(ms));
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

export async function renderRuns(view, params, { go, stale }) {
  const q = new URLSearchParams();
  for (const k of ["workflow", "status", "since", "until"]) if (params.get(k)) q.set(k, params.get(k));
  q.set("limit", "50");
  const form = h("form", { class: "filters", id: "run-filters", role: "search" },
    h("label", {}, "Workflow", h("input", { name: "workflow", value: params.get("workflow") || "", list: "workflows", autocomplete: "off" })),
    h("label", {}, "Status", h("select", { name: "status" }, STATUSES.map((s) => h("option", { value: s, selected: (params.get("status") || "") === s }, s || "any")))),
    h("label", {}, "From", h("input", { name: "since", type: "datetime-local", value: toLocal(params.get("since")) })),
    h("label", {}, "Until", h("input", { name: "until", type: "datetime-local", value: toLocal(params.get("until")) })),
    h("button", { type: "submit", class: "primary" }, "Filter"));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const p = new URLSearchParams();
    if (form.workflow.value.trim()) p.set("workflow", form.workflow.value.trim());
    if (form.status.value) p.set("status", form.status.value);
    if (form.since.value) p.set("since", toMs(form.since.value));
    if (form.until.value) p.set("until", toMs(form.until.value));
    go(`#/runs${p.toString() ? "?" + p : ""}`);
  });
  const tbody = h("tbody", {});
  const datalist = h("datalist", { id: "workflows" });
  const filters = new URLSearchParams(q);
  filters.delete("limit");
  const table = h("table", { class: "runs", id: "runs", dataset: { filters: filters.toString() } },
    h("thead", {}, h("tr", {}, ["Run", "Workflow", "Status", "Created", "Finished"].map((c) => h("th", { scope: "col" }, c)))), tbody);
  const more = h("button", { type: "button", hidden: true }, "Load more");
  const error = h("p", { class: "error", role: "alert" });
  const seen = new Set();
  async function load(after) {
    const p = new URLSearchParams(q);
    if (after) p.set("after", after);
    try {
      const page = await api(`/api/runs?${p}`);
      for (const r of page.runs) {
        tbody.append(h("tr", { dataset: { run: r.run, status: r.status } },
          h("td", { "data-label": "Run" }, h("a", { href: `#/runs/${encodeURIComponent(r.run)}` }, r.run)),
          h("td", { "data-label": "Workflow" }, `${r.workflow} v${r.version}`),
          h("td", { "data-label": "Status" }, chip(r.status), r.reason ? h("span", { class: "muted" }, ` ${r.reason.code}`) : null),
          h("td", { "data-label": "Created" }, time(r.created_at)),
          h("td", { "data-label": "Finished" }, time(r.finished_at))));
        if (!seen.has(r.workflow)) { seen.add(r.workflow); datalist.append(h("option", { value: r.workflow })); }
      }
      if (!tbody.children.length) tbody.append(h("tr", {}, h("td", { colspan: 5, class: "empty" }, "No runs match.")));
      more.hidden = !page.next;
      more.onclick = () => load(page.next);
    } catch (e) {
      error.textContent = e.message;
    }
  }
  await load(null);
  if (stale()) return;
  view.replaceChildren(h("h1", {}, "Runs"), form, datalist, error, h("div", { class: "scroll" }, table), more);
}
