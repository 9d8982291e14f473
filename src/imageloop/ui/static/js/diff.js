// The prompt diff of edit-and-retry: what was there in blue, what replaces it in red. Tokens are split on commas
// and whitespace, as the server's edit distance does (imageloop.flywheel.editdiff).

import { h } from "./dom.js";

export function tokenize(prompt) {
  return prompt.split(/[\s,]+/u).filter(Boolean);
}

const MAX_CELLS = 250_000; // beyond this the middle is shown as one replace (the page stays responsive)

/** The token alignment of `before` and `after` as segments {op: "same"|"replace"|"insert"|"delete", before, after}. */
export function diffTokens(before, after) {
  const old = tokenize(before);
  const next = tokenize(after);
  let start = 0;
  while (start < old.length && start < next.length && old[start] === next[start]) start += 1;
  let endOld = old.length;
  let endNew = next.length;
  while (endOld > start && endNew > start && old[endOld - 1] === next[endNew - 1]) { endOld -= 1; endNew -= 1; }
  const head = old.slice(0, start).map((token) => ({ op: "same", before: token, after: token }));
  const tail = old.slice(endOld).map((token) => ({ op: "same", before: token, after: token }));
  return [...head, ...align(old.slice(start, endOld), next.slice(start, endNew)), ...tail];
}

function align(old, next) {
  if (!old.length && !next.length) return [];
  if ((old.length + 1) * (next.length + 1) > MAX_CELLS) {
    return [{ op: "replace", before: old.join(" "), after: next.join(" ") }];
  }
  const cols = next.length + 1;
  const table = new Uint32Array((old.length + 1) * cols);
  for (let i = 0; i <= old.length; i += 1) table[i * cols] = i;
  for (let j = 0; j <= next.length; j += 1) table[j] = j;
  for (let i = 1; i <= old.length; i += 1) {
    for (let j = 1; j <= next.length; j += 1) {
      const cost = old[i - 1] === next[j - 1] ? 0 : 1;
      table[i * cols + j] = Math.min(table[(i - 1) * cols + j] + 1, table[i * cols + j - 1] + 1,
        table[(i - 1) * cols + j - 1] + cost);
    }
  }
  const out = [];
  let i = old.length;
  let j = next.length;
  while (i || j) {
    const here = table[i * cols + j];
    if (i && j && old[i - 1] === next[j - 1] && here === table[(i - 1) * cols + j - 1]) {
      out.push({ op: "same", before: old[i - 1], after: next[j - 1] }); i -= 1; j -= 1;
    } else if (i && j && here === table[(i - 1) * cols + j - 1] + 1) {
      out.push({ op: "replace", before: old[i - 1], after: next[j - 1] }); i -= 1; j -= 1;
    } else if (i && here === table[(i - 1) * cols + j] + 1) {
      out.push({ op: "delete", before: old[i - 1], after: "" }); i -= 1;
    } else {
      out.push({ op: "insert", before: "", after: next[j - 1] }); j -= 1;
    }
  }
  return out.reverse();
}

/** One change as the page shows it: `before → after`, before in blue, after in red. */
export function changeView(change) {
  const parts = [];
  if (change.before) parts.push(h("del", { class: "before", title: "before" }, change.before));
  if (change.before && change.after) parts.push(h("span", { class: "arrow", "aria-label": "becomes" }, " → "));
  if (change.after) parts.push(h("ins", { class: "after", title: "after" }, change.after));
  return h("span", { class: `change ${change.op}` }, ...parts);
}

/** The whole edited prompt with its changes marked in place. */
export function diffView(before, after) {
  const segments = diffTokens(before, after);
  const changed = segments.filter((s) => s.op !== "same").length;
  const line = h("p", { class: "diff" });
  segments.forEach((segment, index) => {
    if (index) line.append(" ");
    line.append(segment.op === "same" ? segment.after : changeView(segment));
  });
  return { element: line, changed };
}

/** The server's token changes (from the recorded edit action) as a list of `before → after`. */
export function changesView(tokenChanges) {
  if (!tokenChanges.length) return h("p", { class: "muted" }, "No token changed.");
  return h("ul", { class: "changes" }, tokenChanges.map((change) => h("li", {}, changeView(change))));
}
