// The HTTP API, as any client calls it: same origin, the key (when the
// person gave one) in the Authorization header, kept in sessionStorage only.

const KEY = "modelbench.key";

export function getKey() { return sessionStorage.getItem(KEY) || ""; }
export function setKey(key) {
  if (key) sessionStorage.setItem(KEY, key); else sessionStorage.removeItem(KEY);
}

export class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

const listeners = new Set();
// Told when a call is refused for want of a key (401), so the page asks for one.
export function onUnauthorized(fn) { listeners.add(fn); }

function headers(extra = {}) {
  const out = { ...extra };
  const key = getKey();
  if (key) out.Authorization = `Bearer ${key}`;
  return out;
}

async function failure(response) {
  let body = null;
  let message = `${response.status} ${response.statusText}`;
  try {
    body = await response.json();
    if (body && body.error && body.error.message) message = body.error.message;
  } catch (_) { /* not JSON */ }
  if (response.status === 401) listeners.forEach((fn) => fn(message));
  return new ApiError(response.status, message, body);
}

export async function request(path, { method = "GET", body, type = "application/json", signal } = {}) {
  const init = { method, headers: headers(), signal };
  if (body !== undefined) {
    init.headers["Content-Type"] = type;
    init.body = typeof body === "string" ? body : JSON.stringify(body);
  }
  const response = await fetch(path, init);
  if (!response.ok) throw await failure(response);
  return response;
}

export async function json(path, options) {
  return (await request(path, options)).json();
}

export async function text(path, options) {
  return (await request(path, options)).text();
}

// POST a streaming request; onEvent gets each server-sent event's JSON
// (never "[DONE]"). Returns the response, for its headers.
export async function stream(path, body, onEvent, signal) {
  const response = await request(path, { method: "POST", body, signal });
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      for (const line of block.split("\n")) {
        if (!line.startsWith("data:")) continue;
        const data = line.slice(5).trim();
        if (data === "[DONE]") continue;
        const event = JSON.parse(data);
        if (event.error) throw new ApiError(response.status, event.error.message || "stream failed", event);
        onEvent(event);
      }
    }
  }
  return response;
}

// Models as the pickers offer them: each name (the server routes it) and
// each version, local or upstream.
export async function models() {
  const list = await json("/v1/models");
  return list.data;
}

// Whether this key may use the admin routes: ask for one version's load
// status (the server refuses without an admin key; nothing changes).
export async function isAdmin(versionId) {
  if (!versionId) return false;
  try {
    await request(`/v1/admin/models/${encodeURIComponent(versionId)}`);
    return true;
  } catch (err) {
    if (err.status === 401 || err.status === 403) return false;
    return err.status === 404;  // allowed, and the version just went away
  }
}
