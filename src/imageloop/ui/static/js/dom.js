// Small DOM helpers: building elements, notices, showing API errors next to the inputs they name, and buttons
// that act once per click (a double-click or a click while the first is still in flight does nothing more).

import { ApiError } from "./api.js";

/** h("button", {class: "x", onclick: f}, "text", child...) */
export function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") element.addEventListener(name.slice(2), value);
    else if (name === "class") element.className = value;
    else if (name === "dataset") Object.assign(element.dataset, value);
    else if (name in element && typeof value !== "string") element[name] = value;
    else element.setAttribute(name, value === true ? "" : value);
  }
  append(element, children);
  return element;
}

function append(element, children) {
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function clear(element, ...children) {
  element.replaceChildren();
  append(element, children);
  return element;
}

/** A short message at the top of the page (errors stay until dismissed, others fade). */
export function notify(message, kind = "info") {
  const box = document.getElementById("notices");
  const close = h("button", { type: "button", class: "link", "aria-label": "Dismiss" }, "×");
  const note = h("div", { class: `notice ${kind}`, role: kind === "error" ? "alert" : null }, h("span", {}, message),
    close);
  close.addEventListener("click", () => note.remove());
  box.append(note);
  if (kind !== "error") setTimeout(() => note.remove(), 6000);
}

/** The readable text of any failure. */
export function describe(error) {
  if (error instanceof ApiError) return error.message;
  return error?.message ? `Something went wrong: ${error.message}` : "Something went wrong.";
}

/**
 * Show `error` in `box` (an element with role=alert) and mark the input of the field it names, found by
 * `[data-field="<field>"]` inside `form`. Returns the input, if any.
 */
export function showError(box, error, form = null) {
  clear(box, describe(error));
  box.hidden = false;
  if (!form) return null;
  for (const marked of form.querySelectorAll("[aria-invalid]")) marked.removeAttribute("aria-invalid");
  const fields = error instanceof ApiError ? [error.field, ...error.problems.map((p) => p.field)] : [];
  let first = null;
  for (const field of fields.filter(Boolean)) {
    const input = form.querySelector(`[data-field="${CSS.escape(field)}"]`);
    if (input) {
      input.setAttribute("aria-invalid", "true");
      input.setAttribute("aria-describedby", box.id);
      first ??= input;
    }
  }
  if (first) {
    first.closest("details")?.setAttribute("open", "");
    first.focus();
  }
  return first;
}

export function hideError(box, form = null) {
  box.hidden = true;
  clear(box);
  if (form) for (const marked of form.querySelectorAll("[aria-invalid]")) marked.removeAttribute("aria-invalid");
}

/**
 * Run `handler(event)` for a click on `button`, once: the second click of a double-click (event.detail > 1)
 * and clicks while the handler is still running are ignored. Errors go to `onError`.
 */
export function onceClick(button, handler, onError = (error) => notify(describe(error), "error")) {
  button.addEventListener("click", async (event) => {
    event.preventDefault();
    if (event.detail > 1 || button.getAttribute("aria-busy") === "true") return;
    button.setAttribute("aria-busy", "true");
    try {
      await handler(event);
    } catch (error) {
      onError(error);
    } finally {
      button.removeAttribute("aria-busy");
    }
  });
  return button;
}

export function formatTime(value) {
  if (!value) return "";
  return new Date(value).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

export function percent(value) {
  return `${(100 * value).toFixed(1)}%`;
}
