"""Run the flywheel simulation: simulated users against the real service, one data dir per arm.

Each arm gets a fresh data dir under ``out/arms/<arm>``. Every simulated week starts the real app
(``create_app(settings)``, embedded worker) behind an in-process HTTP client, lets every user send
``sessions_per_week`` intents through ``POST /api/v1/generations``, fetches the generated PNG through its link,
shows it to the independent attribute judge and records the user's decision through ``POST /api/v1/actions``
(regenerate and edit start the next try server-side). After the week the app stops and arms that train run the
real training cycle (:func:`imageloop.training.cycle.run_cycle`). Keep rates are then counted from the service's
own records (actions joined to generations by session), not from the simulator's memory; each week's keep rate is
also split by session kind (:data:`~imageloop.bench.flywheel.report.GROUPS`): plain vs slang intents, and newcomers
(users in their first week: everyone in week 1, then the cohort's ``newcomers_per_week`` who join each week) vs
returning users.

The simulator's randomness (users, intents, first seeds, decisions) comes from ``seed`` and is the same in every
arm. Every arm runs with ``jobs.reroll_seeds = "derived"``: a reroll's (or edit's) seed is a function of its parent's
seed and its depth in the chain, so wherever two arms make the same request at the same point of a session they see
the same image. Rows reach the training cycle in content order and a fresh expander adapter's initialisation is
seeded, so the same record trains the same expander adapter: two ``--arms full --weeks 4`` runs trained a
byte-identical first adapter. An image's bytes are not repeatable, though: the engine batches whatever requests are
queued together, and a batch of another size rounds differently, so about 2 % of the images differed between the
two runs (every decision the same). The image-side stages (reward model, Diffusion-DPO) train on those bytes and
differ from run to run, and once a run serves one of them, the runs part.
"""

from __future__ import annotations

import io
import shutil
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
from fastapi.testclient import TestClient
from PIL import Image

from imageloop.bench.flywheel.arms import Arm
from imageloop.bench.flywheel.cohort import Cohort
from imageloop.bench.flywheel.report import ArmWeek, difference_interval, wilson
from imageloop.bench.flywheel.slang import SlangRecall, slang_recall
from imageloop.bench.flywheel.users import Decision, Intent, SimulatedUser, edited_prompt, newcomers, sample_users
from imageloop.config import Settings, load_settings
from imageloop.errors import SimulationError
from imageloop.storage import ActionType, JobStatus, Storage
from imageloop.storage.kept import is_kept
from imageloop.storage.simulation import session_outcomes
from imageloop.training.base.judge import AttributeJudge, predict
from imageloop.training.base.scenes import ATTRIBUTE_KEYS, ATTRIBUTE_NAMES
from imageloop.training.cycle import ExpanderLoader, run_cycle
from imageloop.training.expander import load_expander_base

__all__ = [
    "FlywheelConfig", "FlywheelRun", "WeekCycle", "arm_settings", "count_week", "result_payload", "run_flywheel",
    "slang_targets",
]

ProgressFn = Callable[[str], None]
_REROLLS = {"regenerate", "edit"}


@dataclass(frozen=True)
class FlywheelConfig:
    """What to simulate. ``base_settings`` are merged into every arm's settings (model, threads, steps ...)."""

    cohort: Cohort
    users: int
    weeks: int
    seed: int
    arms: list[Arm]
    out: Path
    base_settings: dict[str, Any] = field(default_factory=dict)
    generation_params: dict[str, Any] = field(default_factory=dict)
    poll_timeout_s: float = 600.0


@dataclass(frozen=True)
class WeekCycle:
    """The training cycle that ended one arm's week (its run status and each model's decision)."""

    arm: str
    week: int
    status: str
    seconds: float
    summary: dict[str, Any]


@dataclass
class FlywheelRun:
    """Everything one simulation produced."""

    rows: list[ArmWeek] = field(default_factory=list)
    cycles: list[WeekCycle] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    slang_recall: list[SlangRecall] | None = None  # the full arm's served adapter on held-out slang intents


