"""Diffusion-DPO: a LoRA for the generator's UNet trained on image preference pairs (Wallace et al. 2023,
"Diffusion Model Alignment Using Direct Preference Optimization").

For each pair (caption, kept image, other image) both images are encoded to latents with the pipeline's own VAE
and noised with the *same* noise at the *same* timestep. The UNet with the LoRA (the policy) and the same UNet with
its adapters switched off (the reference) each predict the noise (or velocity); DPO's implicit reward of an image is
how much the policy lowers the denoising error below the reference's. The loss pushes the kept image's reward above
the other's::

    margin = (ref_err(kept) - err(kept)) - (ref_err(other) - err(other))
    loss   = -log sigmoid(beta * margin)

Errors are means over latent elements, so useful ``beta`` values are in the thousands (the paper's SD1.5 runs used
2000-5000). The LoRA sits on the attention projections (``to_q/to_k/to_v/to_out.0``), is never fused, and is saved
in diffusers' LoRA format (``pytorch_lora_weights.safetensors``), the format the engine's LoraManager loads.

- :class:`DiffusionDpoConfig`: the knobs (each field's ``metadata["help"]`` says what it does).
- :func:`preference_rows` / :func:`read_pairs_folder`: the flywheel's ``pairs`` export as (kept, other) rows.
- :func:`train_diffusion_dpo`: trains on a loaded pipeline, with progress and stop callbacks and a checkpoint to
  resume from; :func:`diffusion_dpo_loss` is the objective on its own.
- The gate's measure (implicit preference accuracy on held-out pairs) is in
  :mod:`imageloop.training.diffusion_dpo_eval`.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from imageloop.config import TrainingSettings
from imageloop.errors import InvalidRequestError, TrainingError
from imageloop.files import atomic_write
from imageloop.training.lora_loop import run_lora_loop
from imageloop.training.user_lora import LORA_TARGETS, fit_rgb, rgb_to_tensor

__all__ = ["ADAPTER_NAME", "DiffusionDpoConfig", "DiffusionDpoResult", "DiffusionDpoStopped",
           "EncodedPairs", "diffusion_dpo_loss", "encode_pairs", "preference_rows", "read_pairs_folder",
           "train_diffusion_dpo"]

log = logging.getLogger(__name__)

INFO_FILE = "diffusion_dpo.json"
CHECKPOINT_FILE = "checkpoint.pt"
ADAPTER_NAME = "diffusion_dpo"
_ENCODE_CHUNK = 8
Progress = Callable[[float, str], None]
Row = dict[str, Any]
# Config field -> the ``training`` setting that defines its default (settings define every default once).
_SETTING_OF = {"beta": "diffusion_dpo_beta", "learning_rate": "diffusion_dpo_learning_rate",
               "steps": "diffusion_dpo_steps", "batch_size": "diffusion_dpo_batch_size", "rank": "diffusion_dpo_rank",
               "eval_draws": "diffusion_dpo_eval_draws"}


def _setting_default(name: str) -> Any:
    return TrainingSettings.model_fields[_SETTING_OF[name]].default


@dataclass(frozen=True)
class DiffusionDpoConfig:
    """How a Diffusion-DPO LoRA is trained and evaluated; the knobs that are settings default to their defaults
    (:meth:`from_settings` reads the configured values)."""

    beta: float = field(default=_setting_default("beta"), metadata={
        "help": "Strength of the pull toward the reference UNet (higher = stay closer). Errors are per-element "
                "means, so values in the thousands are usual."})
    learning_rate: float = field(default=_setting_default("learning_rate"), metadata={
        "help": "AdamW learning rate of the LoRA weights."})
    steps: int = field(default=_setting_default("steps"), metadata={"help": "Optimizer steps."})
    batch_size: int = field(default=_setting_default("batch_size"), metadata={
        "help": "Preference pairs per step (each pair is two images)."})
    rank: int = field(default=_setting_default("rank"), metadata={"help": "LoRA rank (alpha = rank)."})
    seed: int = field(default=0, metadata={"help": "Seed of the LoRA init, batches, noise and timesteps."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm (0 = no clipping)."})
    warmup_steps: int = field(default=10, metadata={"help": "Steps of linear learning-rate warm-up."})
    eval_draws: int = field(default=_setting_default("eval_draws"), metadata={
        "help": "Noise/timestep draws per held-out pair when measuring the implicit preference (more = less noisy)."})
    checkpoint_every: int = field(default=50, metadata={
        "help": "Write a resumable checkpoint every N steps (0 = only when stopped)."})

    def __post_init__(self) -> None:
        positive = {"beta": self.beta, "learning_rate": self.learning_rate, "steps": self.steps,
                    "batch_size": self.batch_size, "rank": self.rank, "eval_draws": self.eval_draws}
        for name, value in positive.items():
            if not value > 0:
                raise InvalidRequestError(name, f"must be positive, got {value}", value=value)
        for name in ("max_grad_norm", "warmup_steps", "checkpoint_every"):
            if getattr(self, name) < 0:
                raise InvalidRequestError(name, f"must not be negative, got {getattr(self, name)}")

    @classmethod
    def from_settings(cls, training: TrainingSettings, **overrides: Any) -> DiffusionDpoConfig:
        """The config of ``training``'s ``diffusion_dpo_*`` settings, with the ``overrides`` that are not None."""
        values = {name: getattr(training, setting) for name, setting in _SETTING_OF.items()}
        values.update({name: value for name, value in overrides.items() if value is not None})
        return cls(**values)

    @classmethod
    def help(cls) -> dict[str, str]:
        """Field name -> help text."""
        return {f.name: str(f.metadata.get("help", "")) for f in fields(cls)}


