"""Training steps, checkpoint resume and export of the embedded model (tiny sizes, no font needed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline

from imageloop.errors import TrainingError
from imageloop.training.base.autoencoder import atomic_torch_save, encode_dataset, latent_scaling_factor
from imageloop.training.base.dataset import build_dataset
from imageloop.training.base.model import ModelSize, build_vae
from imageloop.training.base.scenes import ATTRIBUTE_NAMES, random_spec
from imageloop.training.base.train import (
    BaseTrainConfig,
    DiffusionTrainer,
    _save_size,
    export_pipeline,
    load_or_build_tokenizer,
    polish_decoder,
)
from tests.training.base_helpers import needs_emoji_font

TINY = ModelSize.tiny()


def _labels(n: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.asarray([random_spec(rng).indices() for _ in range(n)], np.int16)


def _trainer(ckpt: Path) -> DiffusionTrainer:
    cfg = BaseTrainConfig(data_dir=ckpt / "data", checkpoint_dir=ckpt, batch_size=4, size=TINY, warmup_steps=2)
    _save_size(ckpt, TINY)
    tokenizer = load_or_build_tokenizer(ckpt)
    latents = np.random.default_rng(1).standard_normal((16, TINY.latent_channels, 16, 16)).astype(np.float16)
    torch.manual_seed(0)
    return DiffusionTrainer(cfg, tokenizer, latents, _labels(16), 1.0, TINY)


def test_training_steps_and_resume_reach_the_same_state(tmp_path: Path) -> None:
    straight = _trainer(tmp_path / "a")
    losses = [straight.train_step() for _ in range(3)]
    assert all(np.isfinite(losses))

    first = _trainer(tmp_path / "b")
    first.train_step()
    path = first.save(tmp_path / "b", keep=2)
    resumed = _trainer(tmp_path / "b")
    resumed.load_state_dict(torch.load(path, weights_only=True))
    assert resumed.step == 1 and resumed.images_seen == 4
    for a, b in zip(first.unet.state_dict().values(), resumed.unet.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    resumed.train_step()
    resumed.train_step()
    for a, b in zip(straight.unet.state_dict().values(), resumed.unet.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    for a, b in zip(straight.ema_text.state_dict().values(), resumed.ema_text.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_captions_drop_for_cfg_and_mix_languages(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path)
    texts = trainer.captions(_labels(400), np.random.default_rng(0))
    assert 15 < sum(t == "" for t in texts) < 70
    assert any("\u4e00" <= ch <= "\u9fff" for t in texts for ch in t)
    assert not any("(" in t for t in texts)


def test_checkpoints_are_pruned(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path)
    for _ in range(3):
        trainer.step += 1
        trainer.save(tmp_path, keep=2)
    assert sorted(p.name for p in tmp_path.glob("diffusion-*.pt")) == [
        "diffusion-00000002.pt", "diffusion-00000003.pt"]


def test_export_loads_in_the_stock_pipeline_and_generates(tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    trainer = _trainer(ckpt)
    trainer.train_step()
    trainer.save(ckpt, keep=1)
    vae = build_vae(TINY)
    images = np.random.default_rng(0).integers(0, 255, (8, 64, 64, 3), dtype=np.uint8)
    encode_dataset(vae, images, ckpt, chunk=4)
    assert latent_scaling_factor(ckpt) > 0
    atomic_torch_save({"model": vae.state_dict(), "step": 1, "done": True, "elapsed_s": 1.0}, ckpt / "vae.pt")
    out = tmp_path / "export"
    out.mkdir()
    (out / "MODEL_CARD.md").write_text("kept")
    info = export_pipeline(ckpt, out)
    assert info["step"] == 1 and (out / "MODEL_CARD.md").read_text() == "kept"
    assert json.loads((out / "imageloop.json").read_text())["scheduler"] == "DDIM"
    assert json.loads((out / "knows.json").read_text())["native_size"] == {"width": 64, "height": 64}
    pipe = StableDiffusionPipeline.from_pretrained(str(out), dtype=torch.float32)
    assert pipe.unet.dtype == torch.float32 and pipe.safety_checker is None
    assert pipe.text_encoder.config.eos_token_id == pipe.tokenizer.eos_token_id
    result = pipe(["a fox, rain", "一只狐狸，下雨"], num_inference_steps=2, height=64, width=64,
                  negative_prompt=["snow", ""], output_type="np")
    assert result.images.shape == (2, 64, 64, 3) and np.isfinite(result.images).all()
    ids = pipe.tokenizer(["a fox"], padding="max_length", max_length=pipe.tokenizer.model_max_length,
                         return_tensors="pt").input_ids
    embeds = pipe.text_encoder(ids)[0]
    by_embeds = pipe(prompt_embeds=embeds, num_inference_steps=2, height=64, width=64, output_type="np")
    assert by_embeds.images.shape == (1, 64, 64, 3)
    weights = sum(p.stat().st_size for p in out.rglob("*.safetensors"))
    assert weights < 40e6


def test_export_without_checkpoint_names_the_problem(tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="no diffusion checkpoint"):
        export_pipeline(tmp_path, tmp_path / "out")


def test_label_width_matches_attributes() -> None:
    assert _labels(2).shape == (2, len(ATTRIBUTE_NAMES))


@needs_emoji_font
def test_decoder_polish_changes_only_the_decoder_and_export_uses_it(tmp_path: Path) -> None:
    ckpt, data_dir = tmp_path / "ckpt", tmp_path / "data"
    data = build_dataset(data_dir, 8, seed=0)
    trainer = _trainer(ckpt)
    trainer.save(ckpt, keep=1)
    vae = build_vae(TINY)
    encode_dataset(vae, np.asarray(data.images), ckpt)
    atomic_torch_save({"model": vae.state_dict(), "step": 0, "done": True, "elapsed_s": 0.0}, ckpt / "vae.pt")
    polish_decoder(ckpt, data_dir, minutes=0.05)
    polished = torch.load(ckpt / "decoder.pt", weights_only=True)
    first_steps = polished["step"]
    assert first_steps > 0
    before = vae.state_dict()
    changed = {k for k, v in polished["model"].items() if not torch.equal(v, before[k])}
    assert changed and all(k.startswith(("decoder.", "post_quant_conv.")) for k in changed)
    polish_decoder(ckpt, data_dir, minutes=0.05)  # more minutes continue from the saved state
    assert torch.load(ckpt / "decoder.pt", weights_only=True)["step"] > first_steps
    export_pipeline(ckpt, tmp_path / "out", dtype=torch.float32)
    pipe = StableDiffusionPipeline.from_pretrained(str(tmp_path / "out"), dtype=torch.float32)
    key = next(iter(changed))
    torch.testing.assert_close(pipe.vae.state_dict()[key], torch.load(ckpt / "decoder.pt")["model"][key])


def test_runs_recorded_before_new_size_fields_keep_their_shapes(tmp_path: Path) -> None:
    legacy = {"unet_channels": [64, 128, 192], "unet_layers": 1, "text_hidden": 256, "text_layers": 3,
              "vae_channels": [16, 32, 64]}
    (tmp_path / "model.json").write_text(json.dumps(legacy))
    size = _save_size(tmp_path, ModelSize())
    assert (size.latent_channels, size.vae_mid_attention) == (4, True)
    assert size.unet_channels == (64, 128, 192)


def test_training_autocast_setting_is_checked_and_explicit_values_win(monkeypatch: pytest.MonkeyPatch) -> None:
    from imageloop.engine import autocast
    from imageloop.errors import TrainingError
    from imageloop.training.base.model import use_bf16

    # "auto" follows the CPU probe, whichever way it comes out; explicit values ignore it.
    for pays_off in (True, False):
        monkeypatch.setattr(autocast, "bf16_pays_off", lambda pays_off=pays_off: pays_off)
        assert use_bf16("auto") is pays_off
        assert (use_bf16("bf16"), use_bf16("off")) == (True, False)
    with pytest.raises(TrainingError, match="autocast must be one of"):
        use_bf16("fp8")


def test_an_interrupted_run_keeps_its_steps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    from imageloop.training.base.train import _diffusion_loop

    trainer = _trainer(tmp_path)
    trainer.cfg.save_every_minutes = 60.0  # no periodic checkpoint: only the one the interrupt writes
    before = trainer.step
    train_step = trainer.train_step

    def ctrl_c_in_the_third_step() -> float:
        if trainer.step == before + 2:
            raise KeyboardInterrupt
        return train_step()

    monkeypatch.setattr(trainer, "train_step", ctrl_c_in_the_third_step)
    with pytest.raises(KeyboardInterrupt):
        _diffusion_loop(trainer, trainer.cfg, time.monotonic() + 600)
    [saved] = sorted(tmp_path.glob("diffusion-*.pt"))
    assert trainer.step == before + 2
    assert torch.load(saved, weights_only=True)["step"] == trainer.step  # the two steps done were saved
