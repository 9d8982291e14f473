"""The reward model: how likely a person who asked for ``caption`` keeps ``image``, learnt from preference pairs.

Design (small on purpose): a four-layer CNN over the 64x64 image (the embedded model's resolution; larger images
are resized) and a hashed bag of caption words (English words and single Chinese characters, 4,096 buckets),
joined by an MLP over [image, text, image * text] into one score. About 60k parameters: it trains on a few thousand
pairs in seconds on a CPU, needs no other weights, and the caption input lets it learn that the same image is
right for one request and wrong for another. Trained with the Bradley-Terry loss on (kept, not kept) pairs from
the flywheel's ``pairs`` export, and (when given) a logistic loss on single judged images from its ``labels`` export
(kept = 1, not kept = 0: every judged image is a label, where pairs need a kept and a rejected image of one chain);
a cycle continues from the current version's weights when there is one.

With ``training.reward_base`` set, the candidate starts from a CLIP-family scorer on disk instead
(:mod:`imageloop.training.reward_clip`), trained with the same losses; the small model is still trained on the same
data beside it, so the record shows what each reaches on the same held-out pairs.

Used by the eval gate here, and by anything that wants to rank images (re-ranking, Diffusion-DPO data).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import nn

from imageloop.config import TrainingSettings
from imageloop.errors import ModelLoadError, TrainingError
from imageloop.training.gate import correctness
from imageloop.training.reward_clip import SCORER as CLIP_SCORER
from imageloop.training.reward_clip import ClipRewardModel, load_clip_base, load_clip_reward, save_clip_reward

__all__ = ["RewardModel", "RewardScorer", "clip_start", "encode_captions", "heldout_metrics", "load_reward_model",
           "pair_margins", "save_reward_model", "train_reward_model", "train_reward_variants"]

IMAGE_SIZE = 64
BUCKETS = 4096
WEIGHTS_FILE = "reward.safetensors"
CONFIG_FILE = "reward.json"
_WORD = re.compile(r"[a-z0-9]+|[\u3400-\u9fff]")
Progress = Callable[[float, str], None]


class RewardModel(nn.Module):
    """score(image, caption): higher = more likely kept."""

    NAME = "reward-cnn"

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for c_out in (16, 32, 64, 64):  # 64 -> 32 -> 16 -> 8 -> 4
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.GroupNorm(8, c_out), nn.SiLU()]
            c_in = c_out
        self.image = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, width))
        self.text = nn.EmbeddingBag(BUCKETS, width, mode="mean")
        self.head = nn.Sequential(nn.Linear(3 * width, width), nn.SiLU(), nn.Linear(width, 1))
        self.width = width

    def forward(self, images: torch.Tensor, words: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """Scores (N,) for images (N, 3, 64, 64) in [-1, 1] and captions as flattened word ids + offsets."""
        image = self.image(images)
        text = self.text(words, offsets)
        score: torch.Tensor = self.head(torch.cat([image, text, image * text], dim=1)).squeeze(1)
        return score

    @torch.no_grad()
    def score(self, images: Sequence[bytes], captions: Sequence[str]) -> list[float]:
        """Scores of encoded images (PNG/JPEG bytes) for their captions."""
        self.eval()
        return [float(x) for x in self.scores(decode_images(images), captions)]

    def encode_images(self, blobs: Sequence[bytes]) -> torch.Tensor:
        """Encoded images -> this model's input (see :func:`decode_images`)."""
        return decode_images(blobs)

    def scores(self, images: torch.Tensor, captions: Sequence[str]) -> torch.Tensor:
        """Scores (N,) of decoded images for their captions."""
        words, offsets = encode_captions(captions)
        scores: torch.Tensor = self(images, words, offsets)
        return scores

    def param_groups(self) -> list[dict[str, Any]]:
        """The optimizer's parameter groups."""
        return [{"params": list(self.parameters()), "lr": 3e-3, "weight_decay": 1e-4}]

    def copy(self) -> RewardModel:
        """An independent copy (training one leaves the other as it was)."""
        clone = RewardModel(self.width)
        clone.load_state_dict(self.state_dict())
        return clone


RewardScorer = RewardModel | ClipRewardModel


