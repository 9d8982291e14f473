"""The model registry: numbering, files, release (A/B, promote), rollback restoring the previous version, and
A/B decisions on the measured keep rate."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from imageloop.config import Settings
from imageloop.errors import ConflictError, NotFoundError
from imageloop.storage import Storage
from imageloop.training.registry import (
    ArmStats,
    ModelKind,
    ModelStatus,
    Registry,
    bucket,
    two_proportion_interval,
)
from imageloop.training.serving import ExpanderRouting
from tests.storage.conftest import FakeClock
from tests.training.records import RED, keep, served


@pytest.fixture
def make_registry(storage: Storage, tmp_path: Path, clock: FakeClock) -> Callable[..., Registry]:
    def build(**training: object) -> Registry:
        settings = Settings(data_dir=tmp_path / "data", database_url=str(storage.db_engine.url), training=training)
        # The repositories' clock, so A/B windows and generation times agree.
        return Registry(storage.sessions, settings, clock=clock)

    return build


def _files(tmp_path: Path, name: str) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "adapter_model.safetensors").write_bytes(name.encode())
    (folder / "nested").mkdir()
    (folder / "nested" / "config.json").write_text("{}")
    return folder


def _register(registry: Registry, tmp_path: Path, name: str, kind: ModelKind = ModelKind.EXPANDER, **kw: object):  # type: ignore[no-untyped-def]
    return registry.register(kind, _files(tmp_path, name), name=name, data_hash="h" * 64, metrics={"acc": 0.7},
                             **kw)  # type: ignore[arg-type]


def test_versions_are_numbered_per_kind_and_their_files_copied(
    storage: Storage, tmp_path: Path, make_registry: Callable[..., Registry]
) -> None:
    registry = make_registry()
    first = _register(registry, tmp_path, "a", run_id="run1")
    second = _register(registry, tmp_path, "b", parent_id=first.id)
    reward = _register(registry, tmp_path, "c", kind=ModelKind.REWARD)
    assert (first.version, second.version, reward.version) == (1, 2, 1)
    assert second.parent_id == first.id and first.status is ModelStatus.CANDIDATE
    assert first.files == ["adapter_model.safetensors", "nested/config.json"]
    assert (registry.path(second) / "adapter_model.safetensors").read_bytes() == b"b"
    # A resumed run registers nothing twice.
    assert _register(registry, tmp_path, "a2", run_id="run1").id == first.id
    assert [v.version for v in registry.list(ModelKind.EXPANDER)] == [2, 1]
    with pytest.raises(NotFoundError):
        registry.get("nope")


def test_release_ab_tests_expanders_and_promotes_reward_models(
    storage: Storage, tmp_path: Path, make_registry: Callable[..., Registry]
) -> None:
    registry = make_registry(ab_share=0.25)
    expander = registry.release(_register(registry, tmp_path, "e").id)
    assert expander.status is ModelStatus.AB_TEST and expander.traffic_share == 0.25
    reward = registry.release(_register(registry, tmp_path, "r", kind=ModelKind.REWARD).id)
    assert reward.status is ModelStatus.PROMOTED and registry.current(ModelKind.REWARD) == reward
    # The candidate serves a stable quarter of users; the others get the current version (none yet: the base).
    chosen = [registry.choose(ModelKind.EXPANDER, f"user{i}") for i in range(2000)]
    share = sum(v is not None and v.id == expander.id for v in chosen) / len(chosen)
    assert 0.2 < share < 0.3
    assert registry.choose(ModelKind.EXPANDER, "user7") == registry.choose(ModelKind.EXPANDER, "user7")


def test_promote_retires_the_previous_and_rollback_restores_it(
    storage: Storage, tmp_path: Path, make_registry: Callable[..., Registry]
) -> None:
    registry = make_registry()
    v1 = registry.promote(_register(registry, tmp_path, "v1").id)
    v2 = registry.promote(_register(registry, tmp_path, "v2").id)
    assert registry.get(v1.id).status is ModelStatus.RETIRED
    assert registry.current(ModelKind.EXPANDER) == v2
    rolled = registry.rollback(v2.id)
    assert rolled.status is ModelStatus.ROLLED_BACK
    restored = registry.current(ModelKind.EXPANDER)
    assert restored is not None and restored.id == v1.id and restored.traffic_share == 1.0
    # Rolling back the only promoted version leaves the base model serving.
    registry.rollback(v1.id)
    assert registry.current(ModelKind.EXPANDER) is None
    with pytest.raises(ConflictError):
        registry.rollback(v1.id)
    with pytest.raises(ConflictError):
        registry.promote(registry.promote(v2.id).id)


def test_rejected_candidates_are_kept_but_never_served(
    storage: Storage, tmp_path: Path, make_registry: Callable[..., Registry]
) -> None:
    registry = make_registry()
    candidate = _register(registry, tmp_path, "bad")
    rejected = registry.reject(candidate.id, "does not beat current")
    assert rejected.status is ModelStatus.REJECTED and rejected.note == "does not beat current"
    assert registry.choose(ModelKind.EXPANDER, "anyone") is None
    with pytest.raises(ConflictError):
        registry.rollback(candidate.id)


def _traffic(
    storage: Storage, tag: str | None, images: int, kept: int, user: str, strategy: str = "local_llm"
) -> None:
    account, _ = storage.users.create_user(user)
    _served_for(storage, account.id, tag, images, kept, strategy)


def _served_for(storage: Storage, user_id: str, tag: str | None, images: int, kept: int, strategy: str) -> None:
    for i in range(images):
        record = served(storage, user_id, f"a cat {i}", "cat", [RED], tag=tag, strategy=strategy)
        if i < kept:
            keep(storage, user_id, record)


def _users_by_arm(storage: Storage, version_id: str, share: float) -> tuple[list[str], list[str]]:
    """Accounts the A/B test of ``version_id`` routes to the candidate, and to the control (two of each at least)."""
    treated: list[str] = []
    control: list[str] = []
    for i in range(100):
        account, _ = storage.users.create_user(f"user{i}")
        (treated if bucket(f"{version_id}:{account.id}") < share else control).append(account.id)
        if len(treated) >= 2 and len(control) >= 2:
            break
    return treated, control


@pytest.mark.parametrize(("kept_candidate", "expected"), [(16, "promote"), (2, "rollback"), (9, "wait")])
def test_ab_test_is_decided_on_the_measured_keep_rate(
    storage: Storage, tmp_path: Path, make_registry: Callable[..., Registry], kept_candidate: int, expected: str
) -> None:
    registry = make_registry(ab_min_samples=20, gate_confidence=0.9)
    current = registry.promote(_register(registry, tmp_path, "cur").id)
    candidate = registry.start_ab_test(_register(registry, tmp_path, "new").id, 0.5)
    treated, control = _users_by_arm(storage, candidate.id, 0.5)
    # By assignment (intent to treat): a control user's request counts whichever strategy answered it.
    _served_for(storage, control[0], f"local_llm+{current.tag}", 12, 5, "local_llm")
    _served_for(storage, control[1], "rules-1", 8, 4, "rules")
    _served_for(storage, treated[0], f"local_llm+{candidate.tag}", 20, kept_candidate, "local_llm")
    decision = registry.decide_ab_test(ModelKind.EXPANDER)
    assert decision is not None and decision.action == expected
    assert (decision.candidate.images, decision.candidate.kept) == (20, kept_candidate)
    assert (decision.control.images, decision.control.kept) == (20, 9)
    status = registry.get(candidate.id).status
    assert status is {"promote": ModelStatus.PROMOTED, "rollback": ModelStatus.ROLLED_BACK,
                      "wait": ModelStatus.AB_TEST}[expected]
    if expected == "rollback":
        assert registry.current(ModelKind.EXPANDER) == registry.get(current.id)


def test_two_proportion_interval_contains_the_difference() -> None:
    diff, low, high = two_proportion_interval(ArmStats(100, 60), ArmStats(100, 40), 0.95)
    assert diff == pytest.approx(0.2) and 0.05 < low < 0.2 < high < 0.35
    assert two_proportion_interval(ArmStats(0, 0), ArmStats(10, 5), 0.95) == (0.0, -1.0, 1.0)


def test_expander_routing_follows_the_release_state(
    storage: Storage, tmp_path: Path, make_registry: Callable[..., Registry]
) -> None:
    registry = make_registry()
    now = [0.0]
    routing = ExpanderRouting(registry, ttl=30, clock=lambda: now[0])
    assert routing.adapter_for("ada") is None  # nothing trained: the base model
    current = registry.promote(_register(registry, tmp_path, "cur").id)
    assert routing.adapter_for("ada") is None  # cached for ttl seconds
    now[0] = 31
    served = routing.adapter_for("ada")
    assert served is not None and served.tag == current.tag and (served.path / "adapter_model.safetensors").is_file()
    candidate = registry.start_ab_test(_register(registry, tmp_path, "new").id, 0.5)
    routing.refresh()
    users = [f"user{i}" for i in range(400)]
    picks = {u: routing.adapter_for(u) for u in users}
    assert {p.version_id for p in picks.values() if p} == {current.id, candidate.id}
    for user in users[:50]:
        expected = registry.choose(ModelKind.EXPANDER, user)
        assert expected is not None and picks[user] is not None and picks[user].version_id == expected.id
    assert routing.adapter_for(None).version_id == current.id  # type: ignore[union-attr]
