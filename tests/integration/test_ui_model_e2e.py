"""The Create page and the served model, end to end (a real `imageloop serve` with an IP-Adapter configured, Debian's
chromium driven by Playwright): the family is shown, controls that do not apply are hidden with the reason (a
FLUX.1 model's profile, as the server computes it for a tiny FLUX.1 model, is served to the page), a reference
image runs through IP-Adapter, and parameters pasted from Forge run with what was not honoured listed."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from imageloop.config import EMBEDDED_MODEL_DIR, EMBEDDED_MODEL_NAME, Settings
from imageloop.engine.model_profile import model_profile
from imageloop.server.ui_schemas import active_model_out
from imageloop.storage import Storage
from tests.integration import test_ui_e2e as e2e
from tests.integration.serve_process import running_server
from tests.integration.test_ui_e2e import CHROMIUM, STEPS, Served, expect, sign_in_with_key, wait_finished

# The browser and page of the journey's tests, on this module's server.
browser = e2e.browser
page = e2e.page

pytestmark = pytest.mark.integration

PASTED = """a lighthouse on a cliff at dusk
Negative prompt: lowres
Steps: 3, Sampler: Euler a, CFG scale: 6, Seed: 42, Size: 64x64, Model hash: 9aba26abdf, Model: deliberate_v2"""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no chromium at {CHROMIUM} (set IMAGELOOP_TEST_CHROMIUM)")
    from diffusers import UNet2DConditionModel

    from tests.engine.tiny_ip_adapters import save_image_encoder, save_ip_adapter

    tmp = tmp_path_factory.mktemp("ui-model-e2e")
    model = e2e._model(tmp)
    folder = EMBEDDED_MODEL_DIR if model == EMBEDDED_MODEL_NAME else Path(model)
    library = tmp / "ip-adapters"
    adapter = save_ip_adapter(library / "tiny.safetensors", UNet2DConditionModel.from_pretrained(folder / "unet"))
    save_image_encoder(library / "image_encoder")
    env = {**os.environ, "IMAGELOOP_DATA_DIR": str(tmp / "data"), "IMAGELOOP_ENGINE__MODEL": model,
           "IMAGELOOP_ENGINE__THREADS": "1", "IMAGELOOP_ENGINE__DEVICE": "cpu", "HF_HUB_OFFLINE": "1",
           "IMAGELOOP_ENGINE__IP_ADAPTER": str(adapter), "IMAGELOOP_PROMPTS__STRATEGIES": '["rules"]'}
    storage = Storage.open(Settings(data_dir=tmp / "data"))
    _, admin_key = storage.users.create_user("ada", is_admin=True)
    _, user_key = storage.users.create_user("bo")
    storage.close()
    with running_server(env, tmp / "serve.log") as url:
        yield Served(url, admin_key, user_key, tmp / "serve.log")


@pytest.fixture(scope="module")
def flux_profile(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """GET /api/v1/model's answer for a tiny FLUX.1 dev model, computed by the server's own code."""
    from tests.engine import flow_models as fm

    root = tmp_path_factory.mktemp("flux-profile")
    folder = fm.save_folder(fm.flux_pipeline(), root / "flux-dev")
    settings = Settings(data_dir=root, engine={"ip_adapter": "tiny"})
    return active_model_out(model_profile(folder, settings)).model_dump(mode="json")


def open_create(page: Any, served: Served) -> None:
    sign_in_with_key(page, served, served.user_key)
    page.get_by_role("link", name="Create").click()
    expect(page.locator("#c-family")).to_be_visible()
    page.click("#c-advanced summary")


def test_the_served_sd15_model_is_named_and_its_controls_are_offered(page: Any, served: Served) -> None:
    open_create(page, served)
    expect(page.locator("#c-family")).to_have_text("SD1.5")
    expect(page.locator("#c-model")).to_contain_text("needs a CLIP-L text encoder")
    for shown in ("#c-negative", "#c-scheduler", "#c-clip-skip", "#c-ip-image", "#c-ip-scale"):
        expect(page.locator(shown)).to_be_visible()
    expect(page.locator("#c-scheduler option", has_text="DPM++ 2M Karras")).to_have_count(1)
    # Only ControlNet is not configured on this server: its note says which setting enables it.
    expect(page.locator("#c-model-notes li")).to_have_count(1)
    expect(page.locator('#c-model-notes [data-note="controlnet"]')).to_contain_text("engine.controlnet")


def test_a_flux_model_hides_what_does_not_apply_and_says_why(page: Any, served: Served,
                                                             flux_profile: dict[str, Any]) -> None:
    page.route("**/api/v1/model", lambda route: route.fulfill(
        status=200, content_type="application/json", body=json.dumps(flux_profile)))
    open_create(page, served)
    expect(page.locator("#c-family")).to_have_text("FLUX.1 dev")
    expect(page.locator("#c-model")).to_contain_text("T5-XXL")
    for hidden in ("#c-negative", "#c-clip-skip", "#c-ip-image", "#c-ip-scale"):
        expect(page.locator(hidden)).to_be_hidden()
    assert page.locator("#c-scheduler option").all_inner_texts() == ["Model default", "Euler"]
    notes = page.locator("#c-model-notes")
    expect(notes.locator('[data-note="negative_prompt"]')).to_contain_text("FLUX.1 has no negative prompt")
    expect(notes.locator('[data-note="scheduler"]')).to_contain_text("flow-matching Euler")
    expect(notes.locator('[data-note="ip_adapter"]')).to_contain_text("SD1.5 and SDXL only")
    # A negative prompt typed before (a restored draft) is not sent to a model that has none.
    page.evaluate("document.querySelector('#c-negative').value = 'blurry'")
    page.fill("#c-intent", "a red cat")
    with page.expect_request("**/api/v1/generations/quote") as quote:
        page.fill("#c-steps", "3")
    assert "negative_prompt" not in quote.value.post_data_json


def test_a_reference_image_runs_through_ip_adapter(page: Any, served: Served, tmp_path: Path) -> None:
    reference = tmp_path / "reference.png"
    Image.new("RGB", (48, 48), (200, 40, 90)).save(reference)
    open_create(page, served)
    page.fill("#c-intent", "a red cat")
    page.fill("#c-steps", str(STEPS))
    page.set_input_files("#c-ip-image", str(reference))
    page.fill("#c-ip-scale", "0.8")
    with page.expect_response("**/api/v1/generations") as accepted:
        page.click("#c-generate")
    generation_id = accepted.value.json()["id"]
    wait_finished(served, generation_id, served.user_key)
    done = served.get(f"/api/v1/generations/{generation_id}", served.user_key)
    assert done["status"] == "succeeded", done["error"]
    assert done["params"]["ip_image_sha256"] == hashlib.sha256(reference.read_bytes()).hexdigest()
    assert done["params"]["ip_scale"] == 0.8
    expect(page.locator(".result-group img").first).to_be_visible()


def test_pasted_parameters_run_and_what_is_not_honoured_is_listed(page: Any, served: Served) -> None:
    open_create(page, served)
    page.click("#c-paste summary")
    page.fill("#c-parameters", PASTED)
    ignored = page.locator("#c-ignored")
    expect(ignored).to_contain_text("Not honoured:")  # from the quote, before anything is generated
    expect(ignored).to_contain_text("Model: deliberate_v2")
    with page.expect_response("**/api/v1/generations") as accepted:
        page.click("#c-generate")
    body = accepted.value.json()
    assert accepted.value.status == 202, body
    assert any(line.startswith("Model: deliberate_v2") for line in body["ignored"])
    wait_finished(served, body["id"], served.user_key)
    done = served.get(f"/api/v1/generations/{body['id']}", served.user_key)
    assert done["status"] == "succeeded", done["error"]
    assert done["final_prompt"] == "a lighthouse on a cliff at dusk" and done["negative_prompt"] == "lowres"
    assert (done["params"]["seed"], done["params"]["steps"], done["params"]["scheduler"]) == (42, 3, "Euler a")
    expect(ignored).to_contain_text("Model: deliberate_v2")

