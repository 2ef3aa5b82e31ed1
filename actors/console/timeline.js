// A run's timeline: status, budget spent against its cap, the DAG, and per step its status,
// attempts (interrupted and superseded ones too), duration, cost, the output as the gates let it
// through (redacted), the error, the decision and who made it, and the gate trail — each rule or
// check that fired, its JSON path, the span marked on the redacted text, the ruleset version.

import { api } from "./api.js";
import { dag } from "./dag.js";
import { chip, duration, h, json, money, time } from "./ui.js";

/** The gate trail of one verdict (also shown on guidance cards). */
export function gateTrail(gate) {
  const rows = (gate.findings || []).map((f) => h("tr", { class: "finding", dataset: { rule: f.rule_id, action: f.action } },
    h("td", { "data-label": "Rule" }, h("code", {}, f.rule_id), h("span", { class: "muted" }, ` ${f.detector}`)),
    h("td", { "data-label": "Category" }, f.category),
    h("td", { "data-label": "Action" }, chip(f.action)),
    h("td", { "data-label": "Path" }, h("code", {}, f.path || "/")),
    h("td", { "data-label": "On the redacted text", class: "evidence" }, f.redacted
      ? h("span", { class: "excerpt" }, f.redacted.before, h("mark", { title: `bytes ${f.redacted.span.start}–${f.redacted.span.end} of the redacted text` }, f.redacted.marked), f.redacted.after)
      : h("span", { class: "muted" }, f.in_key ? "in an object key" : "not located"))));
  const rs = gate.ruleset || {};
  return h("div", { class: "gate-trail", dataset: { action: gate.action } },
    h("p", {}, "Verdict ", chip(gate.action), ` · ruleset ${rs.version || "?"} `, h("code", { class: "muted", title: rs.hash }, (rs.hash || "").slice(0, 12)),
      gate.threat ? ` · threat score ${gate.threat.score.toFixed(2)} (${gate.threat.signals.join(", ")})` : ""),
    rows.length
      ? h("div", { class: "scroll" }, h("table", { class: "findings" }, h("thead", {}, h("tr", {}, ["Rule or check", "Category", "Action", "JSON path", "On the redacted text"].map((c) => h("th", { scope: "col" }, c)))), h("tbody", {}, rows)))
      : h("p", { class: "muted" }, "Nothing fired."));
}

