"""Private LoRAs: a user uploads 5–20 images and a trigger word; a background job trains a LoRA on the current
base model, and it becomes a recipe that only this user sees.

- :func:`check_upload` validates the upload (count, size, decodable images, trigger word, name) and raises
  InvalidRequestError naming the field (``images[3]``, ``trigger``...).
- :func:`queue_user_lora` stores the images in the blob store and queues a ``user_lora`` training run.
- :func:`run_next_user_lora` (called by the training worker) trains the oldest queued job: PEFT LoRA on the
  UNet's attention projections, caption ``"<trigger>"``, the base model's own noise schedule and prediction type;
  saved in diffusers LoRA format (``pytorch_lora_weights.safetensors``), registered as a private ``lora`` model
  version, and written as the recipe ``<name>`` under ``recipes/users/<user id>/`` (outside the shared recipe folder,
  so other users never list it).
- :func:`user_recipes` / :func:`user_recipe` read a user's private recipes.
"""

from __future__ import annotations

import io
import logging
import re
import shutil
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from imageloop.config import Settings
from imageloop.engine.recipes import (
    LORA_FILE,
    RECIPE_NAME_PATTERN,
    LoraWeight,
    Recipe,
    dump_recipe,
    parse_recipe_file,
)
from imageloop.errors import (
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    RecipeError,
    TrainingError,
)
from imageloop.files import atomic_write_text
from imageloop.storage import Storage
from imageloop.storage.records import utcnow
from imageloop.training.lock import RunKind, RunStatus, TrainingRun, new_owner_id
from imageloop.training.registry import ModelKind, ModelStatus
from imageloop.training.stores import TrainingStores

__all__ = ["LoraUpload", "check_upload", "delete_user_lora", "delete_user_loras", "lora_upload_limit",
           "queue_user_lora", "run_next_user_lora", "train_user_lora", "user_recipe", "user_recipes"]

log = logging.getLogger(__name__)

TRIGGER_PATTERN = r"^[\w-]{2,32}$"
# The UNet modules a LoRA goes on (attention projections), for private LoRAs and Diffusion-DPO alike.
LORA_TARGETS = ["to_k", "to_q", "to_v", "to_out.0"]
Progress = Callable[[float, str], None]


@dataclass(frozen=True)
class LoraUpload:
    """A checked upload: the recipe name, the trigger word and the images re-encoded as PNG."""

    name: str
    trigger: str
    images: list[bytes]


def check_upload(
    settings: Settings, *, name: str, trigger: str, files: Sequence[tuple[str, bytes]]
) -> LoraUpload:
    """Validate an upload of ``files`` (file name, bytes); InvalidRequestError naming the field at fault.

    Each image is decoded (anything Pillow reads; re-encoded as RGB PNG so nothing else in the file is kept).
    """
    cfg = settings.training
    if not re.fullmatch(RECIPE_NAME_PATTERN, name):
        raise InvalidRequestError("name", f"{name!r} is not a recipe name", value=name,
                                  allowed="lowercase letters, digits, '-' and '_', starting with a letter or digit")
    if not re.fullmatch(TRIGGER_PATTERN, trigger):
        raise InvalidRequestError("trigger", f"{trigger!r} is not a trigger word", value=trigger,
                                  allowed="one word of 2-32 letters, digits, '_' or '-'")
    if not cfg.lora_min_images <= len(files) <= cfg.lora_max_images:
        few = len(files) < cfg.lora_min_images
        raise InvalidRequestError("images", f"{len(files)} images are too {'few' if few else 'many'}",
                                  value=len(files), allowed=f"{cfg.lora_min_images} to {cfg.lora_max_images} images")
    images = []
    for index, (filename, data) in enumerate(files):
        field = f"images[{index}]"
        if len(data) > cfg.lora_max_image_bytes:
            raise InvalidRequestError(field, f"{filename!r} is {len(data) / 1e6:.1f} MB, too big",
                                      allowed=f"at most {cfg.lora_max_image_bytes / 1e6:.1f} MB per image")
        images.append(_as_png(field, filename, data))
    return LoraUpload(name, trigger, images)


