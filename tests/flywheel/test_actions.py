from __future__ import annotations

import pytest

from imageloop.flywheel.actions import KEPT_ACTIONS, ActionType, is_kept

A = ActionType


@pytest.mark.parametrize(
    ("actions", "kept"),
    [
        ([], False),
        ([A.DOWNLOAD], True),
        ([A.SHARE, A.DISCARD], True),  # the file is out there
        ([A.LIKE], True),
        ([A.LIKE, A.UNLIKE], False),
        ([A.LIKE, A.UNLIKE, A.LIKE], True),
        ([A.LIKE, A.DISCARD], False),
        ([A.REGENERATE, A.EDIT, A.DISCARD], False),
    ],
)
def test_is_kept(actions: list[ActionType], kept: bool) -> None:
    assert is_kept(actions) is kept


@pytest.mark.parametrize("action", list(ActionType))
def test_kept_actions_are_exactly_the_actions_that_keep_an_image_on_their_own(action: ActionType) -> None:
    # The prompt memory reads KEPT_ACTIONS directly: it must agree with is_kept for every action there is.
    assert (action in KEPT_ACTIONS) is is_kept([action])