@dataclass(frozen=True)
class DiffusionDpoResult:
    """A finished training: the LoRA file, the steps run (``resumed_from`` > 0 when it resumed) and the losses."""

    path: Path
    steps: int
    resumed_from: int
    losses: list[float]
    train_accuracy: float  # share of the last steps' pairs whose margin was positive

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["path"] = str(self.path)
        out["losses"] = [round(x, 5) for x in self.losses[-20:]]
        return out


class DiffusionDpoStopped(TrainingError):
    """Training was asked to stop; the checkpoint in the output folder resumes it."""


# -- data ------------------------------------------------------------------------------------------------------------


def preference_rows(rows: Sequence[Row]) -> tuple[list[Row], int]:
    """The rows of a ``pairs`` export as ``{"caption", "kept", "other"}`` (image bytes), and how many ties
    (equal labels: no preference to learn) were left out. TrainingError naming the row and column of a row
    without a caption, an image or labels."""
    out: list[Row] = []
    ties = 0
    for index, row in enumerate(rows):
        for column in ("caption", "jpg_0", "jpg_1", "label_0", "label_1"):
            if row.get(column) is None:
                raise TrainingError(f"pairs row {index}: no {column!r}")
        try:
            first, second = float(row["label_0"]), float(row["label_1"])
        except (TypeError, ValueError) as exc:
            raise TrainingError(f"pairs row {index}: labels must be numbers, got {row['label_0']!r}, "
                                f"{row['label_1']!r}") from exc
        if first == second:
            ties += 1
            continue
        kept, other = ("jpg_0", "jpg_1") if first > second else ("jpg_1", "jpg_0")
        out.append({"caption": str(row["caption"]), "kept": bytes(row[kept]), "other": bytes(row[other]),
                    "row": index, "kept_column": kept, "other_column": other})
    return out, ties


