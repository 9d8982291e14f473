"""The API on the embedded model (its real files): GET /api/v1/model says what it knows and its native size, the
style list marks presets that mean nothing to it (they stay usable), and a request gets notes, not refusals, for a
size it was not trained at and for attributes its prompt leaves to chance. An open-vocabulary model gets none."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from imageloop.config import EMBEDDED_MODEL_NAME, Settings
from imageloop.engine.model_profile import model_profile
from imageloop.engine.request_notes import request_notes
from imageloop.server.services import Services
from tests.server.kit import make_user
from tests.server.test_generations_api import auth, wait_done


@pytest.fixture(scope="module")
def app_overrides() -> dict[str, Any]:
    return {"engine": {"model": EMBEDDED_MODEL_NAME, "threads": 1, "device": "cpu"}}


def test_the_model_route_says_what_the_model_knows(client: TestClient, services: Services) -> None:
    _, key = make_user(services.storage, "knows-reader")
    model = client.get("/api/v1/model", headers=auth(key)).json()
    assert model["native_size"] == [64, 64]
    knows = model["knows"]
    assert len(knows["subjects"]) == 24
    assert {"key": "fox", "en": ["fox", "red fox"], "zh": ["狐狸"]} in knows["subjects"]
    assert [v["key"] for v in knows["attributes"]["weather"]] == ["clear", "rain", "snow", "fog"]
    assert knows["languages"] == ["en", "zh"] and knows["unnamed"].startswith("drawn at random")


def test_styles_that_mean_nothing_are_marked_and_kept(client: TestClient, services: Services) -> None:
    _, key = make_user(services.storage, "knows-styles")
    styles = {s["name"]: s for s in client.get("/api/v1/styles", headers=auth(key)).json()}
    assert styles["anime"]["means_nothing"] and styles["anime"]["note"].startswith("means nothing to this model")
    assert not styles["cyberpunk"]["means_nothing"] and "weather 'rain'" in styles["cyberpunk"]["note"]
    accepted = client.post("/api/v1/generations/quote", headers=auth(key), json={"prompt": "a fox", "style": "anime"})
    assert accepted.status_code == 200, accepted.text  # still selectable


def test_the_quote_notes_a_size_other_than_64x64(client: TestClient, services: Services) -> None:
    _, key = make_user(services.storage, "knows-quote")
    native = client.post("/api/v1/generations/quote", headers=auth(key), json={"prompt": "a fox"}).json()
    assert native["notes"] == []
    wide = client.post("/api/v1/generations/quote", headers=auth(key),
                       json={"prompt": "a fox", "params": {"width": 128, "height": 64}}).json()
    assert len(wide["notes"]) == 1 and wide["notes"][0].startswith("128×64 is not this model's size")


def test_a_generation_runs_at_another_size_with_notes(client: TestClient, services: Services) -> None:
    _, key = make_user(services.storage, "knows-generate")
    body = {"prompt": "a fox, clear weather", "params": {"width": 96, "height": 64, "steps": 2, "seed": 3}}
    accepted = client.post("/api/v1/generations", headers=auth(key), json=body)
    assert accepted.status_code == 202, accepted.text
    assert any("names no place, time" in note for note in accepted.json()["notes"])
    done = wait_done(client, key, accepted.json()["id"])
    assert done["status"] == "succeeded", done
    assert (done["images"][0]["width"], done["images"][0]["height"]) == (96, 64)
    size, unnamed = done["notes"]
    assert size.startswith("96×64 is not this model's size") and "64×64 only" in size
    assert "weather" not in unnamed.split(":")[0]  # the prompt names the weather


def test_a_style_that_names_the_weather_leaves_it_out_of_the_note(client: TestClient, services: Services) -> None:
    _, key = make_user(services.storage, "knows-style-note")
    accepted = client.post("/api/v1/generations", headers=auth(key),
                           json={"prompt": "a fox", "style": "cyberpunk", "params": {"steps": 2}})
    assert accepted.status_code == 202, accepted.text
    [note] = accepted.json()["notes"]
    assert note.startswith("the prompt names no place, lighting") and "weather" not in note.split(":")[0]


def test_an_open_vocabulary_model_gets_no_knows_and_no_notes(tiny_model: Path, tmp_path: Path) -> None:
    profile = model_profile(tiny_model, Settings(data_dir=tmp_path))
    assert profile.knows is None
    assert request_notes(profile.knows, {"width": 128, "height": 128}, "a fox") == []
