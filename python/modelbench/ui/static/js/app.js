// The page's shell: the hash router, the navigation's current link, and
// the key form (shown when the server asks for a key, or on demand).

import { getKey, setKey, onUnauthorized, request } from "./api.js";
import { h, clear } from "./dom.js";
import playground from "./views/playground.js";
import compare from "./views/compare.js";
import verify from "./views/verify.js";
import jobs from "./views/jobs.js";
import benchmarks from "./views/benchmarks.js";
import models from "./views/models.js";
import live from "./views/live.js";

const VIEWS = { playground, compare, verify, jobs, benchmarks, models, live };
const view = () => document.getElementById("view");
let stopCurrent = null;

function route() {
  const [name, ...rest] = (location.hash.replace(/^#\/?/, "") || "playground").split("/");
  const render = VIEWS[name] || playground;
  for (const link of document.querySelectorAll("nav a")) {
    if (link.getAttribute("href") === `#/${VIEWS[name] ? name : "playground"}`) {
      link.setAttribute("aria-current", "page");
    } else {
      link.removeAttribute("aria-current");
    }
  }
  if (stopCurrent) stopCurrent();
  stopCurrent = null;
  const main = clear(view());
  if (!getKey() && !document.getElementById("key-form-area").hidden) {
    main.append(h("p", { class: "note" }, "Give an API key above to see this view."));
    return;
  }
  const stop = render(main, rest.map(decodeURIComponent));
  if (typeof stop === "function") stopCurrent = stop;
  document.title = `modelbench · ${name || "playground"}`;
}

function showKeyStatus() {
  const area = clear(document.getElementById("key-status"));
  if (getKey()) {
    area.append(
      h("span", {}, "Key in use (this tab only)"),
      h("button", { type: "button", class: "secondary", onclick: () => { setKey(""); showKeyStatus(); route(); } }, "Forget key"),
    );
  } else {
    area.append(h("button", { type: "button", class: "secondary", onclick: () => askForKey("") }, "Enter API key"));
  }
}

function askForKey(reason) {
  const area = clear(document.getElementById("key-form-area"));
  area.hidden = false;
  const input = h("input", { id: "api-key", type: "password", autocomplete: "off", required: true });
  const form = h("form", {
    class: "row",
    onsubmit: (event) => {
      event.preventDefault();
      setKey(input.value.trim());
      area.hidden = true;
      clear(area);
      showKeyStatus();
      route();
    },
  },
  h("label", { for: "api-key" }, "API key", input),
  h("button", { type: "submit" }, "Use key"));
  area.append(
    h("h2", {}, "This server needs an API key"),
    reason ? h("p", { class: "note" }, reason) : null,
    h("p", { class: "note" }, "The key stays in this tab (sessionStorage) and is sent only to this server."),
    form,
  );
  input.focus();
}

onUnauthorized((message) => {
  if (document.getElementById("key-form-area").hidden) askForKey(message);
});

// Without a key, one call finds out whether the server wants one, before
// any view makes its own: each refused call counts against this address's
// failed authentications (the server locks it out for a while after ten).
async function start() {
  showKeyStatus();
  if (!getKey()) {
    try {
      await request("/v1/models");
    } catch (err) {
      if (err.status === 401) return;  // the key form is up; the view renders once a key is given
    }
  }
  route();
}

window.addEventListener("hashchange", () => { route(); view().focus(); });
window.addEventListener("DOMContentLoaded", start);
