"""LoraManager on the tiny pipelines: weights matter, LoRAs combine, switching never leaks, bad files fail clearly."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from imageloop.config import Settings
from imageloop.engine.lora import LoraManager, count_lora_layers, inspect_lora_file, install_lora
from imageloop.engine.recipes import LoraWeight, Recipe
from imageloop.errors import ConflictError, RecipeError
from tests.engine.tiny_loras import kohya_from_diffusers, make_diffusers_lora
from tests.tiny import make_sd15_unet, sd15_pipeline, sdxl_pipeline


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    # The tiny models are far faster on one thread than on two contended ones (0.1 s vs seconds per image).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def loras_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """LoRA files shared by the tests of this module (read-only)."""
    folder = tmp_path_factory.mktemp("data") / "loras"
    make_diffusers_lora(folder / "a.safetensors", seed=1)
    make_diffusers_lora(folder / "b.safetensors", seed=7)
    make_diffusers_lora(folder / "te_only.safetensors", seed=11, unet=False)
    kohya_from_diffusers(folder / "a.safetensors", folder / "a_kohya.safetensors", alpha=8.0)
    make_diffusers_lora(folder / "xl.safetensors", arch="sdxl", seed=3)
    kohya_from_diffusers(folder / "xl.safetensors", folder / "xl_kohya.safetensors", alpha=8.0, sgm_unet=True)
    return folder


@pytest.fixture()
def settings(loras_dir: Path) -> Settings:
    return Settings(data_dir=loras_dir.parent)


@pytest.fixture()
def manager(settings: Settings) -> LoraManager:
    return LoraManager(settings)


def recipe(*loras: tuple[str, float]) -> Recipe:
    return Recipe(name="r", loras=[LoraWeight(file=file, weight=weight) for file, weight in loras])


def render(pipe: Any) -> np.ndarray:
    generator = torch.Generator().manual_seed(0)
    out = pipe("a red cat", num_inference_steps=2, generator=generator, output_type="np", height=64, width=64)
    return np.asarray(out.images)


def same_bytes(a: np.ndarray, b: np.ndarray) -> bool:
    return a.tobytes() == b.tobytes()


def test_weight_changes_output_and_zero_weight_is_off(manager: LoraManager) -> None:
    pipe = sd15_pipeline()
    base = render(pipe)
    manager.apply(pipe, recipe(("a", 0.6)))
    at_06 = render(pipe)
    manager.apply(pipe, recipe(("a", 1.2)))
    at_12 = render(pipe)
    manager.apply(pipe, recipe(("a", 0.0)))
    at_0 = render(pipe)
    assert np.abs(at_06 - base).max() > 1e-3
    assert np.abs(at_12 - at_06).max() > 1e-3
    assert same_bytes(at_0, base)


def test_two_loras_combine(manager: LoraManager) -> None:
    pipe = sd15_pipeline()
    manager.apply(pipe, recipe(("a", 0.6)))
    only_a = render(pipe)
    manager.apply(pipe, recipe(("b", 0.4)))
    only_b = render(pipe)
    manager.apply(pipe, recipe(("a", 0.6), ("b.safetensors", 0.4)))
    both = render(pipe)
    assert np.abs(both - only_a).max() > 1e-3
    assert np.abs(both - only_b).max() > 1e-3
    assert len(manager.active(pipe)) == 2


def test_recipe_then_none_equals_none_alone(manager: LoraManager) -> None:
    untouched = render(sd15_pipeline())
    pipe = sd15_pipeline()
    manager.apply(pipe, recipe(("a", 0.8), ("b", -0.5)))
    render(pipe)
    manager.apply(pipe, None)
    assert same_bytes(render(pipe), untouched)
    manager.apply(pipe, recipe(("a", 0.8)))
    manager.apply(pipe, Recipe(name="plain"))  # a recipe without LoRAs also turns LoRA off
    assert same_bytes(render(pipe), untouched)
    assert manager.active(pipe) == ()


def test_a_then_b_equals_b_alone(settings: Settings) -> None:
    fresh = sd15_pipeline()
    LoraManager(settings).apply(fresh, recipe(("b", 0.7)))
    b_alone = render(fresh)
    pipe = sd15_pipeline()
    manager = LoraManager(settings)
    manager.apply(pipe, recipe(("a", 1.0)))
    render(pipe)
    manager.apply(pipe, recipe(("b", 0.7)))
    assert same_bytes(render(pipe), b_alone)


def test_loads_once_and_never_touches_base_weights(manager: LoraManager) -> None:
    pipe = sd15_pipeline()
    unet, text_encoder = pipe.unet, pipe.text_encoder
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    with mock.patch.object(pipe, "load_lora_weights", wraps=pipe.load_lora_weights) as load:
        for weight in (0.5, 1.0, -0.5):
            manager.apply(pipe, recipe(("a", weight), ("b", 0.3)))
        manager.apply(pipe, None)
        manager.apply(pipe, recipe(("a", 0.5)))
    assert load.call_count == 2
    assert pipe.unet is unet and pipe.text_encoder is text_encoder
    after = unet.state_dict()
    # PEFT wraps each targeted layer, so a base weight "x.weight" now lives at "x.base_layer.weight".
    for key, value in before.items():
        wrapped = key.rsplit(".", 1)[0] + ".base_layer." + key.rsplit(".", 1)[1]
        assert torch.equal(after.get(key, after.get(wrapped)), value), key


def test_kohya_file_gives_the_same_image_as_diffusers_format(manager: LoraManager) -> None:
    pipe = sd15_pipeline()
    manager.apply(pipe, recipe(("a", 0.9)))
    diffusers_format = render(pipe)
    manager.apply(pipe, recipe(("a_kohya", 0.9)))
    kohya_format = render(pipe)
    np.testing.assert_allclose(kohya_format, diffusers_format, atol=1e-5)
    assert np.abs(kohya_format - render(sd15_pipeline())).max() > 1e-3


def test_sdxl_diffusers_and_kohya_sgm_files(manager: LoraManager) -> None:
    pipe = sdxl_pipeline()
    base = render(pipe)
    manager.apply(pipe, recipe(("xl", 1.0)))
    diffusers_format = render(pipe)
    manager.apply(pipe, recipe(("xl_kohya", 1.0)))
    kohya_format = render(pipe)
    manager.apply(pipe, None)
    assert np.abs(diffusers_format - base).max() > 1e-3
    np.testing.assert_allclose(kohya_format, diffusers_format, atol=1e-5)
    assert same_bytes(render(pipe), base)


def test_text_encoder_only_lora(manager: LoraManager) -> None:
    pipe = sd15_pipeline()
    base = render(pipe)
    manager.apply(pipe, recipe(("te_only", 1.0)))
    assert np.abs(render(pipe) - base).max() > 1e-3
    manager.apply(pipe, None)
    assert same_bytes(render(pipe), base)


def test_edited_file_is_reloaded_and_old_adapter_unloaded(settings: Settings, loras_dir: Path, tmp_path: Path) -> None:
    pipe = sd15_pipeline()
    manager = LoraManager(settings)
    style = tmp_path / "style.safetensors"
    shutil.copy(loras_dir / "a.safetensors", style)
    manager.apply(pipe, recipe((str(style), 0.8)))
    first = manager.active(pipe)
    shutil.copy(loras_dir / "b.safetensors", style)
    manager.apply(pipe, recipe((str(style), 0.8)))
    assert manager.active(pipe) != first
    assert manager.loaded(pipe) == [manager.active(pipe)[0][0]]
    b_alone = sd15_pipeline()
    LoraManager(settings).apply(b_alone, recipe(("b", 0.8)))
    assert same_bytes(render(pipe), render(b_alone))


def test_same_content_under_two_names_adds_weights(settings: Settings, loras_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy_of_a.safetensors"
    shutil.copy(loras_dir / "a.safetensors", copy)
    manager = LoraManager(settings)
    pipe = sd15_pipeline()
    manager.apply(pipe, recipe(("a", 0.3), (str(copy), 0.3)))
    split = render(pipe)
    assert len(manager.loaded(pipe)) == 1
    manager.apply(pipe, recipe(("a", 0.6)))
    np.testing.assert_allclose(split, render(pipe), atol=1e-6)


def test_least_recently_used_adapters_are_unloaded(settings: Settings) -> None:
    manager = LoraManager(settings, max_loaded=1)
    pipe = sd15_pipeline()
    manager.apply(pipe, recipe(("a", 1.0)))
    manager.apply(pipe, recipe(("b", 1.0)))
    assert manager.loaded(pipe) == [manager.active(pipe)[0][0]]
    manager.apply(pipe, recipe(("a", 1.0), ("b", 1.0)))  # the recipe's own adapters are never evicted
    assert len(manager.loaded(pipe)) == 2


def assert_still_usable(manager: LoraManager, pipe: Any, base: np.ndarray) -> None:
    assert manager.active(pipe) == ()
    assert same_bytes(render(pipe), base)
    manager.apply(pipe, recipe(("a", 0.6)))
    assert np.abs(render(pipe) - base).max() > 1e-3
    manager.apply(pipe, None)


@pytest.mark.parametrize(
    "content",
    [b"not a safetensors file at all", b"\x08\x00\x00\x00\x00\x00\x00\x00{\"a\": 1}"],
    ids=["garbage", "bad-header"],
)
def test_corrupt_file_is_a_recipe_error_naming_it(manager: LoraManager, tmp_path: Path, content: bytes) -> None:
    pipe = sd15_pipeline()
    base = render(pipe)
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(content)
    manager.apply(pipe, recipe(("a", 0.5)))
    with pytest.raises(RecipeError, match=r"broken\.safetensors"):
        manager.apply(pipe, recipe(("a", 0.5), (str(bad), 1.0)))
    assert_still_usable(manager, pipe, base)


def test_non_lora_safetensors_is_rejected(manager: LoraManager, tmp_path: Path) -> None:
    pipe = sd15_pipeline()
    base = render(pipe)
    model = tmp_path / "unet.safetensors"
    save_file({k: v.contiguous() for k, v in make_sd15_unet().state_dict().items()}, str(model))
    with pytest.raises(RecipeError, match=r"unet\.safetensors.*no LoRA layers"):
        manager.apply(pipe, recipe((str(model), 1.0)))
    assert_still_usable(manager, pipe, base)


def test_lora_for_other_architecture_is_rejected(manager: LoraManager, loras_dir: Path, tmp_path: Path) -> None:
    pipe = sd15_pipeline()
    base = render(pipe)
    with pytest.raises(RecipeError, match=r"xl\.safetensors"):
        manager.apply(pipe, recipe(("xl", 1.0)))
    assert manager.loaded(pipe) == []
    # A LoRA for a transformer model (Flux-style keys) matches nothing in a UNet pipeline.
    flux = tmp_path / "flux.safetensors"
    save_file(
        {
            "transformer.single_transformer_blocks.0.attn.to_q.lora_A.weight": torch.randn(4, 32),
            "transformer.single_transformer_blocks.0.attn.to_q.lora_B.weight": torch.randn(32, 4),
        },
        str(flux),
    )
    with pytest.raises(RecipeError, match=r"flux\.safetensors.*0 of its 1 layers"):
        manager.apply(pipe, recipe((str(flux), 1.0)))
    assert_still_usable(manager, pipe, base)

    xl_pipe = sdxl_pipeline()
    with pytest.raises(RecipeError, match=r"a\.safetensors"):
        manager.apply(xl_pipe, recipe(("a", 1.0)))
    assert manager.loaded(xl_pipe) == []


def test_missing_file_is_a_recipe_error_naming_it(manager: LoraManager) -> None:
    pipe = sd15_pipeline()
    manager.apply(pipe, recipe(("a", 0.5)))
    with pytest.raises(RecipeError, match="nowhere"):
        manager.apply(pipe, recipe(("a", 0.5), ("nowhere", 1.0)))
    assert manager.active(pipe) == ()


def test_count_and_inspect(loras_dir: Path, tmp_path: Path) -> None:
    # UNet: 6 transformer blocks (2 down, 1 mid, 3 up) x 2 attentions x 4 projections; text encoder: 5 x 4
    assert count_lora_layers(loras_dir / "a.safetensors") == 48 + 20
    assert count_lora_layers(loras_dir / "a_kohya.safetensors") == 48 + 20
    info = inspect_lora_file(loras_dir / "xl_kohya.safetensors")
    assert info.components == ("text_encoder", "text_encoder_2", "unet")
    assert info.base == "SDXL"
    other = tmp_path / "cascade.safetensors"  # FLUX.1 LoRAs are accepted (tests/engine/test_flux_sd3.py)
    save_file({"prior.x.lora_A.weight": torch.ones(2, 2), "prior.x.lora_B.weight": torch.ones(2, 2)}, str(other))
    with pytest.raises(RecipeError, match="not a Stable Diffusion LoRA"):
        inspect_lora_file(other)


def test_install_lora_copies_checked_files(loras_dir: Path, tmp_path: Path) -> None:
    target_dir = tmp_path / "loras"
    info = install_lora(loras_dir / "a_kohya.safetensors", target_dir, name="detail")
    assert info.path == target_dir / "detail.safetensors"
    assert info.path.read_bytes() == (loras_dir / "a_kohya.safetensors").read_bytes()
    with pytest.raises(ConflictError, match=r"detail\.safetensors"):
        install_lora(loras_dir / "b.safetensors", target_dir, name="detail")
    install_lora(loras_dir / "b.safetensors", target_dir, name="detail", overwrite=True)
    assert info.path.read_bytes() == (loras_dir / "b.safetensors").read_bytes()
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"junk")
    with pytest.raises(RecipeError, match=r"junk\.safetensors"):
        install_lora(junk, target_dir)
    assert sorted(p.name for p in target_dir.iterdir()) == ["detail.safetensors"]
