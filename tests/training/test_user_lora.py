"""Private LoRAs: upload checks name the field at fault; the background job trains a diffusers-format LoRA on the
(tiny) base model that changes its output, registers it, and makes it a recipe only its owner sees."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from PIL import Image

from imageloop.config import Settings
from imageloop.engine.lora import LoraManager
from imageloop.engine.recipes import RecipeStore
from imageloop.errors import ConflictError, InvalidRequestError
from imageloop.storage import Storage
from imageloop.training.lock import RunKind, RunStatus, RunStore
from imageloop.training.registry import ModelKind, ModelStatus, Registry
from imageloop.training.user_lora import (
    check_upload,
    delete_user_loras,
    queue_user_lora,
    run_next_user_lora,
    user_recipe,
    user_recipes,
)
from tests.tiny import save_sd15, sd15_pipeline


def image_bytes(color: tuple[int, int, int], size: tuple[int, int] = (48, 40), fmt: str = "PNG") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format=fmt)
    return out.getvalue()


def _settings(tmp_path: Path, model: Path | None = None, **training: object) -> Settings:
    engine = {"model": str(model), "device": "cpu", "threads": 1} if model else {}
    return Settings(data_dir=tmp_path / "data", engine=engine, training={"lora_steps": 12, **training})


def _files(n: int) -> list[tuple[str, bytes]]:
    return [(f"me{i}.jpg", image_bytes((200, 30 + i * 10, 40), fmt="JPEG")) for i in range(n)]


@pytest.mark.parametrize(("kwargs", "field", "text"), [
    ({"files": _files(4)}, "images", "4 images are too few"),
    ({"files": _files(21)}, "images", "21 images are too many"),
    ({"files": [*_files(5), ("notes.txt", b"hello, not an image")]}, "images[5]", "'notes.txt' is not an image"),
    ({"files": [*_files(5), ("tiny.png", image_bytes((1, 2, 3), (8, 8)))]}, "images[5]", "too small"),
    ({"files": _files(5), "trigger": "two words"}, "trigger", "is not a trigger word"),
    ({"files": _files(5), "name": "Bad Name"}, "name", "is not a recipe name"),
])
def test_bad_uploads_name_the_field(tmp_path: Path, kwargs: dict[str, object], field: str, text: str) -> None:
    values: dict[str, object] = {"name": "me", "trigger": "zkx", **kwargs}
    with pytest.raises(InvalidRequestError) as caught:
        check_upload(_settings(tmp_path), **values)  # type: ignore[arg-type]
    assert caught.value.field == field and text in caught.value.message


def test_too_big_images_are_refused(tmp_path: Path) -> None:
    big = image_bytes((1, 2, 3), (600, 600), fmt="PNG") + b"\0" * 4096
    with pytest.raises(InvalidRequestError, match=r"images\[2\]: 'big.png' is .* MB, too big"):
        check_upload(_settings(tmp_path, lora_max_image_bytes=4096), name="me", trigger="zkx",
                     files=[*_files(2), ("big.png", big), *_files(3)])


def test_a_private_lora_trains_changes_the_output_and_is_only_the_owners(storage: Storage, tmp_path: Path) -> None:
    model = save_sd15(tmp_path / "tiny-sd")
    settings = _settings(tmp_path, model)
    ada, _ = storage.users.create_user("ada")
    bob, _ = storage.users.create_user("bob")
    upload = check_upload(settings, name="me-style", trigger="zkx", files=_files(5))
    run = queue_user_lora(settings, storage, ada.id, upload)
    assert run.status is RunStatus.QUEUED and len(run.params["images"]) == 5
    with pytest.raises(ConflictError, match="already have a private LoRA named 'me-style'"):
        queue_user_lora(settings, storage, ada.id, upload)

    done = run_next_user_lora(settings, storage)
    assert done is not None and done.status is RunStatus.SUCCEEDED, done and done.error
    assert run_next_user_lora(settings, storage) is None  # nothing left to do
    version = Registry(storage.sessions, settings).get(done.result["version_id"])
    assert version.kind is ModelKind.LORA and version.owner_id == ada.id and version.status is ModelStatus.PROMOTED
    assert Registry(storage.sessions, settings).list(ModelKind.LORA) == []  # private: not in the public list

    recipe = user_recipe(settings, ada.id, "me-style")
    assert recipe is not None and [r.name for r in user_recipes(settings, ada.id)] == ["me-style"]
    assert user_recipes(settings, bob.id) == [] and user_recipe(settings, bob.id, "me-style") is None
    assert "me-style" not in RecipeStore(settings).names()

    # The file is a diffusers LoRA that the engine's LoRA manager loads, and it changes the picture.
    pipe = sd15_pipeline()
    manager = LoraManager(settings)

    def draw() -> torch.Tensor:
        out = pipe("zkx", num_inference_steps=2, guidance_scale=1.0, width=64, height=64, output_type="pt",
                   generator=torch.Generator().manual_seed(0))
        return out.images

    plain = draw()
    manager.apply(pipe, recipe)
    styled = draw()
    manager.apply(pipe, None)
    assert not torch.allclose(plain, styled) and torch.equal(plain, draw())
    assert RunStore(storage.sessions).list(RunKind.USER_LORA, user_id=bob.id) == []
    assert not any(storage.blobs.exists(key) for key in run.params["images"])  # uploads go once trained

    # "Delete all my data" takes the private LoRA with it: recipe, registry version and files, job records.
    lora_file = Path(recipe.loras[0].file)
    assert lora_file.is_file()
    assert delete_user_loras(settings, storage, ada.id) == 1
    assert user_recipes(settings, ada.id) == [] and not lora_file.exists()
    assert Registry(storage.sessions, settings).list(ModelKind.LORA, owner_id=ada.id) == []
    assert RunStore(storage.sessions).list(RunKind.USER_LORA, user_id=ada.id) == []

