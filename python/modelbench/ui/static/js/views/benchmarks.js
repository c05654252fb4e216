// Benchmarks: the store's saved runs (GET /v1/bench/runs): output
// throughput against concurrency, one line per backend and model; TTFT,
// TPOT and ITL percentiles; two chosen runs side by side; and evaluation
// runs (GET /v1/eval/runs) with pass@k.

import { json } from "../api.js";
import { h, number, when, table, errorText } from "../dom.js";
import { lineChart } from "../chart.js";

const METRICS = ["ttft", "tpot", "itl", "e2el"];
const STATS = ["mean", "median", "p90", "p99"];

// Requests in flight at most: --max-concurrency, else all of them.
function concurrency(run) {
  const c = run.config || {};
  return c.max_concurrency || c.num_prompts || null;
}

function label(run) {
  return `${run.name || run.backend} · ${run.model || "?"}`;
}

function throughputChart(runs) {
  const groups = new Map();
  for (const run of runs) {
    const x = concurrency(run);
    const y = run.summary.output_throughput;
    if (!x || y === undefined) continue;
    const key = label(run);
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key).push([x, y]);
  }
  const series = [...groups].map(([name, points]) => ({ name, points }));
  if (!series.length) return h("p", { class: "note" }, "No run has a concurrency and a throughput to draw.");
  return h("figure", {},
    lineChart({ title: "Output throughput against concurrency", xLabel: "max concurrency (requests in flight)", yLabel: "output tokens/s", series }),
    h("figcaption", { class: "legend" }, series.map((x, i) => h("span", {}, h("span", { class: `swatch c${i % 6}` }), x.name))));
}

function percentiles(run) {
  const s = run.summary;
  return table(["metric", ...STATS.map((x) => ({ text: `${x} ms`, num: true }))],
    METRICS.map((m) => [m.toUpperCase(), ...STATS.map((st) => number(s[`${st}_${m}_ms`], 2))]));
}

function sideBySide(a, b) {
  const rows = [
    ["backend", a.backend, b.backend], ["model", a.model, b.model],
    ["created", when(a.created_at), when(b.created_at)],
    ["concurrency", concurrency(a), concurrency(b)],
    ["completed", a.summary.completed, b.summary.completed],
    ["failed", a.summary.failed ?? 0, b.summary.failed ?? 0],
    ["output tokens/s", number(a.summary.output_throughput, 1), number(b.summary.output_throughput, 1)],
    ["requests/s", number(a.summary.request_throughput, 2), number(b.summary.request_throughput, 2)],
  ];
  for (const m of METRICS) for (const st of ["median", "p99"]) {
    rows.push([`${st} ${m.toUpperCase()} ms`, number(a.summary[`${st}_${m}_ms`], 2), number(b.summary[`${st}_${m}_ms`], 2)]);
  }
  return table(["", { text: a.id, num: true }, { text: b.id, num: true }], rows, "Two runs side by side");
}

function evals(section) {
  json("/v1/eval/runs").then((list) => {
    if (!list.data.length) {
      section.append(h("p", { class: "note" }, "No evaluation run saved yet (modelbench eval humaneval saves one)."));
      return;
    }
    const ks = [...new Set(list.data.flatMap((r) => Object.keys(r.summary).filter((k) => k.startsWith("pass@"))))].sort();
    section.append(table(["run", "benchmark", "model", "created", ...ks.map((k) => ({ text: k, num: true })), { text: "problems", num: true }, { text: "samples each", num: true }, { text: "passed", num: true }],
      list.data.map((r) => [r.id, r.benchmark, r.model, when(r.created_at), ...ks.map((k) => number(r.summary[k], 3)),
        r.summary.problems ?? "–", r.summary.samples ?? "–", r.summary.passed ?? "–"])));
  }).catch((err) => section.append(errorText(err)));
}

export default function benchmarks(main) {
  const body = h("div", {}, h("p", { class: "note" }, "Loading saved runs…"));
  const evalSection = h("section", { "aria-label": "Evaluation runs" }, h("h2", {}, "Evaluation runs"));
  main.append(h("h1", {}, "Benchmarks"), body, evalSection);
  json("/v1/bench/runs?limit=100").then((list) => {
    const runs = list.data;
    if (!runs.length) {
      body.replaceChildren(h("p", { class: "note" }, "No benchmark run saved in this server's store yet: run modelbench bench ... --save."));
      return;
    }
    const chosen = new Set(runs.slice(0, 2).map((r) => r.id));
    const detail = h("section", { "aria-live": "polite", "aria-label": "Chosen runs" });
    const show = () => {
      const picked = runs.filter((r) => chosen.has(r.id));
      detail.replaceChildren(
        ...picked.map((r) => h("div", {}, h("h2", {}, `Percentiles: ${r.id} (${label(r)}, concurrency ${concurrency(r)})`), percentiles(r))),
        picked.length === 2 ? sideBySide(picked[0], picked[1]) : h("p", { class: "note" }, "Tick two runs to see them side by side."),
      );
    };
    const rows = runs.map((r, i) => {
      const box = h("input", { type: "checkbox", id: `run-${i}`, checked: chosen.has(r.id), "aria-label": `Choose ${r.id}`,
        onchange: (e) => {
          if (e.target.checked) chosen.add(r.id); else chosen.delete(r.id);
          if (chosen.size > 2) { const first = [...chosen][0]; chosen.delete(first); body.querySelector(`[data-run="${first}"]`).checked = false; }
          show();
        } });
      box.dataset.run = r.id;
      return [box, r.id, label(r), when(r.created_at), concurrency(r), number(r.summary.output_throughput, 1),
        number(r.summary.median_ttft_ms, 1), number(r.summary.median_tpot_ms, 2)];
    });
    body.replaceChildren(
      throughputChart(runs),
      h("h2", {}, "Saved runs"),
      table(["", "run", "backend · model", "created", { text: "concurrency", num: true }, { text: "output tok/s", num: true },
        { text: "median TTFT ms", num: true }, { text: "median TPOT ms", num: true }], rows),
      detail,
    );
    show();
  }).catch((err) => body.replaceChildren(errorText(err)));
  evals(evalSection);
}

