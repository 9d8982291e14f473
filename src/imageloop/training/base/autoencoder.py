"""Stage 1 of the embedded model: train the f=4 autoencoder on composites, then encode the dataset to latents.

Both steps resume: the autoencoder from its checkpoint, the encoding from the number of rows already written.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from imageloop.files import atomic_write

KL_WEIGHT = 1e-6  # tiny: keeps the latent space smooth without blurring small subjects


def atomic_torch_save(obj: Any, path: Path) -> None:
    """Write ``obj`` with torch.save so that ``path`` is never left half-written."""
    with atomic_write(path) as handle:
        torch.save(obj, handle)


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float in [-1, 1]."""
    return torch.from_numpy(np.array(images, copy=True)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def autoencoder_loss(vae: Any, x: torch.Tensor) -> torch.Tensor:
    """Reconstruction (MSE + L1) of the posterior mean plus a tiny KL term, for a batch in [-1, 1].

    Decoding the mean rather than a sample: with a short CPU budget the sampling noise (std 1 at init) kept the
    decoder from using the latents at all; the diffusion model is trained on the means anyway.
    """
    posterior = vae.encode(x).latent_dist
    recon = vae.decode(posterior.mode()).sample.float()
    kl = posterior.kl().mean() / x[0].numel()
    loss: torch.Tensor = torch.nn.functional.mse_loss(recon, x) + 0.5 * (recon - x).abs().mean() + KL_WEIGHT * kl
    return loss


def train_autoencoder(
    vae: Any,
    images: np.ndarray,
    *,
    checkpoint: Path,
    minutes: float | None = None,
    max_steps: int | None = None,
    batch_size: int = 16,
    lr: float = 1e-3,
    save_every_s: float = 300.0,
    seed: int = 0,
    stop_at: float | None = None,
    on_step: Callable[[int, float], None] | None = None,
    latents: np.ndarray | None = None,
    bf16: bool = True,
    latent_noise: float = 0.0,
) -> int:
    """Train ``vae`` for up to ``minutes`` or ``max_steps`` in total (resuming from ``checkpoint``); return the
    total steps done.

    The checkpoint holds the weights, the optimizer and the step; its ``done`` flag is set when the budget is
    spent, after which this returns immediately. ``stop_at`` (a time.monotonic() value) ends this call early.
    With ``latents`` (the encoded ``images``, unscaled) only the decoder trains, on those latents: the encoder
    and so the diffusion model's latent space stay fixed while decoded images get sharper; then ``minutes`` is
    a total that may be raised later to train more. ``latent_noise`` (unscaled latent units) adds Gaussian noise
    of a random strength up to it to each latent before decoding, so the decoder learns to map the slightly
    off-manifold latents a diffusion model samples to clean images instead of amplifying their error into texture.
    """
    trained = ([*vae.post_quant_conv.parameters(), *vae.decoder.parameters()] if latents is not None
               else list(vae.parameters()))
    opt = torch.optim.AdamW(trained, lr=lr, weight_decay=0.0)
    step, done, elapsed0 = 0, False, 0.0
    if checkpoint.is_file():
        state = torch.load(checkpoint, weights_only=True)
        vae.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step, done, elapsed0 = int(state["step"]), bool(state["done"]), float(state["elapsed_s"])
    if done and latents is None:  # the encoder is final once done: the latents depend on it
        vae.eval()
        return step
    vae.train()
    start = last_save = time.monotonic()
    budget_end = start + minutes * 60.0 - elapsed0 if minutes is not None else float("inf")
    deadline = budget_end if stop_at is None else min(budget_end, stop_at)
    steps_end = max_steps if max_steps is not None else 2**62
    while time.monotonic() < deadline and step < steps_end:
        rng = np.random.default_rng([seed, step])
        idx = np.sort(rng.choice(len(images), min(batch_size, len(images)), replace=False))
        x = images_to_tensor(images[idx])
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            if latents is None:
                loss = autoencoder_loss(vae, x)
            else:
                z = torch.from_numpy(latents[idx].astype(np.float32))
                if latent_noise > 0:
                    z = z + _latent_jitter(z, latent_noise, rng)
                recon = vae.decode(z).sample.float()
                loss = torch.nn.functional.mse_loss(recon, x) + 0.5 * (recon - x).abs().mean()
        torch.autograd.backward(loss)
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        if on_step is not None:
            on_step(step, loss.item())
        if time.monotonic() - last_save > save_every_s:
            elapsed = elapsed0 + time.monotonic() - start
            atomic_torch_save({"model": vae.state_dict(), "optimizer": opt.state_dict(), "step": step,
                               "elapsed_s": elapsed, "done": False}, checkpoint)
            last_save = time.monotonic()
    atomic_torch_save({"model": vae.state_dict(), "optimizer": opt.state_dict(), "step": step,
                       "elapsed_s": elapsed0 + time.monotonic() - start,
                       "done": time.monotonic() >= budget_end or step >= steps_end},
                      checkpoint)
    vae.eval()
    return step


def _latent_jitter(z: torch.Tensor, strength: float, rng: np.random.Generator) -> torch.Tensor:
    """Gaussian noise for a batch of latents, each sample's std drawn uniformly from [0, strength]."""
    sigma = torch.from_numpy(rng.uniform(0.0, strength, (z.shape[0], 1, 1, 1)).astype(np.float32))
    noise = torch.from_numpy(rng.standard_normal(z.shape).astype(np.float32))
    return sigma * noise


@torch.no_grad()
def encode_dataset(
    vae: Any,
    images: np.ndarray,
    folder: Path,
    *,
    chunk: int = 256,
    on_chunk: Callable[[int], object] | None = None,
) -> np.ndarray:
    """Encode every image to its posterior mean, written to ``folder/latents.npy`` (fp16, resumable).

    Also writes ``folder/latents.json`` with the rows done and the scaling factor (1 / std of the latents), unless
    that file already names a scaling factor before the rows are done (a checkpoint folder seeded from an export,
    whose UNet was trained with it).
    """
    vae.eval()
    n = len(images)
    path, meta_path = folder / "latents.npy", folder / "latents.json"
    shape = (n, vae.config.latent_channels, images.shape[1] // 4, images.shape[2] // 4)
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {"done": 0}
    fixed_scale = meta.get("scaling_factor") if meta.get("done", 0) < n else None  # seeded from an export
    if not path.is_file():
        meta["done"] = 0
    mode = "r+" if meta["done"] > 0 else "w+"
    latents = np.lib.format.open_memmap(path, mode, np.float16, shape)
    for start in range(int(meta["done"]), n, chunk):
        stop = min(start + chunk, n)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mean = vae.encode(images_to_tensor(images[start:stop])).latent_dist.mean
        latents[start:stop] = mean.float().numpy().astype(np.float16)
        latents.flush()
        meta = {"done": stop} if fixed_scale is None else {"done": stop, "scaling_factor": fixed_scale}
        meta_path.write_text(json.dumps(meta))
        if on_chunk is not None:
            on_chunk(stop - start)
    if "scaling_factor" not in meta:
        sample = latents[np.linspace(0, n - 1, min(n, 4096)).astype(int)].astype(np.float32)
        meta = {"done": n, "scaling_factor": float(1.0 / max(sample.std(), 1e-6))}
        meta_path.write_text(json.dumps(meta))
    return np.asarray(latents)


def latent_scaling_factor(folder: Path) -> float:
    """The scaling factor recorded by :func:`encode_dataset`."""
    return float(json.loads((folder / "latents.json").read_text())["scaling_factor"])