function attempts(list) {
  if (!list.length) return null;
  return h("div", { class: "scroll" }, h("table", { class: "attempts" },
    h("thead", {}, h("tr", {}, ["#", "Status", "Dispatched", "Started", "Finished", "Process", "Error"].map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, list.map((a) => h("tr", { dataset: { attempt: a.attempt, status: a.status } },
      h("td", { "data-label": "#" }, String(a.attempt)),
      h("td", { "data-label": "Status" }, chip(a.status), a.late_result ? h("span", { class: "muted" }, ` late: ${a.late_result}`) : null),
      h("td", { "data-label": "Dispatched" }, time(a.dispatched_at)),
      h("td", { "data-label": "Started" }, time(a.started_at)),
      h("td", { "data-label": "Finished" }, time(a.finished_at)),
      h("td", { "data-label": "Process" }, a.worker || "—"),
      h("td", { "data-label": "Error" }, a.error ? `${a.error.code}: ${a.error.message}` : "—"))))));
}

function decisionLine(d) {
  const what = d.decision.decision + (d.decision.amount ? ` ${d.decision.amount}` : "");
  return h("p", { class: "decision", dataset: { by: d.by, decision: d.decision.decision, policy: d.by_policy ? "true" : undefined } },
    h("strong", {}, what), d.by_policy ? " applied by the escalation policy" : [" by ", h("strong", { class: "by" }, d.by)], ` at ${time(d.at)}`, d.comment ? ` — “${d.comment}”` : "");
}

/** A `for_each` step's items: one row each, with its status, attempts, cost and an open request. */
function items(list, currency) {
  if (!list.length) return null;
  return h("table", { class: "items", "aria-label": "Items" },
    h("thead", {}, h("tr", {}, ["Item", "Status", "Attempts", "Cost", ""].map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, list.map((it) => h("tr", { dataset: { item: it.id, status: it.status } },
      h("td", { "data-label": "Item" }, h("code", {}, it.id)),
      h("td", { "data-label": "Status" }, chip(it.status)),
      h("td", { "data-label": "Attempts" }, String(it.attempts)),
      h("td", { "data-label": "Cost" }, money(it.cost, currency)),
      h("td", {}, it.waiting_request ? h("a", { href: `#/requests/${encodeURIComponent(it.waiting_request)}` }, "open the card")
        : it.error ? h("span", { class: "error" }, `${it.error.code}: ${it.error.message}`) : "")))));
}

/** An `llm` step's tool calls: which tool, how each ended (ok, denied, failed…), by attempt. */
function toolCalls(calls) {
  if (!Array.isArray(calls) || !calls.length) return null;
  return h("div", { class: "tool-calls" }, h("h4", {}, "Tool calls"),
    h("ol", {}, calls.map((c) => h("li", { dataset: { tool: c.tool, status: c.status } }, h("code", {}, c.tool), " ", chip(c.status), ` (attempt ${c.attempt})`))));
}

function stepSection(st, currency) {
  return h("section", { class: "step", id: `step-${st.id}`, tabindex: -1, dataset: { step: st.id, status: st.status } },
    h("h3", {}, h("code", {}, st.id), " ", h("span", { class: "muted" }, st.type), " ", chip(st.status)),
    h("dl", { class: "facts" },
      h("dt", {}, "Needs"), h("dd", {}, st.needs.length ? st.needs.join(", ") + (st.join ? ` (${st.join})` : "") : "—"),
      h("dt", {}, "Duration"), h("dd", {}, duration(st.duration_ms)),
      h("dt", {}, "Cost"), h("dd", {}, money(st.cost, currency)),
      h("dt", {}, "Attempts"), h("dd", {}, String(st.attempts.length))),
    st.skip_reason ? h("p", { class: "muted" }, `Skipped: ${st.skip_reason}`) : null,
    st.waiting_request ? h("p", {}, "Waiting for a decision: ", h("a", { href: `#/requests/${encodeURIComponent(st.waiting_request)}` }, "open the card")) : null,
    st.child ? h("p", {}, "Sub-workflow: ", h("a", { href: `#/runs/${encodeURIComponent(st.child)}`, dataset: { child: st.child } }, `run ${st.child}`)) : null,
    st.error ? h("p", { class: "error" }, `${st.error.code}: ${st.error.message}`) : null,
    st.decision ? decisionLine(st.decision) : null,
    attempts(st.attempts),
    items(st.items || [], currency),
    st.output && typeof st.output === "object" ? toolCalls(st.output.tool_calls) : null,
    st.output !== null && st.output !== undefined ? h("details", { class: "output", dataset: { key: `output-${st.id}` }, open: st.output_redacted || undefined }, h("summary", {}, st.output_redacted ? "Output (redacted)" : "Output"), json(st.output)) : null,
    st.gate ? h("details", { class: "gate", dataset: { key: `gate-${st.id}` }, open: st.gate.action !== "allow" || undefined }, h("summary", {}, "Gate trail"), gateTrail(st.gate)) : null);
}

export async function renderTimeline(view, id, { stale }) {
  let t;
  try {
    t = await api(`/api/runs/${encodeURIComponent(id)}/timeline`);
  } catch (e) {
    if (stale()) return;
    view.replaceChildren(h("h1", {}, "Run"), h("p", { class: "error" }, e.status === 404 ? "No such run." : e.message));
    return;
  }
  if (stale()) return;
  const cur = t.budget.currency || "";
  const budget = t.budget.limit !== null && t.budget.limit !== undefined
    ? h("div", { class: "budget", id: "budget" },
        h("label", { for: "budget-meter" }, `Budget: ${money(t.budget.spent, cur)} spent of ${money(t.budget.limit, cur)}`, Number(t.budget.extended) > 0 ? ` (cap ${money(t.budget.cap, cur)} + ${money(t.budget.extended, cur)} extended)` : ""),
        h("meter", { id: "budget-meter", min: 0, max: t.budget.limit, value: t.budget.spent, high: Number(t.budget.limit) * 0.9 }))
    : h("p", { class: "muted", id: "budget" }, "No budget cap.");
  const shown = view.querySelector("#timeline")?.dataset.run === t.run ? [...view.querySelectorAll("details[data-key]")] : [];
  const open = new Set(shown.filter((d) => d.open).map((d) => d.dataset.key));
  const closed = new Set(shown.filter((d) => !d.open).map((d) => d.dataset.key));
  const select = (step) => { const el = document.getElementById(`step-${step}`); if (el) { el.scrollIntoView({ block: "start" }); el.focus({ preventScroll: true }); } };
  view.replaceChildren(h("article", { class: "timeline", id: "timeline", dataset: { run: t.run, status: t.status } },
    h("p", { class: "crumbs" }, h("a", { href: "#/runs" }, "Runs"), " / ", t.run),
    h("h1", {}, `${t.workflow} v${t.version} `, chip(t.status)),
    t.reason ? h("p", { class: "error" }, `${t.reason.code}: ${t.reason.message}`) : null,
    t.parent ? h("p", { class: "muted" }, "Sub-workflow of ", h("a", { href: `#/runs/${encodeURIComponent(t.parent.run)}`, dataset: { parent: t.parent.run } }, `run ${t.parent.run}`), ` (step ${t.parent.step} of ${t.parent.workflow})`) : null,
    h("p", { class: "muted" }, `created ${time(t.created_at)} · started ${time(t.started_at)} · finished ${time(t.finished_at)}`),
    // The signed record of the run (served with the session cookie; `tollgate receipt verify` checks it).
    h("div", { class: "actions" },
      h("a", { class: "button", id: "receipt-download", href: `/api/runs/${encodeURIComponent(t.run)}/receipt`, download: `receipt-${t.run}.json` }, "Download receipt")),
    budget,
    h("div", { class: "scroll dag-wrap" }, dag(t.steps, select)),
    h("h2", {}, "Steps"),
    t.steps.map((st) => stepSection(st, cur))));
  // A live re-render keeps what the reader opened or closed.
  for (const d of view.querySelectorAll("details[data-key]")) {
    if (open.has(d.dataset.key)) d.open = true;
    if (closed.has(d.dataset.key)) d.open = false;
  }
}