def read_pairs_folder(folder: Path) -> list[Row]:
    """The rows of an exported ``pairs`` dataset: ``folder/data.parquet``, ``folder/pairs/data.parquet`` (an
    export root) or every ``*.parquet`` file in ``folder``. InvalidRequestError naming ``--pairs`` when the folder
    is missing, holds no Parquet file, or a file lacks the export's columns."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not folder.is_dir():
        raise InvalidRequestError("--pairs", f"{folder} is not a folder", allowed="a folder written by "
                                  "`imageloop export pairs` (holding data.parquet)")
    files = [folder / "data.parquet"] if (folder / "data.parquet").is_file() else \
        [folder / "pairs" / "data.parquet"] if (folder / "pairs" / "data.parquet").is_file() else \
        sorted(folder.glob("*.parquet"))
    if not files:
        raise InvalidRequestError("--pairs", f"{folder} holds no data.parquet", allowed="a folder written by "
                                  "`imageloop export pairs`")
    columns = ["caption", "jpg_0", "jpg_1", "label_0", "label_1"]
    rows: list[Row] = []
    for file in files:
        try:
            names = pq.read_schema(str(file)).names
            missing = [c for c in columns if c not in names]
            if missing:
                raise InvalidRequestError("--pairs", f"{file} is not a pairs export: no column {missing[0]!r}",
                                          allowed=f"columns {', '.join(columns)}")
            rows += pq.read_table(str(file), columns=columns).to_pylist()
        except (OSError, pa.ArrowException) as exc:
            raise InvalidRequestError("--pairs", f"{file} is not a readable Parquet file: {exc}") from exc
    return rows


def _pixels(blobs: Sequence[bytes], width: int, height: int, where: Sequence[str]) -> torch.Tensor:
    """Decode, centre-crop and resize to (height, width); (N, 3, H, W) in [-1, 1]. TrainingError names the row."""
    arrays = []
    for data, label in zip(blobs, where, strict=True):
        try:
            with Image.open(io.BytesIO(data)) as opened:
                rgb = opened.convert("RGB")
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise TrainingError(f"{label} is not an image Pillow can read: {exc}") from exc
        arrays.append(fit_rgb(rgb, width, height))
    return rgb_to_tensor(arrays)


@dataclass(frozen=True)
class EncodedPairs:
    """Preference pairs ready for the UNet: latents of the kept and the other image, and the caption's encoding."""

    kept: torch.Tensor  # (N, C, h, w), scaled latents
    other: torch.Tensor
    context: torch.Tensor  # (N, tokens, dim)

    def __len__(self) -> int:
        return int(self.kept.shape[0])


@torch.no_grad()
def encode_pairs(pipe: Any, rows: Sequence[Row], *, width: int, height: int) -> EncodedPairs:
    """Encode :func:`preference_rows` rows with ``pipe``'s VAE (the posterior mean) and text encoder, a few pairs
    at a time so large images never sit in memory all at once."""
    if not rows:
        raise TrainingError("Diffusion-DPO needs at least one preference pair")
    vae, device = pipe.vae, pipe.unet.device
    dtype = vae.dtype
    kept: list[torch.Tensor] = []
    other: list[torch.Tensor] = []
    context: list[torch.Tensor] = []
    for start in range(0, len(rows), _ENCODE_CHUNK):
        chunk = rows[start:start + _ENCODE_CHUNK]
        for side, out in (("kept", kept), ("other", other)):
            where = [f"pairs row {r.get('row', start + i)}: {r.get(side + '_column', side)}"
                     for i, r in enumerate(chunk)]
            pixels = _pixels([r[side] for r in chunk], width, height, where).to(device, dtype)
            # The posterior's mean: a trained VAE's posterior is narrow, and the mean keeps every step's latents equal.
            out.append((vae.encode(pixels).latent_dist.mean * vae.config.scaling_factor).float())
        embeds = pipe.encode_prompt([r["caption"] for r in chunk], device, 1, False)[0]
        context.append(embeds)
    return EncodedPairs(torch.cat(kept), torch.cat(other), torch.cat(context))


# -- the objective ---------------------------------------------------------------------------------------------------


