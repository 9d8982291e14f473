"""Training of the embedded text-to-image model: dataset -> autoencoder -> latents -> diffusion -> export.

Every stage resumes: the dataset is rebuilt only when missing, the autoencoder and the diffusion model resume
from the newest checkpoint in the checkpoint folder, and export turns the EMA weights into a standard diffusers
``StableDiffusionPipeline`` folder (fp16) with an ``imageloop.json`` of generation defaults.
"""

from __future__ import annotations

import copy
import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import DDPMScheduler, StableDiffusionPipeline
from tqdm import tqdm
from transformers import CLIPTextModel, PreTrainedTokenizerFast

from imageloop.errors import TrainingError
from imageloop.files import atomic_write
from imageloop.training.base.autoencoder import (
    atomic_torch_save,
    encode_dataset,
    latent_scaling_factor,
    train_autoencoder,
)
from imageloop.training.base.captions import Language, caption, strip_weights
from imageloop.training.base.dataset import SceneDataset, build_dataset, load_dataset, subject_masks
from imageloop.training.base.knows import write_knowledge
from imageloop.training.base.model import (
    ModelSize,
    build_scheduler,
    build_text_encoder,
    build_unet,
    build_vae,
    scheduler_config,
    use_bf16,
)
from imageloop.training.base.scenes import ATTRIBUTE_KEYS, ATTRIBUTE_NAMES, SceneSpec
from imageloop.training.base.tokenizer import MAX_LENGTH, build_tokenizer, save_tokenizer

_Pipeline: Any = StableDiffusionPipeline  # diffusers is untyped for mypy
_Ddpm: Any = DDPMScheduler

# Strongest jitter (scaled latent units) the polished decoder is trained to ignore: above the error of the UNet's
# x0 estimate late in denoising, so the decoder does not draw that error.
DECODER_LATENT_NOISE = 0.3

_SUBJECT_COLUMN = ATTRIBUTE_NAMES.index("subject")

# Written to the export's imageloop.json. "context" weighting: this UNet's pooled text path layer-normalises each
# token and its causal text encoder spreads a word into the tokens after it, so A1111's scaling of the word's own
# token states barely changes its images (``imageloop bench model`` reports both weightings).
GENERATION_DEFAULTS = {"steps": 20, "guidance_scale": 4.0, "width": 64, "height": 64, "scheduler": "DDIM",
                       "prompt_weighting": "context"}


@dataclass
class BaseTrainConfig:
    """Settings of one `imageloop train base` run."""

    data_dir: Path = field(metadata={"help": "Dataset folder; rendered deterministically when missing."})
    checkpoint_dir: Path = field(metadata={"help": "Checkpoints, tokenizer, latents; keep outside the repo."})
    out_dir: Path | None = field(default=None, metadata={"help": "Where to export the diffusers folder at the end."})
    minutes: float = field(default=60.0, metadata={"help": "Wall-clock budget of this invocation, all stages."})
    dataset_size: int = field(default=50_000, metadata={"help": "Training images rendered into data_dir."})
    seed: int = field(default=0, metadata={"help": "Seed of the dataset, captions, batches and noise."})
    vae_steps: int = field(default=6000, metadata={"help": "Total optimisation steps of the autoencoder."})
    batch_size: int = field(default=64, metadata={"help": "Diffusion batch size."})
    lr: float = field(default=2e-4, metadata={"help": "AdamW learning rate (after warm-up)."})
    warmup_steps: int = field(default=300, metadata={"help": "Linear learning-rate warm-up."})
    ema_decay: float = field(default=0.999, metadata={"help": "EMA decay of the exported weights."})
    caption_dropout: float = field(default=0.1, metadata={"help": "Share of empty captions (for CFG)."})
    zh_fraction: float = field(default=0.5, metadata={"help": "Share of Chinese captions."})
    save_every_minutes: float = field(default=10.0, metadata={"help": "Checkpoint interval."})
    keep_checkpoints: int = field(default=3, metadata={"help": "Diffusion checkpoints kept."})
    size: ModelSize = field(default_factory=ModelSize, metadata={"help": "Network widths."})
    subject_loss_weight: float = field(default=3.0, metadata={
        "help": "Extra loss weight on the latent pixels the subject covers (0 = plain MSE)."})
    subject_text_loss_weight: float = field(default=0.1, metadata={
        "help": "Weight of the text encoder's auxiliary subject classification loss (0 = off)."})
    autocast: str = field(default="auto", metadata={
        "help": "bf16 autocast for training: auto (only where bf16 measures faster than fp32), bf16, off."})


