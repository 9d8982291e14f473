// The Create page: an intent in any language, the expanded prompt shown (and editable) before generating, the
// advanced settings, "the usual", live progress with cancel, and the results.

import { api } from "./api.js";
import { changesView } from "./diff.js";
import { clear, describe, h, hideError, onceClick, showError } from "./dom.js";
import { keepDraft, readDraft } from "./drafts.js";
import { follow, progressPanel } from "./progress.js";
import { resultGroup } from "./results.js";

const DRAFT = "create";
const EXPANSION = "imageloop.expansion"; // the preview shown, so a reload can tell an edited prompt from it
const RECENT = "imageloop.recent";
const RECENT_MAX = 6;
export const USUAL_PHRASE = "the usual";

function field(label, input, hint = null) {
  return h("div", { class: "field" }, h("label", { for: input.id }, label), input,
    hint ? h("small", { class: "muted" }, hint) : null);
}

function textInput(name, dataField, attrs = {}) {
  return h("input", { id: `c-${name}`, name, type: "text", autocomplete: "off", dataset: { field: dataField },
    ...attrs });
}

function buildForm() {
  const intent = h("textarea", { id: "c-intent", name: "intent", rows: 3, required: true, dataset: { field: "intent" },
    placeholder: "A rainy city at night, lonely and quiet — or 雨夜里孤独的城市", maxlength: 10000 });
  const prompt = h("textarea", { id: "c-prompt", name: "prompt", rows: 3, dataset: { field: "prompt" },
    maxlength: 10000 });
  const style = h("select", { id: "c-style", name: "style", dataset: { field: "style" } },
    h("option", { value: "" }, "No style"));
  const recipe = h("select", { id: "c-recipe", name: "recipe", dataset: { field: "recipe" } },
    h("option", { value: "" }, "No recipe"));
  const form = h("form", { id: "create-form", novalidate: true, class: "card" },
    field("What do you want to see? Any language.", intent),
    h("div", { class: "row" },
      h("button", { type: "button", id: "c-expand", class: "secondary" }, "Show expanded prompt"),
      h("button", { type: "button", id: "c-usual", class: "secondary",
        title: "Your usual settings and look, from the images you kept" }, "The usual")),
    h("div", { id: "c-expanded", class: "expanded", hidden: true },
      field("Prompt that will be generated — edit it if you like", prompt),
      h("p", { id: "c-expander", class: "muted" })),
    h("label", { class: "check" }, h("input", { type: "checkbox", name: "as_typed", id: "c-as-typed" }),
      " Send my words as typed (no expansion)"),
    h("details", { id: "c-advanced" }, h("summary", {}, "Advanced"),
      h("div", { class: "grid" },
        h("div", { class: "field wide" }, h("label", { for: "c-negative" }, "Negative prompt"),
          h("textarea", { id: "c-negative", name: "negative_prompt", rows: 2, dataset: { field: "negative_prompt" } })),
        field("Style", style), field("Recipe", recipe),
        field("Width", textInput("width", "params.width", { inputmode: "numeric", placeholder: "model default" })),
        field("Height", textInput("height", "params.height", { inputmode: "numeric", placeholder: "model default" })),
        field("Steps", textInput("steps", "params.steps", { inputmode: "numeric", placeholder: "default" })),
        field("CFG scale", textInput("cfg", "params.guidance_scale", { inputmode: "decimal", placeholder: "default" })),
        field("Seed", textInput("seed", "params.seed", { inputmode: "numeric", placeholder: "random" })),
        field("Images", textInput("n", "n", { inputmode: "numeric", value: "1" })))),
    h("div", { id: "c-error", class: "error", role: "alert", hidden: true }),
    h("div", { class: "row" }, h("button", { type: "submit", id: "c-generate", class: "primary" }, "Generate"),
      h("small", { class: "muted kbd-hint" }, "Ctrl+Enter")));
  return form;
}

