"""imageloop.prompts: from a user's intent to the prompt text the engine encodes."""

from imageloop.prompts.weights import parse_weights

__all__ = ["parse_weights"]
