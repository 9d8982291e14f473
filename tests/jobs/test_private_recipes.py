"""A user's private recipe (a trained private LoRA) reaches their generations, and only theirs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from imageloop.config import Settings
from imageloop.engine.recipes import LoraWeight, Recipe, dump_recipe
from imageloop.errors import UnknownNameError
from imageloop.jobs.requests import check_names, find_recipe
from imageloop.server.services import Services
from imageloop.training.user_lora import user_recipe
from tests.engine.tiny_loras import make_diffusers_lora
from tests.server.kit import make_user
from tests.server.test_generations_api import auth, wait_done


def _write_private_recipe(settings: Settings, user_id: str, name: str, lora: Path) -> None:
    # Where the user-LoRA trainer writes it: recipes/users/<user id>/<name>.yaml, outside the shared recipes.
    folder = settings.recipes_dir / "users" / user_id
    folder.mkdir(parents=True, exist_ok=True)
    recipe = Recipe(name=name, description="private", loras=[LoraWeight(file=str(lora))])
    (folder / f"{name}.yaml").write_text(dump_recipe(recipe), encoding="utf-8")


def _generate(client: TestClient, key: str, **body: Any) -> dict[str, Any]:
    accepted = client.post("/api/v1/generations", headers=auth(key),
                           json={"prompt": "a red cat", "params": {"seed": 7}, **body})
    assert accepted.status_code == 202, accepted.text
    return wait_done(client, key, accepted.json()["id"])


def _png(client: TestClient, key: str, done: dict[str, Any]) -> bytes:
    assert done["status"] == "succeeded", done["error"]
    return client.get(done["images"][0]["url"], headers=auth(key)).content


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

    refused = client.post("/api/v1/generations", headers=auth(other_key),
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
