"""A user's private recipe (a trained private LoRA) reaches their generations, and only theirs."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from imageloop.config import Settings
from imageloop.engine.recipes import LoraWeight, Recipe, dump_recipe
from imageloop.errors import UnknownNameError
from imageloop.jobs.requests import check_names, find_recipe
from imageloop.server import create_app
from imageloop.server.services import Services
from imageloop.training.user_lora import user_recipe
from tests.engine.tiny_loras import make_diffusers_lora
from tests.server.kit import make_user, tiny_settings


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _write_private_recipe(settings: Settings, user_id: str, name: str, lora: Path) -> None:
    # Where the user-LoRA trainer writes it: recipes/users/<user id>/<name>.yaml, outside the shared recipes.
    folder = settings.recipes_dir / "users" / user_id
    folder.mkdir(parents=True, exist_ok=True)
    recipe = Recipe(name=name, description="private", loras=[LoraWeight(file=str(lora))])
    (folder / f"{name}.yaml").write_text(dump_recipe(recipe), encoding="utf-8")


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[TestClient]:
    settings = tiny_settings(tmp_path_factory.mktemp("private-recipes"), tiny_model)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def services(client: TestClient) -> Services:
    services: Services = client.app.state.services  # type: ignore[attr-defined]
    return services


def _generate(client: TestClient, key: str, **body: Any) -> dict[str, Any]:
    accepted = client.post("/api/v1/generations", headers=_auth(key),
                           json={"prompt": "a red cat", "params": {"seed": 7}, **body})
    assert accepted.status_code == 202, accepted.text
    deadline = time.monotonic() + 60
    while True:
        done: dict[str, Any] = client.get(f"/api/v1/generations/{accepted.json()['id']}", headers=_auth(key)).json()
        if done["status"] in {"succeeded", "failed", "cancelled"}:
            return done
        assert time.monotonic() < deadline, done
        time.sleep(0.05)


def _png(client: TestClient, key: str, done: dict[str, Any]) -> bytes:
    assert done["status"] == "succeeded", done["error"]
    return client.get(done["images"][0]["url"], headers=_auth(key)).content


def test_private_recipe_is_used_by_its_owner_and_invisible_to_others(
    client: TestClient, services: Services, tmp_path: Path
) -> None:
    settings = services.settings
    owner, owner_key = make_user(services.storage, "lora-owner")
    other, other_key = make_user(services.storage, "lora-other")
    lora = make_diffusers_lora(tmp_path / "mine.safetensors", std=0.5)
    _write_private_recipe(settings, owner, "mine", lora)
    assert user_recipe(settings, owner, "mine") is not None

    plain = _png(client, owner_key, _generate(client, owner_key))
    with_lora = _png(client, owner_key, _generate(client, owner_key, recipe="mine"))
    assert with_lora != plain  # the private LoRA changed the image
    assert _png(client, owner_key, _generate(client, owner_key, recipe="mine")) == with_lora  # and deterministically

    refused = client.post("/api/v1/generations", headers=_auth(other_key),
                          json={"prompt": "a red cat", "recipe": "mine"})
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"] == "UnknownNameError"
    assert refused.json()["field"] == "recipe"
    assert "unknown recipe 'mine'" in refused.json()["message"]
    assert "mine" not in refused.json().get("allowed", "").split(", ")
    with pytest.raises(UnknownNameError):
        check_names("mine", None, settings, other)
    with pytest.raises(UnknownNameError):
        check_names("mine", None, settings)  # no user: shared recipes only


def test_private_recipe_shadows_the_shared_one_of_that_name(services: Services, tmp_path: Path) -> None:
    settings = services.settings
    owner, _ = make_user(services.storage, "lora-shadow")
    other, _ = make_user(services.storage, "lora-shared-only")
    shared = settings.recipes_dir / "portrait.yaml"
    shared.parent.mkdir(parents=True, exist_ok=True)
    shared.write_text(dump_recipe(Recipe(name="portrait", steps=3)), encoding="utf-8")
    try:
        lora = make_diffusers_lora(tmp_path / "portrait.safetensors")
        _write_private_recipe(settings, owner, "portrait", lora)
        assert find_recipe("portrait", settings, owner).loras[0].file == str(lora)
        assert find_recipe("portrait", settings, other).steps == 3
        with pytest.raises(UnknownNameError) as unknown:
            find_recipe("nope", settings, owner)
        assert unknown.value.known == ["portrait"]
    finally:
        shared.unlink()
