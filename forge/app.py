"""Build the forge: `create_app(config)` wires the database, git serving and the control API."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from datetime import datetime
from typing import Any

from flask import Flask, jsonify
from flask.signals import got_request_exception
from sqlalchemy import event

from forge import domain, events
from forge.config import ForgeConfig
from forge.datadir import DataDirLock, protect_database
from forge.housekeeping import Housekeeper, Limits, sweep_orphans
from forge.models import add_missing_columns, db
from forge.packcache import PackCache
from forge.repos import BlobStore, RepositoryBackend
from forge.state import ForgeState, state_of, utcnow

__all__ = ["ForgeState", "create_app", "state_of", "utcnow"]

log = logging.getLogger(__name__)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    if type(dbapi_connection).__module__.startswith("sqlite3"):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()


def create_app(config: ForgeConfig | None = None, clock: Callable[[], datetime] | None = None,
               lock: DataDirLock | None = None) -> Flask:
    """Create a forge app; its state is `app.extensions["forge"]`.

    The app holds its data directory's lock (`lock`, or one taken here before anything
    is touched) in `app.extensions["forge_lock"]`; release it when the forge stops.
    """
    config = config or ForgeConfig.from_env()
    lock = lock or DataDirLock.acquire(config.data_dir)
    if not config.root_token:
        config = config.replace(root_token=domain.new_personal_token())
    if not config.runner_registration_token:
        from forge.tokens import new_registration_token
        config = config.replace(runner_registration_token=new_registration_token())
    config.repositories_dir.mkdir(parents=True, exist_ok=True)
    if not config.database_url:
        protect_database(config.data_dir)

    app = Flask("forge")
    app.config.update(
        SQLALCHEMY_DATABASE_URI=config.sqlalchemy_url,
        SQLALCHEMY_ENGINE_OPTIONS=_engine_options(config.sqlalchemy_url),
        MAX_CONTENT_LENGTH=config.max_body_bytes,
        TESTING=config.testing,
        SECRET_KEY=secrets.token_hex(16),
    )
    backend = RepositoryBackend(config.repositories_dir)
    housekeeper = Housekeeper(backend, Limits(config.repack_packs, config.repack_loose_objects))
    pack_cache = PackCache(config.data_dir / "pack-cache", config.pack_cache_bytes,
                           config.pack_cache_seconds)
    state = ForgeState(config, backend, BlobStore(config.data_dir / "lfs"),
                       BlobStore(config.data_dir / "packages"), housekeeper, pack_cache,
                       clock or utcnow)
    app.extensions["forge"] = state
    app.extensions["forge_lock"] = lock
    db.init_app(app)
    with app.app_context():
        event.listen(db.engine, "connect", _sqlite_pragmas)
        db.create_all()
        for column in add_missing_columns(db.engine):
            log.info("added column %s to the database of an older forge", column)
        domain.ensure_root(state.now(), config.root_token, config.root_password,
                           config.password_hash_method)
        db.session.commit()
        _sweep_on_start(state)

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

    def prune_events() -> None:
        if config.event_retention:
            with app.app_context():
                events.prune(config.event_retention)
                db.session.commit()

    def fail_timed_out_jobs() -> None:  # also done on every runner request: this is for idle forges
        from forge.runners import fail_timed_out
        with app.app_context():
            fail_timed_out(state.now())
            db.session.commit()

    housekeeper.every(60, prune_events)
    housekeeper.every(15, fail_timed_out_jobs)
    housekeeper.start()
    return app


def _sweep_on_start(state: ForgeState) -> None:
    """Remove what a crash left (orphan repositories), and look at every repository once."""
    from sqlalchemy import select

    from forge.models import Project
    ids = list(db.session.scalars(select(Project.id)))
    for name in sweep_orphans(state.backend, ids):  # the data directory's lock is held
        log.warning("removed repository directory %s: no project owns it", name)
    for key in ids:
        state.housekeeper.after_push(key)


def _engine_options(url: str) -> dict[str, Any]:
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": 30, "check_same_thread": False}}
    return {"pool_pre_ping": True}
