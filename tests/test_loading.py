"""One model load at a time in the process: a model built on one thread while another thread is inside accelerate's
``init_empty_weights`` (how diffusers and PEFT load) is broken; the loads Imageloop makes take MODEL_LOADS, so they
never overlap."""

from __future__ import annotations

import threading

import torch

from imageloop.loading import MODEL_LOADS
from tests.training.tiny_lm import tiny_lm, tiny_tokenizer


def _build_while_another_thread_loads(lock: bool) -> torch.nn.Module | BaseException:
    """Thread A enters ``init_empty_weights`` (taking MODEL_LOADS when ``lock``) and holds it; meanwhile this thread
    builds a tiny transformers model (under MODEL_LOADS when ``lock``). The model, or what building it raised."""
    from accelerate import init_empty_weights

    inside, leave = threading.Event(), threading.Event()

    def hold() -> None:
        with MODEL_LOADS if lock else threading.Lock(), init_empty_weights():
            inside.set()
            leave.wait(timeout=30)

    holder = threading.Thread(target=hold)
    holder.start()
    assert inside.wait(timeout=30)
    timer = threading.Timer(0.5, leave.set)  # with the lock, A must let go before this thread can build
    timer.start()
    try:
        with MODEL_LOADS if lock else threading.Lock():
            return tiny_lm(tiny_tokenizer())
    except Exception as exc:
        return exc
    finally:
        leave.set()
        holder.join()
        timer.cancel()


def _broken(result: torch.nn.Module | BaseException) -> bool:
    return isinstance(result, BaseException) or any(p.is_meta for p in result.parameters())


def test_without_the_lock_a_model_built_beside_an_empty_weights_load_is_broken() -> None:
    assert _broken(_build_while_another_thread_loads(lock=False))


def test_with_the_lock_the_model_is_built_after_the_load_and_is_whole() -> None:
    assert not _broken(_build_while_another_thread_loads(lock=True))


def test_the_engines_load_context_holds_the_lock() -> None:
    from imageloop.engine.loader import quiet_loading

    taken: list[bool] = []
    with quiet_loading():
        other = threading.Thread(target=lambda: taken.append(MODEL_LOADS.acquire(timeout=0.1)))
        other.start()
        other.join()
    assert taken == [False]
