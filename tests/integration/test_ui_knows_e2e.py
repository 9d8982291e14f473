"""The Create page on the embedded model, end to end (a real `imageloop serve` on its real files, Debian's chromium
driven by Playwright): the model panel says what it knows and its native size, presets that mean nothing to it are
marked and stay selectable, and a size other than 64×64 gets a note before and after generating, never a refusal."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from imageloop.config import EMBEDDED_MODEL_DIR, Settings
from imageloop.engine.model_profile import model_profile
from imageloop.server.ui_schemas import active_model_out
from imageloop.storage import Storage
from tests import tiny
from tests.integration import test_ui_e2e as e2e
from tests.integration.serve_process import running_server
from tests.integration.test_ui_e2e import CHROMIUM, Served, expect, sign_in_with_key

browser = e2e.browser
page = e2e.page

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no chromium at {CHROMIUM} (set IMAGELOOP_TEST_CHROMIUM)")
    if not (EMBEDDED_MODEL_DIR / "model_index.json").is_file():
        pytest.skip("the embedded model is not installed")
    tmp = tmp_path_factory.mktemp("ui-knows-e2e")
    env = {**os.environ, "IMAGELOOP_DATA_DIR": str(tmp / "data"), "IMAGELOOP_ENGINE__MODEL": "embedded",
           "IMAGELOOP_ENGINE__THREADS": "1", "IMAGELOOP_ENGINE__DEVICE": "cpu", "HF_HUB_OFFLINE": "1",
           "IMAGELOOP_PROMPTS__STRATEGIES": '["rules"]'}
    storage = Storage.open(Settings(data_dir=tmp / "data"))
    _, admin_key = storage.users.create_user("ada", is_admin=True)
    _, user_key = storage.users.create_user("bo")
    storage.close()
    with running_server(env, tmp / "serve.log") as url:
        yield Served(url, admin_key, user_key, tmp / "serve.log")


def open_create(page: Any, served: Served) -> None:
    sign_in_with_key(page, served, served.user_key)
    page.get_by_role("link", name="Create").click()
    expect(page.locator("#c-family")).to_be_visible()


def test_the_model_panel_says_what_the_model_knows(page: Any, served: Served) -> None:
    open_create(page, served)
    expect(page.locator("#c-model")).to_contain_text("native size 64×64")
    knows = page.locator("#c-knows")
    expect(knows).to_be_visible()
    expect(knows.locator("summary")).to_contain_text("24 subjects, 7 attributes (en, zh); nothing else")
    knows.locator("summary").click()
    expect(knows.locator('[data-knows="subjects"]')).to_contain_text("fox 狐狸")
    expect(knows.locator('[data-knows="weather"]')).to_have_text("clear weather 晴朗, rain 下雨, snow 下雪, fog 雾")
    expect(knows).to_contain_text("An attribute you do not name is drawn at random")


def test_presets_that_mean_nothing_are_marked_and_selectable(page: Any, served: Served) -> None:
    open_create(page, served)
    page.click("#c-advanced summary")
    expect(page.locator('#c-style option[value="anime"]')).to_contain_text("means nothing to this model")
    expect(page.locator('#c-style option[value="cyberpunk"]')).not_to_contain_text("means nothing")
    page.select_option("#c-style", "anime")
    expect(page.locator("#c-style-note")).to_contain_text("it knows none of anime artwork, cel shading")
    page.select_option("#c-style", "cyberpunk")
    expect(page.locator("#c-style-note")).to_contain_text("weather 'rain'")


def test_another_size_gets_a_note_before_and_after_generating(page: Any, served: Served) -> None:
    open_create(page, served)
    page.click("#c-advanced summary")
    page.fill("#c-intent", "a fox, clear weather")
    page.check("#c-as-typed")
    page.fill("#c-steps", "2")
    page.fill("#c-width", "128")
    notes = page.locator("#c-request-notes")
    expect(notes).to_contain_text("128×64 is not this model's size")  # from the quote: nothing generated yet
    with page.expect_response("**/api/v1/generations") as accepted:
        page.click("#c-generate")
    assert accepted.value.status == 202
    expect(notes).to_contain_text("the prompt names no place, time")
    result = page.locator(".result-notes").first
    expect(result).to_contain_text("128×64 is not this model's size: it was trained at 64×64 only")
    expect(page.locator(".result-group img").first).to_be_visible()


def test_an_open_vocabulary_model_shows_no_knows_panel(page: Any, served: Served, tmp_path: Path) -> None:
    folder = tiny.save_sd15(tmp_path / "tiny15")
    profile = active_model_out(model_profile(folder, Settings(data_dir=tmp_path))).model_dump(mode="json")
    page.route("**/api/v1/model", lambda route: route.fulfill(
        status=200, content_type="application/json", body=json.dumps(profile)))
    open_create(page, served)
    expect(page.locator("#c-family")).to_have_text("SD1.5")
    expect(page.locator("#c-knows")).to_be_hidden()