def batch_captions(rows: np.ndarray, rng: np.random.Generator, dropout: float, zh_fraction: float) -> list[str]:
    """Fresh captions for label rows: random language and phrasing, a ``dropout`` share empty (for CFG)."""
    out = []
    for row in rows:
        if rng.random() < dropout:
            out.append("")
            continue
        lang: Language = "zh" if rng.random() < zh_fraction else "en"
        out.append(strip_weights(caption(SceneSpec.from_indices(row.tolist()), lang, rng)))
    return out


def _newest(folder: Path) -> Path | None:
    found = sorted(folder.glob("diffusion-*.pt"))
    return found[-1] if found else None


def load_or_build_tokenizer(checkpoint_dir: Path) -> PreTrainedTokenizerFast:
    """The run's tokenizer: built once, then always reloaded so token ids never change under a checkpoint."""
    folder = checkpoint_dir / "tokenizer"
    if not (folder / "tokenizer.json").is_file():
        save_tokenizer(build_tokenizer(), folder)
    tokenizer: PreTrainedTokenizerFast = PreTrainedTokenizerFast.from_pretrained(str(folder))
    return tokenizer


def _save_size(checkpoint_dir: Path, size: ModelSize) -> ModelSize:
    """Record the network sizes on first use; later runs must use the same (a checkpoint fixes them)."""
    path = checkpoint_dir / "model.json"
    if path.is_file():
        saved = json.loads(path.read_text())
        return ModelSize(
            unet_channels=tuple(saved["unet_channels"]), unet_layers=int(saved["unet_layers"]),
            text_hidden=int(saved["text_hidden"]), text_layers=int(saved["text_layers"]),
            vae_channels=tuple(saved["vae_channels"]),
            # runs started before these fields existed used 4 latent channels and mid-block attention
            latent_channels=int(saved.get("latent_channels", 4)),
            vae_mid_attention=bool(saved.get("vae_mid_attention", True)),
        )
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(size)))
    return size


