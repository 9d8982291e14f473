"""What the embedded model draws for attributes a prompt does not name: the shipped judge's verdicts on images for
prompts that name only a subject (and maybe a place, or "clear weather"). Writes the per-arm distribution of every
attribute as JSON. Run: nice -n 15 python benchmarks/embedded/unnamed_attributes.py OUT.json"""

import json
import sys
import time
from collections import Counter
from pathlib import Path

from imageloop.bench.model import generate
from imageloop.config import ASSETS_DIR, Settings
from imageloop.engine.engine import Engine
from imageloop.engine.request import GenerationRequest
from imageloop.training.base.judge import load_judge, predict
from imageloop.training.base.scenes import ATTRIBUTE_KEYS, ATTRIBUTE_NAMES
from imageloop.training.base.sprites import SUBJECTS

PLACES = ("city street", "forest", "beach", "mountains")


def arms() -> dict[str, list[str]]:
    """48 prompts per arm: each of the 24 subjects twice (two seeds)."""
    subj = [s.en[0] for s in SUBJECTS]
    return {
        "subject": [f"a {n}" for n in subj for _ in range(2)],
        "subject+place": [f"a {n}, {PLACES[(i + k) % 4]}" for i, n in enumerate(subj) for k in range(2)],
        "subject+clear weather": [f"a {n}, clear weather" for n in subj for _ in range(2)],
        "subject+place+clear weather": [f"a {n}, {PLACES[(i + k) % 4]}, clear weather" for i, n in enumerate(subj)
                                        for k in range(2)],
        "zh subject": [f"{s.zh[0]}" for s in SUBJECTS for _ in range(2)],
    }


def main(out: str) -> None:
    engine = Engine(Settings())  # the embedded model with its imageloop.json defaults: 20 DDIM steps, CFG 4, 64x64
    judge = load_judge(ASSETS_DIR / "judge")
    result = {}
    for name, prompts in arms().items():
        started = time.time()
        requests = [GenerationRequest(prompt=p, seed=1000 + i) for i, p in enumerate(prompts)]
        pred = predict(judge, generate(engine, requests))
        dist = {}
        for index, attribute in enumerate(ATTRIBUTE_NAMES[1:], start=1):
            counts = Counter(ATTRIBUTE_KEYS[attribute][k] for k in pred[:, index])
            dist[attribute] = {k: round(counts.get(k, 0) / len(prompts), 3) for k in ATTRIBUTE_KEYS[attribute]}
        result[name] = {"n": len(prompts), "distribution": dist}
        print(name, len(prompts), f"{time.time() - started:.0f}s", json.dumps(dist["weather"]), flush=True)
    with Path(out).open("w") as handle:
        json.dump(result, handle, indent=1)


if __name__ == "__main__":
    main(sys.argv[1])
