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


def test_get_or_make_makes_each_value_once_and_one_at_a_time() -> None:
    cache: LRUCache[str] = LRUCache(4)
    running, most, made = 0, 0, []
    guard = threading.Lock()

    def make(key: str) -> str:
        nonlocal running, most
        with guard:
            running += 1
            most = max(most, running)
        made.append(key)
        threading.Event().wait(0.01)
        with guard:
            running -= 1
        return key.upper()

    threads = [threading.Thread(target=lambda k=k: cache.get_or_make(k, lambda: make(k)))
               for k in ("a", "b", "a", "b", "a")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert most == 1  # makes are serialised
    assert sorted(made) == ["a", "b"]  # a waiting thread finds the value made meanwhile
    assert cache.get_or_make("a", lambda: "never") == "A"


def test_peek_and_keys_do_not_count_and_follow_use_order() -> None:
    cache: LRUCache[int] = LRUCache(3)
    for i, key in enumerate(("x", "y", "z")):
        cache.put(key, i)
    assert cache.peek("x") == 0 and cache.peek("missing") is None
    assert cache.keys() == ["y", "z", "x"]  # the peek made "x" the most recently used
    assert (cache.hits, cache.misses) == (0, 0)
