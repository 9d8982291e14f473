// Why the prompt reads as it does: each word of the final prompt with where it came from (the expansion's
// details.provenance). The person's own words are plain; words the expander added carry a small label naming
// their source, spelled out for screen readers, with the personal values that filled open attributes listed after.

import { h } from "./dom.js";

// What each source means, for the label's tooltip and screen readers.
const SOURCES = {
  intent: "your words",
  translation: "translated from your words",
  rules: "added by the word rules",
  retrieval: "added from a similar prompt you kept",
  local_llm: "added by the local language model",
  remote_llm: "added by the remote language model",
  memory: "recalled from the images you kept",
  personal_value: "one of your habits, from your edits and keeps",
  style: "added by the style",
};

function meaning(source) {
  return SOURCES[source] ?? `added by ${source}`;
}

function word(entry) {
  const tag = String(entry.tag ?? "");
  const source = String(entry.source ?? "");
  if (!entry.added) {
    const note = source && source !== "intent" ? h("span", { class: "sr-only" }, ` (${meaning(source)})`) : null;
    return h("li", { class: "word own", title: meaning(source || "intent") }, tag, note);
  }
  return h("li", { class: "word added", dataset: { source }, title: meaning(source) }, tag,
    h("span", { class: "source", "aria-hidden": "true" }, source.replaceAll("_", " ")),
    h("span", { class: "sr-only" }, ` (${meaning(source)})`));
}

function personalValues(values) {
  const applied = Object.entries(values?.applied ?? {});
  if (!applied.length) return null;
  return h("p", { class: "muted personal-values" }, "Your habits filled in: ",
    applied.map(([attribute, value]) => `${attribute.replaceAll("_", " ")} ${value}`).join(", "), ".");
}

/** A view of `details` (from a generation or a preview), or null when the expander gave no provenance;
 * `titled` false leaves out the "Where the words came from" lead-in (where a label already says it). */
export function provenanceView(details, { titled = true } = {}) {
  const words = Array.isArray(details?.provenance) ? details.provenance : [];
  const habits = personalValues(details?.personal_values);
  if (!words.length && !habits) return null;
  const added = words.filter((entry) => entry.added).length;
  const summary = added ? `${added} of ${words.length} words added; yours are plain.` : "Every word is yours.";
  return h("div", { class: "provenance" },
    words.length ? h("p", { class: "muted" }, titled ? "Where the words came from: " : "", summary) : null,
    words.length ? h("ul", { class: "words", "aria-label": "Words of the final prompt and where each came from" },
      words.map(word)) : null,
    habits);
}