def encode_captions(captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Hashed word ids of each caption, flattened, with their start offsets (EmbeddingBag's input)."""
    ids: list[int] = []
    offsets: list[int] = []
    for caption in captions:
        offsets.append(len(ids))
        words = _WORD.findall(caption.lower()) or ["<empty>"]
        ids += [int.from_bytes(hashlib.blake2b(w.encode(), digest_size=4).digest(), "big") % BUCKETS for w in words]
    return torch.tensor(ids, dtype=torch.long), torch.tensor(offsets, dtype=torch.long)


def decode_images(blobs: Sequence[bytes]) -> torch.Tensor:
    """Encoded images -> (N, 3, 64, 64) float in [-1, 1]; TrainingError naming the index of an unreadable one."""
    arrays = []
    for index, blob in enumerate(blobs):
        try:
            with Image.open(io.BytesIO(blob)) as image:
                rgb = image.convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)
                arrays.append(np.asarray(rgb))
        except OSError as exc:
            raise TrainingError(f"image {index} of the preference pairs cannot be decoded: {exc}") from exc
    if not arrays:
        return torch.zeros((0, 3, IMAGE_SIZE, IMAGE_SIZE))
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


class _Pairs:
    """Preference pairs as tensors: the kept image, the other one, and the caption."""

    def __init__(self, rows: Sequence[dict[str, Any]], model: RewardScorer) -> None:
        first_kept = [float(r["label_0"]) >= float(r["label_1"]) for r in rows]
        self.kept = model.encode_images([r["jpg_0"] if k else r["jpg_1"] for r, k in zip(rows, first_kept,
                                                                                          strict=True)])
        self.other = model.encode_images([r["jpg_1"] if k else r["jpg_0"] for r, k in zip(rows, first_kept,
                                                                                           strict=True)])
        self.captions = [str(r["caption"]) for r in rows]

    def __len__(self) -> int:
        return len(self.captions)

    def margins(self, model: RewardScorer, index: Sequence[int] | None = None) -> torch.Tensor:
        idx = list(range(len(self))) if index is None else list(index)
        captions = [self.captions[i] for i in idx]
        margins: torch.Tensor = model.scores(self.kept[idx], captions) - model.scores(self.other[idx], captions)
        return margins


class _Labels:
    """Single judged images as tensors: the image, its caption and its label (1.0 kept, 0.0 not)."""

    def __init__(self, rows: Sequence[dict[str, Any]], model: RewardScorer) -> None:
        self.images = model.encode_images([r["jpg"] for r in rows])
        self.captions = [str(r["caption"]) for r in rows]
        self.labels = torch.tensor([float(r["label"]) for r in rows], dtype=torch.float32)

    def __len__(self) -> int:
        return len(self.captions)

    def loss(self, model: RewardScorer, index: Sequence[int]) -> torch.Tensor:
        scores = model.scores(self.images[list(index)], [self.captions[i] for i in index])
        loss: torch.Tensor = nn.functional.binary_cross_entropy_with_logits(scores, self.labels[list(index)])
        return loss


def train_reward_model(
    rows: Sequence[dict[str, Any]],
    *,
    epochs: int,
    labels: Sequence[dict[str, Any]] = (),
    parent: RewardScorer | None = None,
    batch_size: int = 32,
    seed: int = 0,
    on_progress: Progress | None = None,
) -> RewardScorer:
    """Fit a reward model (a copy of ``parent`` when given — a small model or a CLIP scorer —, else a new small
    model) on pairs with the Bradley-Terry loss, plus the logistic loss on single ``labels`` when given (each step
    takes a batch of each; an epoch is a pass over the larger of the two)."""
    if not rows and not labels:
        raise TrainingError("the reward model needs at least one preference pair or judged image")
    torch.manual_seed(seed)
    model: RewardScorer = RewardModel() if parent is None else parent.copy()
    pairs = _Pairs(rows, model)
    singles = _Labels(labels, model)
    optimizer = torch.optim.AdamW(model.param_groups())
    generator = torch.Generator().manual_seed(seed)
    steps_per_epoch = (max(len(pairs), len(singles)) + batch_size - 1) // batch_size
    model.train()
    for epoch in range(epochs):
        pair_order = _cycled(len(pairs), steps_per_epoch * batch_size, generator)
        label_order = _cycled(len(singles), steps_per_epoch * batch_size, generator)
        for step in range(steps_per_epoch):
            window = slice(step * batch_size, (step + 1) * batch_size)
            loss = torch.zeros(())
            if pair_order:
                loss = loss - nn.functional.logsigmoid(pairs.margins(model, pair_order[window])).mean()
            if label_order:
                loss = loss + singles.loss(model, label_order[window])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
        if on_progress is not None:
            value = float(loss.detach())
            on_progress((epoch + 1) / epochs, f"reward model epoch {epoch + 1}/{epochs}, loss {value:.3f}")
    model.eval()
    return model


def _cycled(n: int, length: int, generator: torch.Generator) -> list[int]:
    """``length`` indices into ``n`` rows: shuffled passes, repeated as needed (empty when ``n`` is 0)."""
    out: list[int] = []
    while n and len(out) < length:
        out += torch.randperm(n, generator=generator).tolist()
    return out[:length]


def clip_start(parent: RewardScorer | None, settings: TrainingSettings) -> ClipRewardModel | None:
    """Where a CLIP candidate starts: None when ``training.reward_base`` is not set (the small model is the
    candidate); the current version when it was trained from that base the same way; else the scorer in the base
    folder (UnsupportedModelError naming a folder that is not a CLIP model)."""
    base, layers, rate = settings.reward_base, settings.reward_clip_layers, settings.reward_clip_learning_rate
    if base is None:
        return None
    if isinstance(parent, ClipRewardModel) and parent.base == base and parent.train_layers == layers:
        parent.learning_rate = rate
        return parent
    return load_clip_base(base, layers, rate)


def train_reward_variants(
    pairs: Sequence[dict[str, Any]], labels: Sequence[dict[str, Any]], heldout: Sequence[dict[str, Any]], *,
    epochs: int, parent: RewardScorer | None = None, clip: ClipRewardModel | None = None,
    on_progress: Progress | None = None,
) -> tuple[RewardScorer, dict[str, Any]]:
    """The candidate (trained on ``pairs`` and, when there are any, the single ``labels`` too; from ``clip`` when
    given, else a small model continuing from ``parent`` when that is one) and what each source is worth: the
    held-out pairwise accuracy of the candidate and, beside it, of the same training on the pairs alone. With
    ``clip``, also the small offline model trained on the same data (``offline``) and the CLIP scorer before
    this training (``clip_start``). These are ablations for the record: the candidate is not chosen by them, so
    the gate's held-out pairs stay unbiased."""
    small_parent = parent if isinstance(parent, RewardModel) else None
    trained_on = "pairs+labels" if labels else "pairs"
    runs: list[tuple[str, Sequence[dict[str, Any]], RewardScorer | None]] = [
        (trained_on, labels, clip if clip is not None else small_parent)]
    if labels and pairs:
        runs.append(("pairs", (), clip if clip is not None else small_parent))
    if clip is not None:
        runs.append(("offline", labels, small_parent))
    models: dict[str, RewardScorer] = {}
    for index, (name, used, start) in enumerate(runs):
        part = None if on_progress is None else _within(on_progress, index / len(runs), 1 / len(runs))
        models[name] = train_reward_model(pairs, labels=used, epochs=epochs, parent=start, on_progress=part)
    variants: dict[str, Any] = {"trained_on": trained_on, "labels_train": len(labels), "pairs": None,
                                "scorer": CLIP_SCORER if clip is not None else "cnn"}
    variants.update({name: heldout_metrics(model, heldout)["heldout_pairwise_accuracy"]
                     for name, model in models.items()})
    if clip is not None:
        variants.update(clip_start=heldout_metrics(clip, heldout)["heldout_pairwise_accuracy"], base=str(clip.base))
    return models[trained_on], variants


def _within(on_progress: Progress, start: float, span: float) -> Progress:
    return lambda fraction, message: on_progress(start + span * fraction, message)


@torch.no_grad()
def pair_margins(model: RewardScorer, rows: Sequence[dict[str, Any]]) -> list[float]:
    """Per pair: score of the kept image minus the other's (positive = agrees with the person)."""
    model.eval()
    pairs = _Pairs(rows, model)
    chunks = [range(start, min(start + 64, len(pairs))) for start in range(0, len(pairs), 64)]
    return [float(x) for chunk in chunks for x in pairs.margins(model, chunk)]


def heldout_metrics(model: RewardScorer, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Pairwise accuracy on held-out pairs: the share where the kept image scores higher (a tie counts half)."""
    right = correctness(pair_margins(model, rows))
    return {"heldout_pairs": len(right), "heldout_pairwise_accuracy": sum(right) / len(right) if right else None}


def save_reward_model(model: RewardScorer, folder: Path, metrics: dict[str, Any] | None = None) -> Path:
    """Write what loading needs into ``folder`` (a CLIP-based model: its trained tensors and base path); returns
    it."""
    if isinstance(model, ClipRewardModel):
        return save_clip_reward(model, folder, metrics or {})
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / WEIGHTS_FILE))
    config = {"width": model.width, "image_size": IMAGE_SIZE, "buckets": BUCKETS, "metrics": metrics or {}}
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=1) + "\n", encoding="utf-8")
    return folder


def load_reward_model(folder: Path) -> RewardScorer:
    """Load a model saved by :func:`save_reward_model`; ModelLoadError naming the folder when it cannot."""
    try:
        config = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
        if config.get("scorer") == CLIP_SCORER:
            return load_clip_reward(folder, config)
        model = RewardModel(int(config["width"]))
        model.load_state_dict(load_file(str(folder / WEIGHTS_FILE)))
    except (OSError, KeyError, ValueError, RuntimeError) as exc:
        raise ModelLoadError(f"reward model in {folder} cannot be loaded: {exc}") from exc
    return model.eval()
