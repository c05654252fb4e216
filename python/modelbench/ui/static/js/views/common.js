// Pieces more than one view uses: the model pickers and the sampling fields.

import { models } from "../api.js";
import { h, field, errorText } from "../dom.js";

// A name routes among its versions; name:version pins one; upstream names
// are served by the gateway.
function describe(card) {
  if (card.owned_by === "upstream") return `${card.id} (upstream${card.state ? `, ${card.state}` : ""})`;
  if (card.version) return `${card.id} (version, ${card.state || "?"})`;
  return `${card.id} (routed: ${card.routing || "default"})`;
}

export function modelSelect(onLoaded) {
  const select = h("select", { id: "model", name: "model" });
  models().then((cards) => {
    for (const card of cards) select.append(h("option", { value: card.id }, describe(card)));
    if (onLoaded) onLoaded(cards);
  }).catch((err) => select.after(errorText(err)));
  return field("Model", select);
}

// One checkbox per model name, upstream name and version, the first checked.
export function modelChecks() {
  const box = h("fieldset", {}, h("legend", {}, "Models"));
  models().then((cards) => {
    const names = cards.filter((c) => !c.state || c.state === "ready");
    names.forEach((card, i) => {
      const id = `pick-${i}`;
      box.append(h("label", { for: id },
        h("input", { type: "checkbox", id, value: card.id, checked: i === 0 }),
        card.owned_by === "upstream" ? `${card.id} (upstream)` : card.id));
    });
    if (!names.length) box.append(h("p", { class: "note" }, "This server serves no model yet."));
  }).catch((err) => box.append(errorText(err)));
  box.chosen = () => [...box.querySelectorAll("input:checked")].map((x) => x.value);
  return box;
}

export function samplingFields({ temperature = "0.7", maxTokens = "256", topP = true, seed = true } = {}) {
  const inputs = {
    temperature: h("input", { type: "number", name: "temperature", min: "0", max: "2", step: "any", value: temperature }),
    top_p: topP ? h("input", { type: "number", name: "top_p", min: "0.01", max: "1", step: "any", value: "1" }) : null,
    max_tokens: h("input", { type: "number", name: "max_tokens", min: "1", step: "1", value: maxTokens }),
    seed: seed ? h("input", { type: "number", name: "seed", step: "1", placeholder: "random" }) : null,
  };
  const names = { temperature: "Temperature", top_p: "Top p", max_tokens: "Max tokens", seed: "Seed" };
  const row = h("div", { class: "row params" },
    Object.entries(inputs).filter(([, el]) => el).map(([k, el]) => field(names[k], el)));
  row.values = () => {
    const out = {};
    for (const [k, el] of Object.entries(inputs)) {
      if (el && el.value !== "") out[k] = Number(el.value);
    }
    return out;
  };
  return row;
}

export function promptBox(rows = 4) {
  return field("Prompt", h("textarea", { id: "prompt", name: "prompt", rows: String(rows) }));
}
