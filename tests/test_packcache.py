"""The pack cache on its own: followers stream what the first request writes, as it writes it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from forge.packcache import PackCache

KEY = "ab" + "0" * 62


def chunks(count: int) -> Iterator[bytes]:
    for n in range(count):
        yield f"chunk {n};".encode()


def test_follower_streams_while_the_first_request_writes(tmp_path: Path) -> None:
    cache = PackCache(tmp_path, max_bytes=1 << 20, max_age=300)
    assert cache.lookup(KEY) is None  # the first asks git
    producer = cache.record(KEY, chunks(5), succeeded=lambda: True)
    first = [next(producer), next(producer)]
    follower = cache.lookup(KEY)
    assert follower is not None
    assert next(follower) == b"".join(first)  # what is written so far, at once
    rest = list(producer)
    assert b"".join(follower) == b"".join(rest)
    stored = cache.lookup(KEY)  # and later requests read the stored answer
    assert stored is not None and b"".join(stored) == b"".join(chunks(5))
    assert (cache.hits, cache.misses) == (2, 1)


def test_first_request_leaving_still_finishes_the_answer_for_its_followers(tmp_path: Path) -> None:
    cache = PackCache(tmp_path, max_bytes=1 << 20, max_age=300)
    assert cache.lookup(KEY) is None
    producer = cache.record(KEY, chunks(6), succeeded=lambda: True)
    next(producer)
    follower = cache.lookup(KEY)
    assert follower is not None
    producer.close()  # its client went away
    assert b"".join(follower) == b"".join(chunks(6))
    stored = cache.lookup(KEY)
    assert stored is not None and b"".join(stored) == b"".join(chunks(6))


def test_first_request_leaving_alone_stores_nothing(tmp_path: Path) -> None:
    cache = PackCache(tmp_path, max_bytes=1 << 20, max_age=300)
    assert cache.lookup(KEY) is None
    producer = cache.record(KEY, chunks(6), succeeded=lambda: True)
    next(producer)
    producer.close()
    assert cache.lookup(KEY) is None  # asked afresh
    cache.abandon(KEY)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_failed_answer_reaches_followers_but_is_not_kept(tmp_path: Path) -> None:
    cache = PackCache(tmp_path, max_bytes=1 << 20, max_age=300)
    assert cache.lookup(KEY) is None
    producer = cache.record(KEY, chunks(3), succeeded=lambda: False)  # git exited non-zero
    next(producer)
    follower = cache.lookup(KEY)
    assert follower is not None
    list(producer)
    assert b"".join(follower) == b"".join(chunks(3))  # the same bytes git gave the first
    assert cache.lookup(KEY) is None


def test_answers_larger_than_the_cache_are_followed_but_not_kept(tmp_path: Path) -> None:
    cache = PackCache(tmp_path, max_bytes=20, max_age=300)
    assert cache.lookup(KEY) is None
    producer = cache.record(KEY, chunks(10), succeeded=lambda: True)
    next(producer)
    follower = cache.lookup(KEY)
    assert follower is not None
    list(producer)
    assert b"".join(follower) == b"".join(chunks(10))
    assert cache.lookup(KEY) is None


def test_follower_of_a_request_that_failed_before_a_byte_is_told_so(tmp_path: Path) -> None:
    import pytest
    cache = PackCache(tmp_path, max_bytes=1 << 20, max_age=300)
    assert cache.lookup(KEY) is None
    follower = cache.lookup(KEY)
    assert follower is not None
    cache.abandon(KEY)  # git answered nothing (the first request got a 400)
    with pytest.raises(OSError, match="ended early"):
        next(follower)
    assert cache.lookup(KEY) is None  # whoever asks next asks git again
