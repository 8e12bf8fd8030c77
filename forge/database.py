"""The database: engine settings per dialect, and the schema created or migrated on start.

SQLite (the embedded default) and PostgreSQL (a fleet, `postgresql://...` through
psycopg 3) are supported. The schema is versioned with Alembic; its revisions are the
files `forge/migrations/versions/NNNN_<what>.py`, numbered `0001`, `0002`, ... (the number
is the revision id, and the highest one is the head). On start, `migrate` brings the
database to the head inside one transaction that holds the schema lock (an advisory lock
on PostgreSQL, an `flock` beside a SQLite file), so N processes starting at once create
or migrate it exactly once:

- a database at the head is left alone (one `SELECT`: Alembic is not even imported);
- an empty database gets the models' tables (`create_all`) and is stamped at the head;
- an older one (or one from before Alembic, without `alembic_version`) is upgraded by
  Alembic, revision by revision.

Adding a column or a table: change `forge/models.py`, then add the next revision file
(see `forge/migrations/__init__.py`); `tests/test_database.py` fails until the revisions
produce exactly the models' schema.
"""

from __future__ import annotations

import fcntl
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Column, MetaData, String, Table, inspect, select, text
from sqlalchemy.engine import Connection, make_url

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
REVISION_FILE = re.compile(r"^(\d{4})_\w+\.py$")
SCHEMA_LOCK_KEY = 0x666F726765  # "forge": pg_advisory_xact_lock's key for schema changes

_version_metadata = MetaData()
alembic_version = Table(  # Alembic's own bookkeeping table, as Alembic creates it
    "alembic_version", _version_metadata,
    Column("version_num", String(32), primary_key=True, nullable=False))


def engine_options(url: str) -> dict[str, Any]:
    """SQLAlchemy engine options: SQLite waits for its writer lock; PostgreSQL pools per process."""
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": 30, "check_same_thread": False}}
    # Each process (the in-thread server, every gunicorn worker) has its own pool; a
    # streamed clone holds no connection, so a small pool serves many requests.
    return {"pool_pre_ping": True, "pool_size": 8, "max_overflow": 16, "pool_timeout": 30,
            "pool_recycle": 3600}


def is_postgresql(url: str) -> bool:
    """Tell whether `url` names a PostgreSQL database."""
    return url.startswith(("postgresql", "postgres:"))


def head_revision() -> str:
    """The newest revision: the highest-numbered file in `forge/migrations/versions`."""
    numbers = [m.group(1) for m in map(REVISION_FILE.match, os.listdir(MIGRATIONS / "versions")) if m]
    return max(numbers)


def current_revision(connection: Connection) -> str | None:
    """The revision the database is stamped with; None without Alembic's table."""
    if not inspect(connection).has_table("alembic_version"):
        return None
    return connection.scalar(select(alembic_version.c.version_num))


@contextmanager
def schema_lock(connection: Connection) -> Iterator[None]:
    """Hold the lock that makes schema changes one process at a time, for this transaction."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK_KEY})
        yield
        return
    database = make_url(str(connection.engine.url)).database
    if connection.dialect.name != "sqlite" or not database or database == ":memory:":
        yield
        return
    with open(f"{database}.schema-lock", "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def migrate(connection: Connection, metadata: MetaData) -> str:
    """Bring the database to the head revision; the caller holds `schema_lock` and commits.

    Returns what was done: "current", "created" or "upgraded from <revision>".
    """
    head = head_revision()
    current = current_revision(connection)
    if current == head:
        return "current"
    if current is None and not inspect(connection).has_table("users"):
        metadata.create_all(connection)
        _version_metadata.create_all(connection)
        connection.execute(alembic_version.insert().values(version_num=head))
        return "created"
    upgrade(connection, "head")
    return f"upgraded from {current or 'a forge older than its migrations'}"


def empty(connection: Connection, metadata: MetaData) -> None:
    """Drop the models' tables and Alembic's, so that the next start creates them anew
    (`forge serve --fresh` on a database outside the data directory); the caller holds
    `schema_lock` and commits. Other tables of a shared database are left alone."""
    metadata.drop_all(connection)
    _version_metadata.drop_all(connection)


def upgrade(connection: Connection, target: str = "head") -> None:
    """Run Alembic's upgrade to `target` on `connection` (inside its transaction)."""
    from alembic.config import Config
    from alembic.runtime.environment import EnvironmentContext
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    script = ScriptDirectory.from_config(config)

    def steps(revision: Any, _context: Any) -> Any:
        return script._upgrade_revs(target, revision)

    with EnvironmentContext(config, script, fn=steps) as environment:
        environment.configure(connection=connection, transactional_ddl=True)
        with environment.begin_transaction():  # joins the caller's transaction
            environment.run_migrations()


def restart_ids(connection: Connection, tables: list[str]) -> None:
    """Make PostgreSQL number new rows from max(id)+1 again, as SQLite does after a delete.

    A reset forge hands out the same ids as a new one (messages name ids: `project #1`).
    """
    if connection.dialect.name != "postgresql" or not tables:
        return
    calls = ", ".join(
        f"setval(pg_get_serial_sequence('{name}', 'id'), "
        f"COALESCE((SELECT MAX(id) FROM \"{name}\"), 0) + 1, false)" for name in tables)
    connection.execute(text(f"SELECT {calls}"))


def _without_nul(value: Any) -> Any:
    if isinstance(value, str) and "\x00" in value:
        return value.replace("\x00", "\N{REPLACEMENT CHARACTER}")
    return value


def _replace_nul(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any,
                 _executemany: bool) -> tuple[str, Any]:
    """PostgreSQL text cannot hold NUL: a lookup by such a name finds nothing, a log shows U+FFFD."""
    if isinstance(parameters, dict):
        parameters = {key: _without_nul(value) for key, value in parameters.items()}
    elif isinstance(parameters, list | tuple):
        parameters = type(parameters)(
            {k: _without_nul(v) for k, v in p.items()} if isinstance(p, dict) else _without_nul(p)
            for p in parameters)
    return statement, parameters


def on_connect(engine: Any) -> None:
    """Per-dialect hooks on a new engine: SQLite's pragmas, PostgreSQL's NUL replacement."""
    from sqlalchemy import event

    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    elif engine.dialect.name == "postgresql":
        event.listen(engine, "before_cursor_execute", _replace_nul, retval=True)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
