"""A few-step student of the embedded model: latent consistency distillation (LCM) with the guidance scale embedded.

Why this method: the teacher is a latent v-prediction model with a zero-terminal-SNR schedule, and sampling it
costs 20 steps x 2 UNet passes (classifier-free guidance). Latent consistency distillation (Luo et al., 2023)
removes both factors at once: the student maps any point of the teacher's guided probability-flow ODE straight to
its end (so 2-4 steps suffice), and the guidance scale is an input of the student (a sinusoidal embedding added to
the time embedding, ``time_cond_proj_dim``), so one conditional pass per step replaces two. It needs no teacher
samples (only one teacher ODE step per training example), so it trains on this machine's CPU within an hour or
two, and the student is a standard diffusers ``UNet2DConditionModel`` sampled by the stock ``LCMScheduler`` in a
stock ``StableDiffusionPipeline``. Progressive distillation would need ~3 rounds to reach 4 steps and keeps the
second (unconditional) pass; adversarial distillation needs a discriminator and far more compute.

One training step (batch ``B``):
1. draw latents ``x0`` of training images, a point ``t`` on the teacher's 50-step grid, noise and a guidance
   scale ``s``; noise ``x0`` to ``z_t``;
2. the teacher takes one guided DDIM step ``z_t -> z_{t-k}`` (conditional and unconditional passes);
3. the target network (an EMA of the student) maps ``z_{t-k}`` to its consistency estimate of ``x0``;
4. the student maps ``z_t`` to its estimate; the loss is the pseudo-Huber distance between the two.

Negative prompts: a guidance-embedded student has no unconditional pass of its own (as every LCM model in
diffusers); the engine adds a second UNet pass on the negative prompt when one is given
(:mod:`imageloop.engine.embedded_negative`).
"""

from __future__ import annotations

import copy
import json
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import AutoencoderKL, DDPMScheduler, LCMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from tqdm import tqdm
from transformers import CLIPTextModel, PreTrainedTokenizerFast

from imageloop.errors import TrainingError
from imageloop.training.base.autoencoder import atomic_torch_save
from imageloop.training.base.knows import write_knowledge
from imageloop.training.base.model import scheduler_config, use_bf16
from imageloop.training.base.tokenizer import MAX_LENGTH
from imageloop.training.base.train import batch_captions, encoded_dataset, install_export

_UNet: Any = UNet2DConditionModel
_Vae: Any = AutoencoderKL
_Ddpm: Any = DDPMScheduler
_Lcm: Any = LCMScheduler
_Pipeline: Any = StableDiffusionPipeline

SIGMA_DATA = 0.5  # the boundary-condition constants of diffusers' LCMScheduler: the student must match them
TIMESTEP_SCALING = 10.0

STUDENT_DEFAULTS = {"steps": 4, "guidance_scale": 4.0, "width": 64, "height": 64, "scheduler": "LCM",
                    "prompt_weighting": "context"}


@dataclass
class DistillConfig:
    """Settings of one `imageloop train distill` run."""

    teacher_dir: Path = field(metadata={"help": "The exported teacher (a diffusers folder)."})
    data_dir: Path = field(metadata={"help": "Dataset folder; rendered deterministically when missing."})
    checkpoint_dir: Path = field(metadata={"help": "Student checkpoints and cached latents."})
    minutes: float = field(default=60.0, metadata={"help": "Wall-clock budget of this invocation."})
    dataset_size: int = field(default=50_000, metadata={"help": "Training images rendered into data_dir."})
    seed: int = field(default=0, metadata={"help": "Seed of the batches, captions and noise."})
    batch_size: int = field(default=32, metadata={"help": "Batch size."})
    lr: float = field(default=5e-5, metadata={"help": "AdamW learning rate (after warm-up)."})
    warmup_steps: int = field(default=100, metadata={"help": "Linear learning-rate warm-up."})
    target_ema: float = field(default=0.95, metadata={"help": "EMA decay of the target network."})
    solver_steps: int = field(default=50, metadata={"help": "Teacher DDIM grid (skip = 1000 / this)."})
    guidance_min: float = field(default=2.0, metadata={"help": "Smallest guidance scale trained."})
    guidance_max: float = field(default=6.0, metadata={"help": "Largest guidance scale trained."})
    cond_dim: int = field(default=256, metadata={"help": "Width of the guidance embedding (time_cond_proj_dim)."})
    caption_dropout: float = field(default=0.05, metadata={"help": "Share of empty captions."})
    zh_fraction: float = field(default=0.5, metadata={"help": "Share of Chinese captions."})
    huber_c: float = field(default=0.001, metadata={"help": "Pseudo-Huber constant of the loss."})
    save_every_minutes: float = field(default=10.0, metadata={"help": "Checkpoint interval."})
    keep_checkpoints: int = field(default=2, metadata={"help": "Checkpoints kept."})
    autocast: str = field(default="auto", metadata={"help": "bf16 autocast: auto, bf16, off."})


