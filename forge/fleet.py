"""Serve one forge from N processes on one port: gunicorn's master and its workers.

`forge serve --workers N` (N > 1) runs here. The master (the `forge serve` process)
holds the data directory's lock for the whole fleet, binds the socket, and does once,
before any worker exists, what a forge does once on start: create or migrate the schema,
make sure root exists, sweep what a crash left, create the registry signing key and
apply `--seed`. Then gunicorn forks N workers (`gthread`: each serves many connections,
so long clones never block others). A worker inherits the master's lock and never takes
or releases it; it opens its own database pool, has its own housekeeping thread (safe
beside the others': repositories are maintained under `flock`s) and shares everything
else through the database and the data directory (see `forge.state`). A worker that
dies, even by `kill -9`, is replaced by the master; the lock stays held.

gunicorn is a well-kept, pre-fork WSGI server with a master that supervises workers;
its `fd://` binding serves the socket `forge serve` bound (and announced) first.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication
from gunicorn.glogging import Logger

from forge.app import create_app
from forge.config import ForgeConfig, http_url
from forge.datadir import DataDirLock
from forge.models import db
from forge.server import redact
from forge.state import ForgeState, state_of

THREADS = 16  # connections each worker serves at once


@dataclass
class Started:
    """The master's forge once it is prepared: what `--seed` needs (as a `ForgeServer` offers)."""

    app: Flask
    state: ForgeState


class RedactingLogger(Logger):  # type: ignore[misc]
    """gunicorn's logger with secret query parameters filtered out of the access log."""

    def atoms(self, resp: Any, req: Any, environ: Any, request_time: Any) -> dict[str, Any]:
        """The access log's fields, without a token."""
        atoms: dict[str, Any] = super().atoms(resp, req, environ, request_time)
        for key in ("r", "q", "U", "f"):
            if isinstance(atoms.get(key), str):
                atoms[key] = redact(atoms[key])
        return atoms


class Fleet(BaseApplication):  # type: ignore[misc]
    """gunicorn, configured in code: N `gthread` workers on an already bound socket."""

    def __init__(self, config: ForgeConfig, lock: DataDirLock, sock: socket.socket, workers: int,
                 quiet: bool) -> None:
        self.forge_config = config
        self.lock = lock
        self.sock = sock
        self.settings: dict[str, Any] = {
            "bind": [f"fd://{sock.fileno()}"],
            "workers": workers,
            "worker_class": "gthread",
            "threads": THREADS,
            "timeout": max(60, config.request_timeout),  # a worker silent this long is replaced
            "graceful_timeout": 5,
            "keepalive": 5,
            "limit_request_line": 0,  # as the in-process server: long paths reach forge's checks
            "limit_request_field_size": 0,
            "accesslog": None if quiet else "-",
            "errorlog": "-",
            "loglevel": "warning" if quiet else "info",
            "logger_class": RedactingLogger,
            "proc_name": "forge",
            "control_socket_disable": True,  # gunicorn 24+: one fixed path that fleets would share
        }
        super().__init__()

    def load_config(self) -> None:
        """Apply the settings (gunicorn reads no command line or config file here)."""
        for key, value in self.settings.items():
            if key in self.cfg.settings:
                self.cfg.set(key, value)

    def load(self) -> Any:
        """Build a worker's app, in the worker, after the fork."""
        return named_worker(create_app(self.forge_config, lock=self.lock, worker=True).wsgi_app)


def named_worker(app: Any) -> Any:
    """Add `X-Forge-Worker: <pid>` to every answer: which process served it, for logs and tests."""
    header = ("X-Forge-Worker", str(os.getpid()))

    def serve(environ: Any, start_response: Any) -> Any:
        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            return start_response(status, [*headers, header], exc_info)
        return app(environ, start)

    return serve


def serve(config: ForgeConfig, lock: DataDirLock, sock: socket.socket, host: str, workers: int, *,
          quiet: bool = False, on_start: Callable[[Started], None] | None = None,
          announce: Callable[[ForgeConfig], None] | None = None) -> None:
    """Run a fleet of `workers` processes on `sock` (bound, its line printed) until SIGTERM
    or SIGINT; `announce` prints the tokens once the app is ready, `on_start` seeds."""
    config = config.replace(base_url=http_url(host, sock.getsockname()[1]))
    sock.listen(2048)  # a deeper queue than one process needs: bursts of CI clients
    sock.set_inheritable(True)
    app = create_app(config, lock=lock)  # the schema, root and the start-up sweep: once, here
    state = state_of(app)
    state.signing_key()  # before the fork: every worker loads the one key
    if announce is not None:
        announce(config)
    if on_start is not None:
        on_start(Started(app, state))
    sys.stdout.flush()
    lock.share()  # other fleets (other hosts) may join from now on
    state.housekeeper.stop()  # the start-up look at each repository ends before the fork
    with app.app_context():
        db.engine.dispose()  # no connection of the master's may be shared by a worker
    Fleet(config, lock, sock, workers, quiet).run()
