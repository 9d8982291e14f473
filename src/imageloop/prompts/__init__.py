"""imageloop.prompts."""
