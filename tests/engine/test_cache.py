"""The LRU cache used for prompt encodings and results (engine-level cache behaviour is in test_engine)."""

from __future__ import annotations

import threading

import pytest

from imageloop.engine.cache import LRUCache, result_key


def test_evicts_least_recently_used() -> None:
    cache: LRUCache[str, int] = LRUCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # a is now most recent
    cache.put("c", 3)
    assert "b" not in cache and cache.get("a") == 1 and cache.get("c") == 3
    assert cache.stats.hits == 3 and cache.stats.misses == 0 and cache.stats.size == 2


def test_get_or_compute_calls_once() -> None:
    cache: LRUCache[str, int] = LRUCache(4)
    calls = []
    for _ in range(3):
        assert cache.get_or_compute("k", lambda: calls.append(1) or 42) == 42
    assert len(calls) == 1 and cache.stats.misses == 1 and cache.stats.hits == 2


def test_zero_capacity_stores_nothing() -> None:
    cache: LRUCache[str, int] = LRUCache(0)
    cache.put("a", 1)
    assert cache.get("a") is None and len(cache) == 0


def test_negative_capacity_is_rejected() -> None:
    with pytest.raises(ValueError, match="capacity"):
        LRUCache(-1)


def test_thread_safety_keeps_the_bound() -> None:
    cache: LRUCache[int, int] = LRUCache(8)

    def work(offset: int) -> None:
        for i in range(500):
            cache.put(offset + i, i)
            cache.get(offset + i // 2)

    threads = [threading.Thread(target=work, args=(n * 1000,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(cache) == 8


def test_result_key_depends_on_model_version_and_request() -> None:
    assert result_key("req", "v1") == result_key("req", "v1")
    assert result_key("req", "v1") != result_key("req", "v2")
    assert result_key("req", "v1") != result_key("req2", "v1")


def test_weight_bound_evicts_and_refuses_oversized_entries() -> None:
    cache: LRUCache[str, bytes] = LRUCache(10, weigh=len, max_weight=10)
    cache.put("a", b"1234")
    cache.put("b", b"1234")
    cache.put("c", b"1234")  # 12 > 10: "a" goes
    assert "a" not in cache and "b" in cache and "c" in cache
    cache.put("huge", b"x" * 11)
    assert "huge" not in cache and len(cache) == 2
    with pytest.raises(ValueError, match="together"):
        LRUCache(3, max_weight=5)