// A number the API should check: an empty box is "not given", anything else is sent (as text if it is not a
// number), so the API's own message explains what is wrong with it.
function numberOrText(value) {
  const text = value.trim();
  if (!text) return undefined;
  const number = Number(text);
  return Number.isFinite(number) ? number : text;
}

function requestBody(form, expansion) {
  const values = Object.fromEntries(new FormData(form));
  const intent = values.intent ?? "";
  const body = { intent };
  if (form.elements.as_typed.checked) body.prompt = intent;
  else if (expansion.shown && values.prompt !== expansion.original) body.prompt = values.prompt;
  if (values.negative_prompt?.trim()) body.negative_prompt = values.negative_prompt;
  if (values.style) body.style = values.style;
  if (values.recipe) body.recipe = values.recipe;
  const params = { width: numberOrText(values.width), height: numberOrText(values.height),
    steps: numberOrText(values.steps), guidance_scale: numberOrText(values.cfg), seed: numberOrText(values.seed) };
  body.params = Object.fromEntries(Object.entries(params).filter(([, value]) => value !== undefined));
  const n = numberOrText(values.n ?? "");
  if (n !== undefined) body.n = n;
  return body;
}

async function fillOptions(form) {
  const draft = readDraft(DRAFT);
  const [styles, recipes] = await Promise.all([api.get("/api/v1/styles"), api.get("/api/v1/recipes")]);
  form.elements.style.append(...styles.map((s) => h("option", { value: s.name }, `${s.name_en} · ${s.name_zh}`)));
  form.elements.recipe.append(...recipes.map((r) => h("option", { value: r.name }, r.name)));
  if (!recipes.length) form.elements.recipe.append(h("option", { value: "", disabled: true }, "(no recipes yet)"));
  if (draft.style) form.elements.style.value = draft.style;
  if (draft.recipe) form.elements.recipe.value = draft.recipe;
}

function remember(id) {
  const recent = [id, ...JSON.parse(localStorage.getItem(RECENT) || "[]").filter((x) => x !== id)];
  localStorage.setItem(RECENT, JSON.stringify(recent.slice(0, RECENT_MAX)));
}