class DiffusionTrainer:
    """The text encoder and UNet being trained, their EMA copies, optimizer and counters."""

    def __init__(
        self, cfg: BaseTrainConfig, tokenizer: PreTrainedTokenizerFast, latents: np.ndarray, labels: np.ndarray,
        scaling_factor: float, size: ModelSize, subject_masks: np.ndarray | None = None,
    ) -> None:
        self.cfg, self.tokenizer = cfg, tokenizer
        self.latents, self.labels, self.scaling_factor = latents, labels, scaling_factor
        self.subject_masks = subject_masks
        self.text_encoder: CLIPTextModel = build_text_encoder(
            len(tokenizer), size, tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id
        )
        self.unet: Any = build_unet(size)
        self.ema_text = copy.deepcopy(self.text_encoder).requires_grad_(False)
        self.ema_unet = copy.deepcopy(self.unet).requires_grad_(False)
        self.noise_scheduler: Any = _Ddpm.from_config(scheduler_config())
        params = [*self.unet.parameters(), *self.text_encoder.parameters()]
        self.optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.01)
        self.step, self.images_seen, self.elapsed_s = 0, 0, 0.0
        self.bf16 = use_bf16(cfg.autocast)
        # Auxiliary head: the subject from the caption's mean token state. Without it the subject words' embeddings
        # stayed near their tiny random init (the UNet drew no subject, so nothing pushed them apart), and the UNet
        # could not learn to draw a subject it could not tell apart: a chicken-and-egg stall.
        self.subject_probe = torch.nn.Linear(size.text_hidden, len(ATTRIBUTE_KEYS["subject"]))
        self.probe_optimizer = torch.optim.AdamW(self.subject_probe.parameters(), lr=1e-3, weight_decay=0.0)
        self.last_probe_accuracy = float("nan")

    def captions(self, rows: np.ndarray, rng: np.random.Generator) -> list[str]:
        """Fresh captions for label rows: random language and phrasing, some dropped to '' for CFG."""
        return batch_captions(rows, rng, self.cfg.caption_dropout, self.cfg.zh_fraction)

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        """Token ids of ``texts`` padded to MAX_LENGTH."""
        ids: torch.Tensor = self.tokenizer(texts, padding="max_length", max_length=MAX_LENGTH, truncation=True,
                                           return_tensors="pt").input_ids
        return ids

    def encode_text(self, texts: list[str], model: CLIPTextModel) -> torch.Tensor:
        """Hidden states of ``model`` for ``texts`` padded to MAX_LENGTH."""
        return model(self.tokenize(texts)).last_hidden_state  # type: ignore[no-any-return]

    def subject_text_loss(self, ids: torch.Tensor, hidden: torch.Tensor, rows: np.ndarray,
                          texts: list[str]) -> torch.Tensor:
        """Cross-entropy of the subject head on the mean token state of each non-empty caption (every non-empty
        caption names its subject); records the head's accuracy on the batch."""
        named = torch.tensor([bool(text) for text in texts])
        if not bool(named.any()):
            return hidden.new_zeros(())
        keep = (ids != self.tokenizer.pad_token_id).unsqueeze(-1).float()
        pooled = (hidden * keep).sum(1) / keep.sum(1).clamp(min=1.0)
        logits = self.subject_probe(pooled[named].float())
        target = torch.from_numpy(rows[:, _SUBJECT_COLUMN].astype(np.int64))[named]
        self.last_probe_accuracy = float((logits.detach().argmax(-1) == target).float().mean())
        return torch.nn.functional.cross_entropy(logits, target)

    def train_step(self) -> float:
        """One optimisation step on a batch drawn deterministically from (seed, step); returns the loss."""
        cfg = self.cfg
        rng = np.random.default_rng([cfg.seed, 7, self.step])
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + self.step)
        idx = np.sort(rng.choice(len(self.latents), cfg.batch_size, replace=False))
        z = torch.from_numpy(self.latents[idx].astype(np.float32)) * self.scaling_factor
        noise = torch.randn(z.shape, generator=gen)
        t = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (len(idx),), generator=gen)
        noisy = self.noise_scheduler.add_noise(z, noise, t)
        target = self.noise_scheduler.get_velocity(z, noise, t)
        for group in self.optimizer.param_groups:
            group["lr"] = cfg.lr * min(1.0, (self.step + 1) / max(cfg.warmup_steps, 1))
        texts = self.captions(self.labels[idx], rng)
        ids = self.tokenize(texts)
        hidden = self.text_encoder(ids).last_hidden_state
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            pred = self.unet(noisy, t, hidden).sample
        loss = self._loss(pred.float(), target, idx)
        total = loss
        if self.cfg.subject_text_loss_weight > 0:
            total = total + self.cfg.subject_text_loss_weight * self.subject_text_loss(
                ids, hidden, self.labels[idx], texts)
        torch.autograd.backward(total)
        torch.nn.utils.clip_grad_norm_(list(self.unet.parameters()), 1.0)
        torch.nn.utils.clip_grad_norm_(list(self.text_encoder.parameters()), 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.cfg.subject_text_loss_weight > 0:
            self.probe_optimizer.step()
            self.probe_optimizer.zero_grad(set_to_none=True)
        self._update_ema()
        self.step += 1
        self.images_seen += len(idx)
        return loss.item()

    def _loss(self, pred: torch.Tensor, target: torch.Tensor, idx: np.ndarray) -> torch.Tensor:
        """MSE, with the subject's latent pixels weighted ``1 + subject_loss_weight`` when masks are given: the
        subject covers a small part of each image, and with plain MSE the background's detail dominates the
        gradient while the subject stays unlearned."""
        if self.subject_masks is None or self.cfg.subject_loss_weight <= 0:
            return torch.nn.functional.mse_loss(pred, target)
        mask = torch.from_numpy(self.subject_masks[idx].astype(np.float32))[:, None]
        weight = 1.0 + self.cfg.subject_loss_weight * mask
        return ((pred - target) ** 2 * weight).mean()

    @torch.no_grad()
    def _update_ema(self) -> None:
        decay = min(self.cfg.ema_decay, (1 + self.step) / (10 + self.step))
        pairs: list[tuple[Any, Any]] = [(self.ema_unet, self.unet), (self.ema_text, self.text_encoder)]
        for ema, live in pairs:
            ema_p, live_p = list(ema.parameters()), list(live.parameters())
            torch._foreach_lerp_(ema_p, live_p, 1.0 - decay)

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume bit-for-bit."""
        return {
            "unet": self.unet.state_dict(), "text_encoder": self.text_encoder.state_dict(),
            "ema_unet": self.ema_unet.state_dict(), "ema_text": self.ema_text.state_dict(),
            "optimizer": self.optimizer.state_dict(), "step": self.step, "images_seen": self.images_seen,
            "elapsed_s": self.elapsed_s, "subject_probe": self.subject_probe.state_dict(),
            "probe_optimizer": self.probe_optimizer.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`state_dict`."""
        self.unet.load_state_dict(state["unet"])
        self.text_encoder.load_state_dict(state["text_encoder"])
        self.ema_unet.load_state_dict(state["ema_unet"])
        self.ema_text.load_state_dict(state["ema_text"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step, self.images_seen = int(state["step"]), int(state["images_seen"])
        self.elapsed_s = float(state["elapsed_s"])
        if "subject_probe" in state:  # checkpoints from before the auxiliary head start it afresh
            self.subject_probe.load_state_dict(state["subject_probe"])
            self.probe_optimizer.load_state_dict(state["probe_optimizer"])

    def save(self, folder: Path, keep: int) -> Path:
        """Write ``diffusion-<step>.pt`` atomically and delete all but the newest ``keep``."""
        path = folder / f"diffusion-{self.step:08d}.pt"
        atomic_torch_save(self.state_dict(), path)
        for old in sorted(folder.glob("diffusion-*.pt"))[:-keep]:
            old.unlink()
        return path


def _log(checkpoint_dir: Path, row: dict[str, float]) -> None:
    path = checkpoint_dir / "loss.csv"
    new = not path.is_file()
    with path.open("a") as f:
        if new:
            f.write(",".join(row) + "\n")
        f.write(",".join(f"{v:.6g}" for v in row.values()) + "\n")


def _prepare_data(cfg: BaseTrainConfig) -> SceneDataset:
    if not (cfg.data_dir / "manifest.json").is_file():
        with tqdm(total=cfg.dataset_size, desc="render dataset", unit="img", mininterval=5) as bar:
            return build_dataset(cfg.data_dir, cfg.dataset_size, cfg.seed, progress=bar.update)
    return load_dataset(cfg.data_dir)


def _prepare_masks(cfg: BaseTrainConfig, data: SceneDataset, size: int) -> np.ndarray:
    """The subjects' coverage of the latent grid, rendered once and cached in the checkpoint folder."""
    path = cfg.checkpoint_dir / "subject_masks.npy"
    if path.is_file():
        cached: np.ndarray = np.load(path)
        if cached.shape == (len(data), size, size):
            return cached
    with tqdm(total=len(data), desc="subject masks", unit="img", mininterval=10) as bar:
        masks = subject_masks(data, size, progress=bar.update)
    with atomic_write(path) as handle:
        np.save(handle, masks)
    return masks


def _prepare_vae(cfg: BaseTrainConfig, data: SceneDataset, size: ModelSize, stop_at: float) -> Any:
    """Train (or finish training) the autoencoder; None if the invocation's budget ran out first."""
    vae = build_vae(size)
    torch.manual_seed(cfg.seed)
    with tqdm(desc="autoencoder", unit="step", mininterval=10) as bar:
        def on_step(step: int, loss: float) -> None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", refresh=False)

        train_autoencoder(vae, data.images, checkpoint=cfg.checkpoint_dir / "vae.pt", max_steps=cfg.vae_steps,
                          seed=cfg.seed, stop_at=stop_at, on_step=on_step, bf16=use_bf16(cfg.autocast))
    state = torch.load(cfg.checkpoint_dir / "vae.pt", weights_only=True)
    return vae if state["done"] else None


def run_training(cfg: BaseTrainConfig) -> DiffusionTrainer | None:
    """Run all stages within ``cfg.minutes``; return the trainer (None if the budget ended before diffusion)."""
    stop_at = time.monotonic() + cfg.minutes * 60.0
    cfg.checkpoint_dir.mkdir(parents=True, exist_ok=True)
    size = _save_size(cfg.checkpoint_dir, cfg.size)
    data = _prepare_data(cfg)
    tokenizer = load_or_build_tokenizer(cfg.checkpoint_dir)
    vae = _prepare_vae(cfg, data, size, stop_at)
    if vae is None:
        return None
    with tqdm(total=len(data), desc="encode latents", unit="img", mininterval=10) as bar:
        latents = encode_dataset(vae, data.images, cfg.checkpoint_dir, on_chunk=bar.update)
    masks = _prepare_masks(cfg, data, latents.shape[-1]) if cfg.subject_loss_weight > 0 else None
    trainer = DiffusionTrainer(cfg, tokenizer, latents, data.labels, latent_scaling_factor(cfg.checkpoint_dir), size,
                               subject_masks=masks)
    newest = _newest(cfg.checkpoint_dir)
    if newest is not None:
        trainer.load_state_dict(torch.load(newest, weights_only=True))
    _diffusion_loop(trainer, cfg, stop_at)
    return trainer


def _diffusion_loop(trainer: DiffusionTrainer, cfg: BaseTrainConfig, stop_at: float) -> None:
    """Train until ``stop_at``, with a checkpoint every ``save_every_minutes`` and one at the end, also when the
    run is interrupted (Ctrl-C, SIGINT): the steps since the last checkpoint are kept."""
    start = last_save = time.monotonic()
    elapsed0, smoothed = trainer.elapsed_s, None
    total = max(0.0, stop_at - start)
    with tqdm(total=int(total), desc="diffusion", unit="s", mininterval=30) as bar:
        try:
            while time.monotonic() < stop_at:
                loss = trainer.train_step()
                smoothed = loss if smoothed is None else 0.98 * smoothed + 0.02 * loss
                now = time.monotonic()
                trainer.elapsed_s = elapsed0 + now - start
                bar.n = min(int(now - start), int(total))
                bar.set_postfix(step=trainer.step, loss=f"{smoothed:.4f}", seen=trainer.images_seen,
                                subject_text_acc=f"{trainer.last_probe_accuracy:.2f}", refresh=False)
                bar.update(0)
                if trainer.step % 50 == 0:
                    _log(cfg.checkpoint_dir, {"step": trainer.step, "images_seen": trainer.images_seen,
                                              "elapsed_s": trainer.elapsed_s, "loss": smoothed})
                if now - last_save > cfg.save_every_minutes * 60.0:
                    trainer.save(cfg.checkpoint_dir, cfg.keep_checkpoints)
                    last_save = now
        finally:
            trainer.save(cfg.checkpoint_dir, cfg.keep_checkpoints)


def polish_decoder(checkpoint_dir: Path, data_dir: Path, minutes: float, autocast: str = "auto",
                   latent_noise: float = DECODER_LATENT_NOISE) -> int:
    """Fine-tune only the autoencoder's decoder on the cached latents for ``minutes`` more (resumable).

    Writes ``decoder.pt``; export prefers its weights. The encoder, the latents and therefore the diffusion
    model are untouched, so this can run at any time, before or after more diffusion training.
    ``latent_noise`` (in the diffusion model's scaled latent units) is the strongest Gaussian jitter the decoder
    learns to ignore: a diffusion sample is never exactly an encoded image, and a decoder trained only on exact
    encodings turns the small residual error into high-frequency texture.
    """
    if not (checkpoint_dir / "vae.pt").is_file() or "scaling_factor" not in json.loads(
        (checkpoint_dir / "latents.json").read_text() if (checkpoint_dir / "latents.json").is_file() else "{}"
    ):
        raise TrainingError(f"no trained autoencoder and latents in {checkpoint_dir}; run imageloop train base")
    size = _save_size(checkpoint_dir, ModelSize())
    vae = build_vae(size)
    target = checkpoint_dir / "decoder.pt"
    spent_min = 0.0
    if target.is_file():
        spent_min = float(torch.load(target, weights_only=True)["elapsed_s"]) / 60.0
    else:
        vae.load_state_dict(torch.load(checkpoint_dir / "vae.pt", weights_only=True)["model"])
    data = load_dataset(data_dir)
    latents = np.load(checkpoint_dir / "latents.npy", mmap_mode="r")
    with tqdm(desc="decoder", unit="step", mininterval=10) as bar:
        def on_step(step: int, loss: float) -> None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", refresh=False)

        return train_autoencoder(vae, data.images, checkpoint=target, minutes=spent_min + minutes, lr=3e-4,
                                 latents=latents, seed=1, on_step=on_step, bf16=use_bf16(autocast),
                                 latent_noise=latent_noise / latent_scaling_factor(checkpoint_dir))


def _vae_weights(checkpoint_dir: Path) -> dict[str, torch.Tensor]:
    """The autoencoder's weights; the polished decoder's when there is one."""
    polished = checkpoint_dir / "decoder.pt"
    source = polished if polished.is_file() else checkpoint_dir / "vae.pt"
    weights: dict[str, torch.Tensor] = torch.load(source, weights_only=True)["model"]
    return weights


def export_pipeline(checkpoint_dir: Path, out_dir: Path, dtype: torch.dtype = torch.float16) -> dict[str, Any]:
    """Export the newest checkpoint's EMA weights as a StableDiffusionPipeline folder; return its training info.

    Files in ``out_dir`` that the export does not write (the model card) are kept.
    """
    newest = _newest(checkpoint_dir)
    if newest is None or not (checkpoint_dir / "vae.pt").is_file():
        raise TrainingError(f"no diffusion checkpoint in {checkpoint_dir}; run imageloop train base first")
    size = _save_size(checkpoint_dir, ModelSize())
    tokenizer = load_or_build_tokenizer(checkpoint_dir)
    state = torch.load(newest, weights_only=True)
    vae = build_vae(size)
    vae.load_state_dict(_vae_weights(checkpoint_dir))
    vae.register_to_config(scaling_factor=latent_scaling_factor(checkpoint_dir))
    text = build_text_encoder(len(tokenizer), size, tokenizer.bos_token_id, tokenizer.eos_token_id,
                              tokenizer.pad_token_id)
    text.load_state_dict(state["ema_text"])
    unet = build_unet(size)
    unet.load_state_dict(state["ema_unet"])
    pipe = _Pipeline(
        vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet, scheduler=build_scheduler(),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.to(dtype=dtype)
    tmp = out_dir.with_name(out_dir.name + ".export-tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.save_pretrained(str(tmp), safe_serialization=True)
    info = {"checkpoint": newest.name, "step": state["step"], "images_seen": state["images_seen"],
            "training_minutes": round(state["elapsed_s"] / 60.0, 1)}
    (tmp / "imageloop.json").write_text(json.dumps(GENERATION_DEFAULTS, indent=1) + "\n")
    write_knowledge(tmp)  # what the model knows: the engine, doctor and the page read it
    (tmp / "training.json").write_text(json.dumps(info, indent=1) + "\n")
    install_export(tmp, out_dir)
    return info


def install_export(tmp: Path, out_dir: Path) -> None:
    """Move every entry of the finished export ``tmp`` into ``out_dir`` (replacing same-named ones, keeping the
    others, e.g. a model card) and remove ``tmp``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for entry in tmp.iterdir():
        target = out_dir / entry.name
        if target.is_dir():
            shutil.rmtree(target)
        entry.replace(target)
    tmp.rmdir()


def encoded_dataset(data_dir: Path, dataset_size: int, seed: int, vae: Any, folder: Path) -> tuple[SceneDataset,
                                                                                                   np.ndarray]:
    """The dataset (rendered when missing) and its latents under the trained autoencoder ``vae``, cached in
    ``folder`` with ``vae``'s own scaling factor (the diffusion model trained on it used that one)."""
    data = _prepare_data(BaseTrainConfig(data_dir=data_dir, checkpoint_dir=folder, dataset_size=dataset_size,
                                         seed=seed))
    meta = folder / "latents.json"
    if not meta.is_file():
        meta.write_text(json.dumps({"done": 0, "scaling_factor": float(vae.config.scaling_factor)}))
    with tqdm(total=len(data), desc="encode latents", unit="img", mininterval=10) as bar:
        latents = encode_dataset(vae, data.images, folder, on_chunk=bar.update)
    return data, latents