@dataclass
class _Session:
    """One intent's life: its tries so far and the generation now being looked at."""

    user: SimulatedUser
    key: str
    session_id: str
    intent: Intent
    rng: np.random.Generator
    generation_id: str = ""
    rerolls: int = 0
    done: bool = False


def arm_settings(config: FlywheelConfig, arm: Arm) -> Settings:
    """The arm's settings: the base merged with the arm's changes; its own data dir; no scheduled cycles; derived
    reroll seeds; the prompt memory synced before every expansion."""
    values: dict[str, Any] = {key: dict(value) if isinstance(value, dict) else value
                              for key, value in config.base_settings.items()}
    values["data_dir"] = config.out / "arms" / arm.name
    prompts = {**values.get("prompts", {}), **arm.prompts}
    if arm.without_strategies:
        strategies = prompts.get("strategies", ["local_llm", "retrieval", "rules"])
        prompts["strategies"] = [s for s in strategies if s not in arm.without_strategies] or ["rules"]
    # Every expansion sees every keep before it, whatever the wall clock: arms stay comparable and runs repeat.
    prompts["memory_sync_seconds"] = 0.0
    values["prompts"] = prompts
    values["training"] = {**values.get("training", {}), **arm.training, "schedule_enabled": False}
    values["jobs"] = {**values.get("jobs", {}), "reroll_seeds": "derived"}
    return load_settings(**values)


def run_flywheel(
    config: FlywheelConfig,
    judge: AttributeJudge,
    *,
    on_progress: ProgressFn | None = None,
    expander_loader: ExpanderLoader | None = None,
) -> FlywheelRun:
    """Run every arm for ``config.weeks`` weeks with the same users and seeds; see the module docstring."""
    users = sample_users(config.cohort, config.users, config.seed)
    joined = {user.name: 1 for user in users}
    rosters: list[list[SimulatedUser]] = []
    for week in range(1, config.weeks + 1):  # the same users, newcomers included, in every arm
        arrivals = newcomers(config.cohort, week, config.seed)
        joined.update((user.name, week) for user in arrivals)
        users = [*users, *arrivals]
        rosters.append(users)
    result = FlywheelRun()
    for arm in config.arms:
        started = time.monotonic()
        settings = arm_settings(config, arm)
        shutil.rmtree(settings.data_dir, ignore_errors=True)
        keys: dict[str, str] = {}
        for week, roster in enumerate(rosters, start=1):
            _note(on_progress, f"{arm.name}: week {week}/{config.weeks}: users at work")
            kinds = _simulate_week(config, settings, judge, roster, keys, week, joined)
            if arm.trains:
                _note(on_progress, f"{arm.name}: week {week}/{config.weeks}: training cycle")
                result.cycles.append(_train(settings, arm, week, expander_loader))
            result.rows.append(count_week(settings, arm.name, week, kinds))
        result.seconds[arm.name] = time.monotonic() - started
        if arm.name == "full" and config.cohort.slang:
            _note(on_progress, "full: the served expander on held-out slang intents")
            model, tokenizer = (expander_loader or load_expander_base)(settings)
            result.slang_recall = slang_recall(settings, config.cohort, model, tokenizer)
    return result


def _note(on_progress: ProgressFn | None, message: str) -> None:
    if on_progress is not None:
        on_progress(message)


def _train(settings: Settings, arm: Arm, week: int, loader: ExpanderLoader | None) -> WeekCycle:
    started = time.monotonic()
    cycle = run_cycle(settings, trigger="flywheel", expander_loader=loader)
    summary = {stage: _decision(cycle.stages.get(stage)) for stage in ("expander", "reward", "diffusion_dpo")}
    return WeekCycle(arm.name, week, cycle.status.value, time.monotonic() - started, summary)


