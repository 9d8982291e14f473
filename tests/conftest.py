"""Settings for the whole test run."""

from __future__ import annotations

import os

import torch

# No hub, ever: tests build their own tiny models.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# Tiny models run fastest on one thread; more threads only add contention on a 2-core machine.
torch.set_num_threads(1)
