// Models: every version with its state and routing, the gateway's
// upstreams with their health (GET /v1/upstreams), and, for an admin key
// only, loading and unloading versions (/v1/admin/models).

import { json, request, isAdmin } from "../api.js";
import { h, field, number, table, errorText } from "../dom.js";

function upstreamSection(section, cards) {
  json("/v1/upstreams").then((list) => {
    if (!list.data.length) {
      section.append(h("p", { class: "note" },
        "This server has no upstreams: it serves its own models, so there is no upstream health to show. "
        + "modelbench gateway (or serve --upstream NAME=URL) routes to upstream servers."));
      return;
    }
    for (const pool of list.data) {
      section.append(h("h3", {}, `${pool.name} · ${pool.policy}${pool.fallback ? ` · falls back to ${pool.fallback}` : ""} · ${pool.ready ? "ready" : "no healthy replica"}`),
        table(["replica", "url", "health", "breaker", { text: "in flight", num: true }, { text: "latency ms", num: true }, { text: "requests / failures", num: true }, "last error"],
          pool.replicas.map((r) => [r.id, r.url,
            h("span", { class: r.healthy ? "pass" : "fail" }, r.healthy ? "healthy" : "unhealthy"),
            (r.breaker && r.breaker.state) || "–", r.outstanding, number(r.latency_ms, 1),
            `${r.requests} / ${r.failures}`, r.last_error || ""])));
    }
  }).catch((err) => section.append(errorText(err)));
  return cards;
}

function adminSection(section, versions, refresh, message) {
  const name = h("input", { id: "load-name", required: true, placeholder: "SmolLM2-135M-Instruct" });
  const version = h("input", { id: "load-version", value: "2", size: "6" });
  const path = h("input", { id: "load-path", placeholder: "empty: the default model" });
  const kv = h("input", { id: "load-kv", type: "number", min: "1", placeholder: "server default" });
  const maxLen = h("input", { id: "load-max-len", type: "number", min: "1", placeholder: "the model's" });
  async function load(event) {
    event.preventDefault();
    const body = { name: name.value.trim(), version: version.value.trim() || "1" };
    if (path.value.trim()) body.path = path.value.trim();
    if (maxLen.value) body.max_model_len = Number(maxLen.value);
    if (kv.value) body.kv_cache_memory = Math.round(Number(kv.value) * 1024 * 1024);
    message.replaceChildren(h("p", { class: "note" }, `Loading ${body.name}:${body.version}…`));
    try {
      let status = await json("/v1/admin/models", { method: "POST", body });
      while (status.state === "loading") {
        await new Promise((r) => setTimeout(r, 500));
        status = await json(`/v1/admin/models/${encodeURIComponent(status.id)}`);
      }
      message.replaceChildren(h("p", { class: status.state === "ready" ? "pass" : "fail" }, `${status.id}: ${status.state}${status.error ? ` (${status.error})` : ""}`));
      refresh();
    } catch (err) {
      message.replaceChildren(errorText(err));
    }
  }
  section.append(h("h2", {}, "Load a version (admin)"),
    h("form", { class: "row", onsubmit: load }, field("Name", name), field("Version", version), field("Path", path), field("Max model length", maxLen), field("KV cache MiB", kv),
      h("button", { type: "submit" }, "Load")),
    h("h2", {}, "Unload (admin)"),
    h("div", { class: "row" }, versions.map((v) => h("button", { type: "button", class: "secondary", onclick: async () => {
      message.replaceChildren(h("p", { class: "note" }, `Unloading ${v.id}…`));
      try { await request(`/v1/admin/models/${encodeURIComponent(v.id)}`, { method: "DELETE" }); refresh(); } catch (err) { message.replaceChildren(errorText(err)); }
    } }, `Unload ${v.id}`))));
}

export default function models(main) {
  const body = h("div");
  const upstreams = h("section", { "aria-label": "Upstreams" }, h("h2", {}, "Upstreams"));
  const admin = h("section", { "aria-label": "Administration" });
  const message = h("div", { "aria-live": "polite" });  // outlives the refreshes
  main.append(h("h1", {}, "Models"), body, upstreams, admin, message);
  let alive = true;
  async function refresh() {
    try {
      const cards = (await json("/v1/models")).data;
      if (!alive) return;
      const versions = cards.filter((c) => c.version);
      const names = cards.filter((c) => !c.version && c.owned_by !== "upstream");
      body.replaceChildren(
        h("h2", {}, "Versions"),
        versions.length ? table(["version", "state", "routing", "default", { text: "weight", num: true }, { text: "in flight", num: true }, { text: "max length", num: true }, "tasks"],
          versions.map((v) => [v.id, v.state, v.routing || "–", v.default ? "yes" : "", v.weight, v.outstanding, v.max_model_len, (v.tasks || []).join(", ")]))
          : h("p", { class: "note" }, "No local version is loaded."),
        names.length ? h("p", { class: "note" }, `Routing by name: ${names.map((n) => `${n.id} → ${n.routing || "default"}`).join("; ")}`) : null,
      );
      admin.replaceChildren();
      if (await isAdmin(versions[0] && versions[0].id)) {
        adminSection(admin, versions, refresh, message);
      } else {
        admin.append(h("p", { class: "note" }, "Loading and unloading need an admin key."));
      }
    } catch (err) {
      body.replaceChildren(errorText(err));
    }
  }
  refresh();
  upstreamSection(upstreams);
  return () => { alive = false; };
}