def _decision(stage: Any) -> Any:
    if not isinstance(stage, dict):
        return None
    if "skipped" in stage:
        return {"skipped": stage["skipped"]}
    gate = stage.get("gate") or {}
    return {"status": stage.get("status"), "version": stage.get("version"), "gate_passed": gate.get("passed"),
            "gate_reason": gate.get("reason")}


def _simulate_week(config: FlywheelConfig, settings: Settings, judge: AttributeJudge, users: list[SimulatedUser],
                   keys: dict[str, str], week: int, joined: dict[str, int]) -> dict[str, tuple[str, ...]]:
    """One week of every user's sessions through a freshly started app (it sees last week's trained models);
    returns each session's groups (slang or plain, newcomer or returning)."""
    from imageloop.server import create_app

    with TestClient(create_app(settings)) as client:
        services = client.app.state.services  # type: ignore[attr-defined]
        # A server that has been up all week: its models are loaded before the first intent (a request during the
        # load would get the next strategy's answer, depending on how busy the machine is).
        services.warm_up.wait()
        storage: Storage = services.storage
        for user in users:
            if user.name not in keys:
                keys[user.name] = storage.users.create_user(user.name)[1]
        sessions = [_Session(user, keys[user.name], f"w{week}-{user.name}-{k}", *_intent(config, user, week, k))
                    for user in users for k in range(config.cohort.sessions_per_week)]
        for session in sessions:
            params = {**config.generation_params, "seed": int(session.rng.integers(2**31))}
            body = {"intent": session.intent.text, "intent_language": session.intent.language, "n": 1,
                    "session_id": session.session_id, "params": params}
            session.generation_id = _post(client, session.key, "/api/v1/generations", body)["id"]
        while any(not s.done for s in sessions):
            active = [s for s in sessions if not s.done]
            looked = [(s, _finished(client, s, config.poll_timeout_s)) for s in active]
            shown = [(s, g) for s, g in looked if g is not None]
            seen = _judge(judge, [_image(client, s.key, g) for s, g in shown])
            for (session, generation), attributes in zip(shown, seen, strict=True):
                _act(client, session, generation, attributes, config.cohort)
    return {s.session_id: _groups(s.intent.slang is not None, joined[s.user.name] == week) for s in sessions}


def _groups(slang: bool, newcomer: bool) -> tuple[str, ...]:
    kinds = ("slang" if slang else "plain", "newcomer" if newcomer else "returning")
    return (*kinds, "newcomer_slang") if slang and newcomer else kinds


def _intent(config: FlywheelConfig, user: SimulatedUser, week: int, k: int) -> tuple[Intent, np.random.Generator]:
    # One stream per (seed, user, week, session): identical in every arm whatever happened before.
    rng = np.random.default_rng([config.seed, user.seed, week, k])
    return user.intent(config.cohort, rng), rng


