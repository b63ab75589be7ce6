"""blobwatch.lru: the one LRU cache of the monitor and the registration."""

from __future__ import annotations

import threading

from blobwatch.lru import LRUCache


def test_least_recently_used_goes_first_and_hits_and_misses_are_counted() -> None:
    cache: LRUCache[int] = LRUCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # "b" is now the least recently used
    cache.put("c", 3)
    assert "b" not in cache and "a" in cache and "c" in cache and len(cache) == 2
    assert cache.get("b") is None
    assert (cache.hits, cache.misses) == (1, 1)
    assert LRUCache(0).capacity == 1


def test_threads_share_one_cache_without_losing_entries() -> None:
    cache: LRUCache[int] = LRUCache(1000)

    def fill(offset: int) -> None:
        for i in range(200):
            cache.put(offset + i, i)
            cache.get(offset + i)

    threads = [threading.Thread(target=fill, args=(k * 200,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(cache) == 800 and cache.hits == 800 and cache.misses == 0


def test_peek_and_keys_do_not_count_and_follow_use_order() -> None:
    cache: LRUCache[int] = LRUCache(3)
    for i, key in enumerate(("x", "y", "z")):
        cache.put(key, i)
    assert cache.peek("x") == 0 and cache.peek("missing") is None
    assert cache.keys() == ["y", "z", "x"]  # the peek made "x" the most recently used
    assert (cache.hits, cache.misses) == (0, 0)
