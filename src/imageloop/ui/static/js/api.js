// Talking to the Imageloop API: the stored key, JSON requests with readable errors, retries that reuse the same
// body (so a client event id is sent again, never made anew), authenticated images, and progress streams.

const KEY_STORAGE = "imageloop.apiKey";
const KEY_ID_STORAGE = "imageloop.apiKeyId"; // set when this browser's key came from a password sign-in
const RETRY_DELAYS_MS = [300, 1000, 2500];

/** An API (or network) failure with the server's message and the field it names. */
export class ApiError extends Error {
  constructor(status, message, { field = null, problems = [], kind = "" } = {}) {
    super(message);
    this.status = status;
    this.field = field;
    this.problems = problems;
    this.kind = kind;
  }
}

export const session = {
  get key() { return localStorage.getItem(KEY_STORAGE); },
  get issuedKeyId() { return localStorage.getItem(KEY_ID_STORAGE); },
  signIn(key, issuedKeyId = null) {
    localStorage.setItem(KEY_STORAGE, key);
    if (issuedKeyId) localStorage.setItem(KEY_ID_STORAGE, issuedKeyId);
    else localStorage.removeItem(KEY_ID_STORAGE);
  },
  signOut() {
    localStorage.removeItem(KEY_STORAGE);
    localStorage.removeItem(KEY_ID_STORAGE);
    revokeImageUrls();
  },
};

function headers(extra = {}, key = session.key) {
  const out = { ...extra };
  if (key) out.Authorization = `Bearer ${key}`;
  return out;
}

async function errorFrom(response, { announce = true } = {}) {
  let body = null;
  try { body = await response.json(); } catch { /* not JSON */ }
  const message = body?.message || `${response.status} ${response.statusText || "error"}`;
  const error = new ApiError(response.status, message, {
    field: body?.field ?? null, problems: body?.problems ?? [], kind: body?.error ?? "",
  });
  if (response.status === 401 && announce) window.dispatchEvent(new CustomEvent("imageloop:unauthorised", { detail: error }));
  return error;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Send one request and return its JSON. Failures become ApiError with the server's message. With `retries`, a
 * network failure or a 5xx is retried with the identical body (safe for idempotent calls only). `key` sends that
 * API key instead of the stored one (to check a key before keeping it).
 */
export async function request(method, path, { body, query, retries = 0, signal, key } = {}) {
  let url = path;
  if (query) {
    const params = new URLSearchParams();
    for (const [name, value] of Object.entries(query)) {
      if (value !== undefined && value !== null && value !== "") params.set(name, String(value));
    }
    if ([...params].length) url += `?${params}`;
  }
  const json = body === undefined ? {} : { "Content-Type": "application/json" };
  const init = { method, headers: headers(json, key ?? session.key), signal };
  if (body !== undefined) init.body = JSON.stringify(body);
  for (let attempt = 0; ; attempt += 1) {
    let response;
    try {
      response = await fetch(url, init);
    } catch (cause) {
      if (signal?.aborted) throw cause;
      if (attempt < retries) { await sleep(RETRY_DELAYS_MS[attempt] ?? 3000); continue; }
      throw new ApiError(0, "Cannot reach the server. Check the connection and try again.");
    }
    if (response.status >= 500 && attempt < retries) { await sleep(RETRY_DELAYS_MS[attempt] ?? 3000); continue; }
    if (!response.ok) throw await errorFrom(response, { announce: key === undefined });
    if (response.status === 204) return null;
    return response.json();
  }
}

export const api = {
  get: (path, query, options = {}) => request("GET", path, { query, ...options }),
  post: (path, body, options = {}) => request("POST", path, { body, ...options }),
  put: (path, body, options = {}) => request("PUT", path, { body, ...options }),
  del: (path, options = {}) => request("DELETE", path, options),
};

/** A fresh client event id: made once per click and reused by every retry of that click. */
export function newEventId() {
  if (crypto.randomUUID) return crypto.randomUUID();
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Record a user action on an image; retried with the same client event id, so it is recorded once. */
export function recordAction(type, target, extra = {}) {
  const body = { type, client_event_id: newEventId(), ...target, ...extra };
  return api.post("/api/v1/actions", body, { retries: RETRY_DELAYS_MS.length });
}

// Images need the Authorization header, so they are fetched and shown through blob: URLs (kept per image).
const imageUrls = new Map();

export async function imageBlob(url) {
  const response = await fetch(url, { headers: headers() });
  if (!response.ok) throw await errorFrom(response);
  return response.blob();
}

export async function imageUrl(url) {
  if (!imageUrls.has(url)) {
    const pending = imageBlob(url).then((blob) => URL.createObjectURL(blob));
    imageUrls.set(url, pending);
    pending.catch(() => imageUrls.delete(url));
  }
  return imageUrls.get(url);
}

function revokeImageUrls() {
  for (const pending of imageUrls.values()) pending.then((url) => URL.revokeObjectURL(url), () => {});
  imageUrls.clear();
}

function parseBlock(block) {
  let event = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith("event:")) event = line.slice(6).trim();
    else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
  }
  return data.length ? { event, data: JSON.parse(data.join("\n")) } : null;
}

/**
 * Follow a server-sent event stream (fetch, so the Authorization header goes with it), calling
 * `onEvent(name, data)` for each event, until the server ends the stream.
 */
export async function streamEvents(path, onEvent, signal) {
  const response = await fetch(path, { headers: headers({ Accept: "text/event-stream" }), signal });
  if (!response.ok) throw await errorFrom(response);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replaceAll("\r\n", "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const parsed = parseBlock(buffer.slice(0, end));
      buffer = buffer.slice(end + 2);
      if (parsed) onEvent(parsed.event, parsed.data);
    }
  }
}

export { sleep };
