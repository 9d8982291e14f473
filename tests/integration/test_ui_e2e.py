"""The web page end to end: a real `imageloop serve` process and Debian's chromium driven by Playwright.

The journey: sign in → a Chinese intent → watch the progress → the image → download → regenerate → like →
edit and retry → the history shows it → the dashboard counts it. Plus: bad input shows the API's own message, a
double-click (and a retried request) records one action, and a share link works signed out until it is revoked.
Every page is saved to docs/screenshots/ for the README (IMAGELOOP_SCREENSHOTS picks another folder).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from imageloop.config import EMBEDDED_MODEL_DIR, Settings
from imageloop.storage import Storage
from imageloop.training.registry import ModelKind, Registry
from tests.integration.serve_process import running_server
from tests.server.kit import save_tiny_model

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

pytestmark = pytest.mark.integration

CHROMIUM = os.environ.get("IMAGELOOP_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update", "--no-first-run",
                 "--disable-gpu"]
REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = Path(os.environ.get("IMAGELOOP_SCREENSHOTS", REPO / "docs" / "screenshots"))
INTENT = "雨夜里孤独的城市"
PASSWORD = "correct horse battery"
STEPS = 6
SLOW_STEPS = 1000  # long enough to cancel mid-run
TIMEOUT_MS = 60_000
# Assertions wait as long as actions: under a loaded CI (2 cores, the server generating), a note that follows a
# response can take longer than Playwright's 5 s default. A passing assertion returns as soon as it holds.
expect.set_options(timeout=TIMEOUT_MS)


@dataclass(frozen=True)
class Served:
    base: str
    admin_key: str
    user_key: str
    log: Path

    def get(self, path: str, key: str | None = None) -> Any:
        response = httpx.get(self.base + path, headers={"Authorization": f"Bearer {key or self.admin_key}"})
        response.raise_for_status()
        return response.json()


def _model(tmp: Path) -> str:
    """The embedded model once it ships (what users get); until then the tiny random one."""
    if (EMBEDDED_MODEL_DIR / "model_index.json").is_file():
        return "embedded"
    return str(save_tiny_model(tmp / "model"))


def _register_versions(storage: Storage, settings: Settings, tmp: Path) -> None:
    """A promoted expander adapter and an A/B candidate, as a training cycle leaves them."""
    adapter = tmp / "adapter.safetensors"
    adapter.write_bytes(b"adapter weights")
    registry = Registry(storage.sessions, settings)
    first = registry.register(ModelKind.EXPANDER, adapter, name="expander", data_hash="d1",
                              metrics={"win_rate": 0.58, "win_rate_low": 0.52, "pairs": 400})
    registry.promote(first.id)
    second = registry.register(ModelKind.EXPANDER, adapter, name="expander", data_hash="d2", parent_id=first.id,
                               metrics={"win_rate": 0.64, "win_rate_low": 0.57, "pairs": 520})
    registry.start_ab_test(second.id, 0.2)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no chromium at {CHROMIUM} (set IMAGELOOP_TEST_CHROMIUM)")
    tmp = tmp_path_factory.mktemp("ui-e2e")
    env = {**os.environ, "IMAGELOOP_DATA_DIR": str(tmp / "data"), "IMAGELOOP_ENGINE__MODEL": _model(tmp),
           "IMAGELOOP_ENGINE__THREADS": "1", "IMAGELOOP_ENGINE__DEVICE": "cpu", "HF_HUB_OFFLINE": "1",
           "IMAGELOOP_ENGINE__MAX_STEPS": str(SLOW_STEPS),
           # The page is under test, not the 135M LLM: its first load and GGUF conversion take a minute here.
           "IMAGELOOP_PROMPTS__STRATEGIES": '["retrieval", "rules"]'}
    storage = Storage.open(Settings(data_dir=tmp / "data"))
    admin, admin_key = storage.users.create_user("ada", is_admin=True)
    storage.users.set_password(admin.id, PASSWORD)
    _, user_key = storage.users.create_user("bo")
    _register_versions(storage, Settings(data_dir=tmp / "data"), tmp)
    storage.close()
    with running_server(env, tmp / "serve.log") as url:
        yield Served(url, admin_key, user_key, tmp / "serve.log")


@pytest.fixture(scope="module")
def browser(served: Served) -> Iterator[Any]:
    with playwright_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1200, "height": 900}, accept_downloads=True, locale="en-US")
    context.set_default_timeout(TIMEOUT_MS)
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    yield opened
    context.close()
    assert errors == [], f"JavaScript errors on the page: {errors}"


def shoot(page: Any, name: str, *, full_page: bool = True) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for dismiss in page.locator("#notices .notice button").all():  # toasts would float mid-page in a full shot
        dismiss.click()
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=full_page, animations="disabled")


def sign_in_with_password(page: Any, served: Served) -> None:
    page.goto(served.base + "/")
    expect(page.locator("#password-form")).to_be_visible()
    shoot(page, "sign-in")
    page.fill("#a-name", "ada")
    page.fill("#a-password", PASSWORD)
    page.click("#password-form button[type=submit]")
    expect(page.locator("#who")).to_have_text("ada")


def sign_in_with_key(page: Any, served: Served, key: str) -> None:
    page.goto(served.base + "/#/account")
    page.fill("#a-key", key)
    page.click("#key-form button[type=submit]")
    expect(page.locator("#a-user")).to_be_visible()


def generate(page: Any, intent: str) -> None:
    if not page.locator("#create-form").is_visible():
        page.get_by_role("link", name="Create").click()
    page.fill("#c-intent", intent)
    if not page.locator("#c-steps").is_visible():
        page.click("#c-advanced summary")
    page.fill("#c-steps", str(STEPS))
    page.click("#c-generate")


def record_of(served: Served, generation_id: str) -> dict[str, Any]:
    record: dict[str, Any] = served.get(f"/api/v1/generations/{generation_id}/record")
    return record


def wait_finished(served: Served, generation_id: str, key: str, timeout: float = 60,
                  ends: frozenset[str] = frozenset({"succeeded", "failed"})) -> None:
    deadline = time.monotonic() + timeout
    while served.get(f"/api/v1/generations/{generation_id}", key)["status"] not in ends:
        assert time.monotonic() < deadline, f"generation {generation_id} did not finish"
        time.sleep(0.2)


def action_types(served: Served, generation_id: str) -> list[str]:
    return [action["type"] for action in record_of(served, generation_id)["actions"]]


def test_the_journey_from_a_chinese_intent_to_the_dashboard(page: Any, served: Served, tmp_path: Path) -> None:
    event_streams: list[str] = []
    page.on("request", lambda request: event_streams.append(request.url) if request.url.endswith("/events") else None)
    sign_in_with_password(page, served)

    # The expanded prompt is shown before anything is generated.
    page.fill("#c-intent", INTENT)
    page.click("#c-expand")
    expect(page.locator("#c-prompt")).not_to_have_value("")
    expect(page.locator("#c-expander")).to_contain_text("Expanded by")
    previewed = page.locator("#c-prompt").input_value()

    generate(page, INTENT)
    panel = page.locator(".progress-panel")
    expect(panel).to_be_visible()
    expect(panel.locator(".steps")).to_have_text(f"Step {STEPS} of {STEPS}")
    expect(panel.locator(".state")).to_have_text("Done")
    assert event_streams, "the page did not follow the SSE progress route"

    first_group = page.locator(".result-group").first
    image = first_group.locator(".result img")
    expect(image).to_have_attribute("src", re.compile(r"^blob:"))
    assert image.evaluate("img => img.complete && img.naturalWidth > 0")
    first_id = first_group.get_attribute("data-generation-id")
    assert first_id
    first = record_of(served, first_id)["generation"]
    # The preview was not edited, so the page sent its expansion_id: the prompt shown is the prompt that ran.
    assert (first["intent"], first["prompt"], first["final_prompt"]) == (INTENT, None, previewed)

    card = first_group.locator(".result").first
    with page.expect_download() as download:
        card.get_by_role("button", name="Download").click()
    saved = tmp_path / "download.png"
    download.value.save_as(saved)
    assert saved.read_bytes().startswith(b"\x89PNG")

    card.get_by_role("button", name="Regenerate").click()
    expect(page.locator(".result-group")).to_have_count(2)
    newest = page.locator(".result-group").first
    expect(newest).to_contain_text("Regenerated with a new seed")
    child_id = newest.get_attribute("data-generation-id")
    assert child_id and child_id != first_id

    like = newest.locator(".result").first.get_by_role("button", name="Like")
    like.click()
    expect(like).to_have_attribute("aria-pressed", "true")

    # Edit and retry: the diff shows the old token in blue and the new one in red.
    newest.locator(".result").first.get_by_role("button", name="Edit & retry").click()
    editor = newest.locator(".editor")
    final_prompt = editor.locator("textarea").input_value()
    replaced = re.split(r"[\s,]+", final_prompt.strip())[0]
    editor.locator("textarea").fill(final_prompt.replace(replaced, "sunrise", 1))
    expect(editor.locator("del.before")).to_have_text(replaced)
    expect(editor.locator("ins.after")).to_have_text("sunrise")
    shoot(page, "results")
    editor.get_by_role("button", name="Generate edited prompt").click()
    expect(editor.locator(".changes del.before")).to_have_text(replaced)
    expect(editor.locator(".changes ins.after")).to_have_text("sunrise")
    expect(page.locator(".result-group")).to_have_count(3)
    expect(page.locator(".result-group").first).to_contain_text("Edited and retried")
    shoot(page, "create")

    # Every click was one action, checked through the API.
    assert action_types(served, first_id) == ["download", "regenerate"]
    assert action_types(served, child_id) == ["like", "edit"]

    page.get_by_role("link", name="History").click()
    expect(page.locator("#gallery .tile")).to_have_count(3)
    page.get_by_text("Liked", exact=True).click()
    expect(page.locator("#gallery .tile")).to_have_count(1)
    expect(page.locator("#gallery .tile")).to_have_attribute("data-generation-id", child_id)
    page.get_by_text("All", exact=True).click()
    expect(page.locator("#gallery .tile")).to_have_count(3)
    expect(page.locator("#gallery .tile img").first).to_have_attribute("src", re.compile(r"^blob:"))
    shoot(page, "history")
    page.locator(f'#gallery .tile[data-generation-id="{child_id}"]').click()
    dialog = page.locator("dialog.record")
    expect(dialog.locator(".facts")).to_contain_text(INTENT)
    expect(dialog.locator(".actions-log li")).to_have_count(2)
    shoot(page, "record", full_page=False)
    page.keyboard.press("Escape")
    expect(dialog).to_have_count(0)

    page.get_by_role("link", name="Dashboard").click()
    expect(page.locator("#d-images .value")).to_have_text("3")
    funnel = page.locator("#funnel")
    for step, count in (("Generated", "3"), ("Kept", "2"), ("Downloaded", "1"), ("Liked", "1"), ("Rerolled", "1"),
                        ("Edited", "1")):
        expect(funnel.locator(f'li[data-step="{step}"] .count')).to_have_text(count)
    expect(page.locator(".plot .dot")).to_have_count(1)
    registry = page.locator("#d-registry tbody tr")
    expect(registry).to_have_count(2)
    expect(registry.first).to_contain_text("ab test")
    expect(registry.first.get_by_role("button", name="Roll back")).to_be_visible()
    shoot(page, "dashboard")
    page.once("dialog", lambda dialog: dialog.accept())
    registry.first.get_by_role("button", name="Promote").click()  # the A/B candidate, through the training route
    expect(registry.first).to_contain_text("promoted")
    expect(registry.nth(1)).to_contain_text("retired")
    assert [v["status"] for v in served.get("/api/v1/admin/models")] == ["promoted", "retired"]

    page.get_by_role("link", name="Account").click()
    expect(page.locator("#keys tbody tr")).to_have_count(2)  # the CLI's key and this browser's
    shoot(page, "account")

    page.set_viewport_size({"width": 390, "height": 844})
    page.get_by_role("link", name="Create").click()
    expect(page.locator(".result img").first).to_have_attribute("src", re.compile(r"^blob:"))
    shoot(page, "create-phone", full_page=False)


def test_bad_input_shows_the_apis_message_and_keeps_the_input(page: Any, served: Served) -> None:
    sign_in_with_key(page, served, served.user_key)
    page.goto(served.base + "/#/create")
    page.fill("#c-intent", "a quiet harbour at dawn")
    page.click("#c-advanced summary")
    page.fill("#c-width", "100")
    page.keyboard.press("Control+Enter")  # generate from the keyboard
    error = page.locator("#c-error")
    expect(error).to_be_visible()
    api = httpx.post(served.base + "/api/v1/generations", headers={"Authorization": f"Bearer {served.user_key}"},
                     json={"intent": "a quiet harbour at dawn", "params": {"width": 100}, "n": 1})
    assert api.status_code == 422
    expect(error).to_have_text(api.json()["message"])
    expect(page.locator("#c-width")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#c-width")).to_be_focused()
    expect(page.locator("#c-intent")).to_have_value("a quiet harbour at dawn")
    page.reload()  # nothing typed is lost, even across a reload
    expect(page.locator("#c-intent")).to_have_value("a quiet harbour at dawn")
    expect(page.locator("#c-width")).to_have_value("100")


def test_an_intent_that_only_excludes_shows_an_empty_prompt_and_what_is_kept_out(page: Any, served: Served) -> None:
    sign_in_with_key(page, served, served.user_key)
    page.goto(served.base + "/#/create")
    page.fill("#c-intent", "no people")
    page.click("#c-expand")
    expect(page.locator("#c-expander")).to_contain_text("Kept out (negative prompt): people.")
    expect(page.locator("#c-expander")).to_contain_text("only what to leave out")
    expect(page.locator("#c-prompt")).to_have_value("")


def test_a_double_click_or_a_retried_request_records_one_action(page: Any, served: Served) -> None:
    sign_in_with_key(page, served, served.user_key)
    generate(page, "a lighthouse in the fog")
    group = page.locator(".result-group").first
    expect(group.locator(".result img")).to_have_attribute("src", re.compile(r"^blob:"))
    generation_id = group.get_attribute("data-generation-id")
    assert generation_id
    card = group.locator(".result").first

    card.get_by_role("button", name="Like").dblclick()
    expect(card.get_by_role("button", name="Liked")).to_have_attribute("aria-pressed", "true")

    # The first discard reaches the server but its answer is lost: the page retries with the same event id.
    lost: list[str] = []

    def lose_first_answer(route: Any) -> None:
        if lost:
            route.continue_()
            return
        lost.append(route.request.post_data or "")
        route.fetch()  # the server records the action...
        route.abort()  # ...and the page sees a network failure

    page.route("**/api/v1/actions", lose_first_answer)
    card.get_by_role("button", name="Discard").click()
    expect(card.get_by_role("button", name="Discarded")).to_be_visible()
    page.unroute("**/api/v1/actions")
    assert lost and '"discard"' in lost[0]
    record = httpx.get(f"{served.base}/api/v1/generations/{generation_id}/record",
                       headers={"Authorization": f"Bearer {served.user_key}"}).json()
    assert [action["type"] for action in record["actions"]] == ["like", "discard"]


def test_a_share_link_works_signed_out_until_revoked(page: Any, browser: Any, served: Served) -> None:
    sign_in_with_key(page, served, served.user_key)
    generate(page, "a red kite over the hills")
    card = page.locator(".result-group").first.locator(".result").first
    expect(card.locator("img")).to_have_attribute("src", re.compile(r"^blob:"))
    card.get_by_role("button", name="Share").click()
    link = card.locator(".share-box input").input_value()
    assert "/s/" in link

    visitor = browser.new_context()  # no key, no cookies: a signed-out visitor
    try:
        shared = visitor.new_page()
        shared.goto(link)
        expect(shared.locator("figure.shared img")).to_be_visible()
        assert shared.locator("figure.shared img").evaluate("img => img.complete && img.naturalWidth > 0")
        card.get_by_role("button", name="Revoke link").click()
        expect(card.locator(".share-box")).to_contain_text("revoked")
        response = shared.goto(link)
        assert response is not None and response.status == 404
        expect(shared.locator("h1")).to_have_text("Link not found")
    finally:
        visitor.close()


def test_cancel_stops_a_running_generation(page: Any, served: Served) -> None:
    def answer_after_the_end(route: Any) -> None:
        # The cancel's answer (the job still running, its cancel stored) reaches the page after the event stream's
        # final status, as it once did on a loaded CI machine: the page must still end "Cancelled".
        answer = route.fetch()
        wait_finished(served, route.request.url.split("/")[-2], served.user_key, ends=frozenset({"cancelled"}))
        time.sleep(1.5)  # time for the stream's final status to be painted first
        route.fulfill(response=answer)

    page.route("**/api/v1/generations/*/cancel", answer_after_the_end)
    sign_in_with_key(page, served, served.user_key)
    page.get_by_role("link", name="Create").click()
    page.fill("#c-intent", "a very slow painting")
    page.click("#c-advanced summary")
    page.fill("#c-steps", str(SLOW_STEPS))
    page.click("#c-generate")
    panel = page.locator(".progress-panel")
    expect(panel).to_have_attribute("data-status", "running")
    expect(panel.locator(".steps")).to_contain_text(f"of {SLOW_STEPS}")
    panel.get_by_role("button", name="Cancel").click()
    expect(panel.locator(".state")).to_have_text("Cancelling…")  # not "Generating" while the last steps run
    # The cancel goes page -> POST -> database -> the worker's next step -> the event stream -> page; on a loaded
    # machine (CI, two cores shared with chromium and the test process) that once took longer than Playwright's
    # default 5 s while the steps went on. A lost cancel still fails: the run then ends "Done", not "Cancelled".
    try:
        expect(panel.locator(".state")).to_have_text("Cancelled", timeout=30_000)
    except AssertionError as failure:  # once seen in CI and not reproduced: say where the cancel stopped
        generation_id = page.evaluate("JSON.parse(localStorage.getItem('imageloop.recent'))[0]")
        record = served.get(f"/api/v1/generations/{generation_id}", served.user_key)
        notices = page.locator("#notices").inner_text()
        log_tail = served.log.read_text(encoding="utf-8", errors="replace")[-4000:]
        raise AssertionError(f"{failure}\nrecord: {record}\nnotices: {notices!r}\nserver log:\n{log_tail}") from None
    expect(page.locator(".result-group").first).to_contain_text("cancelled")


def test_history_loads_more_as_it_scrolls_and_reruns_a_record(page: Any, served: Served) -> None:
    def count() -> int:
        total, cursor = 0, ""
        while True:
            found = served.get(f"/api/v1/history?limit=100&cursor={cursor}", served.user_key)
            total += len(found["items"])
            if not (cursor := found["next_cursor"]):
                return total

    more = max(1, 26 - count())  # more than one page of 24
    batch = {"generations": [{"prompt": f"a boat, number {i}", "params": {"steps": 1}} for i in range(more)]}
    accepted = httpx.post(served.base + "/api/v1/generations/batch", json=batch,
                          headers={"Authorization": f"Bearer {served.user_key}"})
    assert accepted.status_code == 202, accepted.text
    for item in accepted.json()["generations"]:
        wait_finished(served, item["id"], served.user_key)
    total = count()
    assert total > 24

    page.set_viewport_size({"width": 1200, "height": 600})
    sign_in_with_key(page, served, served.user_key)
    page.get_by_role("link", name="History").click()
    tiles = page.locator("#gallery .tile")
    expect(tiles).to_have_count(24)  # one page, until the list is scrolled
    page.locator(".sentinel").scroll_into_view_if_needed()
    expect(tiles).to_have_count(total)
    expect(page.locator("#gallery-status")).to_have_text("That is everything.")

    tiles.first.click()
    page.get_by_role("button", name="Re-run (same settings and seed)").click()
    rerun = page.locator(".result-group").first
    expect(rerun).to_contain_text("Re-run")
    expect(rerun.locator(".result img")).to_have_attribute("src", re.compile(r"^blob:"))


def test_the_account_page_manages_keys_opt_out_and_deletes_all_data(page: Any, served: Served) -> None:
    sign_in_with_key(page, served, served.user_key)
    keys = page.locator("#keys tbody tr")
    expect(keys).to_have_count(1)
    page.get_by_role("button", name="Create API key").click()
    new_key = page.get_by_label("New API key").input_value()
    expect(keys).to_have_count(2)
    assert served.get("/api/v1/account", new_key)["name"] == "bo"
    page.once("dialog", lambda dialog: dialog.accept())
    keys.filter(has_not_text="this browser").get_by_role("button", name="Revoke").click()
    expect(keys.filter(has_text="revoked")).to_have_count(1)
    assert httpx.get(served.base + "/api/v1/account", headers={"Authorization": f"Bearer {new_key}"}).status_code == 401

    page.get_by_label("Do not use my generations").check()
    expect(page.locator("#notices")).to_contain_text("will not be used for training")
    assert served.get("/api/v1/account", served.user_key)["training_opt_out"] is True

    assert served.get("/api/v1/history", served.user_key)["items"], "the earlier tests left generations"
    page.get_by_role("button", name="Delete all my data…").click()
    page.fill("#a-confirm", "not-bo")
    page.get_by_role("button", name="Delete everything").click()
    expect(page.locator("#a-delete-error")).to_contain_text("type bo exactly")
    page.fill("#a-confirm", "bo")
    page.get_by_role("button", name="Delete everything").click()
    expect(page.locator("main")).to_contain_text("Deleted")
    assert served.get("/api/v1/history", served.user_key)["items"] == []
