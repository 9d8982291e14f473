"""Loading another model releases the first unless engine.max_loaded_models allows both; engines of one model
count once; a release asked for during a run happens when the run ends."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

import pytest

from imageloop.config import Settings
from imageloop.engine import Engine, GenerationRequest
from imageloop.engine.cache import ModelResidency
from tests import tiny

DEFAULTS = {"steps": 2, "guidance_scale": 5.0, "scheduler": "Euler", "width": 64, "height": 64}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("residency")
    return {"sd15": tiny.save_sd15(root / "sd15", model_defaults=DEFAULTS),
            "sdxl": tiny.save_sdxl(root / "sdxl", model_defaults=DEFAULTS)}


def settings(root: Path, limit: int) -> Settings:
    return Settings(data_dir=root, engine={"device": "cpu", "max_loaded_models": limit, "result_cache_size": 0})


def unet_ref(engine: Engine) -> weakref.ReferenceType[object]:
    return weakref.ref(engine.model.pipe.unet)


class FakeHolder:
    def __init__(self) -> None:
        self.released = 0

    def release_model(self) -> None:
        self.released += 1


def test_residency_releases_least_recently_used_models_beyond_the_limit() -> None:
    residency = ModelResidency()
    a, a2, b, c = FakeHolder(), FakeHolder(), FakeHolder(), FakeHolder()
    assert residency.admit("a", a, limit=2) == [] and residency.admit("a", a2, limit=2) == []
    assert residency.admit("b", b, limit=2) == []
    residency.touch("a")
    assert residency.admit("c", c, limit=2) == ["b"] and (b.released, a.released, a2.released) == (1, 0, 0)
    assert residency.admit("b", b, limit=2) == ["a"] and a.released == a2.released == 1  # both engines of "a"
    assert residency.loaded() == ["c", "b"]
    assert residency.admit("d", FakeHolder(), limit=0) == []  # 0 = no limit


def test_a_second_model_releases_the_first(models: dict[str, Path], tmp_path: Path) -> None:
    first = Engine(settings(tmp_path, 1), model=models["sd15"])
    request = GenerationRequest(prompt="a cat", seed=1)
    before = first.generate(request).images[0].png
    first_unet = unet_ref(first)
    second = Engine(settings(tmp_path, 1), model=models["sdxl"])
    second.generate(request)
    gc.collect()
    assert first_unet() is None  # nothing keeps the first model's weights alive
    second_unet = unet_ref(second)
    assert first.generate(request).images[0].png == before  # reloaded on its next request, same images
    gc.collect()
    assert second_unet() is None


def test_a_setting_keeps_both_and_engines_of_one_model_count_once(models: dict[str, Path], tmp_path: Path) -> None:
    first = Engine(settings(tmp_path, 2), model=models["sd15"])
    first_unet = unet_ref(first)
    Engine(settings(tmp_path, 2), model=models["sdxl"]).generate(GenerationRequest(prompt="a dog", seed=2))
    gc.collect()
    assert first_unet() is not None
    worker_a = Engine(settings(tmp_path, 1), model=models["sd15"])
    worker_b = Engine(settings(tmp_path, 1), model=models["sd15"])
    a_unet, b_unet = unet_ref(worker_a), unet_ref(worker_b)
    gc.collect()
    assert a_unet() is not None and b_unet() is not None and a_unet() is not b_unet()


def test_a_release_during_a_run_waits_for_its_end(models: dict[str, Path], tmp_path: Path) -> None:
    engine = Engine(settings(tmp_path, 1), model=models["sd15"])
    unet = unet_ref(engine)
    steps: list[int] = []

    def release_inside(step: int, total: int) -> None:
        engine.release_model()  # as another model's load would, mid-run
        steps.append(step)

    result = engine.generate(GenerationRequest(prompt="a bird", seed=3), on_step=release_inside)
    assert steps == [1, 2] and len(result.images) == 1
    gc.collect()
    assert unet() is None
