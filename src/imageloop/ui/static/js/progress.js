// A generation's live progress: queue position, step count and a cancel button, from the SSE route
// (GET /api/v1/generations/{id}/events), falling back to polling if the stream breaks.

import { api, sleep, streamEvents } from "./api.js";
import { clear, describe, h, onceClick } from "./dom.js";

const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
const POLL_MS = 1000;

/** The progress panel; `update(...)` paints it. */
export function progressPanel() {
  const state = h("strong", { class: "state" }, "Submitting…");
  const queue = h("span", { class: "queue" });
  const bar = h("progress", { max: 1, value: 0, "aria-label": "Generation progress" });
  const steps = h("span", { class: "steps" });
  const cancel = h("button", { type: "button", class: "secondary" }, "Cancel");
  const element = h("section", { class: "progress-panel", "aria-live": "polite", "aria-label": "Progress" },
    h("div", { class: "row" }, state, queue), bar, h("div", { class: "row" }, steps, cancel));
  let cancelling = false;
  return {
    element, cancel,
    /** Says "Cancelling…" until the job ends while `on` (its cancel was asked for). */
    cancelling(on) { cancelling = on; },
    update({ status, queuePosition = null, step = 0, total = 0, label = null }) {
      // A finished job stays finished: a reply that left the server before the end (the cancel's own answer, a
      // late progress event) may arrive after the final status and must not paint the job as running again.
      if (TERMINAL.has(element.dataset.status)) return;
      if (cancelling && !TERMINAL.has(status)) label = "Cancelling…";
      state.textContent = label ?? {
        queued: "Queued", running: "Generating", succeeded: "Done", failed: "Failed", cancelled: "Cancelled",
      }[status] ?? status;
      queue.textContent = status === "queued" && queuePosition !== null ? `position ${queuePosition + 1} in the queue`
        : "";
      if (total > 0) {
        bar.max = total;
        bar.value = Math.min(step, total);
        steps.textContent = `Step ${Math.min(step, total)} of ${total}`;
      } else if (status === "queued") {
        bar.removeAttribute("value");
        steps.textContent = "Waiting for a worker…";
      }
      if (status === "succeeded") { bar.max = 1; bar.value = 1; }
      cancel.hidden = TERMINAL.has(status);
      element.dataset.status = status;
    },
    fail(error) {
      state.textContent = "Error";
      clear(steps, h("span", { class: "error" }, describe(error)));
      cancel.hidden = true;
    },
  };
}

function paintRecord(panel, record) {
  panel.update({ status: record.status, queuePosition: record.queue_position, step: record.progress.step,
    total: record.progress.total });
}

async function poll(id, panel, signal) {
  for (;;) {
    const record = await api.get(`/api/v1/generations/${encodeURIComponent(id)}`, undefined, { signal });
    paintRecord(panel, record);
    if (TERMINAL.has(record.status)) return record;
    await sleep(POLL_MS);
  }
}

/** Follow generation `id` in `panel` until it ends; resolves with its final record. */
export async function follow(id, panel, signal) {
  const path = `/api/v1/generations/${encodeURIComponent(id)}`;
  let last = null;
  onceClick(panel.cancel, async () => {
    panel.cancelling(true);
    panel.update({ status: "running" });
    try {
      paintRecord(panel, await api.post(`${path}/cancel`, {}));
    } catch (error) {
      panel.cancelling(false); // the job goes on; the error is shown as a notice
      throw error;
    }
  });
  try {
    await streamEvents(`${path}/events`, (event, data) => {
      if (event === "status") { last = data; paintRecord(panel, data); }
      else if (event === "started") panel.update({ status: "running", step: 0, total: last?.progress.total ?? 0 });
      else if (event === "progress") panel.update({ status: "running", step: data.step, total: data.total });
    }, signal);
  } catch (error) {
    if (signal?.aborted) throw error;
    if (error.status && error.status < 500) throw error; // 401/404: polling would fail the same way
  }
  if (last && TERMINAL.has(last.status)) return last;
  return poll(id, panel, signal);
}
