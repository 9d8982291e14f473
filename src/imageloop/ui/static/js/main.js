// The page's entry point: who is signed in, and which page the address (#/create, #/history[/id], #/account,
// #/dashboard) shows.

import { accountPage } from "./account.js";
import { api, session } from "./api.js";
import { createPage } from "./create.js";
import { dashboardPage } from "./dashboard.js";
import { clear, describe, h, notify } from "./dom.js";
import { historyPage, openRecord } from "./history.js";

const PAGES = ["create", "history", "account", "dashboard"];
const state = { account: null, page: null, cleanup: null };
const view = document.getElementById("view");

async function loadAccount() {
  if (!session.key) return null;
  try {
    return await api.get("/api/v1/account");
  } catch (error) {
    if (error.status === 401) { session.signOut(); return null; }
    throw error;
  }
}

function paintHeader() {
  const { account, page } = state;
  for (const link of document.querySelectorAll("nav a[data-page]")) {
    if (link.dataset.page === page) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  document.querySelector('nav a[data-page="dashboard"]').hidden = !account?.is_admin;
  document.getElementById("who").textContent = account ? account.name : "not signed in";
}

function parse() {
  const [page, id] = location.hash.replace(/^#\/?/u, "").split("/");
  return { page: PAGES.includes(page) ? page : "create", id: id ? decodeURIComponent(id) : null };
}

function show(page, render) {
  state.cleanup?.();
  state.cleanup = null;
  state.page = page;
  paintHeader();
  state.cleanup = render() ?? null;
  document.title = `${page[0].toUpperCase()}${page.slice(1)} · Imageloop`;
}

function onAccount(account) {
  state.account = account;
  state.page = null; // re-render whatever the address asks for
  route();
}

const rerun = (id) => {
  state.startWith = id;
  if (location.hash === "#/create") route(); else location.hash = "#/create";
};

function route() {
  const { page, id } = parse();
  if (page === "history" && state.page === "history" && state.account) {
    if (id) openRecord(id, rerun);
    return;
  }
  if (!state.account && page !== "account") {
    show("account", () => accountPage(view, { account: null, onAccount }));
    view.prepend(h("p", { class: "notice info" }, "Sign in to use Imageloop."));
    return;
  }
  if (page === "account") show(page, () => accountPage(view, { account: state.account, onAccount }));
  else if (page === "history") show(page, () => historyPage(view, { openId: id, onRerun: rerun }));
  else if (page === "dashboard") show(page, () => dashboardPage(view, { account: state.account }));
  else {
    const startWith = state.startWith;
    state.startWith = null;
    show("create", () => createPage(view, { startWith }));
  }
}

window.addEventListener("hashchange", route);
window.addEventListener("imageloop:unauthorised", () => {
  if (!session.key) return;
  session.signOut();
  state.account = null;
  notify("Your API key is no longer valid (revoked?). Sign in again; nothing you typed is lost.", "error");
  state.page = null;
  route();
});

loadAccount()
  .then((account) => { state.account = account; route(); })
  .catch((error) => clear(view, h("p", { class: "error", role: "alert" }, `Cannot start: ${describe(error)}`)));
