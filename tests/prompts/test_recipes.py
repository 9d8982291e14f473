from __future__ import annotations

import pytest

from imageloop.errors import InvalidRequestError, NotFoundError
from imageloop.prompts.recipes import RecipeChooser, fitting_recipes, read_recipe_stats
from imageloop.storage import ActionType, Storage
from imageloop.storage.recipe_choices import RecipeChoiceLog
from tests.prompts.kit import finished, kept
from tests.records import act


def _history(storage: Storage) -> tuple[str, str]:
    ada, _ = storage.users.create_user("ada")
    bob, _ = storage.users.create_user("bob")
    for _ in range(6):
        kept(storage, ada.id, "x", "x", recipe="film")
    for _ in range(6):
        finished(storage, ada.id, "x", "x", recipe="plain")
    kept(storage, bob.id, "x", "x", recipe="plain")
    unliked = kept(storage, bob.id, "x", "x", recipe="film")
    act(storage, bob.id, ActionType.UNLIKE, unliked.images[0].id)
    return ada.id, bob.id


def test_keep_rates_per_user_and_overall_come_from_actions(storage: Storage) -> None:
    ada, bob = _history(storage)
    stats = read_recipe_stats(storage)
    assert (stats.overall["film"].uses, stats.overall["film"].kept) == (7, 6)
    assert (stats.overall["plain"].uses, stats.overall["plain"].kept) == (7, 1)
    assert stats.user(ada)["film"].keep_rate == 1.0 and stats.user(ada)["plain"].keep_rate == 0.0
    assert (stats.user(bob)["film"].kept, stats.user(bob)["plain"].kept) == (0, 1)


def test_thompson_sampling_favours_the_kept_recipe_and_reports_honest_propensities(storage: Storage) -> None:
    ada, _ = _history(storage)
    chooser = RecipeChooser(storage, seed=7, samples=4000)
    picks = [chooser.choose(["film", "plain", "new"], user_id=ada) for _ in range(300)]
    share = {name: sum(p.recipe == name for p in picks) / len(picks) for name in ("film", "plain", "new")}
    assert share["film"] > 0.9 and share["plain"] < 0.05
    film = next(p for p in picks if p.recipe == "film")
    probability = {c["recipe"]: c["probability"] for c in film.candidates}
    assert film.policy == "thompson" and film.propensity == probability["film"]
    assert abs(film.propensity - share["film"]) < 0.05
    assert sum(probability.values()) == pytest.approx(1.0)
    assert 0 < probability["new"] < 0.1  # the never-used recipe still gets explored, a little
    assert all(0 < p.propensity <= 1 for p in picks)


def test_greedy_mode_takes_the_best_posterior_mean_with_propensity_one(storage: Storage) -> None:
    ada, bob = _history(storage)
    chooser = RecipeChooser(storage, thompson=False)
    assert chooser.choose(["plain", "film"], user_id=ada).recipe == "film"
    assert chooser.choose(["plain", "film"], user_id=bob).recipe == "film"  # the global prior outweighs one try
    weak_prior = RecipeChooser(storage, thompson=False, prior_strength=1.0)
    choice = weak_prior.choose(["plain", "film"], user_id=bob)
    assert choice.recipe == "plain"  # with a weak prior, bob's own keeps decide
    assert (choice.propensity, choice.policy) == (1.0, "greedy")
    with pytest.raises(InvalidRequestError):
        chooser.choose([], user_id=ada)


def test_choices_are_logged_once_per_generation(storage: Storage) -> None:
    ada, _ = storage.users.create_user("ada")
    record = finished(storage, ada.id, "x", "x", recipe="film")
    chooser = RecipeChooser(storage, seed=1)
    choice = chooser.choose(["film", "plain"], user_id=ada.id)
    assert chooser.record(record.id, ada.id, choice) is True
    assert chooser.record(record.id, ada.id, choice) is False
    logged = RecipeChoiceLog(storage.sessions).get(record.id)
    assert (logged.recipe, logged.propensity, logged.policy) == (choice.recipe, choice.propensity, "thompson")
    with pytest.raises(NotFoundError):
        RecipeChoiceLog(storage.sessions).get("nope")
    with pytest.raises(InvalidRequestError):
        RecipeChoiceLog(storage.sessions).record(record.id, ada.id, recipe="x", propensity=0.0, policy="p",
                                                 candidates=[])


def test_fitting_recipes_match_the_requests_style() -> None:
    class R:
        def __init__(self, style: str | None) -> None:
            self.style = style

    recipes = {"any": R(None), "film": R("cinematic"), "ink": R("watercolor")}
    assert fitting_recipes(recipes, style="cinematic") == ["any", "film"]
    assert fitting_recipes(recipes, style=None) == ["any"]
