// Batch jobs: submit a JSONL file (POST /v1/batch); the key's batches, newest
// first (GET /v1/batch: every batch for an admin key), each followed
// (GET /v1/batch/{id}) with a progress bar until it ends.

import { json, request, text } from "../api.js";
import { h, field, errorText } from "../dom.js";

const FINAL = new Set(["completed", "cancelled"]);

export default function batches() {
  const known = new Map();  // id -> row element
  const list = h("div", { "aria-live": "polite", "aria-label": "Batches" });
  const file = h("input", { id: "batch-file", type: "file", accept: ".jsonl,application/jsonl,application/json" });
  const lookup = h("input", { id: "batch-id", placeholder: "batch_..." });
  const message = h("div");
  let timer = null;

  function track(id, first = false) {
    if (known.has(id)) return;
    const bar = h("progress", { max: "1", value: "0", "aria-label": `progress of ${id}` });
    const label = h("span", {}, "…");
    const cancel = h("button", { type: "button", class: "secondary", onclick: async () => {
      try { await request(`/v1/batch/${encodeURIComponent(id)}/cancel`, { method: "POST" }); refresh(); } catch (err) { label.textContent = err.message; }
    } }, `Cancel ${id}`);
    const failures = h("ul", { class: "failures" });
    const row = h("div", { class: "batch", "data-batch": id },
      h("div", { class: "row" }, h("code", {}, id), bar, label, cancel), failures);
    row.parts = { bar, label, cancel, failures };
    known.set(id, row);
    if (first) list.prepend(row); else list.append(row);
    refresh();
  }

  async function refresh() {
    let pending = false;
    for (const [id, row] of known) {
      if (row.final) continue;
      try {
        const b = await json(`/v1/batch/${encodeURIComponent(id)}`);
        const c = b.request_counts;
        const done = c.completed + c.failed + (c.cancelled || 0);
        row.parts.bar.max = c.total;
        row.parts.bar.value = done;
        row.parts.label.textContent = `${b.status}: ${c.completed} succeeded, ${c.failed} failed, ${c.running || 0} running, ${c.queued || 0} queued of ${c.total}`;
        row.final = FINAL.has(b.status);
        row.parts.cancel.hidden = row.final;
        if (row.final && c.failed) await showFailures(id, row.parts.failures);
        if (!row.final) pending = true;
      } catch (err) {
        row.parts.label.textContent = err.message;
        row.final = true;
      }
    }
    clearTimeout(timer);
    if (pending) timer = setTimeout(refresh, 1000);
  }

  // Each failed job's custom id and the reason the server gave.
  async function showFailures(id, list) {
    const lines = (await text(`/v1/batch/${encodeURIComponent(id)}/results`)).split("\n").filter(Boolean);
    const failed = lines.map((line) => JSON.parse(line)).filter((job) => job.status === "failed");
    list.replaceChildren(...failed.map((job) =>
      h("li", { class: "error" }, `${job.custom_id ?? `#${job.position}`}: ${job.error ? job.error.message : `HTTP ${job.response && job.response.status_code}`}`)));
  }

  async function submit(event) {
    event.preventDefault();
    message.replaceChildren();
    const chosen = file.files[0];
    if (!chosen) { message.append(errorText("Choose a JSONL file first.")); return; }
    try {
      const body = await chosen.text();
      const b = await json("/v1/batch", { method: "POST", body, type: "application/jsonl" });
      message.append(h("p", { class: "note" }, `Submitted ${b.id} (${b.request_counts.total} requests).`));
      track(b.id, true);
    } catch (err) {
      message.append(errorText(err));
    }
  }

  const element = h("section", { "aria-label": "Batch jobs" },
    h("h2", {}, "Batch jobs"),
    h("form", { class: "row", onsubmit: submit }, field("Batch JSONL file", file), h("button", { type: "submit" }, "Submit batch")),
    h("form", { class: "row", onsubmit: (e) => { e.preventDefault(); if (lookup.value.trim()) track(lookup.value.trim()); } },
      field("Batch id", lookup), h("button", { type: "submit", class: "secondary" }, "Follow")),
    message, list);
  json("/v1/batch?limit=20")
    .then((page) => { for (const b of page.data) track(b.id); })
    .catch((err) => message.append(errorText(err)));
  return { element, track, stop: () => clearTimeout(timer) };
}