def _as_png(field: str, filename: str, data: bytes) -> bytes:
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            if min(image.size) < 16:
                raise InvalidRequestError(field, f"{filename!r} is {image.size[0]}x{image.size[1]}, too small",
                                          allowed="at least 16x16 pixels")
            out = io.BytesIO()
            image.convert("RGB").save(out, format="PNG")
            return out.getvalue()
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise InvalidRequestError(field, f"{filename!r} is not an image Pillow can read",
                                  allowed="PNG, JPEG, WebP or another common image format") from exc


def _user_recipes_dir(settings: Settings, user_id: str) -> Path:
    return settings.recipes_dir / "users" / user_id


def user_recipes(settings: Settings, user_id: str) -> list[Recipe]:
    """The private recipes of ``user_id`` (broken files are skipped), by name."""
    folder = _user_recipes_dir(settings, user_id)
    out = []
    for path in sorted(folder.glob("*.yaml")) if folder.is_dir() else []:
        try:
            out.append(parse_recipe_file(path))
        except RecipeError as exc:
            log.warning("skipping private recipe: %s", exc.message)
    return out


def user_recipe(settings: Settings, user_id: str, name: str) -> Recipe | None:
    """The private recipe ``name`` of ``user_id``, or None (the shared recipes are looked up elsewhere)."""
    if not re.fullmatch(RECIPE_NAME_PATTERN, name):
        return None
    path = _user_recipes_dir(settings, user_id) / f"{name}.yaml"
    return parse_recipe_file(path) if path.is_file() else None


def queue_user_lora(
    settings: Settings, storage: Storage, user_id: str, upload: LoraUpload, *, stores: TrainingStores | None = None
) -> TrainingRun:
    """Store the images and queue the training job; ConflictError when the user already has (or is training)
    a private LoRA of that name. ``stores``: the process's training stores (default: built for this call)."""
    runs = (stores or TrainingStores.open(settings, storage)).runs
    taken = user_recipe(settings, user_id, upload.name) is not None or any(
        run.params.get("name") == upload.name and not run.status.is_terminal
        for run in runs.list(RunKind.USER_LORA, user_id=user_id, limit=100)
    )
    if taken:
        raise ConflictError(f"you already have a private LoRA named {upload.name!r}; choose another name")
    run = runs.create(RunKind.USER_LORA, trigger="api", stage="train", user_id=user_id,
                      params={"name": upload.name, "trigger": upload.trigger, "images": []})
    keys = []
    for index, data in enumerate(upload.images):
        key = f"loras/{user_id}/{run.id}/{index}.png"
        storage.blobs.put(key, data, "image/png")
        keys.append(key)
    return runs.update(run.id, params={**run.params, "images": keys})


def run_next_user_lora(
    settings: Settings, storage: Storage, *, clock: Callable[[], datetime] = utcnow,
    stop: threading.Event | None = None, stores: TrainingStores | None = None,
) -> TrainingRun | None:
    """Train the oldest queued (or interrupted) private LoRA, if any; returns its finished run."""
    stores = stores or TrainingStores.open(settings, storage, clock=clock)
    runs = stores.runs
    pending = runs.resumable(RunKind.USER_LORA)
    if pending is None:
        return None
    lock = stores.lora_lock
    owner = new_owner_id("lora")
    if not lock.acquire(owner, pending.id):
        return None
    try:
        run = runs.claim(pending.id, owner)
        return _train_run(settings, storage, stores, run, lambda: lock.renew(owner), stop)
    finally:
        lock.release(owner)


