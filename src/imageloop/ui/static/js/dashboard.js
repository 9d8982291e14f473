// The flywheel dashboard (admins): keep rate over time, the action funnel, dataset sizes, the model and expander
// versions in the record, and the recipe leaderboard.

import { api } from "./api.js";
import { clear, describe, formatTime, h, notify, onceClick, percent } from "./dom.js";

const SVG = "http://www.w3.org/2000/svg";

function s(tag, attrs = {}, ...children) {
  const element = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) element.setAttribute(name, String(value));
  for (const child of children) element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return element;
}

/** Keep rate per day (line) over bars of images made per day, as an SVG that scales with its box. */
export function keepRatePlot(days) {
  const width = 640;
  const height = 220;
  const pad = { left: 44, right: 12, top: 12, bottom: 28 };
  const inner = { w: width - pad.left - pad.right, h: height - pad.top - pad.bottom };
  const most = Math.max(1, ...days.map((d) => d.images));
  const step = inner.w / Math.max(1, days.length);
  const x = (i) => pad.left + step * (i + 0.5);
  const yRate = (rate) => pad.top + inner.h * (1 - rate);
  const rated = days.map((d, i) => [d, i]).filter(([d]) => d.keep_rate !== null);
  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, class: "plot", role: "img",
    "aria-label": `Keep rate per day, last ${days.length} days; ${rated.length} day(s) with images` });
  for (const tick of [0, 0.25, 0.5, 0.75, 1]) {
    svg.append(s("line", { x1: pad.left, x2: width - pad.right, y1: yRate(tick), y2: yRate(tick), class: "grid" }),
      s("text", { x: pad.left - 6, y: yRate(tick) + 4, "text-anchor": "end", class: "axis" }, `${tick * 100}%`));
  }
  days.forEach((d, i) => {
    if (!d.images) return;
    const barHeight = inner.h * (d.images / most);
    svg.append(s("rect", { x: x(i) - step * 0.35, width: step * 0.7, y: pad.top + inner.h - barHeight, height: barHeight,
      class: "bar" }, s("title", {}, `${d.day}: ${d.images} images, ${d.kept} kept`)));
  });
  if (rated.length > 1) {
    svg.append(s("polyline", { points: rated.map(([d, i]) => `${x(i)},${yRate(d.keep_rate)}`).join(" "), class: "line" }));
  }
  for (const [d, i] of rated) {
    svg.append(s("circle", { cx: x(i), cy: yRate(d.keep_rate), r: 3.5, class: "dot" },
      s("title", {}, `${d.day}: keep rate ${percent(d.keep_rate)} (${d.kept} of ${d.images})`)));
  }
  const labelEvery = Math.ceil(days.length / 8);
  days.forEach((d, i) => {
    const last = i === days.length - 1;
    if ((days.length - 1 - i) % labelEvery === 0 || last) {
      svg.append(s("text", { x: x(i), y: height - 8, "text-anchor": last ? "end" : "middle", class: "axis" },
        d.day.slice(5)));
    }
  });
  return svg;
}

function legend(days) {
  const most = Math.max(0, ...days.map((d) => d.images));
  return h("p", { class: "legend" }, h("span", {}, h("span", { class: "swatch line" }), "keep rate (left axis)"),
    h("span", {}, h("span", { class: "swatch bar" }), `images made per day (tallest bar: ${most})`));
}

function short(id, version) {
  if (!id) return "?";
  const name = id.length > 24 ? `${id.slice(0, 20)}…` : id;
  return h("span", { title: `${id} ${version ?? ""}` }, `${name} ${version && version.length > 12 ? `${version.slice(0, 12)}…` : version ?? ""}`);
}

function stat(label, value, id) {
  return h("div", { class: "stat", id }, h("span", { class: "value" }, value), h("span", { class: "label" }, label));
}

function table(headings, rows, empty) {
  if (!rows.length) return h("p", { class: "muted" }, empty);
  return h("div", { class: "table-wrap" }, h("table", {},
    h("thead", {}, h("tr", {}, headings.map((text) => h("th", {}, text)))),
    h("tbody", {}, rows.map((cells) => h("tr", {}, cells.map((cell) => h("td", {}, cell)))))));
}

function funnel(data) {
  const steps = [
    ["Generated", data.images], ["Kept", data.kept], ["Downloaded", data.by_action.download],
    ["Shared", data.by_action.share], ["Liked", data.by_action.like], ["Rerolled", data.by_action.regenerate],
    ["Edited", data.by_action.edit], ["Discarded", data.by_action.discard],
  ];
  const most = Math.max(1, data.images);
  return h("ol", { class: "funnel", id: "funnel" }, steps.map(([label, count]) => {
    const fill = h("span", { class: "fill" });
    fill.style.width = `${Math.min(100, (100 * count) / most)}%`; // CSSOM: allowed by the page's CSP
    return h("li", { dataset: { step: label } }, h("span", { class: "label" }, label),
      h("span", { class: "meter" }, fill), h("span", { class: "count" }, String(count)));
  }));
}

function metricsText(metrics) {
  const entries = Object.entries(metrics ?? {}).filter(([, v]) => typeof v === "number" || typeof v === "string");
  if (!entries.length) return "—";
  return entries.slice(0, 4).map(([k, v]) => `${k.replaceAll("_", " ")}: ${typeof v === "number" && !Number.isInteger(v)
    ? v.toFixed(3) : v}`).join(" · ");
}

