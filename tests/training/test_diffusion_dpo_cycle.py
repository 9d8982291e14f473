"""Diffusion-DPO in the training cycle (registered, gated, or skipped with its reason), its A/B arms in the record,
and `imageloop train diffusion-dpo` on an exported pairs folder, bad inputs included."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from typer.testing import CliRunner

import imageloop.cli.commands  # noqa: F401  (registers every command on `app`)
from imageloop.cli import app
from imageloop.config import Settings
from imageloop.engine.model_files import content_hash
from imageloop.storage import FinishedGeneration, NewGeneration, NewImage, Storage, WorkerId, image_blob_key
from imageloop.training.cycle import TrainingCycle
from imageloop.training.registry import ModelKind, ModelStatus, Registry, bucket
from imageloop.training.serving import GeneratorRouting
from tests.storage.conftest import FakeClock
from tests.tiny import save_sd15
from tests.training.records import preference_world
from tests.training.test_diffusion_dpo import toy_pairs

# Expander and reward model skipped (too few pairs for them), so only Diffusion-DPO trains.
FAST = {"min_pairs": 10_000, "diffusion_dpo_min_pairs": 8, "diffusion_dpo_steps": 4, "diffusion_dpo_batch_size": 2,
        "diffusion_dpo_rank": 2, "diffusion_dpo_eval_draws": 1, "heldout_fraction": 0.3, "ab_share": 0.5,
        "min_heldout_items": 2}


def _cycle(storage: Storage, tmp_path: Path, clock: FakeClock, **training: Any) -> TrainingCycle:
    model = save_sd15(tmp_path / "tiny-sd")
    settings = Settings(data_dir=tmp_path / "data", database_url=str(storage.db_engine.url),
                        engine={"model": str(model), "device": "cpu", "threads": 1}, training={**FAST, **training})
    return TrainingCycle(settings, storage, clock=clock)


def test_the_cycle_trains_gates_and_registers_a_diffusion_dpo_lora(
    storage: Storage, tmp_path: Path, clock: FakeClock
) -> None:
    user, _ = storage.users.create_user("ada")
    preference_world(storage, user.id, chains=8)
    cycle = _cycle(storage, tmp_path, clock)
    result = cycle.run(now=clock())
    out = result.stages["diffusion_dpo"]
    assert "skipped" in result.stages["reward"] and "version_id" in out, out
    version = cycle.registry.get(out["version_id"])
    assert version.kind is ModelKind.DIFFUSION_DPO and version.data_hash == result.stages["export"]["data_hash"]
    assert "pytorch_lora_weights.safetensors" in version.files
    assert version.metrics["base_model_version"] == content_hash(tmp_path / "tiny-sd")
    # Both objectives trained (pairs: Diffusion-DPO; single labels: Diffusion-KTO), the better one registered.
    variants = version.metrics["variants"]
    assert variants["trained"] == ["dpo", "kto"] and variants["chosen"] == version.metrics["objective"]
    best = max(variants["dpo"]["heldout_accuracy"], variants["kto"]["heldout_accuracy"])
    assert version.metrics["gate"]["candidate_accuracy"] == best
    gate = version.metrics["gate"]
    assert gate["pairs"] == version.metrics["heldout_pairs"] > 0 and gate["current_accuracy"] == 0.5
    # Released for A/B testing when it beats the base UNet, else recorded as rejected with the gate's reason.
    expected = ModelStatus.AB_TEST if gate["passed"] else ModelStatus.REJECTED
    assert version.status is expected and out["status"] == expected.value
    assert result.run.result["diffusion_dpo"]["version_id"] == version.id


def test_too_few_pairs_skip_the_stage_with_the_reason(storage: Storage, tmp_path: Path, clock: FakeClock) -> None:
    user, _ = storage.users.create_user("ada")
    preference_world(storage, user.id, chains=2)
    cycle = _cycle(storage, tmp_path, clock, diffusion_dpo_min_pairs=50)
    result = cycle.run(now=clock())
    assert result.stages["diffusion_dpo"]["skipped"] == "4 image pairs and 4 judged images for training (need 50)"
    assert cycle.registry.list(ModelKind.DIFFUSION_DPO) == []
    off = _cycle(storage, tmp_path / "off", clock, diffusion_dpo_enabled=False).run(now=clock())
    assert off.stages["diffusion_dpo"] == {"skipped": "training.diffusion_dpo_enabled is off"}


def _generation(storage: Storage, user: str, version: str, *, kept: bool, model: str = "tiny") -> None:
    job = storage.generations.create(user, NewGeneration(prompt="a cat"))
    [claimed] = storage.generations.claim(WorkerId("w"))
    key = image_blob_key(claimed.id, 0)
    storage.blobs.put(key, b"png", "image/png")
    record = storage.generations.mark_succeeded(job.id, FinishedGeneration(
        images=[NewImage(0, 0, key, 64, 64, "0" * 64)], base_model_id=model, base_model_version=version))
    if kept:
        from imageloop.storage import ActionType

        storage.actions.record(user, ActionType.DOWNLOAD, f"evt-{record.id}", image_id=record.images[0].id)


def test_ab_arms_of_a_generator_lora_are_read_from_the_base_model_version(
    storage: Storage, tmp_path: Path, clock: FakeClock
) -> None:
    settings = Settings(data_dir=tmp_path / "data", database_url=str(storage.db_engine.url))
    registry = Registry(storage.sessions, settings, clock=clock)
    lora = tmp_path / "lora"
    lora.mkdir()
    (lora / "pytorch_lora_weights.safetensors").write_bytes(b"x")
    version = registry.register(ModelKind.DIFFUSION_DPO, lora, name="diffusion-dpo-lora", data_hash="a" * 64,
                                metrics={"base_model_version": "h" * 64})
    version = registry.release(version.id)
    assert version.status is ModelStatus.AB_TEST
    arms: dict[bool, str] = {}
    for n in range(100):  # one user routed to the candidate, one to the control (by assignment)
        user, _ = storage.users.create_user(f"user{n}")
        arms.setdefault(bucket(f"{version.id}:{user.id}") < version.traffic_share, user.id)
        if len(arms) == 2:
            break
    for i in range(4):
        _generation(storage, arms[True], f"{'h' * 64}+{version.tag}", kept=i < 3)
        _generation(storage, arms[False], "h" * 64, kept=i < 1)
    _generation(storage, arms[True], "z", kept=True, model="another")  # another base model: in neither arm
    candidate, control = registry.arm_stats(version)
    assert (candidate.images, candidate.kept, control.images, control.kept) == (4, 3, 4, 1)
    # Serving: the share of users in the candidate arm get its file, tagged, for the model it was trained on.
    routing = GeneratorRouting(Registry(storage.sessions, settings))
    # The arm is a hash of (user, version id), and the id is random: 400 users keep the share's spread small.
    served = [routing.lora_for(f"user-{i}") for i in range(400)]
    chosen = [lora for lora in served if lora is not None]
    assert 30 < len(chosen) < 130 and all(lora.tag == version.tag and lora.model_version == "h" * 64 for lora in chosen)


def _write_pairs(folder: Path, rows: list[dict[str, Any]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    schema = pa.schema([("caption", pa.string()), ("jpg_0", pa.binary()), ("jpg_1", pa.binary()),
                        ("label_0", pa.float64()), ("label_1", pa.float64())])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), str(folder / "data.parquet"))
    return folder


def test_cli_trains_on_a_pairs_folder_and_names_bad_input(tmp_path: Path) -> None:
    model = save_sd15(tmp_path / "tiny-sd")
    env = {"IMAGELOOP_DATA_DIR": str(tmp_path / "data")}
    base = ["train", "diffusion-dpo", "--model", str(model), "--steps", "2", "--batch", "2", "--rank", "2",
            "--eval-draws", "1", "--out", str(tmp_path / "out")]
    pairs = _write_pairs(tmp_path / "pairs", toy_pairs(10))
    ok = CliRunner().invoke(app, [*base, "--pairs", str(pairs)], env=env)
    assert ok.exit_code == 0, ok.output
    assert (tmp_path / "out" / "pytorch_lora_weights.safetensors").is_file() and "held-out:" in ok.stdout

    def error(folder: Path) -> str:
        result = CliRunner().invoke(app, [*base, "--pairs", str(folder)], env=env)
        assert result.exit_code != 0
        return str(getattr(result.exception, "message", result.exception))

    assert "is not a folder" in error(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    assert "holds no data.parquet" in error(tmp_path / "empty")
    ties = [{**row, "label_0": 0.5, "label_1": 0.5} for row in toy_pairs(3)]
    assert "holds no preference pairs (3 ties" in error(_write_pairs(tmp_path / "ties", ties))
    broken = toy_pairs(4)
    broken[1]["jpg_1"] = b"\x89PNG broken"
    assert "pairs row 1: jpg_1 is not an image" in error(_write_pairs(tmp_path / "broken", broken))
