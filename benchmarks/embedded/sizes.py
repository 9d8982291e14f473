"""The embedded model at sizes other than its 64x64: judge hit rates for 48 prompts naming every attribute (seed 7's
random scenes, EN canonical phrasings), each image resized to 64x64 for the judge; beside the JSON a PNG with one
row per size: its first 8 images as the judge sees them. Run: nice -n 15 python benchmarks/embedded/sizes.py OUT.json"""

import io
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from imageloop.bench.model import hit_rates
from imageloop.config import ASSETS_DIR, Settings
from imageloop.engine.engine import Engine
from imageloop.engine.request import GenerationRequest
from imageloop.training.base.captions import prompt_for
from imageloop.training.base.judge import load_judge, predict
from imageloop.training.base.scenes import random_spec

SIZES = ((64, 64), (96, 96), (128, 128))


def main(out: str) -> None:
    rng = np.random.default_rng(7)
    specs = [random_spec(rng) for _ in range(48)]
    prompts = [prompt_for(s, "en") for s in specs]
    engine = Engine(Settings())
    judge = load_judge(ASSETS_DIR / "judge")
    result = {}
    strips = []
    for w, h in SIZES:
        started = time.time()
        images = []
        for start in range(0, 48, 16):
            requests = [GenerationRequest(prompt=p, seed=2000 + start + i, width=w, height=h)
                        for i, p in enumerate(prompts[start : start + 16])]
            for generated in engine.generate_many(requests):
                for image in generated.images:
                    pixels = Image.open(io.BytesIO(image.png)).convert("RGB")
                    images.append(np.asarray(pixels.resize((64, 64), Image.Resampling.LANCZOS)))
        rates = hit_rates(predict(judge, np.stack(images)), specs)
        result[f"{w}x{h}"] = {k: round(v, 3) for k, v in rates.items()}
        print(f"{w}x{h}", f"{time.time() - started:.0f}s", json.dumps(result[f"{w}x{h}"]), flush=True)
        strips.append(np.concatenate(images[:8], 1))
    grid = Image.fromarray(np.concatenate(strips, 0))
    grid.resize((grid.width * 2, grid.height * 2), Image.Resampling.NEAREST).save(Path(out).with_suffix(".png"))
    with Path(out).open("w") as handle:
        json.dump(result, handle, indent=1)


if __name__ == "__main__":
    main(sys.argv[1])
