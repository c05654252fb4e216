// Line charts drawn as inline SVG: axes from 0 (or the data's minimum for
// x), ticks at round numbers, one polyline and its points per series.

const NS = "http://www.w3.org/2000/svg";
const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"];

function s(tag, attrs = {}, text) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

function ticks(max, count = 5) {
  if (!(max > 0)) return [0, 1];
  const raw = max / count;
  const step = [1, 2, 5, 10].map((m) => m * 10 ** Math.floor(Math.log10(raw))).find((x) => x >= raw);
  const out = [];
  for (let v = 0; v <= max + step * 1e-9; v += step) out.push(Number(v.toPrecision(6)));
  if (out[out.length - 1] < max) out.push(Number((out[out.length - 1] + step).toPrecision(6)));
  return out;
}

export function color(i) { return COLORS[i % COLORS.length]; }

// series: [{name, points: [[x, y], ...]}]. Returns an <svg> with a title.
export function lineChart({ title, xLabel, yLabel, series, width = 640, height = 300, xTime = false }) {
  const pad = { left: 60, right: 16, top: 14, bottom: 44 };
  const all = series.flatMap((x) => x.points);
  const xs = all.map((p) => p[0]);
  const ys = all.map((p) => p[1]);
  const xMin = xTime ? Math.min(...xs) : 0;
  const xTicks = xTime ? [] : ticks(Math.max(...xs, 1));
  const xMax = xTime ? Math.max(...xs, xMin + 1) : xTicks[xTicks.length - 1];
  const yTicks = ticks(Math.max(...ys, 0));
  const yMax = yTicks[yTicks.length - 1] || 1;
  const X = (x) => pad.left + ((x - xMin) / (xMax - xMin || 1)) * (width - pad.left - pad.right);
  const Y = (y) => height - pad.bottom - (y / yMax) * (height - pad.top - pad.bottom);
  const svg = s("svg", { class: "chart", viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": title });
  svg.append(s("title", {}, title));
  for (const t of yTicks) {
    svg.append(s("line", { class: "grid", x1: pad.left, x2: width - pad.right, y1: Y(t), y2: Y(t) }));
    svg.append(s("text", { x: pad.left - 6, y: Y(t) + 4, "text-anchor": "end" }, String(t)));
  }
  for (const t of xTicks) {
    svg.append(s("text", { x: X(t), y: height - pad.bottom + 16, "text-anchor": "middle" }, String(t)));
  }
  if (xTime) {
    svg.append(s("text", { x: pad.left, y: height - pad.bottom + 16 }, `−${Math.round((xMax - xMin))} s`));
    svg.append(s("text", { x: width - pad.right, y: height - pad.bottom + 16, "text-anchor": "end" }, "now"));
  }
  svg.append(s("line", { class: "axis", x1: pad.left, x2: width - pad.right, y1: Y(0), y2: Y(0) }));
  svg.append(s("line", { class: "axis", x1: pad.left, x2: pad.left, y1: pad.top, y2: Y(0) }));
  svg.append(s("text", { x: (width + pad.left) / 2, y: height - 8, "text-anchor": "middle" }, xLabel));
  svg.append(s("text", { x: 14, y: height / 2, transform: `rotate(-90 14 ${height / 2})`, "text-anchor": "middle" }, yLabel));
  series.forEach((line, i) => {
    const pts = [...line.points].sort((a, b) => a[0] - b[0]);
    const g = s("g", { "data-series": line.name });
    g.append(s("polyline", { points: pts.map((p) => `${X(p[0])},${Y(p[1])}`).join(" "), fill: "none", stroke: color(i), "stroke-width": 2 }));
    if (!xTime) {
      for (const p of pts) {
        const dot = s("circle", { cx: X(p[0]), cy: Y(p[1]), r: 3.5, fill: color(i) });
        dot.append(s("title", {}, `${line.name}: ${p[1].toFixed(1)} at ${p[0]}`));
        g.append(dot);
      }
    }
    svg.append(g);
  });
  return svg;
}
