"""The served model's profile (what the web page shows): family, label, needs and the controls that apply, read
from tiny FLUX.1 / SD3 / SD1.5 models' files without loading them."""

from __future__ import annotations

from pathlib import Path

import pytest

from imageloop.config import Settings
from imageloop.engine.model_profile import ModelProfile, model_profile
from tests.engine import flow_models as fm
from tests.server.kit import save_tiny_model


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("profile-models")
    dev, schnell = fm.flux_pipeline(), fm.flux_pipeline(seed=1, guidance_embeds=False)
    return {
        "flux": fm.save_folder(dev, root / "flux"),
        "flux_schnell": fm.save_folder(schnell, root / "flux-schnell"),
        "flux_bfl": fm.save_transformer_file(fm.flux_to_original(dev.transformer), root / "dev-bfl.safetensors"),
        "schnell_bfl": fm.save_transformer_file(fm.flux_to_original(schnell.transformer),
                                                root / "schnell-bfl.safetensors"),
        "sd3": fm.save_folder(fm.sd3_pipeline(), root / "sd3"),
        "sd15": save_tiny_model(root / "sd15"),
    }


def rules(profile: ModelProfile) -> dict[str, tuple[bool, str | None]]:
    return {rule.name: (rule.applies, rule.why) for rule in profile.controls}


@pytest.mark.parametrize(("name", "label"), [("flux", "FLUX.1 dev"), ("flux_schnell", "FLUX.1 schnell"),
                                             ("flux_bfl", "FLUX.1 dev"), ("schnell_bfl", "FLUX.1 schnell")])
def test_flux_variants_are_told_apart_and_what_does_not_apply_says_why(
        models: dict[str, Path], tmp_path: Path, name: str, label: str) -> None:
    settings = Settings(data_dir=tmp_path, engine={"ip_adapter": "adapter"})
    profile = model_profile(models[name], settings)
    assert (profile.family, profile.label, profile.samplers) == ("flux", label, ("Euler",))
    found = rules(profile)
    assert found["negative_prompt"][0] is False and "no negative prompt" in str(found["negative_prompt"][1])
    assert found["scheduler"] == (True, f"{label} denoises with flow-matching Euler: the other samplers do not apply")
    assert not found["clip_skip"][0] and not found["controlnet"][0]
    # Even with an adapter configured, IP-Adapter does not run on FLUX.1.
    assert found["ip_adapter"] == (False, f"IP-Adapter runs on SD1.5 and SDXL only, not {label}")
    assert "CLIP-L and T5-XXL text encoders" in profile.needs
    if models[name].is_file():
        assert any("config folder" in need for need in profile.needs)


def test_sd3_keeps_its_negative_prompt(models: dict[str, Path], tmp_path: Path) -> None:
    profile = model_profile(models["sd3"], Settings(data_dir=tmp_path))
    assert (profile.family, profile.label) == ("sd3", "SD3")
    found = rules(profile)
    assert found["negative_prompt"] == (True, None)
    assert not found["clip_skip"][0] and not found["ip_adapter"][0]


def test_sd15_with_an_adapter_configured_offers_every_control(models: dict[str, Path], tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, engine={"ip_adapter": "adapter", "controlnet": "cn"})
    profile = model_profile(models["sd15"], settings)
    assert (profile.family, profile.label, profile.name) == ("sd15", "SD1.5", "sd15")
    assert all(applies and why is None for applies, why in rules(profile).values())
    assert "DPM++ SDE Karras" in profile.samplers


def test_an_unreadable_model_has_no_family_and_says_why(tmp_path: Path) -> None:
    profile = model_profile(tmp_path / "missing", Settings(data_dir=tmp_path))
    assert profile.family is None and profile.problem
    assert all(applies for applies, _ in rules(profile).values())
