"""Build the forge: `create_app(config)` wires the database, git serving and the control API."""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

from flask import Flask, Response, jsonify, request
from flask.signals import got_request_exception
from werkzeug.exceptions import HTTPException
from werkzeug.http import HTTP_STATUS_CODES

from forge import database, domain, events
from forge.config import ForgeConfig
from forge.datadir import DataDirLock, protect_database
from forge.housekeeping import Housekeeper, Limits, sweep_orphans
from forge.models import db
from forge.packcache import PackCache
from forge.repos import BlobStore, RepositoryBackend
from forge.state import ForgeState, state_of, utcnow

__all__ = ["ForgeState", "create_app", "state_of", "utcnow"]

log = logging.getLogger(__name__)


# werkzeug compiles every route with compile(); CPython 3.11 counts the AST converter's
# depth in state all threads share, so forges built in several threads at once could fail
# with "SystemError: AST constructor recursion depth mismatch". One at a time, then.
_ROUTES = threading.Lock()


def create_app(config: ForgeConfig | None = None, clock: Callable[[], datetime] | None = None,
               lock: DataDirLock | None = None, worker: bool = False) -> Flask:
    """Create a forge app; its state is `app.extensions["forge"]`.

    The app holds its data directory's lock (`lock`, or one taken here before anything
    is touched) in `app.extensions["forge_lock"]`; release it when the forge stops.
    A `worker` of a fleet (`forge.fleet`) is given its master's lock and skips what the
    master did once before forking: the schema, the root user and the start-up sweep.
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
        SQLALCHEMY_ENGINE_OPTIONS=database.engine_options(config.sqlalchemy_url),
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
        database.on_connect(db.engine)
        if not worker:
            _prepare_database(config, state.now())
            _sweep_on_start(state, lock.alone)

    def on_exception(sender: Flask, exception: BaseException, **_: Any) -> None:
        import traceback
        state.record_error("".join(traceback.format_exception(exception)))

    got_request_exception.connect(on_exception, app, weak=False)

    def health() -> Any:
        return jsonify(status="ok")

    def reason_phrase(response: Response) -> Response:
        """`401 Unauthorized` in the status line, as GitLab's servers write it (werkzeug
        writes `401 UNAUTHORIZED`)."""
        code = response.status_code
        response.status = f"{code} {HTTP_STATUS_CODES.get(code, 'Unknown')}"
        return response

    app.after_request(reason_phrase)

    from forge import api, control, registry
    from forge import lfs as lfs_api
    with _ROUTES:
        app.get("/-/health")(health)
        control.init_app(app)
        registry.init_app(app)
        lfs_api.init_app(app)
        api.init_app(app)

    def not_routed(exc: HTTPException) -> Response | HTTPException:
        """A route or method no blueprint has never reaches a blueprint's handlers: answer
        it as the API it was meant for (JSON under /api/v4 and /-/forge)."""
        if request.path == "/api/v4" or request.path.startswith("/api/v4/"):
            return api.http_error(exc)
        if request.path.startswith("/-/forge/"):
            return control.http_error(exc)
        return exc

    app.register_error_handler(404, not_routed)
    app.register_error_handler(405, not_routed)

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


def _prepare_database(config: ForgeConfig, now: datetime) -> None:
    """Create or migrate the schema and make sure root exists, once even if N forges start."""
    connection = db.session.connection()
    with database.schema_lock(connection):  # until the commit
        done = database.migrate(connection, db.metadata)
        if done.startswith("upgraded"):
            log.warning("database schema %s to %s", done, database.head_revision())
        domain.ensure_root(now, config.root_token, config.root_password, config.password_hash_method)
        db.session.commit()


def _sweep_on_start(state: ForgeState, alone: bool) -> None:
    """Remove what a crash left (orphan repositories), and look at every repository once."""
    from sqlalchemy import select

    from forge.models import Project
    ids = list(db.session.scalars(select(Project.id)))
    if alone:  # no other forge (another fleet) can be seeding or fetching now
        for name in sweep_orphans(state.backend, ids):
            log.warning("removed repository directory %s: no project owns it", name)
        state.pack_cache.sweep_temporary()
        state.backend.sweep_trash()
    for key in ids:
        state.housekeeper.after_push(key)

