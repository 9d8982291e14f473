"""Credits on the web page (Playwright driving Debian's chromium against a real server with credits on): the Create
page shows what the form's request costs beside Generate, and a tier limit it is over; the Account page shows the
balance, the tier and the ledger after a generation."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from imageloop.server import create_app
from tests.server.kit import make_user, running_server, save_tiny_model, tiny_settings

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

pytestmark = pytest.mark.integration

CHROMIUM = os.environ.get("IMAGELOOP_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update", "--no-first-run",
                 "--disable-gpu"]
TIMEOUT_MS = 60_000
CREDITS = {"enabled": True, "reference_pixels": 64 * 64, "reference_steps": 2,
           "tiers": {"free": {"refill_credits": 10, "max_steps": 4, "max_images": 4}, "admin": {}}}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no chromium at {CHROMIUM} (set IMAGELOOP_TEST_CHROMIUM)")
    tmp = tmp_path_factory.mktemp("ui-credits")
    settings = tiny_settings(tmp / "data", save_tiny_model(tmp / "model"), credits=CREDITS)
    app = create_app(settings)
    with running_server(app) as base_url:
        _, key = make_user(app.state.services.storage, "cleo")
        yield base_url, key


@pytest.fixture
def page(served: tuple[str, str]) -> Iterator[Any]:
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1200, "height": 900}, locale="en-US")
        context.set_default_timeout(TIMEOUT_MS)
        opened = context.new_page()
        errors: list[str] = []
        opened.on("pageerror", lambda error: errors.append(str(error)))
        yield opened
        browser.close()
        assert errors == [], f"JavaScript errors on the page: {errors}"


def test_the_page_shows_the_cost_and_the_account_its_credits(page: Any, served: tuple[str, str]) -> None:
    base_url, key = served
    page.goto(base_url + "/#/account")
    page.fill("#a-key", key)
    page.click("#key-form button[type=submit]")
    expect(page.locator("#a-credits")).to_contain_text("10 credits")
    expect(page.locator("#a-credits")).to_contain_text("tier free")
    page.get_by_role("link", name="Create").click()
    cost = page.locator("#c-cost")
    page.click("#c-advanced summary")
    page.fill("#c-width", "128")
    page.fill("#c-height", "64")
    page.fill("#c-steps", "2")
    page.fill("#c-n", "2")
    expect(cost).to_have_text("4 credits · balance 10")
    page.fill("#c-steps", "5")
    expect(cost).to_contain_text("more than the free tier allows")
    page.fill("#c-steps", "2")
    page.fill("#c-intent", "a red fox")
    page.click("#c-generate")
    expect(cost).to_have_text("4 credits · balance 6")
    page.get_by_role("link", name="Account").click()
    expect(page.locator("#a-credits")).to_contain_text("6 credits")
    rows = page.locator("#credits tbody tr")
    expect(rows.first).to_contain_text("generation")
    expect(rows.first).to_contain_text("-4")
    expect(rows.nth(1)).to_contain_text("refill")
