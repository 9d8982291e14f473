"""Shared fixtures for the embedded-model tests."""

from __future__ import annotations

import pytest

from imageloop.training.base.sprites import find_emoji_font

needs_emoji_font = pytest.mark.skipif(
    find_emoji_font() is None,
    reason="Debian font fonts-noto-color-emoji is not installed (apt-get install -y fonts-noto-color-emoji)",
)
