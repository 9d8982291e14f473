from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw

from imageloop.prompts.image_check import ImageChecker, generate_checked, quality_score


def _scene(seed: int) -> Image.Image:
    """A small picture with sky, ground, shapes and noise: what a working sampler gives."""
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (64, 64), (90, 140, 220))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 40, 63, 63), fill=(60, 120, 50))
    for _ in range(6):
        x, y = (int(v) for v in rng.integers(0, 56, size=2))
        draw.ellipse((x, y, x + 8, y + 8), fill=tuple(int(c) for c in rng.integers(0, 255, size=3)))
    noisy = np.asarray(image, dtype=np.int16) + rng.integers(-12, 12, size=(64, 64, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def test_quality_separates_failed_frames_from_pictures() -> None:
    assert quality_score(Image.new("RGB", (64, 64), (0, 0, 0))) == 0.0
    assert quality_score(Image.new("RGB", (64, 64), (255, 255, 255))) == 0.0
    assert quality_score(Image.new("RGB", (64, 64), (128, 128, 128))) < 0.35
    assert quality_score(_scene(0)) > 0.6
    png = io.BytesIO()
    _scene(1).save(png, format="PNG")
    assert quality_score(png.getvalue()) == quality_score(_scene(1))


def test_an_ordinary_picture_passes_the_nsfw_check() -> None:
    verdict = ImageChecker().check(_scene(2))
    assert verdict.ok and verdict.nsfw < 0.5 and verdict.reasons == ()


def test_failed_images_are_regenerated_with_new_seeds_and_every_try_is_kept() -> None:
    seeds: list[int] = []

    def generate(seed: int) -> Image.Image:
        seeds.append(seed)
        return _scene(seed) if len(seeds) == 3 else Image.new("RGB", (64, 64), (0, 0, 0))

    checked = generate_checked(generate, lambda image: image, seed=5, checker=ImageChecker(), max_retries=4)
    assert checked.passed and len(checked.tries) == 3
    assert [t.seed for t in checked.tries] == seeds and len(set(seeds)) == 3 and seeds[0] == 5
    assert "quality" in checked.tries[0].verdict.reasons[0]

    black = generate_checked(lambda seed: Image.new("RGB", (8, 8)), lambda image: image, seed=1,
                             checker=ImageChecker(nsfw=False), max_retries=2)
    assert not black.passed and len(black.tries) == 3
