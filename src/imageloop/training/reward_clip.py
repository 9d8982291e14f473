"""A reward model that starts from a CLIP-family scorer on disk (PickScore, HPSv2, ImageReward-style CLIP folders).

The folder is a transformers ``CLIPModel`` checkpoint: ``config.json`` (``model_type`` "clip"), its weights, and the
processor files (tokenizer + image preprocessing). The score is PickScore's: ``logit_scale.exp() * cos(image, text)``
of the projected embeddings, plus one learnt offset that only the logistic loss on single labels sees (it cancels
in a pair's margin, so rankings are the scorer's own). Fine-tuning trains the two projections and the top
``train_layers`` transformer blocks of each tower (plus their final norms) with the same losses as the small model;
everything below stays frozen, so backpropagation stops at the lowest trained block.

A saved version holds only what training changed (the trained tensors and the offset) and the base folder's path:
a PickScore checkpoint is several gigabytes and is not copied into every weekly version; loading a version needs
that folder where it was.
"""

from __future__ import annotations

import copy
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import nn

from imageloop.errors import ModelLoadError, TrainingError, UnsupportedModelError
from imageloop.loading import MODEL_LOADS

__all__ = ["SCORER", "ClipRewardModel", "load_clip_base", "load_clip_reward", "save_clip_reward"]

SCORER = "clip"
WEIGHTS_FILE = "reward.safetensors"
CONFIG_FILE = "reward.json"
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
                 "pytorch_model.bin.index.json")
_TOKENIZER_FILES = ("tokenizer.json", "vocab.json")


class ClipRewardModel(nn.Module):
    """score(image, caption) = logit_scale * cos(image embedding, caption embedding) (+ the label offset)."""

    NAME = "reward-clip"

    def __init__(self, clip: Any, processor: Any, base: Path, train_layers: int, learning_rate: float) -> None:
        super().__init__()
        self.learning_rate = learning_rate
        self.clip = clip
        self.processor = processor
        self.base = base
        self.train_layers = train_layers
        self.offset = nn.Parameter(torch.zeros(()))
        self.clip.requires_grad_(False)
        for module in self._trained_modules():
            module.requires_grad_(True)

    def _trained_modules(self) -> list[nn.Module]:
        clip = self.clip
        modules: list[nn.Module] = [clip.visual_projection, clip.text_projection]
        if self.train_layers:
            modules += list(clip.vision_model.encoder.layers[-self.train_layers:])
            modules += list(clip.text_model.encoder.layers[-self.train_layers:])
            modules += [clip.vision_model.post_layernorm, clip.text_model.final_layer_norm]
        return modules

    def encode_images(self, blobs: Sequence[bytes]) -> torch.Tensor:
        """Encoded images -> the CLIP processor's pixel values (float16); TrainingError naming an unreadable one."""
        images = []
        for index, blob in enumerate(blobs):
            try:
                with Image.open(io.BytesIO(blob)) as image:
                    images.append(image.convert("RGB"))
            except OSError as exc:
                raise TrainingError(f"image {index} of the preference pairs cannot be decoded: {exc}") from exc
        if not images:
            return torch.zeros((0, 3, 1, 1))
        pixels: torch.Tensor = self.processor.image_processor(images=images, return_tensors="pt")["pixel_values"]
        return pixels.to(torch.float16)  # held for a whole training run: half the memory, ample precision

    def scores(self, images: torch.Tensor, captions: Sequence[str]) -> torch.Tensor:
        """Scores (N,) of processed images for their captions."""
        tokens = self.processor.tokenizer(list(captions), padding=True, truncation=True, return_tensors="pt")
        image = self.clip.get_image_features(pixel_values=images.float()).pooler_output
        text = self.clip.get_text_features(input_ids=tokens["input_ids"],
                                           attention_mask=tokens["attention_mask"]).pooler_output
        cos = nn.functional.cosine_similarity(image, text, dim=-1)
        score: torch.Tensor = self.clip.logit_scale.exp() * cos + self.offset
        return score

    @torch.no_grad()
    def score(self, images: Sequence[bytes], captions: Sequence[str]) -> list[float]:
        """Scores of encoded images (PNG/JPEG bytes) for their captions."""
        self.eval()
        return [float(x) for x in self.scores(self.encode_images(images), captions)]

    def param_groups(self) -> list[dict[str, Any]]:
        """The optimizer's groups: the trained CLIP tensors at ``learning_rate``, the offset (a free scalar) fast."""
        clip = [p for p in self.clip.parameters() if p.requires_grad]
        return [{"params": clip, "lr": self.learning_rate, "weight_decay": 1e-4}, {"params": [self.offset], "lr": 5e-2}]

    def copy(self) -> ClipRewardModel:
        """A copy whose trained tensors are its own (training one leaves the other as it was); the frozen ones,
        nearly all of a large scorer, are shared rather than duplicated."""
        frozen: dict[int, Any] = {id(p): p for p in self.clip.parameters() if not p.requires_grad}
        clone = ClipRewardModel(copy.deepcopy(self.clip, frozen), self.processor, self.base, self.train_layers,
                                self.learning_rate)
        clone.offset.data.copy_(self.offset.data)
        return clone

    def trained_state(self) -> dict[str, torch.Tensor]:
        """What fine-tuning changes: the trained CLIP tensors (``clip.`` names) and the offset."""
        state = {f"clip.{name}": p.detach() for name, p in self.clip.named_parameters() if p.requires_grad}
        return {**state, "offset": self.offset.detach()}


