"""imageloop.server."""
