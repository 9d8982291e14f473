// The flywheel dashboard (admins): keep rate over time, the action funnel, dataset sizes, the model and expander
// versions in the record, and the recipe leaderboard.

import { api } from "./api.js";
import { clear, describe, h, percent } from "./dom.js";

const SVG = "http://www.w3.org/2000/svg";

function s(tag, attrs = {}, ...children) {
  const element = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) element.setAttribute(name, String(value));
  for (const child of children) element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return element;
}

/** Keep rate per day as a line over bars of images made (an SVG that scales with its box). */
export function keepRatePlot(days) {
  const width = 640;
  const height = 220;
  const pad = { left: 44, right: 44, top: 12, bottom: 28 };
  const inner = { w: width - pad.left - pad.right, h: height - pad.top - pad.bottom };
  const most = Math.max(1, ...days.map((d) => d.images));
  const step = inner.w / Math.max(1, days.length);
  const x = (i) => pad.left + step * (i + 0.5);
  const yRate = (rate) => pad.top + inner.h * (1 - rate);
  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, class: "plot", role: "img",
    "aria-label": `Keep rate per day over ${days.length} day(s)` });
  for (const tick of [0, 0.25, 0.5, 0.75, 1]) {
    svg.append(s("line", { x1: pad.left, x2: width - pad.right, y1: yRate(tick), y2: yRate(tick), class: "grid" }),
      s("text", { x: pad.left - 6, y: yRate(tick) + 4, "text-anchor": "end", class: "axis" }, `${tick * 100}%`));
  }
  svg.append(s("text", { x: width - pad.right + 6, y: pad.top + 10, class: "axis" }, `${most}`),
    s("text", { x: width - pad.right + 6, y: pad.top + 22, class: "axis" }, "images"));
  days.forEach((d, i) => {
    const barHeight = inner.h * (d.images / most);
    svg.append(s("rect", { x: x(i) - step * 0.35, width: step * 0.7, y: pad.top + inner.h - barHeight, height: barHeight,
      class: "bar" }, s("title", {}, `${d.day}: ${d.images} images, ${d.kept} kept`)));
  });
  const points = days.map((d, i) => `${x(i)},${yRate(d.keep_rate)}`).join(" ");
  if (days.length > 1) svg.append(s("polyline", { points, class: "line" }));
  days.forEach((d, i) => svg.append(s("circle", { cx: x(i), cy: yRate(d.keep_rate), r: 3.5, class: "dot" },
    s("title", {}, `${d.day}: keep rate ${percent(d.keep_rate)}`))));
  const labelEvery = Math.ceil(days.length / 8);
  days.forEach((d, i) => {
    if (i % labelEvery === 0) svg.append(s("text", { x: x(i), y: height - 8, "text-anchor": "middle", class: "axis" },
      d.day.slice(5)));
  });
  return svg;
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

function render(root, data) {
  const generations = Object.values(data.funnel.generations).reduce((a, b) => a + b, 0);
  clear(root, h("h1", {}, "Flywheel"),
    h("div", { class: "stats" }, stat("users", `${data.users}`, "d-users"), stat("generations", `${generations}`, "d-generations"),
      stat("images", `${data.funnel.images}`, "d-images"), stat("keep rate", percent(data.funnel.keep_rate), "d-keep-rate"),
      stat("in the queue", `${data.queue_depth}`, "d-queue")),
    h("section", { class: "card" }, h("h2", {}, `Keep rate, last ${data.days} days`),
      data.keep_rate_by_day.length ? keepRatePlot(data.keep_rate_by_day) : h("p", { class: "muted" }, "No images yet.")),
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
        `${m.base_model_id ?? "?"} ${m.base_model_version ?? ""}`, `${m.expander_strategy ?? "?"} ${m.expander_version ?? ""}`,
        m.generations, m.images, percent(m.keep_rate)]), "No images generated yet."),
      h("p", { class: "muted" }, "Model registry and training runs: no model versions yet. Evaluated versions with ",
        "promote and rollback appear here once automatic training is set up.")),
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
  api.get("/api/v1/dashboard", { days: 30 }, { signal: controller.signal })
    .then((data) => render(root, data))
    .catch((error) => {
      if (!controller.signal.aborted) clear(root, h("h1", {}, "Flywheel"), h("p", { class: "error", role: "alert" }, describe(error)));
    });
  return () => controller.abort();
}
