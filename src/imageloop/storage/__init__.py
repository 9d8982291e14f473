"""imageloop.storage."""
