// What the served model allows, on the Create page: its family, needs and native size (GET /api/v1/model), what a
// closed-vocabulary model knows (subjects, attributes), the controls that do not apply to it hidden with a note
// saying why, the style presets that mean nothing to it marked as such, what it makes of a request (notes), the sampler / clip skip / IP-Adapter inputs, and the box for
// parameters pasted from AUTOMATIC1111, Forge or Civitai (sent as parameters_text; what the server would not
// honour is listed under it, from the quote before submitting and from the submit's answer).

import { api } from "./api.js";
import { clear, h } from "./dom.js";

const MAX_IP_BYTES = 8 * 1024 * 1024; // within the server's body limit once base64-encoded

function wrap(control, label, input, hint = null, wide = false) {
  return h("div", { class: wide ? "field wide" : "field", dataset: { control } },
    h("label", { for: input.id }, label), input, hint ? h("small", { class: "muted" }, hint) : null);
}

/** The sampler, clip skip and IP-Adapter fields for the Advanced grid (each marked with the control it is). */
export function modelFields() {
  const sampler = h("select", { id: "c-scheduler", name: "scheduler", dataset: { field: "params.scheduler" } },
    h("option", { value: "" }, "Model default"));
  const clipSkip = h("input", { id: "c-clip-skip", name: "clip_skip", type: "text", inputmode: "numeric",
    autocomplete: "off", placeholder: "1", dataset: { field: "params.clip_skip" } });
  const ipImage = h("input", { id: "c-ip-image", name: "ip_image", type: "file",
    accept: "image/png,image/jpeg,image/webp", dataset: { field: "params.ip_image" } });
  const ipScale = h("input", { id: "c-ip-scale", name: "ip_scale", type: "text", inputmode: "decimal",
    autocomplete: "off", placeholder: "0.6", dataset: { field: "params.ip_scale" } });
  return [
    wrap("scheduler", "Sampler", sampler),
    wrap("clip_skip", "Clip skip", clipSkip),
    wrap("ip_adapter", "Reference image (IP-Adapter)", ipImage, "The image steers the look; the prompt still counts."),
    wrap("ip_adapter", "Reference strength", ipScale, "0–2, default 0.6"),
  ];
}

/** The paste box: a details block with the pasted text and the list of what would not be honoured. */
export function pasteBox() {
  const text = h("textarea", { id: "c-parameters", name: "parameters_text", rows: 4, maxlength: 10000,
    dataset: { field: "parameters_text" },
    placeholder: "a castle on a hill <lora:myStyle:0.7>\nNegative prompt: blurry\nSteps: 25, Sampler: DPM++ 2M, "
      + "Schedule type: Karras, CFG scale: 7, Seed: 42, Size: 512x768" });
  const summary = h("summary", {}, "Paste parameters from AUTOMATIC1111, Forge or Civitai");
  return h("details", { id: "c-paste" }, summary,
    h("div", { class: "field" }, h("label", { for: text.id }, "Parameters as copied (PNG Info or Civitai's “Copy”)"),
      text, h("small", { class: "muted" },
        "Used as pasted: prompt, negative prompt, LoRA tags, sampler, seed, size, hires fix. What you set above wins."),
      h("ul", { id: "c-ignored", class: "notes", "aria-live": "polite", hidden: true })));
}

/** Show what the server did not (or would not) honour of the pasted text; nothing when the list is empty. */
export function showIgnored(form, ignored) {
  const list = form.querySelector("#c-ignored");
  const items = ignored ?? [];
  clear(list, ...(items.length ? [h("li", {}, h("strong", {}, "Not honoured:"))] : []),
    ...items.map((line) => h("li", {}, line)));
  list.hidden = !items.length;
}

/** The params the model fields add to a request (an empty box is "not given"); the image is read as base64. */
export async function modelParams(form, numberOrText, { withImage = true } = {}) {
  const params = {};
  const control = (name) => applies(form, name);
  if (control("scheduler") && form.elements.scheduler.value) params.scheduler = form.elements.scheduler.value;
  const clipSkip = numberOrText(form.elements.clip_skip.value);
  if (control("clip_skip") && clipSkip !== undefined) params.clip_skip = clipSkip;
  const file = form.elements.ip_image.files?.[0];
  if (control("ip_adapter") && file) {
    if (!withImage) return params; // a quote does not need the image: it costs the same with or without
    if (file.size > MAX_IP_BYTES) throw new Error(`The reference image is over ${MAX_IP_BYTES / 1048576} MB.`);
    params.ip_image = await base64Of(file);
  }
  const scale = numberOrText(form.elements.ip_scale.value);
  if (control("ip_adapter") && file && scale !== undefined) params.ip_scale = scale;
  return params;
}

