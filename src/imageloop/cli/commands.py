"""Imports every command module in this package so their decorators register against ``app``.

A new command is a new module here (``cli/generate.py`` with ``@app.command()``, or
``@bench_app.command("engine")`` from :mod:`imageloop.cli.groups`); nothing else needs editing.
"""

from __future__ import annotations

import importlib
import pkgutil

import imageloop.cli as _cli

for _info in sorted(pkgutil.iter_modules(_cli.__path__), key=lambda m: m.name):
    if _info.name not in {"commands"}:
        importlib.import_module(f"imageloop.cli.{_info.name}")
