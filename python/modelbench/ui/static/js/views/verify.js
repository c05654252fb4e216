// Verify: ask models for code (POST /v1/verify), run each answer in the
// sandbox against tests, and show every candidate: pass or fail, the
// sandbox's reason, its output and its code.

import { json } from "../api.js";
import { h, number, errorText, table } from "../dom.js";
import { modelChecks, samplingFields, promptBox } from "./common.js";

export default function verify(main) {
  const checks = modelChecks();
  const sampling = samplingFields({ temperature: "0", maxTokens: "128", topP: false, seed: false });
  const prompt = promptBox(4);
  const tests = h("textarea", { id: "tests", rows: "3", placeholder: "assert f(1) == 2   (empty: the prompt's >>> examples)" });
  const entry = h("input", { id: "entry-point", placeholder: "by default, from the prompt" });
  const out = h("section", { "aria-live": "polite", "aria-label": "Verification" });
  const send = h("button", { type: "submit" }, "Send");

  async function run(event) {
    event.preventDefault();
    const body = {
      models: checks.chosen(),
      messages: [{ role: "user", content: prompt.querySelector("textarea").value }],
      ...sampling.values(),
    };
    if (tests.value.trim()) body.tests = tests.value;
    if (entry.value.trim()) body.entry_point = entry.value.trim();
    out.replaceChildren(h("p", { class: "note" }, "Generating and running the candidates…"));
    send.disabled = true;
    try {
      const result = await json("/v1/verify", { method: "POST", body });
      const rows = result.results.map((r) => [
        r.model,
        h("span", { class: r.passed ? "pass" : "fail" }, r.passed ? "pass" : "fail"),
        r.reason,
        h("details", {}, h("summary", {}, "code"), h("pre", {}, r.code || "")),
        h("pre", {}, r.output || ""),
        `${number(r.generation_ms, 0)} / ${number(r.run_ms, 0)}`,
      ]);
      out.replaceChildren(
        h("p", { class: result.verified ? "pass" : "fail" },
          result.verified ? `Verified: ${result.chosen.model}'s code passed` : "No candidate passed"),
        h("p", { class: "note" }, `isolation: ${result.isolation}`),
        table(["model", "result", "reason", "code", "output", { text: "generate / run ms", num: true }], rows),
        result.chosen ? h("div", {}, h("h2", {}, "Chosen code"), h("pre", {}, result.chosen.code)) : null,
      );
    } catch (err) {
      out.replaceChildren(errorText(err));
    } finally {
      send.disabled = false;
    }
  }

  main.append(
    h("h1", {}, "Verify"),
    h("p", { class: "note" }, "Each answer's code runs in the server's sandbox against the tests; only code that passed is chosen."),
    h("form", { onsubmit: run }, checks, sampling, prompt,
      h("label", { for: "tests" }, "Tests", tests),
      h("div", { class: "row" }, h("label", { for: "entry-point" }, "Entry point", entry)),
      h("div", { class: "row" }, send)),
    out,
  );
}
