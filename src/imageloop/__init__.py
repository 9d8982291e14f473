"""Imageloop: a self-hosted text-to-image service that retrains itself on its users' reactions."""

__version__ = "0.1.0"
__all__ = ["__version__"]
