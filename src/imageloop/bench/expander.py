"""``imageloop bench expander``: how well each expansion strategy turns vague EN/ZH intents into the attributes a
reasonable person expects, how fast, and how often the result is a valid prompt; and what personal re-ranking does
for simulated users with known tastes.

Scoring: an intent's expected attributes (``tests/data/intents_{en,zh}.jsonl``) are compared with the attribute
values the expansion names (:meth:`imageloop.prompts.lexicon.Lexicon.attributes_in`). Recall = expected values
found / expected values; precision = expected values found / values named. A declined expansion names nothing.

Retrieval needs a kept record: the bench builds one in a scratch database where a simulated user kept, for every
intent of the OTHER language, a prompt naming exactly its expected attributes — so every retrieval is cross-lingual
(an English intent can only reuse a prompt kept for a Chinese one, and back).
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from imageloop.bench.stats import percentile
from imageloop.config import Settings
from imageloop.prompts.expander import Expander, Expansion
from imageloop.prompts.expander.chain import ChainExpander
from imageloop.prompts.expander.postprocess import prompt_problems
from imageloop.prompts.expander.rules import RulesExpander
from imageloop.prompts.lexicon import ATTRIBUTE_ORDER, Lexicon
from imageloop.prompts.memory import PromptMemory
from imageloop.storage import ActionType, FinishedGeneration, NewGeneration, NewImage, Storage, UserId, WorkerId
from imageloop.storage import Expansion as StoredExpansion

__all__ = [
    "IntentCase",
    "PersonalizationResult",
    "StrategyScore",
    "build_kept_record",
    "load_cases",
    "personalization_effect",
    "score_strategy",
]


@dataclass(frozen=True, slots=True)
class IntentCase:
    id: str
    language: str
    intent: str
    expected: dict[str, str]


@dataclass
class StrategyScore:
    """One strategy on one language (or ``all``)."""

    strategy: str
    version: str
    language: str
    intents: int
    answered: int
    recall: float
    precision: float
    valid_share: float
    p50_seconds: float
    p95_seconds: float
    examples: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class PersonalizationResult:
    """Taste hits (the user's favourite look in the final prompt) with and without re-ranking."""

    users: int
    intents: int
    kept_per_user: int
    taste_hit_off: float
    taste_hit_on: float
    intent_kept_on: float
    per_user: dict[str, dict[str, float]] = field(default_factory=dict)


def load_cases(paths: Iterable[Path]) -> list[IntentCase]:
    """Test cases from JSONL files (``id``, ``language``, ``intent``, ``expected``)."""
    cases = []
    for path in paths:
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                cases.append(IntentCase(row["id"], row["language"], row["intent"], dict(row["expected"])))
    return cases




def _found(expansion: Expansion | None, lexicon: Lexicon) -> set[tuple[str, str]]:
    if expansion is None:
        return set()
    return {(a, k) for a, keys in lexicon.attributes_in(expansion.prompt).items() for k in keys}


def score_strategy(
    expander: Expander,
    cases: Sequence[IntentCase],
    lexicon: Lexicon,
    *,
    language: str,
    user: str | None = None,
    progress: Callable[[], object] | None = None,
) -> StrategyScore:
    """Run ``expander`` on ``cases`` and score it (see the module docstring)."""
    hits = expected = named = answered = valid = 0
    latencies: list[float] = []
    examples = []
    for case in cases:
        start = time.perf_counter()
        try:
            expansion = expander.expand(case.intent, user=user)
        except Exception as exc:  # a failing strategy scores zero for this intent, the bench goes on
            expansion = None
            examples.append({"id": case.id, "error": f"{type(exc).__name__}: {exc}"})
        latencies.append(time.perf_counter() - start)
        found = _found(expansion, lexicon)
        want = set(case.expected.items())
        hits += len(found & want)
        expected += len(want)
        named += len(found)
        if expansion is not None:
            answered += 1
            valid += not prompt_problems(expansion.prompt)
            if len(examples) < 5:
                examples.append({"id": case.id, "intent": case.intent, "prompt": expansion.prompt})
        if progress is not None:
            progress()
    return StrategyScore(
        strategy=expander.name, version=expander.version, language=language, intents=len(cases), answered=answered,
        recall=hits / expected if expected else 0.0, precision=hits / named if named else 0.0,
        valid_share=valid / len(cases) if cases else 0.0, p50_seconds=percentile(latencies, 0.5),
        p95_seconds=percentile(latencies, 0.95), examples=examples,
    )


def _tags_for(expected: dict[str, str], lexicon: Lexicon) -> str:
    return ", ".join(lexicon.canonical(a, expected[a]) for a in ATTRIBUTE_ORDER if a in expected)


def _keep(storage: Storage, user: UserId, intent: str, prompt: str, language: str | None = None) -> None:
    job = storage.generations.create(user, NewGeneration(intent=intent, intent_language=language))
    [claimed] = storage.generations.claim(WorkerId("bench"))
    storage.generations.record_expansion(claimed.id, StoredExpansion(prompt, expander_strategy="bench"))
    image = NewImage(0, 0, f"bench/{job.id}.png", 64, 64, "0" * 64)
    record = storage.generations.mark_succeeded(job.id, FinishedGeneration(images=[image]))
    storage.actions.record(user, ActionType.LIKE, f"bench-{job.id}", image_id=record.images[0].id)


def build_kept_record(storage: Storage, cases: Sequence[IntentCase], lexicon: Lexicon, *, name: str) -> UserId:
    """A user who kept, for each case, a prompt naming exactly its expected attributes; returns the user id."""
    user, _ = storage.users.create_user(name)
    for case in cases:
        _keep(storage, user.id, case.intent, _tags_for(case.expected, lexicon), case.language)
    return user.id


TASTES: dict[str, dict[str, str]] = {
    "noir": {"colour": "monochrome", "lighting": "cinematic"},
    "golden": {"lighting": "warm", "time": "dusk"},
    "blue-night": {"lighting": "cold", "time": "night"},
    "misty": {"mood": "dreamy", "weather": "fog"},
}
NEUTRAL_INTENTS = (
    "a fox in the forest", "a castle in the mountains", "a car on a city street", "a penguin on the beach",
    "a tent in the woods", "a church in the city", "一只在森林里的狐狸", "海边的帆船", "山里的小房子", "街上的自行车",
    "a wizard", "一个公主",
)


def personalization_effect(
    storage: Storage, memory: PromptMemory, lexicon: Lexicon, *, kept_per_user: int = 6, seed: int = 0
) -> PersonalizationResult:
    """Simulated users each keep ``kept_per_user`` prompts in their taste; neutral intents are then expanded with
    re-ranking off and on, and we count how often the final prompt carries the user's taste."""
    rng = random.Random(seed)
    subjects = lexicon.keys("subject")
    places = lexicon.keys("place")
    users: dict[str, UserId] = {}
    for taste, values in TASTES.items():
        account, _ = storage.users.create_user(f"taste-{taste}")
        users[taste] = account.id
        for _ in range(kept_per_user):
            scene = {"subject": rng.choice(subjects), "place": rng.choice(places), **values}
            _keep(storage, account.id, f"a picture for {taste}", _tags_for(scene, lexicon))
    memory.sync()
    rules = RulesExpander(lexicon)
    plain = ChainExpander([rules], memory=memory, lexicon=lexicon, personalization=False)
    personal = ChainExpander([rules], memory=memory, lexicon=lexicon, personalization=True, min_kept=5)
    off_hits = on_hits = kept_intent = total = 0
    per_user = {}
    for taste, user in users.items():
        want = set(TASTES[taste].items())
        user_off = user_on = 0
        for intent in NEUTRAL_INTENTS:
            asked = set(rules.expand(intent).details["attributes"].items())
            off = _found(plain.expand(intent, user=user), lexicon)
            on = _found(personal.expand(intent, user=user), lexicon)
            user_off += want <= off
            user_on += want <= on
            kept_intent += asked <= on
            total += 1
        off_hits += user_off
        on_hits += user_on
        per_user[taste] = {"off": user_off / len(NEUTRAL_INTENTS), "on": user_on / len(NEUTRAL_INTENTS)}
    return PersonalizationResult(
        users=len(users), intents=len(NEUTRAL_INTENTS), kept_per_user=kept_per_user, taste_hit_off=off_hits / total,
        taste_hit_on=on_hits / total, intent_kept_on=kept_intent / total, per_user=per_user,
    )


def scratch_storage(directory: Path) -> Storage:
    """A fresh SQLite record in ``directory`` for the bench."""
    settings = Settings(data_dir=directory, database_url=f"sqlite:///{directory / 'bench.db'}")
    return Storage.open(settings)


def result_json(scores: Sequence[StrategyScore], personalization: PersonalizationResult | None,
                meta: dict[str, Any]) -> dict[str, Any]:
    return {"meta": meta, "strategies": [asdict(s) for s in scores],
            "personalization": asdict(personalization) if personalization else None}


def plot(scores: Sequence[StrategyScore], path: Path) -> None:
    """A bar chart of recall and precision per strategy and language."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{s.strategy}\n{s.language}" for s in scores]
    xs = range(len(scores))
    fig, ax = plt.subplots(figsize=(max(6, len(scores) * 0.9), 4))
    ax.bar([x - 0.2 for x in xs], [s.recall for s in scores], width=0.4, label="recall")
    ax.bar([x + 0.2 for x in xs], [s.precision for s in scores], width=0.4, label="precision")
    ax.set_xticks(list(xs), labels, fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_title("Expander attribute recall / precision")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def summary_rows(scores: Sequence[StrategyScore]) -> list[list[str]]:
    """Table rows: strategy, language, n, answered, recall, precision, valid, p50, p95."""
    return [[s.strategy, s.language, str(s.intents), f"{s.answered / max(s.intents, 1):.0%}", f"{s.recall:.2f}",
             f"{s.precision:.2f}", f"{s.valid_share:.0%}", f"{s.p50_seconds * 1000:.1f} ms",
             f"{s.p95_seconds * 1000:.1f} ms"] for s in scores]
