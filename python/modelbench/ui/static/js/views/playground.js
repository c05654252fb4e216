// Playground: chat with one model (a name, or a pinned version), streamed,
// with each answer's TTFT, tokens/s, token counts and cache status.

import { stream } from "../api.js";
import { h, number, errorText } from "../dom.js";
import { modelSelect, samplingFields, promptBox } from "./common.js";

export default function playground(main) {
  const messages = [];
  const picker = modelSelect();
  const sampling = samplingFields();
  const prompt = promptBox();
  const answers = h("section", { class: "chat", "aria-live": "polite", "aria-label": "Answers" });
  const send = h("button", { type: "submit" }, "Send");
  let controller = null;

  async function ask(event) {
    event.preventDefault();
    const box = prompt.querySelector("textarea");
    const content = box.value.trim();
    if (!content) { box.focus(); return; }
    messages.push({ role: "user", content });
    answers.append(h("div", { class: "turn user" }, h("div", { class: "who" }, "You"), h("div", { class: "text" }, content)));
    box.value = "";
    const model = picker.querySelector("select").value;
    const text = h("div", { class: "text" });
    const stats = h("div", { class: "stats" }, "waiting for the first token…");
    const turn = h("article", { class: "turn answer", "aria-busy": "true" },
      h("div", { class: "who" }, model), text, stats);
    answers.append(turn);
    send.disabled = true;
    controller = new AbortController();
    const started = performance.now();
    let first = null;
    let usage = null;
    let served = model;
    let reply = "";
    let chunks = 0;
    try {
      const response = await stream("/v1/chat/completions", {
        model, messages, stream: true, stream_options: { include_usage: true }, ...sampling.values(),
      }, (chunk) => {
        if (chunk.model) served = chunk.model;
        if (chunk.usage) usage = chunk.usage;
        for (const choice of chunk.choices || []) {
          const delta = (choice.delta && choice.delta.content) || "";
          if (delta) {
            if (first === null) first = performance.now();
            chunks += 1;
            reply += delta;
            text.textContent = reply;
          }
        }
      }, controller.signal);
      const ended = performance.now();
      messages.push({ role: "assistant", content: reply });
      const cache = response.headers.get("x-modelbench-cache");
      const tokens = usage ? usage.completion_tokens : null;
      const decodeS = first !== null ? (ended - first) / 1000 : null;
      // A cached answer arrives whole: no generation speed to show.
      const cached = Boolean(cache && cache.startsWith("hit"));
      const speed = tokens && decodeS > 0 && chunks > 1 && !cached
        ? `${number(Math.max(tokens - 1, 1) / decodeS, 1)} tokens/s`
        : `– tokens/s${cached ? " (from the cache)" : ""}`;
      turn.querySelector(".who").textContent = served;
      stats.replaceChildren(
        h("span", {}, `TTFT ${first !== null ? number(first - started, 0) : "–"} ms`),
        h("span", {}, speed),
        h("span", {}, usage ? `${usage.prompt_tokens} prompt + ${usage.completion_tokens} completion tokens` : "no usage sent"),
        h("span", { class: "cache" }, `cache: ${cache || "off"}`),
      );
    } catch (err) {
      messages.pop();
      stats.replaceChildren(errorText(err));
    } finally {
      turn.setAttribute("aria-busy", "false");
      send.disabled = false;
      controller = null;
    }
  }

  const form = h("form", { onsubmit: ask },
    h("div", { class: "row" }, picker), sampling, prompt,
    h("div", { class: "row" }, send,
      h("button", { type: "button", class: "secondary", onclick: () => { messages.length = 0; answers.replaceChildren(); } }, "New chat")));
  // Ctrl+Enter (or Cmd+Enter) sends from the prompt box.
  prompt.querySelector("textarea").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) form.requestSubmit();
  });
  main.append(h("h1", {}, "Playground"), answers, form);
  return () => { if (controller) controller.abort(); };
}
