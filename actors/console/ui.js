// DOM helpers: elements are built with textContent only (no HTML strings), so nothing a run
// produced can inject markup; plus formatting of times, durations and amounts.

/** h("p", {class: "x", onclick: f}, "text", child…) */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

/** An SVG element with attributes. */
export function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function time(ms) {
  if (ms === null || ms === undefined) return "—";
  const d = new Date(ms);
  return d.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "medium" });
}

export function duration(ms) {
  if (ms === null || ms === undefined) return "—";
  if (ms < 1000) return `${ms} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(1)} s`;
  const m = Math.floor(ms / 60000);
  return m < 60 ? `${m} min ${Math.round((ms % 60000) / 1000)} s` : `${Math.floor(m / 60)} h ${m % 60} min`;
}

/** Amounts are exact decimal strings; shown with at least two decimals, never through a float. */
export function money(v, currency) {
  if (v === null || v === undefined) return "—";
  let [i, f = ""] = String(v).split(".");
  f = f.padEnd(2, "0");
  return `${i}.${f}${currency ? " " + currency : ""}`;
}

export function chip(status) {
  return h("span", { class: `chip s-${status}` }, status.replace(/_/g, " "));
}

export function json(v) {
  return h("pre", { class: "json" }, JSON.stringify(v, null, 2));
}

const modeNames = { approval: "Approval", budget_extension: "Budget extension", guidance: "Guidance", tool_authorisation: "Tool authorisation" };
export function modeName(mode) {
  return modeNames[mode] || mode;
}

export function toast(message) {
  const t = document.getElementById("toast");
  t.textContent = message;
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.hidden = true; }, 3000);
}