def _post(client: TestClient, key: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(path, headers={"Authorization": f"Bearer {key}"}, json=body)
    if response.status_code >= 400:
        raise SimulationError(f"POST {path} answered {response.status_code}: {response.text[:300]}")
    payload: dict[str, Any] = response.json()
    return payload


def _finished(client: TestClient, session: _Session, timeout: float) -> dict[str, Any] | None:
    """The session's generation once terminal; None (and the session over) when it did not succeed."""
    deadline = time.monotonic() + timeout
    while True:
        response = client.get(f"/api/v1/generations/{session.generation_id}",
                              headers={"Authorization": f"Bearer {session.key}"})
        body: dict[str, Any] = response.json()
        if body.get("status") in {"succeeded", "failed", "cancelled"}:
            break
        if time.monotonic() > deadline:
            raise SimulationError(f"generation {session.generation_id} not finished after {timeout:.0f} s")
        time.sleep(0.05)
    if body["status"] != "succeeded" or not body.get("images"):
        session.done = True
        return None
    return body


def _image(client: TestClient, key: str, generation: dict[str, Any]) -> np.ndarray:
    response = client.get(generation["images"][0]["url"], headers={"Authorization": f"Bearer {key}"})
    if response.status_code != 200:
        raise SimulationError(f"image of {generation['id']} answered {response.status_code}")
    return np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB").resize((64, 64), Image.Resampling.BOX))


def _judge(judge: AttributeJudge, images: list[np.ndarray]) -> list[dict[str, str]]:
    """What the judge sees in each image: attribute name -> value key."""
    if not images:
        return []
    predicted = predict(judge, np.stack(images))
    return [{name: ATTRIBUTE_KEYS[name][int(row[i])] for i, name in enumerate(ATTRIBUTE_NAMES)} for row in predicted]


def _act(client: TestClient, session: _Session, generation: dict[str, Any], seen: dict[str, str],
         cohort: Cohort) -> None:
    decision = session.user.decide(seen, session.intent, session.rerolls, cohort, session.rng)
    body: dict[str, Any] = {"type": decision.value, "image_id": generation["images"][0]["id"],
                            "client_event_id": f"{session.session_id}-{session.rerolls}"}
    if decision is Decision.EDIT:
        prompt = edited_prompt(generation.get("final_prompt") or session.intent.text, session.user, seen,
                               session.intent)
        if prompt == (generation.get("final_prompt") or session.intent.text):
            body["type"] = Decision.REGENERATE.value  # nothing left to add: a plain reroll
        else:
            body["prompt"] = prompt
    action = _post(client, session.key, "/api/v1/actions", body)
    if body["type"] in _REROLLS:
        session.rerolls += 1
        session.generation_id = str(action["child_generation_id"])
    else:
        session.done = True


def count_week(settings: Settings, arm: str, week: int, kinds: dict[str, tuple[str, ...]] | None = None) -> ArmWeek:
    """Keep rate and rerolls of one week, counted from the service's records (generations and actions); with
    ``kinds`` (session id -> its groups) also per group."""
    storage = Storage.open(settings)
    try:
        sessions, actions = session_outcomes(storage.db_engine, f"w{week}-")
    finally:
        storage.close()
    all_sessions = {s for s, _ in sessions}
    failed = sum(1 for _, status in sessions if status is not JobStatus.SUCCEEDED)
    # A session is kept when one of its images is kept, by the service's own rule (storage.kept).
    per_image: dict[tuple[str, str], list[ActionType]] = defaultdict(list)
    for s, image_id, kind in actions:
        if image_id is not None:
            per_image[(str(s), str(image_id))].append(ActionType(kind))
    kept = {s for (s, _), kinds in per_image.items() if is_kept(kinds)}
    rerolls = [(str(s), str(getattr(kind, "value", kind))) for s, _, kind in actions]
    reroll_count = sum(1 for _, kind in rerolls if kind in _REROLLS)
    rerolls_kept = sum(1 for s, kind in rerolls if kind in _REROLLS and s in kept)
    groups: dict[str, tuple[int, int]] = {}
    for session in all_sessions:
        for group in (kinds or {}).get(str(session), ()):
            total, kept_count = groups.get(group, (0, 0))
            groups[group] = (total + 1, kept_count + (session in kept))
    return ArmWeek(arm, week, len(all_sessions), len(kept), reroll_count, rerolls_kept, failed, groups)


def result_payload(config: FlywheelConfig, run: FlywheelRun) -> dict[str, Any]:
    """The result JSON: config, per-arm weekly rows, the last week's full-vs-frozen gap and the cycles."""
    arms = {arm.name: [r.to_dict() for r in run.rows if r.arm == arm.name] for arm in config.arms}
    payload: dict[str, Any] = {
        "config": {"users": config.users, "weeks": config.weeks, "seed": config.seed,
                   "arms": [a.name for a in config.arms], "cohort": asdict(config.cohort),
                   "settings": config.base_settings, "generation_params": config.generation_params},
        "arms": arms,
        "cycles": [asdict(c) for c in run.cycles],
        "seconds": run.seconds,
    }
    last = {r.arm: r for r in run.rows if r.week == config.weeks}
    if "full" in last and "frozen" in last:
        full, frozen = last["full"], last["frozen"]
        diff, low, high = difference_interval(full.kept, full.sessions, frozen.kept, frozen.sessions)
        per_kept = [r.rerolls_per_kept for r in run.rows if r.arm == "full"]
        payload["target"] = {
            "week": config.weeks, "full_minus_frozen": diff, "ci95": [low, high],
            "met": bool(diff >= 0.20 and low > 0.0),
            "rerolls_per_kept_fall_weekly": all(a is not None and b is not None and b < a
                                                for a, b in pairwise(per_kept)),
            "rule": "full beats frozen by >= 20 points of keep rate in the last week, 95% CI (Newcombe) above 0",
        }
        by_group = {}
        for group in ("slang", "newcomer"):
            (n1, k1), (n2, k2) = full.groups.get(group, (0, 0)), frozen.groups.get(group, (0, 0))
            if n1 and n2:
                diff, low, high = difference_interval(k1, n1, k2, n2)
                by_group[group] = {"full_minus_frozen": diff, "ci95": [low, high]}
        payload["target"]["groups"] = by_group
    payload["slang_targets"] = slang_targets(config, run)
    return payload


def _group_week(run: FlywheelRun, arm: str, week: int, group: str) -> tuple[int, int]:
    row = next((r for r in run.rows if r.arm == arm and r.week == week), None)
    return row.groups.get(group, (0, 0)) if row is not None else (0, 0)


def _gap(run: FlywheelRun, arm: str, other: str, week: int, group: str) -> dict[str, Any] | None:
    (n1, k1), (n2, k2) = _group_week(run, arm, week, group), _group_week(run, other, week, group)
    if not n1 or not n2:
        return None
    diff, low, high = difference_interval(k1, n1, k2, n2)
    return {"week": week, "group": group, f"{arm}_minus_{other}": diff, "ci95": [low, high],
            "sessions": [n1, n2]}


def slang_targets(config: FlywheelConfig, run: FlywheelRun) -> dict[str, Any]:
    """The slang figures of the learning half: full - frozen and full - online on slang sessions in the last week,
    newcomers' slang keep rate in the last week vs the first (full), and the served expander's recall on held-out
    slang intents vs the base model; each with its rule and whether it is met."""
    last = config.weeks
    out: dict[str, Any] = {}
    frozen = _gap(run, "full", "frozen", last, "slang")
    if frozen is not None:
        low = frozen["ci95"][0]
        out["slang_full_minus_frozen"] = {**frozen, "met": bool(frozen["full_minus_frozen"] >= 0.25 and low > 0),
                                          "rule": ">= +25 points in the last week, 95% CI above 0"}
    online = _gap(run, "full", "online", last, "slang")
    if online is not None:
        out["slang_full_minus_online"] = online
    (n1, k1), (n6, k6) = _group_week(run, "full", 1, "newcomer_slang"), _group_week(run, "full", last,
                                                                                   "newcomer_slang")
    if n1 and n6 and last > 1:
        first, final = k1 / n1, k6 / n6
        out["newcomer_slang_growth"] = {
            "last_week": last, "week_1": first, "week_1_ci95": list(wilson(k1, n1)), f"week_{last}": final,
            f"week_{last}_ci95": list(wilson(k6, n6)), "sessions": [n1, n6],
            "ratio": final / first if first else None, "met": bool(final >= 2 * first),
            "rule": f"full: newcomers' slang keep rate in week {last} >= 2x week 1"}
    if run.slang_recall is not None:
        rows = [r.to_dict() for r in run.slang_recall]
        out["expander_slang_recall"] = {
            "rows": rows, "met": bool(rows) and all(r["gain"] >= 0.20 for r in rows),
            "rule": "served adapter - base model >= +20 points of attribute recall on held-out slang intents"}
    return out
