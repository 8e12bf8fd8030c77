"""The state every part of a running forge shares, below the protocol modules that use it.

What must be the same in every process of a fleet (`forge serve --workers N`) lives in the
database or the data directory, never only in a process: the clock's offset
(`clock-offset`, read again whenever the file changes) and the server errors a test is to
fail with (`server-errors/`, one file each). The registry signing key is a file created
once under an `flock`; the pack cache is files.
"""

from __future__ import annotations

import fcntl
import logging
import math
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from flask import Flask

from forge.config import ForgeConfig
from forge.housekeeping import Housekeeper
from forge.packcache import PackCache
from forge.repos import BlobStore, RepositoryBackend
from forge.tokens import kept_secret

if TYPE_CHECKING:
    from forge.signing import SigningKey


CLOCK_FILE = "clock-offset"
ERRORS_DIR = "server-errors"
SIGNING_LOCK = "forge-signing.lock"
MAX_ERRORS = 1000  # kept for a test to collect; past that, only the log has them
# How far the clock may move from the real one: any time a forge computes (a token's expiry,
# a job's deadline) stays far inside datetime's years 1..9999.
MAX_CLOCK_YEARS = 100
MAX_CLOCK_OFFSET = timedelta(days=365.25 * MAX_CLOCK_YEARS)

log = logging.getLogger(__name__)


def _offset_in_range(seconds: float) -> bool:
    return math.isfinite(seconds) and abs(seconds) <= MAX_CLOCK_OFFSET.total_seconds()


def _stored_offset(text: str, path: Path) -> timedelta:
    """The offset a clock file holds. One that is no number or out of range (an older forge
    wrote any) is ignored with a warning: else every request would fail, reset included."""
    try:
        seconds = float(text or 0)
    except ValueError:
        seconds = math.nan
    if not _offset_in_range(seconds):
        log.warning("ignoring the clock offset in %s: not a number of seconds within %d years",
                    path, MAX_CLOCK_YEARS)
        return timedelta()
    return timedelta(seconds=seconds)


def utcnow() -> datetime:
    """Return the current UTC time as a naive datetime (how the database stores it)."""
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


@dataclass
class ForgeState:
    """What every part of a running forge shares: config, repositories, clock, server errors."""

    config: ForgeConfig
    backend: RepositoryBackend
    lfs: BlobStore
    packages: BlobStore
    housekeeper: Housekeeper
    pack_cache: PackCache
    clock: Callable[[], datetime] = utcnow
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _signing_key: SigningKey | None = None
    _offset_seen: tuple[int, int, int] | None = None
    _offset: timedelta = timedelta()
    _secret_key: bytes | None = None

    def now(self) -> datetime:
        """Return the forge's current time: its clock plus the shared offset tests set."""
        return self.clock() + self.clock_offset()

    def clock_offset(self) -> timedelta:
        """How far the clock was moved (`set_clock_offset`), by any process of this forge."""
        try:
            stat = os.stat(self.config.data_dir / CLOCK_FILE)
        except FileNotFoundError:
            return timedelta()
        seen = (stat.st_ino, stat.st_mtime_ns, stat.st_size)  # a new file (inode) each change
        if seen != self._offset_seen:
            path = self.config.data_dir / CLOCK_FILE
            try:
                text = path.read_text(errors="replace")
            except FileNotFoundError:
                return timedelta()
            self._offset, self._offset_seen = _stored_offset(text, path), seen
        return self._offset

    def set_clock_offset(self, seconds: float) -> None:
        """Move every process's clock to real time plus `seconds` (0: the real clock).

        Raises ValueError for an offset beyond `MAX_CLOCK_YEARS` either way.
        """
        if not _offset_in_range(seconds):
            raise ValueError(f"the clock may move at most {MAX_CLOCK_YEARS} years from the real time")
        path = self.config.data_dir / CLOCK_FILE
        if not seconds:
            path.unlink(missing_ok=True)
            return
        _write_whole(path, repr(float(seconds)))

    def record_error(self, text: str) -> None:
        """Keep a server-side traceback so the test that caused it can fail (any process's)."""
        errors = self.config.data_dir / ERRORS_DIR
        name = f"{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            errors.mkdir(exist_ok=True)
            if len(os.listdir(errors)) >= MAX_ERRORS:  # nobody collects them (forge serve)
                return
            _write_whole(errors / name, text)
        except OSError:  # the traceback is in the server's log all the same
            log.exception("could not record a server error in %s", errors)

    @property
    def errors(self) -> list[str]:
        """The recorded server errors, oldest first, without forgetting them."""
        return [text for _, text in self._errors()]

    def _errors(self) -> list[tuple[str, str]]:
        directory = self.config.data_dir / ERRORS_DIR
        try:
            names = sorted(n for n in os.listdir(directory) if not n.startswith("."))
        except FileNotFoundError:
            return []
        found = []
        for name in names:
            try:
                found.append((name, (directory / name).read_text()))
            except FileNotFoundError:  # taken meanwhile
                continue
        return found

    def secret_key(self) -> bytes:
        """Return the forge's own secret (`secret-key` in the data directory), made once.

        It encrypts what the forge must give out again later but never stores in clear:
        the token of a queued job, handed to the runner that takes it.
        """
        with self._lock:
            if self._secret_key is None:
                self._secret_key = kept_secret(self.config.data_dir / "secret-key", _new_secret_key).encode()
            return self._secret_key

    def seal(self, text: str) -> str:
        """Encrypt `text` with the forge's secret key."""
        from cryptography.fernet import Fernet
        return Fernet(self.secret_key()).encrypt(text.encode()).decode()

    def unseal(self, sealed: str) -> str:
        """Decrypt what `seal` encrypted."""
        from cryptography.fernet import Fernet
        return Fernet(self.secret_key()).decrypt(sealed.encode()).decode()

    def take_errors(self) -> list[str]:
        """Return and forget the recorded server errors."""
        taken = []
        for name, text in self._errors():
            try:
                (self.config.data_dir / ERRORS_DIR / name).unlink()
            except FileNotFoundError:
                continue
            taken.append(text)
        return taken

    def signing_key(self) -> SigningKey:
        """Return the registry token signing key, creating it (and its certificate) once.

        Processes sharing the data directory create it one at a time (an `flock`), so they
        all sign with one key and serve one certificate.
        """
        with self._lock:
            if self._signing_key is None:
                from forge.signing import load_or_create_key  # cryptography: only when needed
                with open(self.config.data_dir / SIGNING_LOCK, "a+b") as handle:
                    fcntl.flock(handle, fcntl.LOCK_EX)
                    self._signing_key = load_or_create_key(
                        self.config.signing_key_path, self.config.signing_cert_path, self.now())
            return self._signing_key


def _new_secret_key() -> str:
    import base64
    import secrets
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()


def _write_whole(path: Path, text: str) -> None:
    """Write `path` so that other processes see the old file or the whole new one (a new
    inode each time), never a part: a dot file beside it, renamed into place."""
    tmp = path.with_name(f".{path.name}-{uuid.uuid4().hex}")
    tmp.write_text(text)
    os.replace(tmp, path)


def state_of(app: Flask) -> ForgeState:
    """Return the forge state of an app built by `create_app`."""
    state: ForgeState = app.extensions["forge"]
    return state