def _train_run(
    settings: Settings, storage: Storage, stores: TrainingStores, run: TrainingRun, renew: Callable[[], None],
    stop: threading.Event | None,
) -> TrainingRun:
    runs = stores.runs
    assert run.user_id is not None
    name, trigger = str(run.params["name"]), str(run.params["trigger"])
    work = settings.data_dir / "training" / "runs" / run.id

    def progress(fraction: float, message: str) -> None:
        if stop is not None and stop.is_set():
            raise _Stopped
        runs.update(run.id, progress=fraction, message=message)
        renew()

    try:
        images = [storage.blobs.get(key) for key in run.params["images"]]
        lora = train_user_lora(settings, images, trigger, work, steps=settings.training.lora_steps,
                               on_progress=progress)
        registry = stores.registry
        version = registry.register(
            ModelKind.LORA, lora, name=f"{name} ({trigger})", data_hash=_images_hash(images),
            metrics={"trigger": trigger, "images": len(images), "steps": settings.training.lora_steps},
            owner_id=run.user_id, run_id=run.id, status=ModelStatus.PROMOTED,
        )
        recipe = Recipe(name=name, description=f"Private LoRA; put '{trigger}' in the prompt.",
                        loras=[LoraWeight(file=str(registry.path(version) / LORA_FILE))])
        atomic_write_text(_user_recipes_dir(settings, run.user_id) / f"{name}.yaml", dump_recipe(recipe))
        shutil.rmtree(work, ignore_errors=True)
        for key in run.params["images"]:  # the LoRA is what the user asked for; their photos need not stay
            storage.blobs.delete(key)
        return runs.update(run.id, status=RunStatus.SUCCEEDED, progress=1.0, finished_at=runs.clock(),
                           message="done", result={"version_id": version.id, "recipe": name})
    except _Stopped:
        return runs.update(run.id, status=RunStatus.INTERRUPTED, message="stopped; resumes at the next start")
    except Exception as exc:
        log.exception("private LoRA %s failed", run.id)
        return runs.update(run.id, status=RunStatus.FAILED, finished_at=runs.clock(),
                           error=getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}")


class _Stopped(Exception):
    """The worker is stopping."""


def _images_hash(images: Sequence[bytes]) -> str:
    import hashlib

    digest = hashlib.sha256()
    for data in images:
        digest.update(hashlib.sha256(data).digest())
    return digest.hexdigest()


def train_user_lora(
    settings: Settings, images: Sequence[bytes], trigger: str, out_dir: Path, *, steps: int,
    on_progress: Progress | None = None, seed: int = 0,
) -> Path:
    """Train a LoRA on ``settings.engine.model``'s UNet to draw ``images`` for the caption ``trigger``; return the
    diffusers-format LoRA file (``out_dir/pytorch_lora_weights.safetensors``)."""
    from peft import LoraConfig

    from imageloop.engine.loader import load_model

    model = load_model(settings.engine.model, settings)
    model.require_sd15("a private LoRA")
    pipe = model.pipe
    unet, vae, scheduler = pipe.unet, pipe.vae, pipe.scheduler
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        pixels = _pixels(images, model.defaults.width, model.defaults.height).to(model.device, model.dtype)
        latents = vae.encode(pixels).latent_dist.sample(generator) * vae.config.scaling_factor
        ids = pipe.tokenizer([trigger], padding="max_length", max_length=pipe.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt").input_ids.to(model.device)
        context = pipe.text_encoder(ids)[0]
    unet.requires_grad_(False)
    rank = settings.training.lora_rank
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=LORA_TARGETS))
    params = [p for p in unet.parameters() if p.requires_grad]
    for param in params:  # trainable weights in fp32 even when the model runs in half precision
        param.data = param.data.float()
    optimizer = torch.optim.AdamW(params, lr=1e-3 if len(params) else 0.0, weight_decay=1e-2)
    unet.train()
    batch = min(4, len(images))
    for step in range(steps):
        index = torch.randint(0, latents.shape[0], (batch,), generator=generator)
        clean = latents[index]
        noise = torch.randn(clean.shape, generator=generator).to(clean)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (batch,), generator=generator).to(model.device)
        noisy = scheduler.add_noise(clean, noise, t)
        target = scheduler.get_velocity(clean, noise, t) if scheduler.config.prediction_type == "v_prediction" \
            else noise
        pred = unet(noisy, t, context.expand(batch, -1, -1)).sample
        loss = torch.nn.functional.mse_loss(pred.float(), target.float())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        if on_progress is not None and (step % 10 == 9 or step == steps - 1):
            on_progress((step + 1) / steps, f"private LoRA step {step + 1}/{steps}, loss {float(loss.detach()):.4f}")
    if not torch.isfinite(loss):
        raise TrainingError(f"private LoRA training diverged (loss {float(loss.detach())})")
    return save_unet_lora(unet, out_dir)


