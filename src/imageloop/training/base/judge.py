"""The independent attribute judge: a small CNN with one classification head per attribute.

It is trained only on real composites (rendered scenes), never on generated images, and then used by
``imageloop bench model`` to check whether a generated image shows what its prompt asked for. Mild blur and
noise augmentation make it robust to the softness of generated images without ever seeing one.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import nn

from imageloop.errors import ModelLoadError
from imageloop.training.base.dataset import render_samples
from imageloop.training.base.scenes import ATTRIBUTE_KEYS, ATTRIBUTE_NAMES, IMAGE_SIZE

WEIGHTS_FILE = "judge.safetensors"
CONFIG_FILE = "judge.json"


class AttributeJudge(nn.Module):
    """CNN over 64x64 RGB; ``forward`` returns one logits tensor per attribute in ATTRIBUTE_NAMES order."""

    def __init__(self, width: int = 24) -> None:
        super().__init__()
        chans = (width * 2, width * 4, width * 4)
        # A strided stem (64 -> 32) keeps the cost low on a busy CPU; 1-px details (rain, snow, stars) survive it.
        layers: list[nn.Module] = [nn.Conv2d(3, width, 4, stride=2, padding=1), nn.BatchNorm2d(width),
                                   nn.ReLU(inplace=True)]
        c_in = width
        for c in chans:  # 32 -> 16 -> 8 -> 4
            layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
                       nn.Conv2d(c, c, 3, stride=2, padding=1), nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
            c_in = c
        self.features = nn.Sequential(*layers)
        # Flattened 4x4 map (not global pooling), so position and composition stay visible to the heads.
        self.trunk = nn.Sequential(nn.Flatten(), nn.Linear(chans[-1] * 16, 256), nn.ReLU(inplace=True),
                                   nn.Dropout(0.2))
        self.heads = nn.ModuleList(nn.Linear(256, len(ATTRIBUTE_KEYS[a])) for a in ATTRIBUTE_NAMES)
        self.width = width

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = self.trunk(self.features(x))
        return [head(h) for head in self.heads]


def to_input(images: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, 64, 64) float in [-1, 1], resizing when the images are not 64x64."""
    if images.shape[1:3] != (IMAGE_SIZE, IMAGE_SIZE):
        images = np.stack([np.asarray(Image.fromarray(im).resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BOX))
                           for im in images])
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Blur half the batch a little and add light noise: generated images are softer than composites."""
    blur = torch.tensor([1.0, 2.0, 1.0]) / 4.0
    kernel = (blur[:, None] * blur[None, :]).expand(3, 1, 3, 3)
    soft = nn.functional.conv2d(nn.functional.pad(x, (1, 1, 1, 1), mode="replicate"), kernel, groups=3)
    pick = (torch.rand(x.shape[0], 1, 1, 1, generator=gen) < 0.5).float()
    x = pick * soft + (1 - pick) * x
    return x + torch.randn(x.shape, generator=gen) * 0.03


def train_judge(
    images: np.ndarray, labels: np.ndarray, *, minutes: float, batch_size: int = 32, seed: int = 0,
    width: int = 24, on_step: Callable[[int, float], None] | None = None, start: AttributeJudge | None = None,
    lr: float = 2e-3,
) -> AttributeJudge:
    """Train a judge (``start``, or a new one) on real composites ``images`` (N, 64, 64, 3) with ``labels``
    (N, 8) for ``minutes``."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = start if start is not None else AttributeJudge(width)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    began = time.monotonic()
    deadline = began + minutes * 60.0
    rng = np.random.default_rng(seed)
    step = 0
    model.train()
    while time.monotonic() < deadline:
        # linear decay to a tenth over the time budget: the last steps settle the fine attributes
        progress = (time.monotonic() - began) / max(deadline - began, 1e-9)
        for group in opt.param_groups:
            group["lr"] = lr * (1.0 - 0.9 * progress)
        idx = np.sort(rng.choice(len(images), min(batch_size, len(images)), replace=False))
        x = _augment(to_input(images[idx]), gen)
        y = torch.from_numpy(labels[idx].astype(np.int64))
        loss = sum((nn.functional.cross_entropy(logits, y[:, i]) for i, logits in enumerate(model(x))),
                   torch.zeros(()))
        opt.zero_grad(set_to_none=True)
        torch.autograd.backward(loss)
        opt.step()
        step += 1
        if on_step is not None:
            on_step(step, loss.item())
    model.eval()
    return model


@torch.no_grad()
def predict(model: AttributeJudge, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Predicted class index per attribute: (N, 8) int array in ATTRIBUTE_NAMES order."""
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        logits = model(to_input(images[start : start + batch_size]))
        out.append(torch.stack([lg.argmax(-1) for lg in logits], dim=1).numpy())
    return np.concatenate(out) if out else np.zeros((0, len(ATTRIBUTE_NAMES)), np.int64)


@torch.no_grad()
def features(model: AttributeJudge, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """The judge's 256-d penultimate features of ``images`` (N, 256): the space ``bench model`` measures KID in."""
    model.eval()
    out = [model.trunk(model.features(to_input(images[start : start + batch_size]))).numpy()
           for start in range(0, len(images), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, 256), np.float32)


def accuracy(model: AttributeJudge, images: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Per-attribute accuracy of ``model`` on labelled images."""
    pred = predict(model, images)
    return {a: float((pred[:, i] == labels[:, i]).mean()) for i, a in enumerate(ATTRIBUTE_NAMES)}


def validation_set(n: int, seed: int = 99) -> tuple[np.ndarray, np.ndarray]:
    """Fresh real composites of the held-out combinations (the ones the benchmark asks for)."""
    return render_samples(n, seed, heldout=True)


def save_judge(model: AttributeJudge, folder: Path, metrics: dict[str, float]) -> None:
    """Write fp16 weights and a config with the attribute vocabulary and validation metrics."""
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    save_file(state, str(folder / WEIGHTS_FILE))
    config = {"width": model.width, "attributes": {a: list(ATTRIBUTE_KEYS[a]) for a in ATTRIBUTE_NAMES},
              "validation_accuracy": metrics}
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=1) + "\n")


def load_judge(folder: Path) -> AttributeJudge:
    """Load a judge saved by :func:`save_judge`; ModelLoadError if missing or built for other attributes."""
    if not (folder / WEIGHTS_FILE).is_file():
        raise ModelLoadError(f"no judge in {folder}; train one with: imageloop train judge")
    config = json.loads((folder / CONFIG_FILE).read_text())
    if config["attributes"] != {a: list(ATTRIBUTE_KEYS[a]) for a in ATTRIBUTE_NAMES}:
        raise ModelLoadError(f"judge in {folder} was trained for other attributes; retrain it")
    model = AttributeJudge(int(config["width"]))
    model.load_state_dict({k: v.float() if v.is_floating_point() else v
                           for k, v in load_file(str(folder / WEIGHTS_FILE)).items()})
    model.eval()
    return model