async function base64Of(file) {
  const bytes = new Uint8Array(await file.arrayBuffer());
  let binary = "";
  for (let start = 0; start < bytes.length; start += 0x8000) {
    binary += String.fromCharCode(...bytes.subarray(start, start + 0x8000));
  }
  return btoa(binary);
}

/** Whether a control applies to the served model (true until the model is known). */
export function applies(form, name) {
  return !form.querySelector(`[data-control="${name}"]`)?.hidden;
}

/** Read the served model and show it: family, needs, samplers; hide what does not apply, saying why. */
export async function showModel(form) {
  const model = await api.get("/api/v1/model");
  const box = form.querySelector("#c-model");
  const needs = model.needs.length ? ` — needs ${model.needs.join("; ")}` : "";
  clear(box, "Model: ", h("strong", { id: "c-family", dataset: { family: model.family ?? "" } }, model.label),
    ` (${model.name})${sizeText(model.native_size)}${needs}`, model.problem ? h("span", { class: "error" }, ` ${model.problem}`) : null);
  box.hidden = false;
  const sampler = form.elements.scheduler;
  const chosen = sampler.value;
  sampler.replaceChildren(h("option", { value: "" }, "Model default"),
    ...model.samplers.map((name) => h("option", { value: name }, name)));
  if (model.samplers.includes(chosen)) sampler.value = chosen;
  const notes = [];
  for (const rule of model.controls) {
    for (const element of form.querySelectorAll(`[data-control="${rule.name}"]`)) element.hidden = !rule.applies;
    if (rule.why) notes.push(h("li", { dataset: { note: rule.name } }, rule.why));
  }
  const list = form.querySelector("#c-model-notes");
  clear(list, ...notes);
  list.hidden = !notes.length;
  showKnows(form.querySelector("#c-knows"), model.knows);
  return model;
}

function sizeText(size) {
  return size ? ` · native size ${size[0]}×${size[1]}` : "";
}

/** A closed-vocabulary model's subjects and attributes as a compact list; hidden for an open-vocabulary model. */
function showKnows(box, knows) {
  box.hidden = !knows;
  if (!knows) return;
  const values = (list) => list.map((v) => `${v.en[0]} ${v.zh[0] ?? ""}`.trim()).join(", ");
  const rows = [["subjects", knows.subjects], ...Object.entries(knows.attributes)];
  clear(box, h("summary", {}, `What this model knows: ${knows.subjects.length} subjects, `
      + `${Object.keys(knows.attributes).length} attributes (${knows.languages.join(", ")}); nothing else`),
    h("dl", { class: "knows" }, rows.flatMap(([name, list]) =>
      [h("dt", {}, name), h("dd", { dataset: { knows: name } }, values(list))])),
    h("p", { class: "muted" }, `An attribute you do not name is ${knows.unnamed}.`));
}

/** A style preset's option: marked when the served model knows none of its words (it stays selectable). */
export function styleOption(style) {
  const mark = style.means_nothing ? " — means nothing to this model" : "";
  return h("option", { value: style.name, title: style.note ?? "",
    dataset: { meansNothing: String(style.means_nothing) } }, `${style.name_en} · ${style.name_zh}${mark}`);
}

/** Under the style select: what the chosen preset does to the served model (closed-vocabulary models only). */
export function showStyleNote(form) {
  const option = form.elements.style.selectedOptions[0];
  const note = form.querySelector("#c-style-note");
  note.textContent = option?.value ? option.title : "";
  note.hidden = !note.textContent;
}

/** What the served model makes of the request (from the quote, then from the submit's answer); never a refusal. */
export function showRequestNotes(form, notes) {
  const list = form.querySelector("#c-request-notes");
  clear(list, ...(notes ?? []).map((note) => h("li", {}, note)));
  list.hidden = !(notes ?? []).length;
}
