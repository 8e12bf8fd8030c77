"""Serve identical fetches once, in the spirit of Gitaly's pack-objects cache.

CI fleets clone the same commit many times at once. An upload-pack answer depends only
on the request, the client's protocol and the repository's refs, so it is kept on disk
under a key made of all three: a repeated request streams the stored bytes, and
requests that arrive while the first is still being answered follow it, streaming the
same bytes as they are written. Any ref change makes a new key. Only answers git gave in
full (exit 0) are kept; the cache is bounded in bytes and age.

The processes of a fleet share the directory: answers are stored by an atomic rename, so
a reader sees a whole answer or none, and a file deleted while read stays readable. Each
process follows only its own productions (another process's identical request produces
the same answer once more). A process killed while producing leaves a `tmp-` file: the
start-up sweep and eviction (past `STALE_SECONDS`) remove them.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import BinaryIO

CHUNK = 64 * 1024
ADVERTISEMENTS = 64  # ref advertisements kept in memory (a few KB each, 100 KB for 2,000 tags)
STALE_SECONDS = 3600  # a `tmp-` file untouched this long belongs to no live production


def refs_state(repo_dir: Path) -> bytes:
    """What upload-pack's answers depend on in a repository: HEAD, packed-refs and every
    loose ref, read as files (no repository opened), so that any ref change changes it."""
    parts = [_read(repo_dir / "HEAD"), _read(repo_dir / "packed-refs")]
    refs = repo_dir / "refs"
    for root, dirs, files in os.walk(refs):
        dirs.sort()
        for name in sorted(files):
            if not name.endswith(".lock"):
                path = Path(root, name)
                parts.append(str(path.relative_to(refs)).encode() + b" " + _read(path))
    return b"\n".join(parts)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return b""


def request_key(repo_dir: Path, protocol: str, body: bytes, *, advertisement: bool = False) -> str:
    """The cache key of one upload-pack request (or of the ref advertisement): the
    repository and its refs, the protocol and the request body."""
    digest = hashlib.sha256()
    digest.update(str(repo_dir).encode() + b"\n" + refs_state(repo_dir) + b"\n")
    digest.update(b"advertisement\n" if advertisement else b"request\n")
    digest.update(protocol.encode() + b"\n")
    digest.update(body)
    return digest.hexdigest()


class _Production:
    """An answer being written by the request that asked first, followed by the others."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.size = 0
        self.done = False
        self.complete = False  # every byte git wrote is in the file
        self.followers = 0
        self.changed = threading.Condition()


class PackCache:
    """Upload-pack answers on disk, keyed by `request_key`."""

    def __init__(self, root: Path, max_bytes: int, max_age: float) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.max_age = max_age
        self.hits = 0
        self.misses = 0
        self._lock = threading.Lock()
        self._producing: dict[str, _Production] = {}
        self._advertisements: OrderedDict[str, bytes] = OrderedDict()

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

    def advertisement(self, key: str, produce: Callable[[], bytes]) -> bytes:
        """The ref advertisement `key` names, from memory or `produce()` (then kept)."""
        with self._lock:
            data = self._advertisements.get(key)
            if data is not None:
                self._advertisements.move_to_end(key)
                return data
        data = produce()
        with self._lock:
            self._advertisements[key] = data
            while len(self._advertisements) > ADVERTISEMENTS:
                self._advertisements.popitem(last=False)
        return data

    def lookup(self, key: str) -> Iterator[bytes] | None:
        """The answer to stream: stored, or being written by an identical request (followed
        as it grows); None when the caller is to produce it with `record` (or `abandon`)."""
        with self._lock:
            path = self._path(key)
            if self._fresh(path):
                try:
                    handle = open(path, "rb")  # noqa: SIM115 - closed by the stream
                except FileNotFoundError:
                    pass
                else:
                    self.hits += 1
                    return stream_file(handle)
            production = self._producing.get(key)
            if production is not None:
                handle = open(production.tmp, "rb")  # noqa: SIM115 - closed by the stream
                production.followers += 1
                self.hits += 1
                return _follow(production, handle)
            self.root.joinpath(key[:2]).mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.root / key[:2], prefix="tmp-")
            os.close(fd)
            self._producing[key] = _Production(Path(tmp))
            self.misses += 1
            return None

    def record(self, key: str, chunks: Iterator[bytes], succeeded: Callable[[], bool]
               ) -> Iterator[bytes]:
        """Yield `chunks` while writing them for followers and the cache; keep them if
        `succeeded()` after. If the caller leaves early, the rest is still written for the
        requests following it; with none, writing stops."""
        production = self._producing[key]
        try:
            with open(production.tmp, "ab") as out:
                for chunk in chunks:
                    self._write(production, out, chunk)
                    try:
                        yield chunk
                    except GeneratorExit:
                        with self._lock:
                            if production.followers == 0:  # and from now on nobody follows
                                self._producing.pop(key, None)
                                return
                        for rest in chunks:  # finish the answer for those following it
                            self._write(production, out, rest)
                        break
            production.complete = True
            if succeeded() and production.size <= self.max_bytes:
                os.replace(production.tmp, self._path(key))  # followers keep reading it
                self._evict()
        finally:
            with self._lock:
                self._producing.pop(key, None)
            _end(production)

    @staticmethod
    def _write(production: _Production, out: BinaryIO, chunk: bytes) -> None:
        out.write(chunk)
        out.flush()
        with production.changed:
            production.size += len(chunk)
            production.changed.notify_all()

    def abandon(self, key: str) -> None:
        """Give up producing `key` (idempotent): followers stop at what was written."""
        with self._lock:
            production = self._producing.pop(key, None)
        if production is not None:
            _end(production)

    def sweep_temporary(self) -> list[Path]:
        """Remove every unfinished answer (only while no forge uses the data directory)."""
        removed = list(self.root.glob("*/tmp-*"))
        for path in removed:
            path.unlink(missing_ok=True)
        return removed

    def _evict(self) -> None:
        """Drop stale answers, then the oldest ones, until the cache fits its size."""
        entries = []
        now = time.time()
        for path in self.root.glob("*/*"):
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            if path.name.startswith("tmp-"):
                if now - stat.st_mtime > STALE_SECONDS:  # its process died producing it
                    path.unlink(missing_ok=True)
                continue
            entries.append((stat.st_mtime, stat.st_size, path))
        entries.sort()
        total = sum(size for _, size, _ in entries)
        for mtime, size, path in entries:
            if total <= self.max_bytes and now - mtime < self.max_age:
                break
            path.unlink(missing_ok=True)
            total -= size


def _end(production: _Production) -> None:
    """Mark a production finished, wake its followers, and drop its file unless stored."""
    with production.changed:
        production.done = True
        production.changed.notify_all()
    production.tmp.unlink(missing_ok=True)  # followers keep their open handles


def _grown(production: _Production, offset: int) -> bool:
    return production.size > offset or production.done


def _follow(production: _Production, handle: BinaryIO) -> Iterator[bytes]:
    """Stream an answer as its producer writes it; fail if it ends short of git's answer."""
    with handle:
        offset = 0
        while True:
            chunk = handle.read(CHUNK)
            if chunk:
                offset += len(chunk)
                yield chunk
                continue
            with production.changed:
                production.changed.wait_for(partial(_grown, production, offset), timeout=600)
                if production.size > offset:
                    continue
                if production.complete:
                    return
            raise OSError("the answer this request followed ended early")


def stream_file(handle: BinaryIO) -> Iterator[bytes]:
    """Yield a stored answer in chunks, closing the file at the end."""
    with handle:
        while chunk := handle.read(CHUNK):
            yield chunk