def save_unet_lora(unet: Any, out_dir: Path, adapter_name: str = "default") -> Path:
    """Write ``unet``'s LoRA adapter ``adapter_name`` (fp32) as ``out_dir/`` :data:`LORA_FILE`, the diffusers
    format the engine's LoraManager loads; returns the file's path."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers  # type: ignore[attr-defined]
    from peft.utils import get_peft_model_state_dict

    out_dir.mkdir(parents=True, exist_ok=True)
    state = get_peft_model_state_dict(unet, adapter_name=adapter_name)
    layers = convert_state_dict_to_diffusers(state)  # type: ignore[no-untyped-call]
    layers = {key: value.detach().float().contiguous().cpu() for key, value in layers.items()}
    StableDiffusionPipeline.save_lora_weights(str(out_dir), unet_lora_layers=layers, safe_serialization=True)
    path = out_dir / LORA_FILE
    if not path.is_file():
        raise TrainingError(f"diffusers wrote no {LORA_FILE} in {out_dir}")
    return path


def _pixels(images: Sequence[bytes], width: int, height: int) -> torch.Tensor:
    """Decode, centre-crop to the aspect ratio and resize to (height, width); (N, 3, H, W) in [-1, 1]."""
    arrays = []
    for data in images:
        with Image.open(io.BytesIO(data)) as image:
            arrays.append(fit_rgb(image.convert("RGB"), width, height))
    return rgb_to_tensor(arrays)


def fit_rgb(rgb: Image.Image, width: int, height: int) -> np.ndarray:
    """Resize ``rgb`` to cover (width, height), keeping its aspect ratio, and crop the centre; (H, W, 3) uint8."""
    scale = max(width / rgb.width, height / rgb.height)
    resized = rgb.resize((max(width, round(rgb.width * scale)), max(height, round(rgb.height * scale))),
                         Image.Resampling.BICUBIC)
    left, top = (resized.width - width) // 2, (resized.height - height) // 2
    return np.asarray(resized.crop((left, top, left + width, top + height)))


def rgb_to_tensor(arrays: Sequence[np.ndarray]) -> torch.Tensor:
    """(H, W, 3) uint8 arrays -> one (N, 3, H, W) float tensor in [-1, 1]."""
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def delete_user_loras(
    settings: Settings, storage: Storage, user_id: str, *, stores: TrainingStores | None = None
) -> int:
    """Remove everything private-LoRA of ``user_id`` (recipes, LoRA versions and files, jobs, uploaded images), as
    part of deleting a user's data; returns how many LoRA versions went."""
    stores = stores or TrainingStores.open(settings, storage)
    registry = stores.registry
    versions = registry.list(ModelKind.LORA, owner_id=user_id)
    for version in versions:
        registry.delete_private(version.id, user_id)
    for run in stores.runs.delete_for_user(RunKind.USER_LORA, user_id):
        for key in run.params.get("images", []):
            storage.blobs.delete(key)
        shutil.rmtree(settings.data_dir / "training" / "runs" / run.id, ignore_errors=True)
    shutil.rmtree(_user_recipes_dir(settings, user_id), ignore_errors=True)
    return len(versions)


def delete_user_lora(
    settings: Settings, storage: Storage, user_id: str, name: str, *, stores: TrainingStores | None = None
) -> None:
    """Remove ``user_id``'s private recipe ``name`` and its LoRA version; NotFoundError when there is none."""
    path = _user_recipes_dir(settings, user_id) / f"{name}.yaml"
    if not re.fullmatch(RECIPE_NAME_PATTERN, name) or not path.is_file():
        raise NotFoundError(f"you have no private LoRA named {name!r}")
    registry = (stores or TrainingStores.open(settings, storage)).registry
    for version in registry.list(ModelKind.LORA, owner_id=user_id):
        if version.name.startswith(f"{name} ("):
            registry.delete_private(version.id, user_id)
    path.unlink()



def lora_upload_limit(settings: Settings) -> int:
    """The largest request body a private-LoRA upload may need: every image at its size limit plus form fields."""
    return settings.training.lora_max_images * settings.training.lora_max_image_bytes + (1 << 16)
