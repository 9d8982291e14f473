// Results: each image with download, share, regenerate, like, discard and edit-and-retry. Every click is one
// recorded action (its client event id is made once per click; retries resend it), and a double-click is one click.

import { api, imageBlob, imageUrl, newEventId, recordAction } from "./api.js";
import { changesView, diffView } from "./diff.js";
import { clear, describe, h, notify, onceClick } from "./dom.js";

const NO_REACTION = { liked: false, kept: false, downloaded: false, shared: false, discarded: false };

/** An <img> whose authenticated source is fetched in the background. */
export function authImage(url, alt, attrs = {}) {
  const img = h("img", { alt, decoding: "async", ...attrs });
  if (attrs.width && attrs.width <= 256) img.classList.add("small-source");
  imageUrl(url).then((src) => { img.src = src; }, (error) => {
    img.replaceWith(h("p", { class: "error" }, `Image not loaded: ${describe(error)}`));
  });
  return img;
}

function button(label, attrs = {}) {
  return h("button", { type: "button", class: "secondary", ...attrs }, label);
}

function saveFile(blob, name) {
  const url = URL.createObjectURL(blob);
  const link = h("a", { href: url, download: name, hidden: true });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

function shareBox(card, link) {
  const input = h("input", { type: "url", readonly: true, value: link.url, "aria-label": "Share link",
    class: "share-url" });
  const copy = button("Copy link");
  const revoke = button("Revoke link", { class: "danger-link" });
  copy.addEventListener("click", async () => {
    input.select();
    try { await navigator.clipboard.writeText(link.url); notify("Link copied."); } catch { /* selected instead */ }
  });
  onceClick(revoke, async () => {
    await api.del(`/api/v1/shares/${encodeURIComponent(link.id)}`);
    box.replaceWith(h("p", { class: "muted share-box" }, "Share link revoked: it no longer opens."));
  });
  const box = h("div", { class: "share-box" }, input, copy, revoke);
  card.querySelector(".share-box")?.remove();
  card.querySelector(".card-actions").after(box);
  input.select();
}

function editor(card, generation, image, onChild) {
  const before = generation.final_prompt || generation.prompt || generation.intent || "";
  const text = h("textarea", { rows: 3, class: "edit-prompt", "aria-label": "Edited prompt", maxlength: 4000 }, before);
  const preview = h("div", { class: "diff-preview", "aria-live": "polite" });
  const submit = h("button", { type: "button" }, "Generate edited prompt");
  const cancel = button("Close");
  const refresh = () => {
    const { element, changed } = diffView(before, text.value);
    clear(preview, h("p", { class: "muted" }, changed ? `${changed} change(s):` : "No change yet."), element);
  };
  text.addEventListener("input", refresh);
  text.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) submit.click();
  });
  const panel = h("div", { class: "editor" }, h("label", {}, "Edit the prompt, then retry"), text, preview,
    h("div", { class: "row" }, submit, cancel));
  cancel.addEventListener("click", () => panel.remove());
  onceClick(submit, async () => {
    if (!text.value.trim()) throw new Error("the edited prompt is empty");
    const action = await recordAction("edit", { image_id: image.id }, { prompt: text.value });
    clear(panel, h("p", {}, "Edit recorded. Changes:"), changesView(action.edit?.token_changes ?? []));
    onChild?.(action.child_generation_id, { kind: "edit", action, from: generation });
  });
  refresh();
  return panel;
}

/**
 * A result card for one image of `generation`. `reaction` is the user's standing with it (from the gallery);
 * `onChild(id, info)` is told about generations started from it (regenerate, edit).
 */
export function resultCard(generation, image, { reaction = NO_REACTION, onChild = null } = {}) {
  const state = { ...NO_REACTION, ...reaction };
  const alt = generation.final_prompt || generation.intent || "generated image";
  const card = h("figure", { class: "result", dataset: { imageId: image.id, generationId: generation.id } });
  const picture = authImage(image.url, alt, { width: image.width, height: image.height });
  const caption = h("figcaption", {}, h("span", { class: "prompt" }, generation.final_prompt || ""),
    h("span", { class: "muted" }, ` · seed ${image.seed} · ${image.width}×${image.height}`));

  const download = button("Download");
  const share = button("Share");
  const regenerate = button("Regenerate");
  const like = button("Like", { "aria-pressed": "false", class: "secondary toggle" });
  const discard = button("Discard");
  const edit = button("Edit & retry");
  const target = { image_id: image.id };

  const paint = () => {
    like.setAttribute("aria-pressed", String(state.liked));
    like.textContent = state.liked ? "♥ Liked" : "♡ Like";
    card.classList.toggle("discarded", state.discarded);
    card.classList.toggle("kept", state.kept);
    discard.textContent = state.discarded ? "Discarded" : "Discard";
  };

  onceClick(download, async () => {
    const blob = await imageBlob(image.url);
    saveFile(blob, `imageloop-${generation.id.slice(0, 8)}-${image.index}.png`);
    await recordAction("download", target);
    Object.assign(state, { downloaded: true, kept: true });
    paint();
  });
  onceClick(share, async () => {
    const body = { image_id: image.id, client_event_id: newEventId() };
    const link = await api.post("/api/v1/shares", body, { retries: 3 });
    Object.assign(state, { shared: true, kept: true });
    paint();
    shareBox(card, link);
  });
  onceClick(regenerate, async () => {
    const action = await recordAction("regenerate", target);
    onChild?.(action.child_generation_id, { kind: "regenerate", action, from: generation });
  });
  onceClick(like, async () => {
    const type = state.liked ? "unlike" : "like";
    await recordAction(type, target);
    state.liked = type === "like";
    state.discarded = false;
    state.kept = state.liked || state.downloaded || state.shared;
    paint();
  });
  onceClick(discard, async () => {
    await recordAction("discard", target);
    Object.assign(state, { discarded: true, liked: false, kept: state.downloaded || state.shared });
    paint();
  });
  edit.addEventListener("click", () => {
    const open = card.querySelector(".editor");
    if (open) { open.querySelector("textarea").focus(); return; }
    const panel = editor(card, generation, image, onChild);
    card.append(panel);
    panel.querySelector("textarea").focus();
  });

  const actions = h("div", { class: "card-actions", role: "group", "aria-label": "Image actions" },
    download, share, regenerate, like, discard, edit);
  card.append(picture, caption, actions);
  paint();
  return card;
}

/** All images of a finished generation, or why there are none. */
export function resultGroup(generation, options = {}) {
  const reactions = generation.reactions ?? {};
  if (generation.status === "failed") {
    return h("p", { class: "error" }, `The generation failed: ${generation.error || "no reason given"}`);
  }
  if (generation.status === "cancelled") return h("p", { class: "muted" }, "The generation was cancelled.");
  const cards = h("div", { class: "results" },
    generation.images.map((image) => resultCard(generation, image, { ...options, reaction: reactions[image.id] })));
  const notes = generation.notes ?? [];
  if (!notes.length) return cards;
  // What the served model makes of this request (a size it was not trained at, attributes left to chance).
  return h("div", {}, h("ul", { class: "notes result-notes" }, notes.map((note) => h("li", {}, note))), cards);
}
