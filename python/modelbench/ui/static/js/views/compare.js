// Compare: one prompt to several models (POST /v1/compare, streamed), their
// answers side by side as they arrive, each with its times and tokens.

import { stream } from "../api.js";
import { h, number, errorText } from "../dom.js";
import { modelChecks, samplingFields, promptBox } from "./common.js";

function outputText(output) {
  if (output === null || output === undefined) return "";
  return typeof output === "string" ? output : (output.content || "");
}

export default function compare(main) {
  const checks = modelChecks();
  const sampling = samplingFields({ temperature: "0", maxTokens: "128", topP: false, seed: false });
  const prompt = promptBox(3);
  const columns = h("section", { class: "columns", "aria-live": "polite", "aria-label": "Answers" });
  const send = h("button", { type: "submit" }, "Send");
  let controller = null;

  async function run(event) {
    event.preventDefault();
    const chosen = checks.chosen();
    const content = prompt.querySelector("textarea").value.trim();
    columns.replaceChildren();
    if (!chosen.length || !content) {
      columns.append(errorText(chosen.length ? "Write a prompt first." : "Pick at least one model."));
      return;
    }
    const cards = chosen.map((model) => {
      const text = h("div", { class: "text" });
      const stats = h("div", { class: "stats" }, "waiting…");
      const card = h("article", { class: "card", "aria-busy": "true" }, h("h3", {}, model), text, stats);
      columns.append(card);
      return { card, text, stats };
    });
    send.disabled = true;
    controller = new AbortController();
    try {
      await stream("/v1/compare", {
        models: chosen, messages: [{ role: "user", content }], stream: true, ...sampling.values(),
      }, (event) => {
        const slot = cards[event.index];
        if (!slot) return;
        if (event.delta) slot.text.textContent += event.delta;
        if (event.result) {
          const r = event.result;
          slot.card.setAttribute("aria-busy", "false");
          if (r.error) {
            slot.stats.replaceChildren(errorText(r.error.message || "failed"));
            return;
          }
          slot.text.textContent = outputText(r.output) || slot.text.textContent;
          slot.card.querySelector("h3").textContent = r.served_by && r.served_by !== r.model ? `${r.model} → ${r.served_by}` : r.model;
          slot.stats.replaceChildren(
            h("span", {}, `TTFT ${number(r.ttft_ms, 0)} ms`),
            h("span", {}, `total ${number(r.latency_ms, 0)} ms`),
            h("span", {}, r.usage ? `${r.usage.completion_tokens} tokens` : ""),
            h("span", {}, `finish: ${r.finish_reason || "–"}`),
          );
        }
      }, controller.signal);
    } catch (err) {
      columns.append(errorText(err));
    } finally {
      send.disabled = false;
      controller = null;
    }
  }

  main.append(
    h("h1", {}, "Compare"),
    h("form", { onsubmit: run }, checks, sampling, prompt, h("div", { class: "row" }, send)),
    columns,
  );
  return () => { if (controller) controller.abort(); };
}
