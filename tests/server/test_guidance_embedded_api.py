"""A guidance-embedded (LCM-distilled) model served through the API: GET /api/v1/model says so and hides the negative
prompt, saying why; a generation with a negative prompt (typed, or moved there by the expander) runs, and the PNG
and a pasted text's ``ignored`` say it was not used."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from imageloop.engine.families import NEGATIVE_NOT_USED_EMBEDDED
from imageloop.engine.pngmeta import png_parameters_text, split_parameters
from imageloop.server.services import Services
from tests import tiny
from tests.server.kit import make_user
from tests.server.test_generations_api import auth, wait_done


@pytest.fixture(scope="module")
def app_overrides(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    model = tiny.save_sd15_guidance_embedded(tmp_path_factory.mktemp("lcm-model") / "lcm-tiny",
                                            model_defaults={"steps": 2, "width": 64, "height": 64})
    return {"engine": {"model": str(model), "threads": 1, "device": "cpu"}}


def generated_values(client: TestClient, key: str, body: dict[str, Any]) -> dict[str, str]:
    accepted = client.post("/api/v1/generations", headers=auth(key), json=body)
    assert accepted.status_code == 202, accepted.text
    done = wait_done(client, key, accepted.json()["id"])
    assert done["status"] == "succeeded", done
    png = client.get(done["images"][0]["url"], headers=auth(key)).content
    _, _, values = split_parameters(png_parameters_text(png))
    return values


def test_the_model_route_says_it_is_guidance_embedded(client: TestClient, services: Services) -> None:
    _, key = make_user(services.storage, "lcm-reader")
    model = client.get("/api/v1/model", headers=auth(key)).json()
    assert (model["family"], model["label"], model["guidance_embedded"]) == ("sd15", "SD1.5 (guidance-embedded)",
                                                                              True)
    rules = {rule["name"]: rule for rule in model["controls"]}
    assert not rules["negative_prompt"]["applies"] and "no unconditional pass" in rules["negative_prompt"]["why"]
    assert rules["scheduler"]["applies"] and "LCM" in model["samplers"]


def test_a_negative_prompt_runs_and_the_png_says_it_was_not_used(client: TestClient, services: Services) -> None:
    _, key = make_user(services.storage, "lcm-negative")
    values = generated_values(client, key, {"prompt": "a red car", "negative_prompt": "blurry",
                                            "params": {"seed": 5}})
    assert values["Request negative prompt"] == NEGATIVE_NOT_USED_EMBEDDED
    assert (values["Sampler"], values["Steps"]) == ("LCM", "2")  # its imageloop.json's steps, the LCM default sampler


def test_the_expanders_negative_terms_do_not_break_a_generation(client: TestClient, services: Services) -> None:
    _, key = make_user(services.storage, "lcm-intent")
    values = generated_values(client, key, {"intent": "a red car, no rain", "params": {"seed": 6}})
    assert values["Request negative prompt"] == NEGATIVE_NOT_USED_EMBEDDED


def test_a_pasted_negative_prompt_is_listed_as_not_used(client: TestClient, services: Services) -> None:
    _, key = make_user(services.storage, "lcm-paste")
    text = "a red boat\nNegative prompt: blurry\nSteps: 2, Sampler: LCM, CFG scale: 2, Seed: 4, Size: 64x64"
    quote = client.post("/api/v1/generations/quote", headers=auth(key), json={"parameters_text": text})
    assert quote.status_code == 200, quote.text
    assert quote.json()["ignored"] == [f"Negative prompt: blurry — {NEGATIVE_NOT_USED_EMBEDDED}"]

