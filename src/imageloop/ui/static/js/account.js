// The Account page: sign in (API key or password), credits (balance, tier, next refill, history), manage API keys
// and share links, opt out of training use, delete all data (after typing the user name to confirm).

import { api, session } from "./api.js";
import { clear, describe, formatTime, h, hideError, notify, onceClick, showError } from "./dom.js";

function errorBox(id) {
  return h("div", { id, class: "error", role: "alert", hidden: true });
}

function signInForms(onSignedIn) {
  const keyError = errorBox("a-key-error");
  const keyForm = h("form", { class: "card", id: "key-form", novalidate: true }, h("h2", {}, "With an API key"),
    h("div", { class: "field" }, h("label", { for: "a-key" }, "API key"),
      h("input", { id: "a-key", name: "key", type: "password", autocomplete: "off", required: true,
        dataset: { field: "key" }, placeholder: "il_…" })),
    h("small", { class: "muted" }, "Keys come from ", h("code", {}, "imageloop users create NAME"), "."),
    keyError, h("button", { type: "submit" }, "Sign in with key"));
  keyForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    hideError(keyError, keyForm);
    const key = keyForm.elements.key.value.trim();
    try {
      if (!key) throw new Error("paste your API key first");
      const account = await api.get("/api/v1/account", undefined, { key });
      session.signIn(key);
      onSignedIn(account);
    } catch (error) {
      showError(keyError, error.status === 401 ? new Error("That API key is not valid (unknown or revoked).") : error,
        keyForm);
    }
  });

  const passwordError = errorBox("a-password-error");
  const passwordForm = h("form", { class: "card", id: "password-form", novalidate: true },
    h("h2", {}, "With a password"),
    h("div", { class: "field" }, h("label", { for: "a-name" }, "User name"),
      h("input", { id: "a-name", name: "name", autocomplete: "username", required: true, dataset: { field: "name" } })),
    h("div", { class: "field" }, h("label", { for: "a-password" }, "Password"),
      h("input", { id: "a-password", name: "password", type: "password", autocomplete: "current-password",
        required: true, dataset: { field: "password" } })),
    h("small", { class: "muted" }, "Set with ", h("code", {}, "imageloop users set-password NAME"),
      ". Signing in makes an API key for this browser; signing out revokes it."),
    passwordError, h("button", { type: "submit" }, "Sign in"));
  passwordForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    hideError(passwordError, passwordForm);
    try {
      const body = { name: passwordForm.elements.name.value, password: passwordForm.elements.password.value };
      const out = await api.post("/api/v1/session", body);
      session.signIn(out.api_key, out.key.id);
      onSignedIn(out.account);
    } catch (error) {
      showError(passwordError, error, passwordForm);
    }
  });
  return h("div", { class: "columns" }, keyForm, passwordForm);
}

function keysSection() {
  const list = h("tbody");
  const fresh = h("div", { class: "new-key", hidden: true, "aria-live": "polite" });
  const create = h("button", { type: "button", class: "secondary" }, "Create API key");
  const section = h("section", { class: "card", id: "keys" }, h("h2", {}, "API keys"),
    h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "Key"), h("th", {}, "Created"), h("th", {}, "State"),
      h("th", {}, h("span", { class: "sr-only" }, "Actions")))), list), fresh, create);
  const thisKey = (key) => session.key?.startsWith(key.prefix) ?? false;
  const refresh = async () => {
    const keys = await api.get("/api/v1/users/me/api-keys");
    clear(list, keys.map((key) => {
      const revoke = h("button", { type: "button", class: "secondary small" }, "Revoke");
      onceClick(revoke, async () => {
        if (thisKey(key) && !confirm("This is the key this browser uses: revoking it signs you out. Go on?")) return;
        await api.del(`/api/v1/users/me/api-keys/${encodeURIComponent(key.id)}`);
        if (thisKey(key)) { session.signOut(); location.hash = "#/account"; location.reload(); return; }
        await refresh();
      });
      return h("tr", {}, h("td", {}, h("code", {}, `${key.prefix}…`), thisKey(key) ? " (this browser)" : ""),
        h("td", {}, formatTime(key.created_at)), h("td", {}, key.active ? "active" : `revoked ${formatTime(key.revoked_at)}`),
        h("td", {}, key.active ? revoke : ""));
    }));
  };
  onceClick(create, async () => {
    const out = await api.post("/api/v1/users/me/api-keys", {});
    const value = h("input", { readonly: true, value: out.api_key, "aria-label": "New API key", class: "mono" });
    clear(fresh, h("p", {}, h("strong", {}, "Your new key — copy it now, it is not shown again:")), value);
    fresh.hidden = false;
    value.select();
    await refresh();
  });
  refresh().catch((error) => notify(describe(error), "error"));
  return section;
}

const LEDGER_KINDS = { debit: "generation", refund: "refund", refill: "refill", grant: "grant" };

