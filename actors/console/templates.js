// Start a run from the workflow catalogue: the list of templates (#/templates) and one
// template's form (#/templates/NAME), one field per declared parameter — typed, described,
// required ones marked, defaults filled in — posted to POST /api/templates/NAME/runs.

import { api } from "./api.js";
import { h } from "./ui.js";

export async function renderTemplates(view, { stale }) {
  const error = h("p", { class: "error", role: "alert" });
  let list = [];
  try {
    list = (await api("/api/templates")).templates;
  } catch (e) {
    error.textContent = e.message;
  }
  if (stale()) return;
  const items = list.map((t) => h("li", { dataset: { template: t.id } },
    h("a", { href: `#/templates/${encodeURIComponent(t.id)}` }, t.id),
    " ", h("span", { class: "muted" }, `${t.parameters.length} parameters${t.triggers.length ? ` · triggers: ${t.triggers.join(", ")}` : ""}`),
    h("p", {}, t.description)));
  view.replaceChildren(h("h1", {}, "Start a run"), h("p", { class: "muted" }, "The workflows this engine knows: pick one, fill in its parameters, start it."),
    error, h("ul", { class: "templates", id: "templates" }, items));
}

/** The field for one parameter, and how to read its value back (undefined: leave it out). */
function field(p) {
  const id = `param-${p.name}`;
  const help = p.description ? h("p", { class: "muted", id: `${id}-help` }, p.description) : null;
  const described = help ? `${id}-help` : undefined;
  const label = h("label", { for: id }, p.name, " ", h("span", { class: "muted" }, p.type), p.required ? h("span", { class: "required" }, " (required)") : null);
  let input;
  let read;
  const dflt = p.default;
  if (p.type === "boolean") {
    input = h("input", { id, name: p.name, type: "checkbox", checked: dflt === true, "aria-describedby": described });
    read = () => input.checked;
  } else if (p.type === "array" || p.type === "object") {
    input = h("textarea", { id, name: p.name, rows: 3, required: p.required, spellcheck: "false", "aria-describedby": described });
    input.value = dflt === null || dflt === undefined ? "" : JSON.stringify(dflt);
    read = () => {
      const text = input.value.trim();
      if (!text) return undefined;
      try {
        return JSON.parse(text);
      } catch (e) {
        throw new Error(`${p.name}: not valid JSON (${p.type === "array" ? 'e.g. ["a", "b"]' : 'e.g. {"key": "value"}'})`);
      }
    };
  } else if (p.type === "number" || p.type === "integer") {
    input = h("input", { id, name: p.name, type: "number", step: p.type === "integer" ? "1" : "any", required: p.required, "aria-describedby": described });
    input.value = dflt === null || dflt === undefined ? "" : String(dflt);
    read = () => (input.value === "" ? undefined : Number(input.value));
  } else {
    input = h("input", { id, name: p.name, type: "text", required: p.required, autocomplete: "off", "aria-describedby": described });
    input.value = dflt === null || dflt === undefined ? "" : String(dflt);
    read = () => (input.value === "" && !p.required ? undefined : input.value);
  }
  return { el: h("div", { class: "field", dataset: { param: p.name } }, label, help, input), read };
}

export async function renderTemplate(view, name, { go, stale }) {
  let t;
  try {
    t = await api(`/api/templates/${encodeURIComponent(name)}`);
  } catch (e) {
    if (stale()) return;
    view.replaceChildren(h("h1", {}, name), h("p", { class: "error", role: "alert" }, e.message), h("a", { href: "#/templates" }, "All templates"));
    return;
  }
  if (stale()) return;
  // Required parameters first, then the rest, each group by name.
  t.parameters.sort((a, b) => Number(b.required) - Number(a.required) || a.name.localeCompare(b.name));
  const fields = t.parameters.map(field);
  const error = h("p", { class: "error", id: "start-error", role: "alert" });
  const submit = h("button", { type: "submit", class: "primary", disabled: !t.can_start }, "Start run");
  const form = h("form", { class: "start-run", id: "start-run", "aria-labelledby": "template-title" }, fields.map((f) => f.el), submit, error);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    error.textContent = "";
    const params = {};
    try {
      t.parameters.forEach((p, i) => {
        const v = fields[i].read();
        if (v !== undefined) params[p.name] = v;
      });
    } catch (err) {
      error.textContent = err.message;
      return;
    }
    submit.disabled = true;
    try {
      const created = await api(`/api/templates/${encodeURIComponent(t.id)}/runs`, { method: "POST", body: { params } });
      go(`#/runs/${encodeURIComponent(created.run)}`);
    } catch (err) {
      error.textContent = err.message;
      submit.disabled = false;
    }
  });
  view.replaceChildren(...[
    h("h1", { id: "template-title" }, t.id),
    h("p", {}, t.description),
    h("p", { class: "muted" }, `v${t.version} · owner ${t.owner} · ${t.steps} step${t.steps === 1 ? "" : "s"} · ${t.source}`),
    t.can_start ? null : h("p", { class: "error" }, `Only members of ${t.owner} (or an admin) may start this workflow.`),
    form,
    h("p", {}, h("a", { href: "#/templates" }, "All templates"))].filter(Boolean));
  const first = form.querySelector("input, textarea");
  if (first) first.focus();
}