def load_clip_base(folder: Path, train_layers: int, learning_rate: float) -> ClipRewardModel:
    """The CLIP scorer in ``folder``, ready to fine-tune; UnsupportedModelError when the folder is not a
    transformers CLIPModel with its processor files, ModelLoadError when it is one that cannot be read."""
    from transformers import CLIPModel, CLIPProcessor

    config_file = folder / "config.json"
    if not folder.is_dir():
        raise ModelLoadError(f"reward base {folder} is not a folder")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UnsupportedModelError(f"reward base {folder} is not a CLIP model folder: no readable config.json "
                                    f"({exc})") from exc
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if model_type != "clip":
        raise UnsupportedModelError(f"reward base {folder} is not a CLIP model folder: config.json says model_type "
                                    f"{model_type!r}, a CLIPModel (PickScore, HPSv2) says 'clip'")
    missing = [names for names in (_WEIGHT_FILES, _TOKENIZER_FILES) if not any((folder / n).is_file() for n in names)]
    if missing:
        raise UnsupportedModelError(f"reward base {folder} is not a complete CLIP model folder: it has none of "
                                    + "; none of ".join(", ".join(names) for names in missing))
    try:
        with MODEL_LOADS:  # one load at a time in the process (imageloop.loading)
            clip = CLIPModel.from_pretrained(str(folder), local_files_only=True, dtype=torch.float32)
            processor = CLIPProcessor.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelLoadError(f"reward base {folder} cannot be loaded as a CLIP model: {exc}") from exc
    layers = min(len(clip.vision_model.encoder.layers), len(clip.text_model.encoder.layers))
    if train_layers > layers:
        raise ModelLoadError(f"reward base {folder} has {layers} blocks per tower; training.reward_clip_layers is "
                             f"{train_layers}")
    return ClipRewardModel(clip, processor, folder, train_layers, learning_rate).eval()


def save_clip_reward(model: ClipRewardModel, folder: Path, metrics: dict[str, Any]) -> Path:
    """Write the trained tensors + a config naming the base folder into ``folder``; returns it."""
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.trained_state().items()}, str(folder / WEIGHTS_FILE))
    config = {"scorer": SCORER, "base": str(model.base), "train_layers": model.train_layers,
              "learning_rate": model.learning_rate, "metrics": metrics}
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=1) + "\n", encoding="utf-8")
    return folder


def load_clip_reward(folder: Path, config: dict[str, Any]) -> ClipRewardModel:
    """A version saved by :func:`save_clip_reward` (``config`` is its reward.json): its base folder with the
    trained tensors put back; ModelLoadError naming the folder when it cannot."""
    model = load_clip_base(Path(config["base"]), int(config["train_layers"]), float(config["learning_rate"]))
    try:
        state = load_file(str(folder / WEIGHTS_FILE))
        with torch.no_grad():
            model.offset.copy_(state.pop("offset"))
            clip = model.clip.state_dict()
            for name, tensor in state.items():
                clip[name.removeprefix("clip.")].copy_(tensor)
    except (OSError, KeyError, RuntimeError) as exc:
        raise ModelLoadError(f"reward model in {folder} cannot be loaded: {exc}") from exc
    return model.eval()