def diffusion_dpo_loss(
    model_kept: torch.Tensor, model_other: torch.Tensor, ref_kept: torch.Tensor, ref_other: torch.Tensor, beta: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean loss, per-pair margin) from per-pair denoising errors of the policy and the reference.

    The margin is positive when the policy improved on the reference more for the kept image than for the other.
    """
    margin = (ref_kept - model_kept) - (ref_other - model_other)
    loss = -torch.nn.functional.logsigmoid(beta * margin).mean()
    return loss, margin


def denoising_errors(unet: Any, scheduler: Any, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor,
                     context: torch.Tensor) -> torch.Tensor:
    """Per-sample mean squared error of the UNet's prediction (noise or velocity, as the scheduler is configured)."""
    noisy = scheduler.add_noise(latents, noise, timesteps)
    target: torch.Tensor
    if scheduler.config.prediction_type == "v_prediction":
        target = scheduler.get_velocity(latents, noise, timesteps)
    elif scheduler.config.prediction_type == "epsilon":
        target = noise
    else:
        raise TrainingError(f"Diffusion-DPO supports epsilon and v_prediction models, not "
                            f"{scheduler.config.prediction_type!r}")
    pred: torch.Tensor = unet(noisy.to(unet.dtype), timesteps, context.to(unet.dtype)).sample
    return (pred.float() - target.float()).pow(2).flatten(1).mean(dim=1)


