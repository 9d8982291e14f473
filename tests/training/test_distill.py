"""Latent consistency distillation of the embedded model: tiny random teacher, seconds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import LCMScheduler, StableDiffusionPipeline, UNet2DConditionModel

from imageloop.errors import TrainingError
from imageloop.training.base.distill import (
    DistillConfig,
    Distiller,
    export_student,
    guidance_embedding,
    lcm_scheduler,
    run_distillation,
    student_unet,
)
from tests.training.base_helpers import needs_emoji_font, tiny_export


def test_guidance_embedding_is_the_one_diffusers_pipelines_feed() -> None:
    scale = torch.tensor([1.0, 2.5, 4.0, 7.5])
    expected = StableDiffusionPipeline.get_guidance_scale_embedding(None, scale - 1.0, embedding_dim=64)  # type: ignore[arg-type]
    torch.testing.assert_close(guidance_embedding(scale, 64), expected)


def test_the_lcm_grid_holds_the_pure_noise_step() -> None:
    scheduler = lcm_scheduler()
    scheduler.set_timesteps(4)
    assert scheduler.timesteps.tolist() == [999, 759, 499, 259]  # 999: zero SNR, the teacher's first step
    assert scheduler.config.prediction_type == "v_prediction" and scheduler.config.rescale_betas_zero_snr


def test_the_student_starts_as_its_teacher_at_any_guidance(tmp_path: Path) -> None:
    teacher = UNet2DConditionModel.from_pretrained(str(tiny_export(tmp_path) / "unet"))
    student = student_unet(teacher, 32)
    z, t, text = torch.randn(2, 8, 16, 16), torch.tensor([999, 259]), torch.randn(2, 64, 32)
    with torch.no_grad():
        plain = teacher(z, t, text).sample
        for scale in (2.0, 6.0):
            guided = student(z, t, text, timestep_cond=guidance_embedding(torch.full((2,), scale), 32)).sample
            torch.testing.assert_close(guided, plain)


def _distiller(tmp_path: Path, teacher: Path) -> Distiller:
    cfg = DistillConfig(teacher_dir=teacher, data_dir=tmp_path / "data", checkpoint_dir=tmp_path / "ckpt",
                        batch_size=4, cond_dim=32, warmup_steps=1, lr=1e-3)
    cfg.checkpoint_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    latents = rng.normal(size=(8, 8, 16, 16)).astype(np.float16)
    return Distiller(cfg, latents, np.zeros((8, 8), np.int16))


def test_a_step_moves_the_student_and_training_resumes_where_it_stopped(tmp_path: Path) -> None:
    distiller = _distiller(tmp_path, tiny_export(tmp_path))
    before = {k: v.clone() for k, v in distiller.student.state_dict().items()}
    losses = [distiller.train_step() for _ in range(3)]
    assert all(np.isfinite(losses)) and losses[0] > 0
    after = distiller.student.state_dict()
    assert not torch.equal(after["time_embedding.cond_proj.weight"], before["time_embedding.cond_proj.weight"])
    assert not torch.equal(distiller.target.state_dict()["conv_out.weight"], before["conv_out.weight"])
    distiller.save(keep=2)
    resumed = _distiller(tmp_path, distiller.cfg.teacher_dir)
    resumed.load_state_dict(torch.load(tmp_path / "ckpt" / "distill-00000003.pt", weights_only=True))
    assert resumed.step == 3 and resumed.images_seen == 12
    # Same batch, same noise and the same weights: the next step is the one the first run would have taken.
    assert resumed.train_step() == pytest.approx(distiller.train_step(), rel=1e-5)


def test_export_is_a_stock_lcm_pipeline_that_embeds_guidance(tmp_path: Path) -> None:
    teacher = tiny_export(tmp_path)
    distiller = _distiller(tmp_path, teacher)
    distiller.train_step()
    distiller.save(keep=2)
    info = export_student(tmp_path / "ckpt", teacher, tmp_path / "student", dtype=torch.float32)
    assert info["step"] == 1 and info["method"] == "latent consistency distillation"
    pipe = StableDiffusionPipeline.from_pretrained(str(tmp_path / "student"), dtype=torch.float32)
    assert isinstance(pipe.scheduler, LCMScheduler) and pipe.unet.config.time_cond_proj_dim == 32
    exported, target = pipe.unet.state_dict(), distiller.target.state_dict()
    torch.testing.assert_close(exported["conv_out.weight"], target["conv_out.weight"])
    defaults = json.loads((tmp_path / "student" / "imageloop.json").read_text())
    assert (defaults["steps"], defaults["scheduler"]) == (4, "LCM")
    images = pipe("a fox", num_inference_steps=4, guidance_scale=4.0, width=64, height=64, output_type="np",
                  generator=torch.Generator().manual_seed(0)).images
    assert images.shape == (1, 64, 64, 3) and np.isfinite(images).all()
    with pytest.raises(TrainingError, match="already a distilled"):
        export_student(tmp_path / "ckpt", tmp_path / "student", tmp_path / "again")


def test_bad_teachers_and_empty_checkpoints_are_named(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(TrainingError, match=r"missing unet/config\.json"):
        run_distillation(DistillConfig(teacher_dir=tmp_path / "empty", data_dir=tmp_path / "d",
                                       checkpoint_dir=tmp_path / "c"))
    with pytest.raises(TrainingError, match="no distillation checkpoint"):
        export_student(tmp_path / "c", tiny_export(tmp_path), tmp_path / "out")


@needs_emoji_font
def test_a_run_renders_encodes_trains_and_checkpoints(tmp_path: Path) -> None:
    cfg = DistillConfig(teacher_dir=tiny_export(tmp_path), data_dir=tmp_path / "data",
                        checkpoint_dir=tmp_path / "ckpt", dataset_size=16, batch_size=4, cond_dim=32, minutes=0.02)
    distiller = run_distillation(cfg)
    assert distiller.step > 0 and (tmp_path / "ckpt" / f"distill-{distiller.step:08d}.pt").is_file()
    assert (tmp_path / "ckpt" / "latents.npy").is_file()
    assert distiller.scaling_factor == json.loads((tmp_path / "ckpt" / "latents.json").read_text())["scaling_factor"]


def test_a_student_export_seeds_a_new_run(tmp_path: Path) -> None:
    from imageloop.training.base.distill import seed_from_student

    teacher = tiny_export(tmp_path)
    distiller = _distiller(tmp_path, teacher)
    distiller.train_step()
    distiller.save(keep=2)
    export_student(tmp_path / "ckpt", teacher, tmp_path / "student", dtype=torch.float32)
    with pytest.raises(TrainingError, match="not an exported student"):
        seed_from_student(teacher, tmp_path / "new", distiller.cfg)
    path = seed_from_student(tmp_path / "student", tmp_path / "new", distiller.cfg)
    state = torch.load(path, weights_only=True)
    assert state["step"] == 1 and state["images_seen"] == 4
    torch.testing.assert_close(state["student"]["conv_out.weight"], distiller.target.state_dict()["conv_out.weight"])
    with pytest.raises(TrainingError, match="already holds"):
        seed_from_student(tmp_path / "student", tmp_path / "new", distiller.cfg)
