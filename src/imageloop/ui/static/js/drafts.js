// Nothing typed is lost: a form's named fields are saved as they change and restored when the page comes back
// (after a reload, a sign-in, an error or a crash of the tab).

const PREFIX = "imageloop.draft.";

function fields(form) {
  return [...form.elements].filter((element) => element.name && element.type !== "password" && element.type !== "file");
}

export function saveDraft(form, key) {
  const values = {};
  for (const element of fields(form)) {
    values[element.name] = element.type === "checkbox" ? element.checked : element.value;
  }
  try { localStorage.setItem(PREFIX + key, JSON.stringify(values)); } catch { /* storage full or disabled */ }
}

export function restoreDraft(form, key) {
  let values = {};
  try { values = JSON.parse(localStorage.getItem(PREFIX + key) || "{}"); } catch { return; }
  for (const element of fields(form)) {
    if (!(element.name in values)) continue;
    if (element.type === "checkbox") element.checked = Boolean(values[element.name]);
    else element.value = values[element.name];
  }
}

/** Restore `form` from its draft, then keep the draft up to date. */
export function keepDraft(form, key) {
  restoreDraft(form, key);
  const save = () => saveDraft(form, key);
  form.addEventListener("input", save);
  form.addEventListener("change", save);
  return save;
}

export function readDraft(key) {
  try { return JSON.parse(localStorage.getItem(PREFIX + key) || "{}"); } catch { return {}; }
}
