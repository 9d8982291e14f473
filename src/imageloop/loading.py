"""One model load at a time in this process: :data:`MODEL_LOADS`.

diffusers and PEFT build a model's layers on the meta device under accelerate's ``init_empty_weights``, which
swaps ``torch.nn.Module.register_parameter`` for the whole process while it runs, not for the loading thread only.
A model built on another thread meanwhile has its parameters re-created through the swapped method: a transformers
model fails (``Parameter.__new__() got an unexpected keyword argument '_is_hf_initialized'``, seen when a training
cycle loaded the prompt LLM while a worker loaded a generator LoRA), others could land on the meta device. The
server loads on several threads (embedded workers, the prompt LLM's worker, training cycles), so every load of a
model or adapter takes this lock. It is re-entrant; hold it only around the load itself, never while waiting for
another thread.
"""

from __future__ import annotations

import threading

__all__ = ["MODEL_LOADS"]

MODEL_LOADS = threading.RLock()
