"""The state every part of a running forge shares, below the protocol modules that use it."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
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

    def take_errors(self) -> list[str]:
        """Return and forget the recorded server errors."""
        with self._lock:
            errors, self.errors = self.errors, []
        return errors


def state_of(app: Flask) -> ForgeState:
    """Return the forge state of an app built by `create_app`."""
    state: ForgeState = app.extensions["forge"]
    return state