// Promote and rollback are the training routes (imageloop.server.routes.training); the page only asks for them.
function releaseButton(version, action, reload) {
  const label = action === "promote" ? "Promote" : "Roll back";
  const button = h("button", { type: "button", class: action === "promote" ? "small" : "secondary small" }, label);
  onceClick(button, async () => {
    if (!confirm(`${label} ${version.kind} v${version.version}?`)) return;
    await api.post(`/api/v1/admin/models/${encodeURIComponent(version.id)}/${action}`, {});
    notify(`${version.kind} v${version.version}: ${action === "promote" ? "promoted" : "rolled back"}.`);
    reload();
  });
  return button;
}

function registry(data, reload) {
  const rows = data.model_versions.map((v) => [
    h("span", { title: v.tag }, `${v.kind} v${v.version}`), v.status.replace("_", " "),
    v.traffic_share ? percent(v.traffic_share) : "—", metricsText(v.metrics),
    v.ab_keep_rate === null ? "—" : `${percent(v.ab_keep_rate)} vs ${percent(v.ab_control_keep_rate)}`,
    formatTime(v.created_at),
    h("span", { class: "row" }, v.status !== "promoted" && v.status !== "rejected" ? releaseButton(v, "promote", reload) : "",
      v.status === "ab_test" || v.status === "promoted" ? releaseButton(v, "rollback", reload) : ""),
  ]);
  return h("section", { class: "card", id: "d-registry" }, h("h2", {}, "Model versions"),
    table(["Version", "Status", "Traffic", "Eval metrics", "A/B keep rate", "Created", ""], rows,
      "No model versions yet: the first training cycle registers them."));
}

function runs(data, reload) {
  const start = h("button", { type: "button", class: "secondary", id: "d-start-cycle" }, "Start a training cycle now");
  onceClick(start, async () => {
    if (!confirm("Start a training cycle now? It exports the record, trains and evaluates new versions.")) return;
    const run = await api.post("/api/v1/admin/training/cycles", {});
    notify(`Training cycle ${run.status}: stage ${run.stage}.`);
    reload();
  });
  const rows = data.training_runs.map((run) => {
    const bar = h("progress", { max: 1, value: run.progress, "aria-label": `${run.kind} progress` });
    return [run.kind.replace("_", " "), run.status, h("span", {}, bar, ` ${Math.round(run.progress * 100)}%`),
      run.error ? h("span", { class: "error" }, run.error) : run.message || run.stage, formatTime(run.created_at)];
  });
  return h("section", { class: "card", id: "d-runs" }, h("h2", {}, "Training runs"),
    table(["Run", "Status", "Progress", "Stage", "Started"], rows, "No training runs yet."), start);
}

function render(root, data, reload) {
  const generations = Object.values(data.funnel.generations).reduce((a, b) => a + b, 0);
  clear(root, h("h1", {}, "Flywheel"),
    h("div", { class: "stats" }, stat("users", `${data.users}`, "d-users"), stat("generations", `${generations}`, "d-generations"),
      stat("images", `${data.funnel.images}`, "d-images"), stat("keep rate", percent(data.funnel.keep_rate), "d-keep-rate"),
      stat("in the queue", `${data.queue_depth}`, "d-queue")),
    h("section", { class: "card" }, h("h2", {}, `Keep rate, last ${data.days} days`),
      keepRatePlot(data.keep_rate_by_day), legend(data.keep_rate_by_day)),
    h("section", { class: "card" }, h("h2", {}, "Action funnel"), funnel(data.funnel),
      h("small", { class: "muted" }, "Distinct images per action, over the whole record.")),
    h("section", { class: "card", id: "d-datasets" }, h("h2", {}, "Datasets"),
      table(["Dataset", "Rows now"], [["SFT (intent → kept prompt)", data.datasets.sft],
        ["DPO (chosen vs. rejected prompt)", data.datasets.dpo], ["Image pairs", data.datasets.pairs],
        ["Recipe stats", data.datasets.recipes], ["Chains walked", data.datasets.chains]], ""),
      h("small", { class: "muted" }, "What ", h("code", {}, "imageloop export"),
        " would write now; opted-out users are left out.")),
    h("section", { class: "card", id: "d-models" }, h("h2", {}, "Models and expanders in the record"),
      table(["Base model", "Expander", "Generations", "Images", "Keep rate"], data.served_models.map((m) => [
        short(m.base_model_id, m.base_model_version), `${m.expander_strategy ?? "?"} ${m.expander_version ?? ""}`,
        m.generations, m.images, percent(m.keep_rate)]), "No images generated yet."),
      h("small", { class: "muted" }, "Which base model and expander version made each image, and how many were kept.")),
    registry(data, reload), runs(data, reload),
    h("section", { class: "card", id: "d-recipes" }, h("h2", {}, "Recipe leaderboard"),
      table(["Recipe", "Style", "Uses", "Kept", "Keep rate (95% interval)"], data.recipes.map((r) => [
        r.recipe, r.style, r.uses, r.kept,
        `${percent(r.keep_rate)} (${percent(r.keep_rate_low)}–${percent(r.keep_rate_high)})`]), "No generations yet.")));
}

export function dashboardPage(root, { account }) {
  if (!account?.is_admin) {
    clear(root, h("h1", {}, "Flywheel"), h("p", { class: "error", role: "alert" },
      "The dashboard is for administrators (", h("code", {}, "imageloop users create NAME --admin"), ")."));
    return () => {};
  }
  const controller = new AbortController();
  clear(root, h("h1", {}, "Flywheel"), h("p", { class: "muted" }, "Loading…"));
  const load = () => api.get("/api/v1/dashboard", { days: 30 }, { signal: controller.signal })
    .then((data) => render(root, data, load))
    .catch((error) => {
      if (!controller.signal.aborted) {
        clear(root, h("h1", {}, "Flywheel"), h("p", { class: "error", role: "alert" }, describe(error)));
      }
    });
  load();
  return () => controller.abort();
}
