"""The state every part of a running forge shares, below the protocol modules that use it."""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from flask import Flask

from forge.config import ForgeConfig
from forge.housekeeping import Housekeeper
from forge.packcache import PackCache
from forge.repos import BlobStore, RepositoryBackend

if TYPE_CHECKING:
    from forge.signing import SigningKey


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
    errors: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _signing_key: SigningKey | None = None
    _secret_key: bytes | None = None

    def now(self) -> datetime:
        """Return the forge's current time (tests may swap the clock)."""
        return self.clock()

    def record_error(self, text: str) -> None:
        """Keep a server-side traceback so the test that caused it can fail."""
        with self._lock:
            self.errors.append(text)

    def signing_key(self) -> SigningKey:
        """Return the registry token signing key, creating it (and its certificate) once."""
        with self._lock:
            if self._signing_key is None:
                from forge.signing import load_or_create_key  # cryptography: only when needed
                self._signing_key = load_or_create_key(
                    self.config.signing_key_path, self.config.signing_cert_path, self.now())
            return self._signing_key

    def secret_key(self) -> bytes:
        """Return the forge's own secret (`secret-key` in the data directory), made once.

        It encrypts what the forge must give out again later but never stores in clear:
        the token of a queued job, handed to the runner that takes it.
        """
        with self._lock:
            if self._secret_key is None:
                self._secret_key = _load_or_create_secret(self.config.data_dir / "secret-key")
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
        with self._lock:
            errors, self.errors = self.errors, []
        return errors


def _load_or_create_secret(path: Path) -> bytes:
    """Read a Fernet key from `path`, creating it (mode 0600) if absent; processes that race
    to create it all end up with the one that was linked into place first."""
    if not path.exists():
        import base64
        import secrets
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".secret-")
        try:
            os.write(fd, base64.urlsafe_b64encode(secrets.token_bytes(32)) + b"\n")
            os.close(fd)
            try:
                os.link(temporary, path)
            except FileExistsError:
                pass
        finally:
            os.unlink(temporary)
    return path.read_bytes().strip()


def state_of(app: Flask) -> ForgeState:
    """Return the forge state of an app built by `create_app`."""
    state: ForgeState = app.extensions["forge"]
    return state



