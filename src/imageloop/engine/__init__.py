"""imageloop.engine."""
