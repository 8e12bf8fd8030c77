"""Serve identical fetches once, in the spirit of Gitaly's pack-objects cache.

CI fleets clone the same commit many times at once. An upload-pack answer depends only
on the request, the client's protocol and the repository's refs, so it is kept on disk
under a key made of all three: a repeated request streams the stored bytes, and
requests that arrive while the first is still being answered wait for it and stream the
same bytes. Any ref change makes a new key. Only answers git gave in full (exit 0) are
kept; the cache is bounded in bytes and age.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from forge.repos import open_repo

CHUNK = 64 * 1024


def request_key(repo_dir: Path, protocol: str, body: bytes) -> str:
    """The cache key of one upload-pack request: refs, protocol and request body."""
    digest = hashlib.sha256()
    with open_repo(repo_dir) as repo:
        for name, sha in sorted(repo.refs.as_dict().items()):
            digest.update(name + b" " + sha + b"\n")
        head = repo.refs.read_ref(b"HEAD")  # type: ignore[arg-type]
    digest.update(b"HEAD " + (head or b"") + b"\n" + str(repo_dir).encode() + b"\n")
    digest.update(protocol.encode() + b"\n")
    digest.update(body)
    return digest.hexdigest()


class PackCache:
    """Upload-pack answers on disk, keyed by `request_key`."""

    def __init__(self, root: Path, max_bytes: int, max_age: float) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.max_age = max_age
        self.hits = 0
        self.misses = 0
        self._lock = threading.Lock()
        self._producing: dict[str, threading.Event] = {}

    @property
    def enabled(self) -> bool:
        """Whether answers are kept at all (a size of 0 turns the cache off)."""
        return self.max_bytes > 0

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / key

    def _fresh(self, path: Path) -> bool:
        try:
            return time.time() - path.stat().st_mtime < self.max_age
        except FileNotFoundError:
            return False

    def lookup(self, key: str) -> BinaryIO | None:
        """Open a stored answer, waiting for one being produced; None: produce it yourself.

        The caller that gets None must call `produced(key, ...)` when done, whatever happens.
        """
        while True:
            with self._lock:
                path = self._path(key)
                if self._fresh(path):
                    try:
                        handle = open(path, "rb")  # noqa: SIM115 - returned to the caller
                    except FileNotFoundError:
                        continue
                    self.hits += 1
                    return handle
                event = self._producing.get(key)
                if event is None:
                    self._producing[key] = threading.Event()
                    self.misses += 1
                    return None
            event.wait(timeout=600)

    def record(self, key: str, chunks: Iterator[bytes], succeeded: Callable[[], bool]
               ) -> Iterator[bytes]:
        """Yield `chunks` while writing them to the cache; keep them if `succeeded()` after."""
        directory = self._path(key).parent
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix="tmp-")
        size, keep = 0, True
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in chunks:
                    size += len(chunk)
                    if keep and size <= self.max_bytes:
                        out.write(chunk)
                    else:
                        keep = False
                    yield chunk
            if keep and succeeded():
                os.replace(tmp, self._path(key))
                self._evict()
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
            self.produced(key)

    def produced(self, key: str) -> None:
        """Wake the requests waiting for `key` (stored or not)."""
        with self._lock:
            event = self._producing.pop(key, None)
        if event is not None:
            event.set()

    def _evict(self) -> None:
        """Drop stale answers, then the oldest ones, until the cache fits its size."""
        entries = []
        for path in self.root.glob("*/*"):
            if path.name.startswith("tmp-"):
                continue
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            entries.append((stat.st_mtime, stat.st_size, path))
        entries.sort()
        total = sum(size for _, size, _ in entries)
        now = time.time()
        for mtime, size, path in entries:
            if total <= self.max_bytes and now - mtime < self.max_age:
                break
            path.unlink(missing_ok=True)
            total -= size


def stream_file(handle: BinaryIO) -> Iterator[bytes]:
    """Yield a stored answer in chunks, closing the file at the end."""
    with handle:
        while chunk := handle.read(CHUNK):
            yield chunk
