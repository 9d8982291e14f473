"""imageloop.training."""
