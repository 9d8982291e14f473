"""imageloop.prompts: from a user's intent to the prompt text the engine encodes."""

from imageloop.prompts.styles import StylePreset, apply_style, get_style, load_styles
from imageloop.prompts.weights import parse_weights

__all__ = ["StylePreset", "apply_style", "get_style", "load_styles", "parse_weights"]
