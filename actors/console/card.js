// A request's card with the typed form of its mode: approval (approve / reject / modify the
// output / abort, with a comment), budget extension (what is asked, spent, what the step costs;
// extend by an amount or reject), guidance (the gate's evidence on the redacted text with the
// matched span marked; release / modify / abort), tool authorisation (the tool, its redacted
// arguments and the model's reason; allow once / allow for this run / deny with a reason).
// Others get approve / reject / abort.

import { api, decide } from "./api.js";
import { gateTrail } from "./timeline.js";
import { h, json, modeName, money, time, toast } from "./ui.js";

// The request's escalation ladder, if its step (or the budget) declares one: who each level
// pages or which default it applies, when, and whether it has come due.
function escalationLine(e) {
  if (!e || !e.levels || !e.levels.length) return null;
  const levels = e.levels.map((l) => {
    const when = l.fired ? `at ${time(l.due_at)}` : e.open ? `at ${time(l.due_at)} if nobody answers` : `(not needed)`;
    if (l.to) return h("li", { class: l.fired ? "fired" : "", dataset: { to: l.to, fired: l.fired ? "true" : "false" } }, l.fired ? "Paged " : "Pages ", h("strong", {}, l.to), ` ${when}`);
    return h("li", { class: l.fired ? "fired" : "", dataset: { default: l.default, fired: l.fired ? "true" : "false" } }, l.fired ? "Applied the default " : "Applies the default ", h("strong", {}, l.default), ` ${when}`);
  });
  return h("div", { class: "escalation", id: "escalation" }, h("p", { class: "muted" }, `Escalation (after ${e.levels.map((l) => l.after).join(", then ")}):`), h("ul", {}, ...levels));
}