/** The page; `root` is emptied and filled. */
export function createPage(root, { startWith = null } = {}) {
  const form = buildForm();
  const progressArea = h("div", { id: "progress-area" });
  const results = h("section", { id: "results-area", "aria-label": "Results" });
  clear(root, h("h1", {}, "Create"), form, progressArea, h("h2", { class: "results-title" }, "Results"), results);
  const save = keepDraft(form, DRAFT);
  const errorBox = form.querySelector("#c-error");
  const expandedBox = form.querySelector("#c-expanded");
  const expansion = { shown: false, original: null, intent: null };
  const controller = new AbortController();

  const info = form.querySelector("#c-expander");
  const showExpansion = (out, restored = false) => {
    expansion.shown = true;
    expansion.original = out.final_prompt;
    expansion.intent = restored ? out.intent : form.elements.intent.value;
    expandedBox.hidden = false;
    if (!restored) form.elements.prompt.value = out.final_prompt;
    const language = out.language ? `, language ${out.language}` : "";
    info.textContent = `Expanded by ${out.strategy} ${out.version}${language}. Edit it and the edited text is sent as is.`;
    localStorage.setItem(EXPANSION, JSON.stringify({ ...out, intent: expansion.intent }));
    save();
  };
  // "The usual": settings recalled from the user's kept images fill the advanced fields left empty.
  const applyRecall = (recall) => {
    const fields = { style: recall.style, recipe: recall.recipe, width: recall.params.width,
      height: recall.params.height, steps: recall.params.steps, cfg: recall.params.guidance_scale };
    const filled = [];
    for (const [name, value] of Object.entries(fields)) {
      const input = form.elements[name];
      if (value === null || value === undefined || !input || input.value) continue;
      input.value = String(value);
      if (input.value === String(value)) filled.push(`${name} ${value}`);
    }
    info.textContent += filled.length ? ` Your usual: ${filled.join(", ")}.` : "";
    if (filled.length) form.querySelector("#c-advanced").open = true;
    save();
  };
  const dropExpansion = () => {
    Object.assign(expansion, { shown: false, original: null, intent: null });
    expandedBox.hidden = true;
    form.elements.prompt.value = "";
    localStorage.removeItem(EXPANSION);
    save();
  };
  const expand = async () => {
    hideError(errorBox, form);
    const body = { intent: form.elements.intent.value };
    if (form.elements.negative_prompt.value.trim()) body.negative_prompt = form.elements.negative_prompt.value;
    const out = await api.post("/api/v1/prompts/expand", body);
    showExpansion(out);
    if (out.recall) applyRecall(out.recall);
  };
  const onError = (error) => showError(errorBox, error, form);
  onceClick(form.querySelector("#c-expand"), expand, onError);
  onceClick(form.querySelector("#c-usual"), async () => {
    const intent = form.elements.intent;
    const text = intent.value.trim();
    if (!text.toLowerCase().includes(USUAL_PHRASE)) intent.value = text ? `${text}, ${USUAL_PHRASE}` : USUAL_PHRASE;
    save();
    await expand();
  }, onError);

  const track = async (id, heading) => {
    remember(id);
    const panel = progressPanel();
    clear(progressArea, panel.element);
    panel.update({ status: "queued" });
    try {
      const record = await follow(id, panel, controller.signal);
      results.prepend(group(record, heading));
    } catch (error) {
      if (!controller.signal.aborted) panel.fail(error);
    }
  };
  const onChild = (childId, info) => {
    const heading = info.kind === "edit"
      ? h("div", {}, h("strong", {}, "Edited and retried: "), changesView(info.action.edit?.token_changes ?? []))
      : h("strong", {}, "Regenerated with a new seed");
    track(childId, heading);
    progressArea.scrollIntoView({ block: "nearest" });
  };
  const group = (record, heading = null) => h("article", { class: "result-group", dataset: { generationId: record.id } },
    heading, h("p", { class: "muted" }, record.intent ? `“${record.intent}”` : "", " ",
      h("a", { href: `#/history/${record.id}` }, "Full record")),
    resultGroup(record, { onChild }));

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = form.querySelector("#c-generate");
    if (button.getAttribute("aria-busy") === "true") return;
    button.setAttribute("aria-busy", "true");
    hideError(errorBox, form);
    try {
      const accepted = await api.post("/api/v1/generations", requestBody(form, expansion));
      track(accepted.id);
    } catch (error) {
      onError(error);
    } finally {
      button.removeAttribute("aria-busy");
    }
  });
  form.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) { event.preventDefault(); form.requestSubmit(); }
  });
  // A new intent makes an unedited preview stale: drop it (the server expands the new intent). An edited prompt
  // is the user's own text and stays.
  form.elements.intent.addEventListener("input", () => {
    const edited = form.elements.prompt.value !== expansion.original;
    if (expansion.shown && !edited && form.elements.intent.value !== expansion.intent) dropExpansion();
  });
  if (form.elements.prompt.value) {
    let saved = null;
    try { saved = JSON.parse(localStorage.getItem(EXPANSION) || "null"); } catch { /* ignore */ }
    if (saved) showExpansion(saved, true);
    else { expansion.shown = true; expandedBox.hidden = false; }
  }

  fillOptions(form).catch(onError);
  showRecent(results, group, controller.signal);
  if (startWith) track(startWith, h("strong", {}, "Re-run"));
  return () => controller.abort();
}

async function showRecent(results, group, signal) {
  const ids = JSON.parse(localStorage.getItem(RECENT) || "[]");
  for (const id of ids) {
    try {
      const record = await api.get(`/api/v1/generations/${encodeURIComponent(id)}/record`, undefined, { signal });
      if (record.generation.status === "succeeded") {
        const existing = results.querySelector(`[data-generation-id="${CSS.escape(id)}"]`);
        if (!existing) results.append(group({ ...record.generation }));
      }
    } catch (error) {
      if (signal.aborted) return;
      if (error.status === 404) continue;
      results.append(h("p", { class: "error" }, describe(error)));
      return;
    }
  }
}
