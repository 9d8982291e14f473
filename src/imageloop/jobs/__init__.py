"""imageloop.jobs."""
