"""A guidance-embedded (LCM-distilled) model served through the API: GET /api/v1/model says so and shows the
negative prompt with what it costs (a second UNet pass); a generation with a negative prompt (typed, or moved there
by the expander) uses it, and a pasted text's negative prompt is taken."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from imageloop.engine.families import NEGATIVE_SECOND_PASS
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


def generated(client: TestClient, key: str, body: dict[str, Any]) -> tuple[str, dict[str, str]]:
    """The negative prompt a generation's PNG records, and its other parameters."""
    accepted = client.post("/api/v1/generations", headers=auth(key), json=body)
    assert accepted.status_code == 202, accepted.text
    done = wait_done(client, key, accepted.json()["id"])
    assert done["status"] == "succeeded", done
    png = client.get(done["images"][0]["url"], headers=auth(key)).content
    _, negative, values = split_parameters(png_parameters_text(png))
    return negative, values


def test_the_model_route_says_it_is_guidance_embedded(client: TestClient, services: Services) -> None:
    _, key = make_user(services.storage, "lcm-reader")
    model = client.get("/api/v1/model", headers=auth(key)).json()
    assert (model["family"], model["label"], model["guidance_embedded"]) == ("sd15", "SD1.5 (guidance-embedded)",
                                                                              True)
    rules = {rule["name"]: rule for rule in model["controls"]}
    assert rules["negative_prompt"] == {"name": "negative_prompt", "applies": True, "why": NEGATIVE_SECOND_PASS}
    assert rules["scheduler"]["applies"] and "LCM" in model["samplers"]


def test_a_negative_prompt_is_used(client: TestClient, services: Services) -> None:
    _, key = make_user(services.storage, "lcm-negative")
    negative, values = generated(client, key, {"prompt": "a red car", "negative_prompt": "blurry",
                                               "params": {"seed": 5}})
    assert negative == "blurry" and "Request negative prompt" not in values
    assert (values["Sampler"], values["Steps"]) == ("LCM", "2")  # its imageloop.json's steps, the LCM default sampler


def test_the_expanders_negative_terms_are_used(client: TestClient, services: Services) -> None:
    _, key = make_user(services.storage, "lcm-intent")
    negative, values = generated(client, key, {"intent": "a red car, no rain", "params": {"seed": 6}})
    assert "rain" in negative and "Request negative prompt" not in values


def test_a_pasted_negative_prompt_is_taken(client: TestClient, services: Services) -> None:
    _, key = make_user(services.storage, "lcm-paste")
    text = "a red boat\nNegative prompt: blurry\nSteps: 2, Sampler: LCM, CFG scale: 2, Seed: 4, Size: 64x64"
    quote = client.post("/api/v1/generations/quote", headers=auth(key), json={"parameters_text": text})
    assert quote.status_code == 200, quote.text
    assert quote.json()["ignored"] == []
