// The History page: the user's generations newest first, loaded page by page as the list scrolls, filtered by
// kept / liked / style; a generation opens its full record (intent, prompts and where each word came from, params,
// versions, actions) with re-run.

import { api } from "./api.js";
import { clear, describe, formatTime, h, onceClick } from "./dom.js";
import { readDraft, saveDraft } from "./drafts.js";
import { provenanceView } from "./provenance.js";
import { authImage, resultGroup } from "./results.js";

const PAGE = 24;
const FILTERS = [["all", "All"], ["kept", "Kept"], ["liked", "Liked"]];

function filterBar(styles) {
  const show = h("fieldset", { class: "segmented" }, h("legend", {}, "Show"),
    FILTERS.map(([value, label], index) => h("label", {},
      h("input", { type: "radio", name: "filter", value, checked: index === 0 }), label)));
  const style = h("select", { id: "h-style", name: "style" }, h("option", { value: "" }, "All styles"),
    styles.map((s) => h("option", { value: s.name }, `${s.name_en} · ${s.name_zh}`)));
  return h("form", { class: "filters", id: "history-filters" }, show,
    h("div", { class: "field" }, h("label", { for: "h-style" }, "Style"), style));
}

function tile(item, open) {
  const image = item.images[0];
  const label = item.intent || item.final_prompt || item.prompt || "generation";
  const reactions = Object.values(item.reactions ?? {});
  const badges = [];
  if (reactions.some((r) => r.liked)) badges.push(h("span", { class: "badge liked", title: "liked" }, "♥"));
  if (reactions.some((r) => r.kept)) badges.push(h("span", { class: "badge kept", title: "kept" }, "kept"));
  if (item.status !== "succeeded") badges.push(h("span", { class: `badge ${item.status}` }, item.status));
  const picture = image ? authImage(image.url, label, { loading: "lazy", width: image.width, height: image.height })
    : h("div", { class: "placeholder", "aria-hidden": "true" }, item.status);
  const button = h("button", { type: "button", class: "tile", dataset: { generationId: item.id },
    "aria-label": `Open: ${label}` }, picture, h("span", { class: "tile-text" }, label), h("span", { class: "badges" },
    badges), h("time", { datetime: item.created_at, class: "muted" }, formatTime(item.created_at)));
  button.addEventListener("click", () => open(item.id));
  return button;
}

function row(name, value) {
  if (value === null || value === undefined || value === "") return null;
  if (typeof value === "object" && !(value instanceof Node)) {
    value = Object.entries(value).map(([key, v]) => `${key.replaceAll("_", " ")}: ${v}`).join(" · ");
  }
  return [h("dt", {}, name), h("dd", {}, value)];
}

function rerunBody(g) {
  const body = { params: { ...g.params }, n: g.params.num_images ?? g.images.length ?? 1 };
  delete body.params.num_images;
  for (const key of ["intent", "intent_language", "prompt", "negative_prompt", "recipe", "style"]) {
    if (g[key]) body[key] = g[key];
  }
  // The same prompt as it ran (not the intent expanded again), with the same seed.
  if (g.final_prompt) body.prompt = g.final_prompt;
  return body;
}

