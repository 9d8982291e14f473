"""Recipe statistics and Thompson sampling: which recipe to run when several fit a request.

Keep rates come from the record: a generation with a recipe counts as *used* when it succeeded and as *kept* when
one of its images is kept (:func:`imageloop.flywheel.actions.is_kept`). Each candidate recipe gets a Beta posterior
for this user: a prior centred on the recipe's global keep rate worth ``prior_strength`` uses, updated with the
user's own uses and keeps. Thompson sampling draws from the posteriors and runs the recipe whose draw is highest;
the probability of that pick (the propensity, estimated from ``samples`` joint draws, and the very distribution the
pick is drawn from) is returned and logged (:class:`imageloop.storage.recipe_choices.RecipeChoiceLog`) so later
datasets can be debiased by inverse propensity. With Thompson sampling off, the best posterior mean wins (p = 1).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from imageloop.errors import InvalidRequestError
from imageloop.storage import Storage
from imageloop.storage.action_history import ActionHistory, KeepCounts, RecipeStats
from imageloop.storage.recipe_choices import RecipeChoiceLog

__all__ = ["KeepCounts", "RecipeChoice", "RecipeChooser", "RecipeStats", "fitting_recipes", "read_recipe_stats"]

DEFAULT_SAMPLES = 4000
STATS_TTL_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class RecipeChoice:
    """The recipe to run, the probability it had of being picked, the policy, and each candidate's posterior and
    probability of being picked (so any candidate's inverse propensity can be computed later)."""

    recipe: str
    propensity: float
    policy: str
    candidates: list[dict[str, Any]]


def read_recipe_stats(storage: Storage) -> RecipeStats:
    """Uses and keeps per recipe (overall and per user) from the record."""
    return ActionHistory(storage.sessions).recipe_keep_counts()


def fitting_recipes(recipes: Mapping[str, Any], *, style: str | None) -> list[str]:
    """Recipe names that fit a request with ``style``: recipes without a style, or with that style."""
    return sorted(name for name, recipe in recipes.items() if getattr(recipe, "style", None) in (None, style))


class RecipeChooser:
    """Chooses among fitting recipes with Thompson sampling over per-user Beta posteriors; logs the propensity."""

    def __init__(
        self,
        storage: Storage,
        *,
        thompson: bool = True,
        prior_strength: float = 10.0,
        samples: int = DEFAULT_SAMPLES,
        seed: int | None = None,
    ) -> None:
        self.storage = storage
        self.thompson = thompson
        self.prior_strength = prior_strength
        self.samples = samples
        self.log = RecipeChoiceLog(storage.sessions)
        self._rng = np.random.default_rng(seed)
        self._lock = threading.Lock()
        self._stats: RecipeStats | None = None
        self._stats_at = 0.0

    def stats(self, *, refresh: bool = False) -> RecipeStats:
        """Recipe keep counts, re-read at most every 30 s (or now with ``refresh``)."""
        with self._lock:
            if refresh or self._stats is None or time.monotonic() - self._stats_at > STATS_TTL_SECONDS:
                self._stats = read_recipe_stats(self.storage)
                self._stats_at = time.monotonic()
            return self._stats

    def posteriors(self, candidates: Sequence[str], user_id: str | None) -> np.ndarray:
        """An (n, 2) array of Beta (alpha, beta) per candidate for this user."""
        stats = self.stats()
        mine = stats.user(user_id)
        out = []
        for name in candidates:
            overall = stats.overall.get(name, KeepCounts())
            rate = (overall.kept + 1) / (overall.uses + 2)  # Laplace: an unused recipe starts at 1/2
            own = mine.get(name, KeepCounts())
            out.append((
                1.0 + self.prior_strength * rate + own.kept,
                1.0 + self.prior_strength * (1.0 - rate) + (own.uses - own.kept),
            ))
        return np.asarray(out, dtype=np.float64)

    def choose(self, candidates: Iterable[str], *, user_id: str | None) -> RecipeChoice:
        """Pick one of ``candidates`` (deduplicated); InvalidRequestError when there are none."""
        names = list(dict.fromkeys(candidates))
        if not names:
            raise InvalidRequestError("recipe", "no recipe fits this request")
        params = self.posteriors(names, user_id)
        means = params[:, 0] / params.sum(axis=1)
        with self._lock:
            if self.thompson and len(names) > 1:
                draws = self._rng.beta(params[:, 0], params[:, 1], size=(self.samples, len(names)))
                wins = np.bincount(draws.argmax(axis=1), minlength=len(names)) / self.samples
                # Never exactly 0: an arm that can still win keeps a (tiny) chance and a finite inverse propensity.
                probabilities = np.maximum(wins, 1.0 / self.samples)
                probabilities /= probabilities.sum()
                index = int(self._rng.choice(len(names), p=probabilities))
                policy = "thompson"
            else:
                index, policy = int(np.argmax(means)), "greedy"
                probabilities = np.eye(len(names))[index]
        table = [
            {"recipe": n, "alpha": round(float(a), 4), "beta": round(float(b), 4), "mean": round(float(m), 4),
             "probability": float(pr)}
            for n, (a, b), m, pr in zip(names, params, means, probabilities, strict=True)
        ]
        propensity = float(probabilities[index])
        return RecipeChoice(names[index], propensity, policy, table)

    def record(self, generation_id: str, user_id: str, choice: RecipeChoice) -> bool:
        """Log ``choice`` for the generation it was made for; False when one is already logged."""
        return self.log.record(generation_id, user_id, recipe=choice.recipe, propensity=choice.propensity,
                               policy=choice.policy, candidates=choice.candidates)