def training_scheduler(pipe: Any) -> Any:
    """A DDPM scheduler with the pipeline's noise schedule and prediction type (the one the model was trained on)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler.from_config(dict(pipe.scheduler.config))  # type: ignore[no-untyped-call]


# -- training --------------------------------------------------------------------------------------------------------


def add_dpo_adapter(unet: Any, config: DiffusionDpoConfig, init_from: Path | None = None) -> list[torch.nn.Parameter]:
    """Add the trainable LoRA (named :data:`ADAPTER_NAME`) to ``unet`` and return its parameters (fp32).

    With ``init_from`` (a LoRA file of the same rank, e.g. the current version) training continues from its weights.
    """
    from peft import LoraConfig

    unet.requires_grad_(False)
    if init_from is not None:
        unet.load_lora_adapter(str(init_from), prefix="unet", adapter_name=ADAPTER_NAME)
    else:
        unet.add_adapter(LoraConfig(r=config.rank, lora_alpha=config.rank, init_lora_weights="gaussian",
                                    target_modules=LORA_TARGETS), adapter_name=ADAPTER_NAME)
    unet.set_adapter(ADAPTER_NAME)
    params = [p for name, p in unet.named_parameters() if f".{ADAPTER_NAME}." in name and "lora_" in name]
    if not params:
        raise TrainingError("the UNet has no attention projections to put a LoRA on")
    for param in params:  # trainable weights in fp32 even when the model runs in half precision
        param.data = param.data.float()
        param.requires_grad_(True)
    return params


def train_diffusion_dpo(
    pipe: Any,
    rows: Sequence[Row],
    config: DiffusionDpoConfig,
    out_dir: Path,
    *,
    width: int,
    height: int,
    init_from: Path | None = None,
    on_progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
    info: dict[str, Any] | None = None,
) -> DiffusionDpoResult:
    """Train a Diffusion-DPO LoRA on ``pipe``'s UNet with :func:`preference_rows` rows; write it to
    ``out_dir/pytorch_lora_weights.safetensors`` (plus ``diffusion_dpo.json`` with the config and ``info``).

    The adapter stays on ``pipe.unet`` afterwards (active), so held-out evaluation can follow. A checkpoint in
    ``out_dir`` from a run with the same config and data size is resumed; ``should_stop`` returning True (or
    ``on_progress`` raising) writes one and raises DiffusionDpoStopped / the raised error.
    """
    unet = pipe.unet
    torch.manual_seed(config.seed)
    data = encode_pairs(pipe, rows, width=width, height=height)
    params = add_dpo_adapter(unet, config, init_from)
    scheduler = training_scheduler(pipe)
    autocast = unet.device.type == "cuda" and unet.dtype != torch.float32

    def step(generator: torch.Generator) -> tuple[torch.Tensor, list[float]]:
        loss, margin = _step(unet, scheduler, data, config, generator, autocast)
        return loss, [1.0 if m > 0 else 0.5 if m == 0 else 0.0 for m in margin.tolist()]

    outcome = run_lora_loop(unet, params, config, out_dir, stamp={"pairs": len(data)}, step=step,
                            name="Diffusion-DPO", on_progress=on_progress, should_stop=should_stop,
                            stopped=DiffusionDpoStopped)
    result = DiffusionDpoResult(outcome.path, config.steps, outcome.resumed_from, outcome.losses,
                                outcome.train_accuracy)
    meta = {"config": asdict(config), "pairs": len(data), "result": result.to_dict(), **(info or {})}
    (out_dir / INFO_FILE).write_text(json.dumps(meta, indent=1, default=str) + "\n", encoding="utf-8")
    return result


def _step(unet: Any, scheduler: Any, data: EncodedPairs, config: DiffusionDpoConfig, generator: torch.Generator,
          autocast: bool) -> tuple[torch.Tensor, torch.Tensor]:
    device = unet.device
    index = torch.randint(0, len(data), (config.batch_size,), generator=generator)
    latents = torch.cat([data.kept[index], data.other[index]])
    # The same noise and timestep for both images of a pair: the comparison is then about the images alone.
    noise = torch.randn(data.kept[index].shape, generator=generator).to(device).repeat(2, 1, 1, 1)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (config.batch_size,), generator=generator)
    t = t.to(device).repeat(2)
    context = data.context[index].repeat(2, 1, 1)
    with torch.autocast(device.type, dtype=unet.dtype, enabled=autocast):
        errors = denoising_errors(unet, scheduler, latents, noise, t, context)
        unet.disable_adapters()
        try:
            with torch.no_grad():
                ref = denoising_errors(unet, scheduler, latents, noise, t, context)
        finally:
            unet.enable_adapters()
    model_kept, model_other = errors.chunk(2)
    ref_kept, ref_other = ref.chunk(2)
    loss, margin = diffusion_dpo_loss(model_kept, model_other, ref_kept, ref_other, config.beta)
    return loss, margin.detach()


def _lora_state(unet: Any) -> dict[str, torch.Tensor]:
    from peft.utils import get_peft_model_state_dict

    return {k: v.detach().cpu() for k, v in get_peft_model_state_dict(unet, adapter_name=ADAPTER_NAME).items()}


def _save_checkpoint(path: Path, stamp: dict[str, Any], step: int, unet: Any, optimizer: torch.optim.Optimizer,
                     schedule: Any, generator: torch.Generator) -> None:
    state = {"stamp": json.dumps(stamp, sort_keys=True), "step": step, "lora": _lora_state(unet),
             "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(), "rng": generator.get_state()}
    with atomic_write(path) as handle:
        torch.save(state, handle)
    log.info("Diffusion-DPO checkpoint at step %d: %s", step, path)


def _resume(path: Path, stamp: dict[str, Any], unet: Any, optimizer: torch.optim.Optimizer, schedule: Any,
            generator: torch.Generator) -> int:
    """The step to start from: that of a checkpoint written by the same config on as many pairs, else 0."""
    from peft.utils import set_peft_model_state_dict

    if not path.is_file():
        return 0
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state["stamp"] != json.dumps(stamp, sort_keys=True):
            log.warning("ignoring Diffusion-DPO checkpoint %s: written with other settings or data", path)
            return 0
        set_peft_model_state_dict(unet, state["lora"], adapter_name=ADAPTER_NAME)
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        generator.set_state(state["rng"])
    except (OSError, RuntimeError, KeyError, ValueError) as exc:
        log.warning("ignoring unreadable Diffusion-DPO checkpoint %s: %s", path, exc)
        return 0
    log.info("resuming Diffusion-DPO at step %d from %s", state["step"], path)
    return int(state["step"])