export async function renderCard(view, id, { inbox, go, stale }) {
  let r;
  try {
    r = await api(`/api/requests/${encodeURIComponent(id)}`);
  } catch (e) {
    if (stale()) return;
    const msg = e.status === 404 ? "No such request (or it is not yours to see)." : e.message;
    view.replaceChildren(h("h1", {}, "Request"), h("p", { class: "error" }, msg), h("a", { href: "#/inbox" }, "Back to the inbox"));
    return;
  }
  if (stale()) return;
  if (r.decision) {
    const d = r.decision;
    view.replaceChildren(h("article", { class: "card detail", id: "card", dataset: { request: r.request.id, mode: r.request.mode, decided: d.decision.decision } },
      h("p", { class: "crumbs" }, h("a", { href: "#/inbox" }, "Inbox"), " / ", modeName(r.request.mode)),
      h("h1", {}, r.request.question),
      h("p", { class: "decision" }, "Decided: ", h("strong", {}, d.decision.decision), d.by_policy ? " (applied by the escalation policy)" : [" by ", h("strong", {}, d.by)], ` at ${time(d.at)}`, d.comment ? ` — “${d.comment}”` : ""),
      escalationLine(r.escalation),
      h("a", { href: `#/runs/${encodeURIComponent(r.run)}` }, "Open the run")));
    return;
  }
  const q = r.request;
  const status = h("p", { class: "error", role: "alert", id: "decision-error" });
  const comment = h("textarea", { id: "comment", name: "comment", rows: 2, maxlength: 2000 });
  const commentField = [h("label", { for: "comment" }, "Comment (recorded with the decision)"), comment];

  async function send(body) {
    status.textContent = "";
    const buttons = view.querySelectorAll("button");
    buttons.forEach((b) => { b.disabled = true; });
    try {
      await decide(q.id, { ...body, comment: comment.value.trim() || undefined });
      inbox.requests = inbox.requests.filter((x) => x.request.id !== q.id);
      toast(`Recorded: ${body.decision}.`);
      go(`#/runs/${encodeURIComponent(r.run)}`);
    } catch (e) {
      status.textContent = e.code === "already_decided" ? "Someone decided this request already." : e.message;
      buttons.forEach((b) => { b.disabled = false; });
    }
  }
  const button = (label, cls, body) => h("button", { type: "button", class: cls, dataset: { decision: body.decision }, onclick: () => send(body) }, label);

  /** A JSON editor for "modify": the value the step's output becomes. */
  function modifier(initial, label) {
    const area = h("textarea", { id: "modify-value", class: "code", rows: 6, spellcheck: "false" }, JSON.stringify(initial ?? {}, null, 2));
    const apply = h("button", { type: "button", dataset: { decision: "modify" }, onclick: () => {
      let value;
      try { value = JSON.parse(area.value); } catch (e) { status.textContent = `The corrected value is not valid JSON: ${e.message}`; area.focus(); return; }
      send({ decision: "modify", value });
    } }, label);
    return h("details", { class: "modify" }, h("summary", {}, "Modify the output"), h("label", { for: "modify-value" }, "Output (JSON)"), area, apply);
  }

  const c = q.context || {};
  let body;
  if (q.mode === "approval") {
    body = [
      c.inputs && Object.keys(c.inputs).length ? [h("h3", {}, "Context"), json(c.inputs)] : null,
      h("form", { class: "decide", onsubmit: (e) => e.preventDefault() },
        ...commentField,
        h("div", { class: "actions" }, button("Approve", "primary", { decision: "approve" }), button("Reject", "danger", { decision: "reject" }), button("Abort run", "", { decision: "abort" })),
        modifier(c.inputs, "Approve with this output"),
        status),
    ];
  } else if (q.mode === "budget_extension") {
    const amount = h("input", { id: "amount", name: "amount", type: "text", inputmode: "decimal", required: true, value: c.needed, pattern: "[0-9]+(\\.[0-9]+)?", "aria-describedby": "amount-help" });
    body = [
      h("dl", { class: "facts", id: "budget-facts" },
        h("dt", {}, "Asked for (at least)"), h("dd", { dataset: { fact: "needed" } }, money(c.needed, c.currency)),
        h("dt", {}, "Spent so far"), h("dd", { dataset: { fact: "spent" } }, money(c.spent, c.currency)),
        h("dt", {}, `Cost of step ${c.step}`), h("dd", { dataset: { fact: "estimate" } }, money(c.estimate, c.currency)),
        h("dt", {}, "Cap (with extensions)"), h("dd", {}, `${money(c.cap, c.currency)} + ${money(c.extended, c.currency)}`),
        h("dt", {}, "Reserved for steps in flight"), h("dd", {}, money(c.reserved, c.currency))),
      h("form", { class: "decide", onsubmit: (e) => { e.preventDefault(); } },
        h("label", { for: "amount" }, `Extend the budget by (${c.currency || ""})`), amount,
        h("p", { id: "amount-help", class: "muted" }, `An exact decimal; at least ${c.needed} lets step ${c.step} run.`),
        ...commentField,
        h("div", { class: "actions" },
          h("button", { type: "button", class: "primary", dataset: { decision: "extend" }, onclick: () => {
            const a = amount.value.trim();
            if (!/^[0-9]+(\.[0-9]+)?$/.test(a) || Number(a) === 0) { status.textContent = "The amount must be a positive decimal number."; amount.focus(); return; }
            send({ decision: "extend", amount: a });
          } }, "Extend"),
          button("Reject", "danger", { decision: "reject" })),
        status),
    ];
  } else if (q.mode === "guidance" && c.prompt_finding) {
    // The rendered prompt looked like a prompt injection: which signals, the flagged text
    // (personal data redacted); send it as is, supply the step's output, or abort.
    const f = c.prompt_finding;
    body = [
      h("dl", { class: "facts", id: "prompt-facts" },
        h("dt", {}, "Signals"), h("dd", { dataset: { fact: "signals" } }, (f.signals || []).join(", ")),
        h("dt", {}, "Score"), h("dd", {}, String(f.score)),
        h("dt", {}, "In message"), h("dd", {}, `${f.message} (${f.role})`)),
      h("h3", {}, "Flagged text"),
      h("ul", { id: "prompt-flagged" }, (f.flagged || []).map((t) => h("li", {}, h("mark", {}, t)))),
      h("form", { class: "decide", onsubmit: (e) => e.preventDefault() },
        ...commentField,
        h("div", { class: "actions" }, button("Send it as is", "primary", { decision: "approve" }), button("Abort run", "danger", { decision: "abort" })),
        modifier({ text: "" }, "Use this output instead"),
        status),
    ];
  } else if (q.mode === "guidance") {
    const evidence = h("div", { id: "evidence" }, h("p", { class: "muted" }, "Loading the gate's evidence…"));
    body = [
      h("h3", {}, "Gate evidence (on the redacted output)"), evidence,
      h("form", { class: "decide", onsubmit: (e) => e.preventDefault() },
        ...commentField,
        h("div", { class: "actions" }, button("Release as is", "primary", { decision: "approve" }), button("Abort run", "danger", { decision: "abort" })),
        modifier(c.redacted_output, "Continue with this output"),
        status),
    ];
    api(`/api/runs/${encodeURIComponent(r.run)}/timeline`).then((t) => {
      if (stale()) return;
      const step = t.steps.find((s) => s.id === q.step);
      evidence.replaceChildren(step && step.gate ? gateTrail(step.gate) : json(c.gate), h("h4", {}, "Redacted output"), json(c.redacted_output));
    }).catch((e) => { evidence.replaceChildren(h("p", { class: "error" }, e.message), json(c.gate)); });
  } else if (q.mode === "tool_authorisation") {
    // The tool, what the model asked it to do (arguments redacted by the gate mesh) and why;
    // allow once, allow for the rest of the run, or deny with a reason the model receives.
    const reason = h("textarea", { id: "deny-reason", name: "reason", rows: 2, maxlength: 2000, "aria-describedby": "deny-help" });
    body = [
      h("dl", { class: "facts", id: "tool-facts" },
        h("dt", {}, "Tool"), h("dd", { dataset: { fact: "tool" } }, h("code", {}, c.tool || "—")),
        h("dt", {}, "What it does"), h("dd", { dataset: { fact: "description" } }, c.description || "—"),
        h("dt", {}, "The model's reason"), h("dd", { dataset: { fact: "reason" } }, c.reason ? `“${c.reason}”` : "(none given)"),
        h("dt", {}, "Turn"), h("dd", {}, String(c.turn ?? "—")),
        c.because && c.because.length ? [h("dt", {}, "Asked because the arguments hold"), h("dd", { dataset: { fact: "because" } }, c.because.join(", "))] : null),
      h("h3", {}, "Arguments (redacted)"), h("div", { id: "tool-arguments" }, json(c.arguments)),
      h("form", { class: "decide", onsubmit: (e) => e.preventDefault() },
        ...commentField,
        h("div", { class: "actions" },
          button("Allow once", "primary", { decision: "allow_once" }),
          button("Allow for this run", "", { decision: "allow_for_run" })),
        h("label", { for: "deny-reason" }, "Reason for denying (the model receives it)"), reason,
        h("p", { id: "deny-help", class: "muted" }, "The call is not made; the conversation goes on with your reason as the tool's result."),
        h("div", { class: "actions" },
          h("button", { type: "button", class: "danger", dataset: { decision: "deny" }, onclick: () => {
            const why = reason.value.trim();
            if (!why) { status.textContent = "Say why: the model receives the reason."; reason.focus(); return; }
            send({ decision: "deny", reason: why });
          } }, "Deny"),
          button("Abort run", "", { decision: "abort" })),
        status),
    ];
  } else {
    body = [
      json(c),
      h("form", { class: "decide", onsubmit: (e) => e.preventDefault() }, ...commentField,
        h("div", { class: "actions" }, button("Approve", "primary", { decision: "approve" }), button("Reject", "danger", { decision: "reject" }), button("Abort run", "", { decision: "abort" })),
        status),
    ];
  }

  view.replaceChildren(h("article", { class: "card detail", id: "card", dataset: { request: q.id, mode: q.mode } },
    h("p", { class: "crumbs" }, h("a", { href: "#/inbox" }, "Inbox"), " / ", modeName(q.mode)),
    h("h1", {}, q.question),
    h("p", { class: "muted" }, `${r.workflow} · step ${q.step || "—"} · asked ${time(r.created_at)}`, q.assignee ? ` · for ${q.assignee}` : "", r.escalated_to && r.escalated_to.length ? ` · escalated to ${r.escalated_to.join(", ")}` : "", " · ", h("a", { href: `#/runs/${encodeURIComponent(r.run)}` }, "the run so far")),
    escalationLine(r.escalation),
    body));
}
