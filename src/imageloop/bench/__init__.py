"""imageloop.bench."""
