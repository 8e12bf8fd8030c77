"""The schema: revisions that match the models, upgrades of old databases, and N forges starting at once."""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, inspect, select, text

from forge import database
from forge.config import ForgeConfig
from forge.models import User, db
from forge.server import ForgeServer

Database = Callable[[], str]


@pytest.fixture
def new_database(pytestconfig: pytest.Config, tmp_path: Path) -> Iterator[Database]:
    """Make empty databases of the run's kind: SQLite files, or PostgreSQL databases."""
    from forge.pgcluster import create_database, drop_database
    from forge.plugin import postgres_admin_url

    admin_url = postgres_admin_url(pytestconfig)
    made: list[str] = []

    def make() -> str:
        url = create_database(admin_url) if admin_url else f"sqlite:///{tmp_path}/db{len(made)}.sqlite"
        made.append(url)
        return url

    yield make
    if admin_url:
        for url in made:
            drop_database(admin_url, url)


def _config(data_dir: Path, url: str) -> ForgeConfig:
    return ForgeConfig(data_dir=data_dir, database_url=url, testing=True,
                       password_hash_method="pbkdf2:sha256:1000")


def test_database_revisions_build_exactly_the_models_schema(new_database: Database) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    engine = create_engine(ForgeConfig(database_url=new_database()).sqlalchemy_url)
    try:
        with engine.begin() as connection:
            database.upgrade(connection)  # every revision, from nothing
        with engine.connect() as connection:
            assert database.current_revision(connection) == database.head_revision()
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            differences = compare_metadata(context, db.metadata)
    finally:
        engine.dispose()
    assert differences == [], "forge/migrations/versions lacks a revision for these model changes"


def test_database_new_one_is_created_and_stamped_at_the_head(new_database: Database,
                                                             tmp_path: Path) -> None:
    url = new_database()
    ForgeServer(_config(tmp_path / "a", url)).start().stop()
    engine = create_engine(ForgeConfig(database_url=url).sqlalchemy_url)
    try:
        with engine.connect() as connection:
            assert database.current_revision(connection) == database.head_revision()
            assert "users" in inspect(connection).get_table_names()
            assert database.migrate(connection, db.metadata) == "current"
    finally:
        engine.dispose()


def test_database_from_before_migrations_gets_missing_columns(new_database: Database,
                                                              tmp_path: Path) -> None:
    url = new_database()
    ForgeServer(_config(tmp_path / "a", url)).start().stop()
    engine = create_engine(ForgeConfig(database_url=url).sqlalchemy_url)
    try:
        with engine.begin() as connection:  # as a forge before push options and before Alembic
            connection.execute(text("ALTER TABLE events DROP COLUMN push_options"))
            connection.execute(text("DROP TABLE alembic_version"))
        server = ForgeServer(_config(tmp_path / "b", url)).start()
        server.stop()
        with engine.connect() as connection:
            columns = {c["name"] for c in inspect(connection).get_columns("events")}
            assert "push_options" in columns
            assert database.current_revision(connection) == database.head_revision()
    finally:
        engine.dispose()


def test_database_eight_forges_starting_at_once_create_it_once(new_database: Database,
                                                               tmp_path: Path) -> None:
    url = new_database()
    barrier = threading.Barrier(8)
    servers: list[ForgeServer] = []
    failures: list[BaseException] = []

    def start(n: int) -> None:
        barrier.wait()
        try:
            servers.append(ForgeServer(_config(tmp_path / f"d{n}", url).replace(
                root_token="glpat-same-root-token-for-all")))
        except BaseException as exc:  # reported below
            failures.append(exc)

    threads = [threading.Thread(target=start, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    for server in servers:
        server.stop()
    assert failures == [], "".join(traceback.format_exception(failures[0]))
    engine = create_engine(ForgeConfig(database_url=url).sqlalchemy_url)
    try:
        with engine.connect() as connection:
            assert connection.scalar(select(func.count()).select_from(User)) == 1  # one root
            assert connection.scalar(text("SELECT count(*) FROM alembic_version")) == 1
    finally:
        engine.dispose()
