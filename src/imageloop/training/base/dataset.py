"""The embedded model's training set: rendered deterministically from a seed into a folder.

Layout of a dataset folder::

    manifest.json    seed, size, format version, attribute vocabulary
    images.npy       (N, 64, 64, 3) uint8 RGB
    labels.npy       (N, 8) int16, each attribute's index in ATTRIBUTE_KEYS order
    heldout.json     the held-out (subject, place, weather, time) groups and the evaluation combinations

Whole combinations are held out: every spec whose (subject, place, weather, time) falls in a held-out group is
never rendered for training, so the benchmark measures generalisation to unseen combinations.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imageloop.errors import TrainingError
from imageloop.training.base.scenes import (
    ATTRIBUTE_KEYS,
    ATTRIBUTE_NAMES,
    IMAGE_SIZE,
    SceneSpec,
    render_scene,
    render_scene_and_mask,
)

FORMAT_VERSION = 1
HELDOUT_KEY = ("subject", "place", "weather", "time")
HELDOUT_MODULUS = 24  # about 1 in 24 groups is held out


def is_heldout(spec: SceneSpec) -> bool:
    """Whether ``spec`` belongs to a held-out (subject, place, weather, time) group (never trained on)."""
    key = "|".join(getattr(spec, a) for a in HELDOUT_KEY)
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % HELDOUT_MODULUS == 0


def heldout_groups() -> list[tuple[str, ...]]:
    """All held-out (subject, place, weather, time) groups, sorted."""
    groups = itertools.product(*(ATTRIBUTE_KEYS[a] for a in HELDOUT_KEY))
    base = {a: ATTRIBUTE_KEYS[a][0] for a in ATTRIBUTE_NAMES}
    return sorted(g for g in groups if is_heldout(SceneSpec(**{**base, **dict(zip(HELDOUT_KEY, g, strict=True))})))


def sample_spec(rng: np.random.Generator, heldout: bool = False) -> SceneSpec:
    """Draw a uniform spec outside the held-out groups (or, with ``heldout``, inside them)."""
    while True:
        spec = SceneSpec(**{n: keys[int(rng.integers(len(keys)))] for n, keys in ATTRIBUTE_KEYS.items()})
        if is_heldout(spec) == heldout:
            return spec


def evaluation_specs(n: int, seed: int = 1234) -> list[SceneSpec]:
    """``n`` held-out combinations for the benchmark, deterministic given ``seed``."""
    rng = np.random.default_rng(seed)
    return [sample_spec(rng, heldout=True) for _ in range(n)]


@dataclass
class SceneDataset:
    """A rendered dataset in memory (arrays may be memory-mapped)."""

    images: np.ndarray
    labels: np.ndarray
    seed: int

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def spec(self, i: int) -> SceneSpec:
        """The spec of sample ``i``."""
        return SceneSpec.from_indices(self.labels[i].tolist())


def render_samples(n: int, seed: int, heldout: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Render ``n`` samples (images, labels); sample ``i`` depends only on (seed, i, heldout)."""
    images = np.empty((n, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
    labels = np.empty((n, len(ATTRIBUTE_NAMES)), np.int16)
    for i in range(n):
        images[i], labels[i] = render_one(seed, i, heldout)
    return images, labels


def render_one(seed: int, index: int, heldout: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Render sample ``index`` of the dataset with ``seed`` (independent of every other sample)."""
    rng = np.random.default_rng([seed, index, int(heldout)])
    spec = sample_spec(rng, heldout)
    return render_scene(spec, rng), np.asarray(spec.indices(), np.int16)


def render_one_mask(seed: int, index: int) -> tuple[np.ndarray, np.ndarray]:
    """Sample ``index`` of the training set again, with its subject mask: (image, (64, 64) float32 mask)."""
    rng = np.random.default_rng([seed, index, 0])
    spec = sample_spec(rng, False)
    return render_scene_and_mask(spec, rng)


def subject_masks(data: SceneDataset, size: int, progress: Callable[[int], object] | None = None,
                  chunk: int = 1000) -> np.ndarray:
    """Each training image's subject coverage on a ``size`` x ``size`` grid (the latent grid), float16 in [0, 1].

    The masks are not stored with the dataset; they are rendered again from the dataset's seed, and every image
    re-rendered on the way must equal the stored one (else the dataset was built by other code: an error).
    """
    n, factor = len(data), IMAGE_SIZE // size
    out = np.empty((n, size, size), np.float16)
    for start in range(0, n, chunk):
        for i in range(start, min(start + chunk, n)):
            image, mask = render_one_mask(data.seed, i)
            if not np.array_equal(image, data.images[i]):
                raise TrainingError(f"image {i} of the dataset differs from its re-rendering; rebuild the dataset")
            out[i] = mask.reshape(size, factor, size, factor).mean(axis=(1, 3))
        if progress is not None:
            progress(min(start + chunk, n) - start)
    return out


def build_dataset(
    folder: Path, n: int, seed: int = 0, progress: Callable[[int], object] | None = None, chunk: int = 1000
) -> SceneDataset:
    """Render ``n`` training samples into ``folder`` (overwriting) and return it; same seed, same bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    images = np.lib.format.open_memmap(folder / "images.npy.tmp", "w+", np.uint8, (n, IMAGE_SIZE, IMAGE_SIZE, 3))
    labels = np.empty((n, len(ATTRIBUTE_NAMES)), np.int16)
    for start in range(0, n, chunk):
        for i in range(start, min(start + chunk, n)):
            images[i], labels[i] = render_one(seed, i)
        if progress is not None:
            progress(min(start + chunk, n) - start)
    images.flush()
    del images
    (folder / "images.npy.tmp").replace(folder / "images.npy")
    np.save(folder / "labels.npy", labels)
    groups = heldout_groups()
    (folder / "heldout.json").write_text(json.dumps({
        "rule": f"held out when sha256('|'.join({list(HELDOUT_KEY)}))[:8] % {HELDOUT_MODULUS} == 0",
        "groups": [dict(zip(HELDOUT_KEY, g, strict=True)) for g in groups],
        "evaluation": [s.__dict__ for s in evaluation_specs(200)],
    }, indent=1, ensure_ascii=False))
    manifest = {"format": FORMAT_VERSION, "seed": seed, "size": n, "attributes": ATTRIBUTE_KEYS}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return load_dataset(folder)


def load_dataset(folder: Path) -> SceneDataset:
    """Load a dataset folder written by :func:`build_dataset` (images memory-mapped)."""
    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        raise TrainingError(f"{folder} is not a dataset folder (no manifest.json); build it with train base --data")
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("format") != FORMAT_VERSION or manifest.get("attributes") != {
        k: list(v) for k, v in ATTRIBUTE_KEYS.items()
    }:
        raise TrainingError(f"dataset in {folder} was built by another version; delete it to rebuild")
    images = np.load(folder / "images.npy", mmap_mode="r")
    labels = np.load(folder / "labels.npy")
    return SceneDataset(images=images, labels=labels, seed=int(manifest["seed"]))
