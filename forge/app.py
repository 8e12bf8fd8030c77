"""Build the forge: `create_app(config)` wires the database, git serving and the control API."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from flask import Flask, jsonify
from flask.signals import got_request_exception
from sqlalchemy import event

from forge import domain
from forge.config import ForgeConfig
from forge.models import db
from forge.repos import BlobStore, RepositoryBackend

if TYPE_CHECKING:
    from forge.registry import SigningKey


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
                from forge.registry import load_or_create_key
                self._signing_key = load_or_create_key(
                    self.config.signing_key_path, self.config.signing_cert_path, self.now())
            return self._signing_key

    def take_errors(self) -> list[str]:
        """Return and forget the recorded server errors."""
        with self._lock:
            errors, self.errors = self.errors, []
        return errors


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    if type(dbapi_connection).__module__.startswith("sqlite3"):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()


def create_app(config: ForgeConfig | None = None, clock: Callable[[], datetime] | None = None
               ) -> Flask:
    """Create a forge app; its state is `app.extensions["forge"]`."""
    config = config or ForgeConfig.from_env()
    if not config.root_token:
        config = config.replace(root_token=domain.new_personal_token())
    config.data_dir.mkdir(parents=True, exist_ok=True)
    config.repositories_dir.mkdir(parents=True, exist_ok=True)

    app = Flask("forge")
    app.config.update(
        SQLALCHEMY_DATABASE_URI=config.sqlalchemy_url,
        SQLALCHEMY_ENGINE_OPTIONS=_engine_options(config.sqlalchemy_url),
        MAX_CONTENT_LENGTH=config.max_body_bytes,
        TESTING=config.testing,
        SECRET_KEY=secrets.token_hex(16),
    )
    state = ForgeState(config, RepositoryBackend(config.repositories_dir),
                       BlobStore(config.data_dir / "lfs"), BlobStore(config.data_dir / "packages"),
                       clock or utcnow)
    app.extensions["forge"] = state
    db.init_app(app)
    with app.app_context():
        event.listen(db.engine, "connect", _sqlite_pragmas)
        db.create_all()
        domain.ensure_root(state.now(), config.root_token, config.root_password,
                           config.password_hash_method)
        db.session.commit()

    def on_exception(sender: Flask, exception: BaseException, **_: Any) -> None:
        import traceback
        state.record_error("".join(traceback.format_exception(exception)))

    got_request_exception.connect(on_exception, app, weak=False)

    @app.get("/-/health")
    def health() -> Any:
        return jsonify(status="ok")

    from forge import api, control, registry
    from forge import lfs as lfs_api
    control.init_app(app)
    registry.init_app(app)
    lfs_api.init_app(app)
    api.init_app(app)

    from forge.gitserve import GitApplication
    app.wsgi_app = GitApplication(state, app, app.wsgi_app)  # type: ignore[method-assign]
    return app


def _engine_options(url: str) -> dict[str, Any]:
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": 30, "check_same_thread": False}}
    return {"pool_pre_ping": True}


def state_of(app: Flask) -> ForgeState:
    """Return the forge state of an app built by `create_app`."""
    state: ForgeState = app.extensions["forge"]
    return state



