"""imageloop.ui."""
