"""Own a data directory: one forge at a time holds its lock, and its secrets are private files.

Every forge (`forge serve`, the pytest fixture, `create_app`) takes an exclusive
`fcntl.flock` on `forge.lock` in its data directory for as long as it lives, before it
touches anything else there. A second forge on the same directory fails at once with
`DataDirBusy`, naming the pid that holds it; the kernel drops the lock when the holder
exits, however it exits, so a stale lock file never blocks anybody.

The masters of fleets (`forge serve --workers N`) take it `shared`: several fleets, on one
host or on several hosts mounting the directory, serve one data directory (and one
database) together, and an embedded forge is refused while any of them runs, as they are
while it runs. A master that finds the directory free holds it alone first (`alone`): only
then may it do what needs nobody else there (`--fresh`, the start-up sweep); then it
`share()`s it. Workers inherit their master's descriptor and never take or release it.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from pathlib import Path
from types import TracebackType

from forge.config import SIGNING_CERT, SIGNING_KEY

LOCK_FILE = "forge.lock"
DATABASE_FILE = "forge.db"
PRIVATE_SUFFIXES = ("", "-wal", "-shm", "-journal")


class DataDirBusy(RuntimeError):
    """Another live forge holds this data directory."""


class DataDirLock:
    """The exclusive lock of one data directory, held until `release()` (or process exit)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.path = self.data_dir / LOCK_FILE
        self._fd: int | None = None
        self._owner = 0  # the pid that took it; a forked child (a fleet's worker) shares it
        self.alone = False  # held exclusively: no other forge uses the directory

    @classmethod
    def acquire(cls, data_dir: Path, shared: bool = False) -> DataDirLock:
        """Take the lock of `data_dir` (created if missing), or raise DataDirBusy at once.

        `shared`: a fleet's master, which may join other fleets' masters; `alone` tells
        whether it got the directory to itself.
        """
        lock = cls(data_dir)
        lock.data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            lock.alone = True
        except BlockingIOError:
            try:
                if not shared:
                    raise
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # other fleets: join them
            except BlockingIOError:
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise DataDirBusy(
                    f"data directory {lock.data_dir} is in use by another forge (pid {holder}); "
                    "stop that forge first, or give this one another --data-dir") from None
        if lock.alone:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        lock._fd = fd
        lock._owner = os.getpid()
        return lock

    def share(self) -> None:
        """Let other fleets' masters in, once what needed the directory alone is done."""
        if self._fd is not None and self.alone:
            try:  # a conversion, not atomic: an embedded forge may slip in between
                fcntl.flock(self._fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                fd, self._fd = self._fd, None
                os.close(fd)
                raise DataDirBusy(f"data directory {self.data_dir} was taken by another forge") from None
            self.alone = False

    @property
    def held(self) -> bool:
        """Tell whether this object still holds the lock."""
        return self._fd is not None

    def release(self) -> None:
        """Let another forge take the directory (idempotent).

        In a forked child (a fleet's worker) this only closes the child's copy of the
        descriptor: the lock stays held, and names its holder, while the parent lives.
        """
        if self._fd is not None:
            fd, self._fd = self._fd, None
            if os.getpid() == self._owner and self._last(fd):
                os.ftruncate(fd, 0)
            os.close(fd)  # closing the last descriptor drops the flock

    def _last(self, fd: int) -> bool:
        """Whether no other forge holds the directory (a shared holder checks by taking it alone)."""
        if self.alone:
            return True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def empty(self) -> None:
        """Delete everything in the data directory but the lock itself and the registry's
        signing key and certificate (`forge serve --fresh`): a registry configured to trust
        this forge goes on trusting it, as it would a GitLab that was reset."""
        if self._fd is None or not self.alone:
            raise DataDirBusy(f"data directory {self.data_dir} is in use by another fleet: "
                              "it cannot be emptied now")
        for child in self.data_dir.iterdir():
            if child.name == LOCK_FILE:
                continue
            kept = {p.name for p in (SIGNING_KEY, SIGNING_CERT) if p.parent.name == child.name}
            if kept and child.is_dir() and not child.is_symlink():
                for part in child.iterdir():
                    if part.name not in kept:
                        _remove(part)
                continue
            _remove(child)

    def __enter__(self) -> DataDirLock:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()

    def __del__(self) -> None:
        if self._fd is not None:
            os.close(self._fd)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def make_private(path: Path) -> None:
    """Create `path` (if missing) readable by its owner only, or narrow an existing file to 0600."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def protect_database(data_dir: Path) -> None:
    """Make `forge.db` (password hashes) 0600 before SQLite opens it.

    SQLite gives its -wal, -shm and -journal files the database file's permissions,
    so creating the database 0600 covers them; files left by an older forge are narrowed.
    """
    make_private(data_dir / DATABASE_FILE)
    for suffix in PRIVATE_SUFFIXES[1:]:
        path = data_dir / (DATABASE_FILE + suffix)
        if path.exists():
            make_private(path)
