// The run's DAG as inline SVG, from the spec's steps and their `needs`: a step's column is the
// length of the longest chain of needs before it, so every edge points right. Each node shows
// the step's id and status and, on click or Enter, brings its details into view.

import { s } from "./ui.js";

const W = 150, H = 44, GX = 48, GY = 16, PAD = 8;

export function layout(steps) {
  const byId = new Map(steps.map((st, i) => [st.id, i]));
  const depth = new Array(steps.length).fill(-1);
  const visit = (i, seen) => {
    if (depth[i] >= 0) return depth[i];
    if (seen.has(i)) return 0; // a cycle cannot pass validation; never loop on one
    seen.add(i);
    let d = 0;
    for (const n of steps[i].needs || []) if (byId.has(n)) d = Math.max(d, visit(byId.get(n), seen) + 1);
    depth[i] = d;
    return d;
  };
  steps.forEach((_, i) => visit(i, new Set()));
  const rows = [];
  const pos = steps.map((_, i) => {
    const col = depth[i];
    rows[col] = (rows[col] || 0) + 1;
    return { x: PAD + col * (W + GX), y: PAD + (rows[col] - 1) * (H + GY) };
  });
  const width = PAD * 2 + (Math.max(0, ...depth) + 1) * (W + GX) - GX;
  const height = PAD * 2 + Math.max(1, ...rows.filter(Boolean)) * (H + GY) - GY;
  return { pos, byId, width, height };
}

export function dag(steps, onSelect) {
  const { pos, byId, width, height } = layout(steps);
  const svg = s("svg", { class: "dag", id: "dag", viewBox: `0 0 ${width} ${height}`, width, height, role: "group", "aria-label": "Steps and their dependencies" },
    s("defs", {}, s("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 6, markerHeight: 6, orient: "auto-start-reverse" }, s("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "arrowhead" }))));
  steps.forEach((st, i) => {
    for (const n of st.needs || []) {
      if (!byId.has(n)) continue;
      const a = pos[byId.get(n)], b = pos[i];
      const x1 = a.x + W, y1 = a.y + H / 2, x2 = b.x, y2 = b.y + H / 2, mx = (x1 + x2) / 2;
      svg.append(s("path", { class: "edge", d: `M ${x1} ${y1} C ${mx} ${y1}, ${mx} ${y2}, ${x2 - 2} ${y2}`, "marker-end": "url(#arrow)", "data-from": n, "data-to": st.id }));
    }
  });
  steps.forEach((st, i) => {
    const p = pos[i];
    const label = st.id.length > 18 ? st.id.slice(0, 17) + "…" : st.id;
    const node = s("g", { class: `node s-${st.status}`, transform: `translate(${p.x} ${p.y})`, tabindex: 0, role: "link", "aria-label": `${st.id}: ${st.status.replace(/_/g, " ")}`, "data-step": st.id },
      s("title", {}, `${st.id} (${st.type}): ${st.status}`),
      s("rect", { width: W, height: H, rx: 6 }),
      s("text", { x: 10, y: 18, class: "id" }, label),
      s("text", { x: 10, y: 34, class: "st" }, `${st.type} · ${st.status.replace(/_/g, " ")}`));
    node.addEventListener("click", () => onSelect(st.id));
    node.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); onSelect(st.id); } });
    svg.append(node);
  });
  return svg;
}