/** The full record of one generation, in a dialog. */
async function openRecord(id, onRerun) {
  for (const open of document.querySelectorAll("dialog.record")) open.close();
  const dialog = h("dialog", { class: "record", "aria-labelledby": "record-title" });
  document.body.append(dialog);
  dialog.addEventListener("close", () => {
    dialog.remove();
    if (location.hash.startsWith("#/history/")) history.replaceState(null, "", "#/history");
  });
  const close = h("button", { type: "button", class: "secondary", autofocus: true }, "Close");
  close.addEventListener("click", () => dialog.close());
  dialog.append(h("p", {}, "Loading…"));
  dialog.showModal();
  try {
    const { generation: g, actions, children } = await api.get(`/api/v1/generations/${encodeURIComponent(id)}/record`);
    const rerun = h("button", { type: "button" }, "Re-run (same settings and seed)");
    onceClick(rerun, async () => {
      const accepted = await api.post("/api/v1/generations", rerunBody(g));
      dialog.close();
      onRerun(accepted.id);
    });
    const facts = h("dl", { class: "facts" },
      row("Intent", g.intent), row("Language", g.intent_language), row("Prompt as sent", g.prompt),
      row("Final prompt", g.final_prompt), row("Where the words came from", provenanceView(g.details, { titled: false })),
      row("Negative prompt", g.negative_prompt), row("Style", g.style),
      row("Recipe", g.recipe), row("Parameters", g.params), row("Status", g.status), row("Error", g.error),
      row("Expander", g.expander_strategy && `${g.expander_strategy} ${g.expander_version ?? ""}`),
      row("Base model", g.base_model_id && `${g.base_model_id} ${g.base_model_version ?? ""}`),
      row("Started from", g.parent_id && h("a", { href: `#/history/${g.parent_id}` }, "the earlier generation")),
      row("Created", formatTime(g.created_at)),
      row("Timings (s)", Object.keys(g.timings).length ? g.timings : null));
    const log = actions.length
      ? h("ol", { class: "actions-log" }, actions.map((a) => h("li", { dataset: { type: a.type } },
        h("strong", {}, a.type), ` · ${formatTime(a.created_at)}`, a.child_generation_id ? " · started a generation" : "")))
      : h("p", { class: "muted" }, "No actions yet.");
    clear(dialog, h("div", { class: "row spread" }, h("h2", { id: "record-title" }, "Generation record"), close),
      resultGroup(g, { onChild: (childId) => { dialog.close(); onRerun(childId); } }),
      facts, h("h3", {}, `Actions (${actions.length})`), log,
      children.length ? h("p", { class: "muted" }, `${children.length} generation(s) started from this one.`) : null,
      h("div", { class: "row" }, rerun));
  } catch (error) {
    clear(dialog, h("p", { class: "error", role: "alert" }, describe(error)), close);
  }
}

/** The page; `openId` opens that record at once. */
export function historyPage(root, { openId = null, onRerun }) {
  const controller = new AbortController();
  const list = h("div", { class: "gallery", id: "gallery", "aria-live": "polite" });
  const status = h("p", { class: "muted", id: "gallery-status" });
  const sentinel = h("div", { class: "sentinel", "aria-hidden": "true" });
  const errorBox = h("p", { class: "error", role: "alert", hidden: true });
  clear(root, h("h1", {}, "History"), h("div", { id: "filters-slot" }), errorBox, list, status, sentinel);
  let cursor = null;
  let done = true; // until the filters are ready
  let loading = false;
  let epoch = 0; // a new filter starts a new list; answers for an older one are dropped
  let filters = { filter: "all", style: "" };

  const load = async () => {
    if (loading || done) return;
    loading = true;
    const mine = epoch;
    status.textContent = "Loading…";
    try {
      const page = await api.get("/api/v1/gallery", { ...filters, cursor, limit: PAGE },
        { signal: controller.signal });
      if (mine !== epoch) return;
      list.append(...page.items.map((item) => tile(item, (id) => { location.hash = `#/history/${id}`; })));
      cursor = page.next_cursor;
      done = !cursor;
      status.textContent = done ? (list.children.length ? "That is everything." : "Nothing here yet.") : "";
      errorBox.hidden = true;
    } catch (error) {
      if (controller.signal.aborted) return;
      errorBox.textContent = describe(error);
      errorBox.hidden = false;
      const again = h("button", { type: "button", class: "secondary" }, "Try again");
      again.addEventListener("click", () => load());
      clear(status, again);
      return;
    } finally {
      if (mine === epoch) loading = false;
    }
    // Keep loading while the list does not fill the screen yet.
    if (!done && sentinel.getBoundingClientRect().top < window.innerHeight + 200) load();
  };
  const restart = () => {
    epoch += 1;
    cursor = null;
    done = false;
    loading = false;
    list.replaceChildren();
    load();
  };

  const observer = new IntersectionObserver((entries) => {
    if (entries.some((entry) => entry.isIntersecting)) load();
  }, { rootMargin: "400px" });
  observer.observe(sentinel);

  api.get("/api/v1/styles").catch(() => []).then((styles) => {
    const bar = filterBar(styles);
    const saved = readDraft("history");
    if (saved.filter) bar.querySelector(`input[value="${CSS.escape(saved.filter)}"]`)?.click();
    if (saved.style) bar.elements.style.value = saved.style;
    filters = { filter: saved.filter || "all", style: bar.elements.style.value };
    bar.addEventListener("change", () => {
      saveDraft(bar, "history");
      filters = { filter: bar.elements.filter.value, style: bar.elements.style.value };
      restart();
    });
    root.querySelector("#filters-slot").replaceWith(bar);
    restart();
  });
  if (openId) openRecord(openId, onRerun);
  return () => { controller.abort(); observer.disconnect(); };
}

export { openRecord };
