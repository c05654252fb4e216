// Live: the server's own metrics (GET /metrics, Prometheus text) sampled
// every 2 s while the view is open: requests running and waiting, KV cache
// use, and generated tokens/s over the last five minutes.

import { text } from "../api.js";
import { h, number, errorText } from "../dom.js";
import { lineChart } from "../chart.js";

const PERIOD_MS = 2000;
const WINDOW_S = 300;
const history = [];  // kept across visits while the page is open: [t_s, tokens/s]
let last = null;     // [t_s, generation tokens so far]

// Prometheus text: the sum of each family's samples, and per-label values.
export function parse(body) {
  const sums = {};
  const byModel = {};
  for (const line of body.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = line.match(/^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)/);
    if (!m) continue;
    const value = Number(m[3]);
    sums[m[1]] = (sums[m[1]] || 0) + value;
    const model = m[2] && m[2].match(/model_name="([^"]*)"/);
    const version = m[2] && m[2].match(/version="([^"]*)"/);
    if (model) (byModel[m[1]] ||= {})[version ? `${model[1]}:${version[1]}` : model[1]] = value;
  }
  return { sums, byModel };
}

export default function live(main) {
  const tiles = h("div", { class: "tiles", "aria-live": "polite", "aria-label": "Now" });
  const chart = h("div");
  const status = h("p", { class: "note" });
  main.append(h("h1", {}, "Live"), tiles, h("h2", {}, "Generated tokens per second"), chart, status);
  let timer = null;

  async function sample() {
    try {
      const { sums, byModel } = parse(await text("/metrics"));
      const now = Date.now() / 1000;
      const tokens = sums["modelbench:generation_tokens_total"] || 0;
      if (last && now > last[0]) history.push([now, Math.max(0, tokens - last[1]) / (now - last[0])]);
      last = [now, tokens];
      while (history.length && history[0][0] < now - WINDOW_S) history.shift();
      const kv = byModel["modelbench:kv_cache_usage_perc"] || {};
      tiles.replaceChildren(
        h("div", { class: "tile" }, h("div", { class: "note" }, "requests running"), h("div", { class: "big", "data-metric": "running" }, String(sums["modelbench:num_requests_running"] || 0))),
        h("div", { class: "tile" }, h("div", { class: "note" }, "requests waiting"), h("div", { class: "big", "data-metric": "waiting" }, String(sums["modelbench:num_requests_waiting"] || 0))),
        ...Object.entries(kv).map(([model, v]) => h("div", { class: "tile" }, h("div", { class: "note" }, `KV cache use · ${model}`), h("div", { class: "big", "data-metric": "kv" }, `${number(v * 100, 1)} %`))),
        h("div", { class: "tile" }, h("div", { class: "note" }, "tokens/s now"), h("div", { class: "big", "data-metric": "tps" }, number(history.length ? history[history.length - 1][1] : 0, 1))),
      );
      if (!Object.keys(kv).length) tiles.append(h("p", { class: "note" }, "No local model on this server: no KV cache to show."));
      chart.replaceChildren(history.length > 1
        ? lineChart({ title: "Generated tokens per second", xLabel: "time", yLabel: "tokens/s", xTime: true,
          series: [{ name: "tokens/s", points: history.map(([t, v]) => [t, v]) }] })
        : h("p", { class: "note" }, "Collecting samples (every 2 s, kept 5 minutes while this page is open)…"));
      status.textContent = `Sampled ${new Date().toISOString().slice(11, 19)} UTC from /metrics.`;
    } catch (err) {
      status.replaceChildren(errorText(err));
    }
    timer = setTimeout(sample, PERIOD_MS);
  }
  sample();
  return () => clearTimeout(timer);
}