function creditsSection() {
  const summary = h("p", { id: "a-credits" }, "…");
  const list = h("tbody");
  const section = h("section", { class: "card", id: "credits" }, h("h2", {}, "Credits"), summary,
    h("div", { class: "table-wrap" }, h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "When"), h("th", {}, "What"),
      h("th", {}, "Credits"), h("th", {}, "Balance"), h("th", {}, "Why"))), list)));
  api.get("/api/v1/account").then(({ credits }) => {
    if (!credits.enabled || !credits.charged) {
      clear(summary, `Tier ${credits.tier}: generations are not charged.`);
    } else {
      clear(summary, h("strong", {}, `${credits.balance} credits`), ` · tier ${credits.tier}`,
        credits.next_refill_at ? ` · refills to ${credits.limits.refill_credits} on ${formatTime(credits.next_refill_at)}` : "");
    }
    if (!credits.history.length) { clear(list, h("tr", {}, h("td", { colspan: 5, class: "muted" }, "No changes yet."))); return; }
    clear(list, credits.history.map((row) => h("tr", {}, h("td", {}, formatTime(row.created_at)),
      h("td", {}, row.generation_id
        ? h("a", { href: `#/history/${row.generation_id}` }, LEDGER_KINDS[row.kind] ?? row.kind)
        : LEDGER_KINDS[row.kind] ?? row.kind),
      h("td", {}, row.amount > 0 ? `+${row.amount}` : `${row.amount}`), h("td", {}, `${row.balance_after}`),
      h("td", { class: "muted" }, row.reason))));
  }).catch((error) => notify(describe(error), "error"));
  return section;
}

function sharesSection() {
  const list = h("ul", { class: "links" });
  const section = h("section", { class: "card", id: "shares" }, h("h2", {}, "Share links"), list);
  const refresh = async () => {
    const links = await api.get("/api/v1/shares");
    if (!links.length) { clear(list, h("li", { class: "muted" }, "You have not shared anything yet.")); return; }
    clear(list, links.map((link) => {
      const revoke = h("button", { type: "button", class: "secondary small" }, "Revoke");
      onceClick(revoke, async () => {
        await api.del(`/api/v1/shares/${encodeURIComponent(link.id)}`);
        await refresh();
      });
      return h("li", {}, h("a", { href: link.url, target: "_blank", rel: "noopener" }, link.url),
        h("span", { class: "muted" }, ` · ${formatTime(link.created_at)} · ${link.active ? "active" : "revoked"}`),
        link.active ? revoke : "");
    }));
  };
  refresh().catch((error) => notify(describe(error), "error"));
  return section;
}

function privacySection(account, onDeleted) {
  const optOut = h("input", { type: "checkbox", id: "a-opt-out", checked: account.training_opt_out });
  optOut.addEventListener("change", async () => {
    optOut.disabled = true;
    try {
      const user = await api.put("/api/v1/users/me/training-opt-out", { opt_out: optOut.checked });
      optOut.checked = user.training_opt_out;
      notify(user.training_opt_out ? "Your data will not be used for training." : "Your data may be used for training.");
    } catch (error) {
      optOut.checked = !optOut.checked;
      notify(describe(error), "error");
    } finally {
      optOut.disabled = false;
      optOut.focus();
    }
  });
  const remove = h("button", { type: "button", class: "danger", id: "a-delete" }, "Delete all my data…");
  remove.addEventListener("click", () => confirmDelete(account, onDeleted));
  return h("section", { class: "card", id: "privacy" }, h("h2", {}, "Privacy"),
    h("label", { class: "check" }, optOut, " Do not use my generations and reactions to train models"),
    h("p", { class: "muted" }, "Deleting removes every generation, image, action and share link of yours. Your account and keys stay."),
    remove);
}

function confirmDelete(account, onDeleted) {
  const input = h("input", { id: "a-confirm", autocomplete: "off", dataset: { field: "confirm" } });
  const problem = errorBox("a-delete-error");
  const go = h("button", { type: "submit", class: "danger" }, "Delete everything");
  const cancel = h("button", { type: "button", class: "secondary" }, "Cancel");
  const form = h("form", { method: "dialog", novalidate: true }, h("h2", {}, "Delete all your data?"),
    h("p", {}, "This cannot be undone. Type your user name, ", h("strong", {}, account.name), ", to confirm."),
    h("div", { class: "field" }, h("label", { for: "a-confirm" }, "User name"), input), problem,
    h("div", { class: "row" }, go, cancel));
  const dialog = h("dialog", { class: "confirm" }, form);
  document.body.append(dialog);
  dialog.addEventListener("close", () => dialog.remove());
  cancel.addEventListener("click", () => dialog.close());
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (input.value.trim() !== account.name) {
      showError(problem, new Error(`type ${account.name} exactly to confirm`));
      return;
    }
    try {
      const deleted = await api.del("/api/v1/users/me/data");
      dialog.close();
      onDeleted(deleted);
    } catch (error) {
      showError(problem, error);
    }
  });
  dialog.showModal();
  input.focus();
}

/** The page. `onAccount(account|null)` is told when the user signs in or out. */
export function accountPage(root, { account, onAccount }) {
  if (!account) {
    clear(root, h("h1", {}, "Sign in"), signInForms((signedIn) => {
      notify(`Signed in as ${signedIn.name}.`);
      onAccount(signedIn);
    }));
    root.querySelector("#a-key").focus();
    return;
  }
  const signOut = h("button", { type: "button", class: "secondary", id: "a-sign-out" }, "Sign out");
  onceClick(signOut, async () => {
    if (session.issuedKeyId) {
      await api.del(`/api/v1/users/me/api-keys/${encodeURIComponent(session.issuedKeyId)}`).catch(() => null);
    }
    session.signOut();
    onAccount(null);
  });
  const deleted = h("p", { class: "notice info", hidden: true, role: "status" });
  clear(root, h("h1", {}, "Account"),
    h("section", { class: "card" }, h("p", {}, "Signed in as ", h("strong", { id: "a-user" }, account.name),
      account.is_admin ? h("span", { class: "badge" }, "admin") : ""), signOut),
    deleted, creditsSection(), keysSection(), sharesSection(), privacySection(account, (counts) => {
      deleted.textContent = `Deleted ${counts.generations} generations, ${counts.images} images and ${counts.actions} actions.`;
      deleted.hidden = false;
      localStorage.removeItem("imageloop.recent");
      notify("All your data was deleted.");
    }));
}