def guidance_embedding(scale: torch.Tensor, dim: int) -> torch.Tensor:
    """The embedding of guidance ``scale`` that diffusers' pipelines feed an LCM UNet (of ``scale - 1``)."""
    w = (scale.float() - 1.0) * 1000.0
    half = dim // 2
    freqs = torch.exp(torch.arange(half, dtype=torch.float32) * -(math.log(10000.0) / (half - 1)))
    angles = w[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    return torch.nn.functional.pad(emb, (0, dim % 2))


def boundary_scalings(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``c_skip, c_out`` of the consistency parameterisation at timesteps ``t`` (as LCMScheduler computes them)."""
    scaled = t.float() * TIMESTEP_SCALING
    denom = scaled**2 + SIGMA_DATA**2
    return SIGMA_DATA**2 / denom, scaled / denom.sqrt()


def student_unet(teacher: Any, cond_dim: int) -> Any:
    """The teacher's UNet with a guidance-embedding input whose projection starts at zero (student = teacher)."""
    config = {key: value for key, value in teacher.config.items() if not key.startswith("_")}
    student = _UNet.from_config({**config, "time_cond_proj_dim": cond_dim})
    missing, unexpected = student.load_state_dict(teacher.state_dict(), strict=False)
    if unexpected or any("cond_proj" not in name for name in missing):
        raise TrainingError(f"teacher and student UNets differ: missing {missing}, unexpected {unexpected}")
    torch.nn.init.zeros_(student.time_embedding.cond_proj.weight)
    return student


class _Schedule:
    """sqrt(alpha_bar) and sqrt(1 - alpha_bar) of the teacher's training schedule, indexable by timestep."""

    def __init__(self) -> None:
        bars = _Ddpm.from_config(scheduler_config()).alphas_cumprod.float()
        self.alpha, self.sigma = bars.sqrt(), (1.0 - bars).sqrt()

    def at(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.alpha[t].view(-1, 1, 1, 1), self.sigma[t].view(-1, 1, 1, 1)

    def x0_from_v(self, z: torch.Tensor, v: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a, s = self.at(t)
        return a * z - s * v

    def consistency(self, z: torch.Tensor, v: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The consistency function's output: ``c_skip z + c_out x0(z, v)``."""
        skip, out = boundary_scalings(t)
        return skip.view(-1, 1, 1, 1) * z + out.view(-1, 1, 1, 1) * self.x0_from_v(z, v, t)


class Distiller:
    """Teacher, student, target network, optimizer and counters."""

    def __init__(self, cfg: DistillConfig, latents: np.ndarray, labels: np.ndarray) -> None:
        self.cfg, self.latents, self.labels = cfg, latents, labels
        teacher_dir = cfg.teacher_dir
        self.tokenizer: PreTrainedTokenizerFast = PreTrainedTokenizerFast.from_pretrained(
            str(teacher_dir / "tokenizer"))
        self.text_encoder: Any = CLIPTextModel.from_pretrained(str(teacher_dir / "text_encoder"),
                                                               torch_dtype=torch.float32)
        self.text_encoder.requires_grad_(False)
        self.text_encoder.train(False)
        self.teacher = _UNet.from_pretrained(str(teacher_dir / "unet"),
                                             torch_dtype=torch.float32).requires_grad_(False).eval()
        self.scaling_factor = float(json.loads((teacher_dir / "vae/config.json").read_text())["scaling_factor"])
        self.student = student_unet(self.teacher, cfg.cond_dim)
        self.target = copy.deepcopy(self.student).requires_grad_(False)
        self.optimizer = torch.optim.AdamW(self.student.parameters(), lr=cfg.lr, weight_decay=0.0)
        self.schedule = _Schedule()
        self.skip = 1000 // cfg.solver_steps
        self.step, self.images_seen, self.elapsed_s = 0, 0, 0.0
        self.bf16 = use_bf16(cfg.autocast)
        with torch.no_grad():
            self.empty = self.encode([""])

    def encode(self, texts: list[str]) -> torch.Tensor:
        ids = self.tokenizer(texts, padding="max_length", max_length=MAX_LENGTH, truncation=True,
                             return_tensors="pt").input_ids
        return self.text_encoder(ids).last_hidden_state  # type: ignore[no-any-return]

    def _unet(self, model: Any, z: torch.Tensor, t: torch.Tensor, text: torch.Tensor,
              cond: torch.Tensor | None = None) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            out = model(z, t, text, timestep_cond=cond).sample
        return out.float()  # type: ignore[no-any-return]

    def train_step(self) -> float:
        """One optimisation step on a batch drawn deterministically from (seed, step); returns the loss."""
        cfg, sched = self.cfg, self.schedule
        rng = np.random.default_rng([cfg.seed, 11, self.step])
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + self.step)
        # 1. data, a point on the teacher's grid, noise and a guidance scale
        idx = np.sort(rng.choice(len(self.latents), cfg.batch_size, replace=False))
        x0 = torch.from_numpy(self.latents[idx].astype(np.float32)) * self.scaling_factor
        n = torch.randint(1, cfg.solver_steps + 1, (len(idx),), generator=gen)
        t, t_prev = n * self.skip - 1, (n - 1) * self.skip - 1
        t_prev = t_prev.clamp(min=0)
        a, s = sched.at(t)
        z = a * x0 + s * torch.randn(x0.shape, generator=gen)
        scale = cfg.guidance_min + (cfg.guidance_max - cfg.guidance_min) * torch.rand(len(idx), generator=gen)
        w = guidance_embedding(scale, cfg.cond_dim)
        with torch.no_grad():
            text = self.encode(batch_captions(self.labels[idx], rng, cfg.caption_dropout, cfg.zh_fraction))
            # 2. one guided DDIM step of the teacher
            both = self._unet(self.teacher, torch.cat([z, z]), torch.cat([t, t]),
                              torch.cat([text, self.empty.expand_as(text)]))
            v_cond, v_uncond = both.chunk(2)
            v = v_uncond + scale.view(-1, 1, 1, 1) * (v_cond - v_uncond)
            x0_teacher = a * z - s * v
            eps = s * z + a * v
            a_prev, s_prev = sched.at(t_prev)
            z_prev = a_prev * x0_teacher + s_prev * eps
            # 3. the target network's estimate from the earlier point
            target = sched.consistency(z_prev, self._unet(self.target, z_prev, t_prev, text, w), t_prev)
        # 4. the student's estimate from the later point, pulled to the target
        for group in self.optimizer.param_groups:
            group["lr"] = cfg.lr * min(1.0, (self.step + 1) / max(cfg.warmup_steps, 1))
        pred = sched.consistency(z, self._unet(self.student, z, t, text, w), t)
        loss = (torch.sqrt((pred - target) ** 2 + cfg.huber_c**2) - cfg.huber_c).mean()
        loss.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_(list(self.student.parameters()), 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            torch._foreach_lerp_(list(self.target.parameters()), list(self.student.parameters()),
                                 1.0 - cfg.target_ema)
        self.step += 1
        self.images_seen += len(idx)
        return float(loss.item())

    def state_dict(self) -> dict[str, Any]:
        return {"student": self.student.state_dict(), "target": self.target.state_dict(),
                "optimizer": self.optimizer.state_dict(), "step": self.step, "images_seen": self.images_seen,
                "elapsed_s": self.elapsed_s}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.student.load_state_dict(state["student"])
        self.target.load_state_dict(state["target"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step, self.images_seen = int(state["step"]), int(state["images_seen"])
        self.elapsed_s = float(state["elapsed_s"])

    def save(self, keep: int) -> Path:
        path = self.cfg.checkpoint_dir / f"distill-{self.step:08d}.pt"
        atomic_torch_save(self.state_dict(), path)
        for old in sorted(self.cfg.checkpoint_dir.glob("distill-*.pt"))[:-keep]:
            old.unlink()
        return path


def _newest(folder: Path) -> Path | None:
    found = sorted(folder.glob("distill-*.pt"))
    return found[-1] if found else None


def _check_teacher(teacher_dir: Path) -> None:
    needed = ("unet/config.json", "vae/config.json", "text_encoder/config.json", "tokenizer/tokenizer.json")
    missing = [name for name in needed if not (teacher_dir / name).is_file()]
    if missing:
        raise TrainingError(f"{teacher_dir} is not an exported embedded model: missing {', '.join(missing)}")
    if json.loads((teacher_dir / "unet/config.json").read_text()).get("time_cond_proj_dim") is not None:
        raise TrainingError(f"{teacher_dir} is already a distilled (guidance-embedded) model; distil the teacher")


def _latents(cfg: DistillConfig) -> tuple[np.ndarray, np.ndarray]:
    """The dataset's latents under the teacher's autoencoder (encoded once, cached in the checkpoint folder)."""
    vae = _Vae.from_pretrained(str(cfg.teacher_dir / "vae"), torch_dtype=torch.float32)
    data, latents = encoded_dataset(cfg.data_dir, cfg.dataset_size, cfg.seed, vae, cfg.checkpoint_dir)
    return latents, data.labels


def run_distillation(cfg: DistillConfig) -> Distiller:
    """Distil for ``cfg.minutes`` (resuming from the newest checkpoint), checkpointing on the way and at the end."""
    _check_teacher(cfg.teacher_dir)
    cfg.checkpoint_dir.mkdir(parents=True, exist_ok=True)
    stop_at = time.monotonic() + cfg.minutes * 60.0
    latents, labels = _latents(cfg)
    distiller = Distiller(cfg, latents, labels)
    newest = _newest(cfg.checkpoint_dir)
    if newest is not None:
        distiller.load_state_dict(torch.load(newest, weights_only=True))
    start = last_save = time.monotonic()
    elapsed0, smoothed = distiller.elapsed_s, None
    total = int(max(0.0, stop_at - start))
    with tqdm(total=total, desc="distill", unit="s", mininterval=30) as bar:
        try:
            while time.monotonic() < stop_at:
                loss = distiller.train_step()
                smoothed = loss if smoothed is None else 0.98 * smoothed + 0.02 * loss
                now = time.monotonic()
                distiller.elapsed_s = elapsed0 + now - start
                bar.n = min(int(now - start), total)
                bar.set_postfix(step=distiller.step, loss=f"{smoothed:.4f}", refresh=False)
                bar.update(0)
                if distiller.step % 25 == 0:
                    _log(cfg.checkpoint_dir, distiller, smoothed)
                if now - last_save > cfg.save_every_minutes * 60.0:
                    distiller.save(cfg.keep_checkpoints)
                    last_save = now
        finally:
            distiller.save(cfg.keep_checkpoints)
    return distiller


def _log(folder: Path, distiller: Distiller, loss: float) -> None:
    path = folder / "loss.csv"
    new = not path.is_file()
    with path.open("a") as handle:
        if new:
            handle.write("step,images_seen,elapsed_s,loss\n")
        handle.write(f"{distiller.step},{distiller.images_seen},{distiller.elapsed_s:.1f},{loss:.6g}\n")


def seed_from_student(student_dir: Path, checkpoint_dir: Path, cfg: DistillConfig) -> Path:
    """Write a checkpoint into the empty ``checkpoint_dir`` from an exported student (its checkpoints gone, or to
    go on from an earlier export at other settings): student and target both start as the export's UNet, the
    optimizer's moments afresh, the counters from its ``training.json``."""
    if any(checkpoint_dir.glob("distill-*.pt")):
        raise TrainingError(f"{checkpoint_dir} already holds distillation checkpoints; seed an empty folder")
    config_path = student_dir / "unet/config.json"
    if not config_path.is_file() or json.loads(config_path.read_text()).get("time_cond_proj_dim") is None:
        raise TrainingError(f"{student_dir} is not an exported student (no guidance-embedded unet/)")
    unet = _UNet.from_pretrained(str(student_dir / "unet"), torch_dtype=torch.float32)
    weights = {key: value.float().clone() for key, value in unet.state_dict().items()}
    info = json.loads((student_dir / "training.json").read_text()) if (student_dir / "training.json").is_file() \
        else {}
    optimizer = torch.optim.AdamW(unet.parameters(), lr=cfg.lr, weight_decay=0.0)
    step = int(info.get("step", 0))
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    path = checkpoint_dir / f"distill-{step:08d}.pt"
    atomic_torch_save({"student": weights, "target": weights, "optimizer": optimizer.state_dict(), "step": step,
                       "images_seen": int(info.get("images_seen", 0)),
                       "elapsed_s": float(info.get("training_minutes", 0.0)) * 60.0}, path)
    return path


def lcm_scheduler() -> Any:
    """diffusers' LCMScheduler on the teacher's noise schedule (v-prediction, zero terminal SNR, 50-step grid)."""
    base = scheduler_config()
    keep = ("num_train_timesteps", "beta_schedule", "beta_start", "beta_end", "prediction_type",
            "rescale_betas_zero_snr", "clip_sample")
    return _Lcm(**{key: base[key] for key in keep}, original_inference_steps=50, timestep_scaling=TIMESTEP_SCALING)


def export_student(checkpoint_dir: Path, teacher_dir: Path, out_dir: Path,
                   dtype: torch.dtype = torch.float16) -> dict[str, Any]:
    """Export the newest checkpoint's target network with the teacher's text encoder, tokenizer and autoencoder
    as a StableDiffusionPipeline folder sampled by LCMScheduler; return its training info."""
    _check_teacher(teacher_dir)
    newest = _newest(checkpoint_dir)
    if newest is None:
        raise TrainingError(f"no distillation checkpoint in {checkpoint_dir}; run imageloop train distill first")
    state = torch.load(newest, weights_only=True)
    teacher = _UNet.from_pretrained(str(teacher_dir / "unet"), torch_dtype=torch.float32)
    cond_dim = int(state["target"]["time_embedding.cond_proj.weight"].shape[1])
    unet = student_unet(teacher, cond_dim)
    unet.load_state_dict(state["target"])
    pipe = _Pipeline(
        vae=_Vae.from_pretrained(str(teacher_dir / "vae")),
        text_encoder=CLIPTextModel.from_pretrained(str(teacher_dir / "text_encoder")),
        tokenizer=PreTrainedTokenizerFast.from_pretrained(str(teacher_dir / "tokenizer")),
        unet=unet, scheduler=lcm_scheduler(), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.to(dtype=dtype)
    tmp = out_dir.with_name(out_dir.name + ".export-tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.save_pretrained(str(tmp), safe_serialization=True)
    teacher_info = json.loads((teacher_dir / "training.json").read_text()) \
        if (teacher_dir / "training.json").is_file() else {}
    info = {"method": "latent consistency distillation", "checkpoint": newest.name, "step": state["step"],
            "images_seen": state["images_seen"], "training_minutes": round(state["elapsed_s"] / 60.0, 1),
            "teacher": teacher_info}
    (tmp / "imageloop.json").write_text(json.dumps(STUDENT_DEFAULTS, indent=1) + "\n")
    write_knowledge(tmp)  # what the model knows: the engine, doctor and the page read it
    (tmp / "training.json").write_text(json.dumps(info, indent=1) + "\n")
    install_export(tmp, out_dir)
    return info
