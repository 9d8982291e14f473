"""imageloop.flywheel."""
