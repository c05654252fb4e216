// Jobs: the request log (GET /v1/requests, filtered by model, status, task
// and time), one request's detail (#/jobs/<id>), batch jobs with their
// progress, and submitting a batch from a JSONL file.

import { json } from "../api.js";
import { h, field, number, when, table, errorText, clear } from "../dom.js";
import batches from "./batches.js";

const STATUSES = ["", "succeeded", "failed", "aborted"];
const TASKS = ["", "generate", "summarize", "sentiment", "classify", "embed"];

function select(id, values) {
  return h("select", { id }, values.map((v) => h("option", { value: v }, v || "any")));
}

function isoOrEmpty(localValue) {
  return localValue ? new Date(localValue).toISOString() : "";
}

function detail(main, id) {
  main.append(h("p", {}, h("a", { href: "#/jobs" }, "← All requests")), h("h1", {}, `Request ${id}`));
  const body = h("div", {}, h("p", { class: "note" }, "Loading…"));
  main.append(body);
  json(`/v1/requests/${encodeURIComponent(id)}`).then((r) => {
    const prompt = r.messages ? r.messages.map((m) => `${m.role}: ${typeof m.content === "string" ? m.content : JSON.stringify(m.content)}`).join("\n\n") : (r.prompt ?? "(not stored)");
    const facts = [
      ["model", `${r.model_name}${r.model_version ? `:${r.model_version}` : ""}`],
      ["task", r.task], ["endpoint", r.endpoint], ["status", `${r.status} (HTTP ${r.http_status ?? "–"})`],
      ["finish reason", r.finish_reason], ["created", when(r.created_at)], ["finished", when(r.finished_at)],
      ["queue", `${number(r.queue_time_ms, 1)} ms`], ["time to first token", `${number(r.ttft_ms, 1)} ms`],
      ["latency", `${number(r.latency_ms, 1)} ms`],
      ["tokens", `${r.prompt_tokens ?? "–"} prompt, ${r.completion_tokens ?? "–"} completion`],
      ["batch", r.batch_id], ["compare", r.compare_id], ["upstream", r.upstream], ["key", r.api_key_id], ["error", r.error],
    ].filter(([, v]) => v !== null && v !== undefined && v !== "");
    body.replaceChildren(
      h("dl", { class: "kv" }, facts.map(([k, v]) => [h("dt", {}, k), h("dd", {}, String(v))])),
      h("h2", {}, "Prompt"), h("pre", {}, prompt),
      h("h2", {}, "Output"), h("pre", {}, r.output_text ?? "(not stored)"),
      h("h2", {}, "Parameters"), h("pre", {}, JSON.stringify(r.parameters ?? {}, null, 2)),
    );
  }).catch((err) => body.replaceChildren(errorText(err)));
}

export default function jobs(main, [id]) {
  if (id) { detail(main, id); return undefined; }
  const model = h("input", { id: "filter-model", placeholder: "any" });
  const status = select("filter-status", STATUSES);
  const task = select("filter-task", TASKS);
  const since = h("input", { id: "filter-since", type: "datetime-local" });
  const until = h("input", { id: "filter-until", type: "datetime-local" });
  const results = h("section", { "aria-live": "polite", "aria-label": "Requests" });
  const more = h("button", { type: "button", class: "secondary", hidden: true }, "More");
  let cursor = null;
  let rows = [];
  const tracker = batches();

  async function load(next) {
    const params = new URLSearchParams({ limit: "25" });
    const values = { model: model.value.trim(), status: status.value, task: task.value,
      since: isoOrEmpty(since.value), until: isoOrEmpty(until.value) };
    for (const [k, v] of Object.entries(values)) if (v) params.set(k, v);
    if (next && cursor) params.set("cursor", cursor); else rows = [];
    try {
      const page = await json(`/v1/requests?${params}`);
      rows = rows.concat(page.data);
      cursor = page.next_cursor;
      more.hidden = !page.has_more;
      clear(results).append(rows.length ? table(
        ["id", "created", "model", "task", "status", { text: "tokens in / out", num: true }, { text: "TTFT ms", num: true }, { text: "latency ms", num: true }],
        rows.map((r) => [
          h("a", { href: `#/jobs/${encodeURIComponent(r.id)}` }, r.id),
          when(r.created_at), `${r.model_name ?? ""}${r.model_version ? `:${r.model_version}` : ""}`, r.task, r.status,
          `${r.prompt_tokens ?? "–"} / ${r.completion_tokens ?? "–"}`, number(r.ttft_ms, 0), number(r.latency_ms, 0),
        ]), `${rows.length} request${rows.length === 1 ? "" : "s"}, newest first`)
        : h("p", { class: "note" }, "No requests match."));
      for (const r of page.data) if (r.batch_id) tracker.track(r.batch_id);
    } catch (err) {
      clear(results).append(errorText(err));
    }
  }
  more.addEventListener("click", () => load(true));

  main.append(
    h("h1", {}, "Jobs"),
    h("form", { class: "row", onsubmit: (e) => { e.preventDefault(); load(false); } },
      field("Model", model), field("Status", status), field("Task", task),
      field("Since", since), field("Until", until), h("button", { type: "submit" }, "Filter")),
    results, more, tracker.element,
  );
  load(false);
  return tracker.stop;
}

