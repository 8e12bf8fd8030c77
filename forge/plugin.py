"""pytest plugin: a live forge per test session (per xdist worker), reset before each test.

Fixtures: `forge` (the usual one), `forge_server` (the session's server) and
`forge_factory` (extra, independent forges), `forge_postgres` (a PostgreSQL server URL
where databases may be created). Options: `--forge-seed FILE` or the ini key
`forge_seed`, a scenario applied after every reset; `--forge-database` (ini
`forge_database`, variable `FORGE_TEST_DATABASE`): `sqlite` (the default),
`postgresql` (a throwaway cluster started for the run, shared by xdist workers) or the
`postgresql://` URL of a server where the tests may create databases; each forge gets its own.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from forge.dockerregistry import RegistryServer
    from forge.server import ForgeServer
    from forge.testing import Forge


def ci_forbids_skips(environ: Mapping[str, str] | None = None) -> bool:
    """Tell whether `CI` is set to anything non-empty: then a missing real client is an error.

    CI systems disagree on the value (`true`, `1`, `yes`); an empty `CI` counts as unset.
    """
    environ = os.environ if environ is None else environ
    return bool(environ.get("CI"))


def pytest_addoption(parser: pytest.Parser) -> None:
    """Register the forge options as flags and ini keys."""
    group = parser.getgroup("forge", "forge: a mock GitLab")
    group.addoption("--forge-seed", default=None, help="seed scenario applied before each test")
    parser.addini("forge_seed", "seed scenario applied before each test", default="")
    group.addoption("--forge-git-engine", default=None, choices=("auto", "git", "dulwich"),
                    help="who answers fetches: git upload-pack, dulwich, or auto (git if installed)")
    parser.addini("forge_git_engine", "who answers fetches: auto, git or dulwich", default="auto")
    group.addoption("--forge-database", default=None,
                    help="sqlite (default), postgresql (a throwaway cluster) or a postgresql:// URL "
                         "where databases may be created (env FORGE_TEST_DATABASE)")
    parser.addini("forge_database", "sqlite, postgresql or a postgresql:// server URL", default="")


# Set by the process that started the run's throwaway cluster; xdist workers (and nested
# pytester runs) inherit it and share that cluster.
CLUSTER_ENV = "FORGE_TEST_POSTGRES_URL"


def database_choice(config: pytest.Config) -> str:
    """The database the run's forges use: "sqlite", "postgresql" or a server URL."""
    value = config.getoption("--forge-database") or config.getini("forge_database") or (
        os.environ.get("FORGE_TEST_DATABASE", "")) or "sqlite"
    from forge.database import is_postgresql

    if value != "sqlite" and not is_postgresql(value):
        raise pytest.UsageError(f"--forge-database: expected sqlite, postgresql or a URL, got {value!r}")
    return str(value)


def pytest_configure(config: pytest.Config) -> None:
    """Start the run's PostgreSQL cluster once, before xdist starts its workers."""
    if database_choice(config) != "postgresql" or os.environ.get(CLUSTER_ENV):
        return
    from forge.pgcluster import PostgresCluster

    cluster = PostgresCluster()
    os.environ[CLUSTER_ENV] = cluster.admin_url
    def stop() -> None:
        os.environ.pop(CLUSTER_ENV, None)
        cluster.stop()

    config.add_cleanup(stop)


def postgres_admin_url(config: pytest.Config) -> str | None:
    """The PostgreSQL server where this run creates its forges' databases; None for SQLite."""
    choice = database_choice(config)
    if choice == "sqlite":
        return None
    if choice == "postgresql":
        return os.environ[CLUSTER_ENV]
    return choice


def _option(config: pytest.Config, name: str) -> Any:
    value = config.getoption(f"--forge-{name.replace('_', '-')}")
    if value is None or value == "":
        value = config.getini(f"forge_{name}")
    return value


def _start(data_dir: Path, engine: str = "auto", admin_url: str | None = None) -> ForgeServer:
    from forge.config import ForgeConfig
    from forge.server import ForgeServer

    database_url = ""
    if admin_url:
        from forge.pgcluster import create_database
        database_url = create_database(admin_url)
    config = ForgeConfig(data_dir=data_dir, testing=True, password_hash_method="pbkdf2:sha256:1000",
                         git_engine=engine or "auto", database_url=database_url)
    return ForgeServer(config).start()


def _stop(server: ForgeServer, admin_url: str | None) -> None:
    server.stop()
    if admin_url:
        from forge.models import db
        from forge.pgcluster import drop_database
        with server.app.app_context():
            db.engine.dispose()
        drop_database(admin_url, server.state.config.database_url)


@pytest.fixture(scope="session")
def forge_server(tmp_path_factory: pytest.TempPathFactory,
                 pytestconfig: pytest.Config) -> Iterator[ForgeServer]:
    """The session's live forge on 127.0.0.1 and a free port."""
    admin_url = postgres_admin_url(pytestconfig)
    server = _start(tmp_path_factory.mktemp("forge"), _option(pytestconfig, "git_engine"), admin_url)
    yield server
    _stop(server, admin_url)


@pytest.fixture(scope="session")
def forge_factory(tmp_path_factory: pytest.TempPathFactory,
                  pytestconfig: pytest.Config) -> Iterator[Callable[[], Forge]]:
    """Make extra forges, each with its own server and data; all stop at session end."""
    from forge.testing import Forge

    servers: list[ForgeServer] = []
    admin_url = postgres_admin_url(pytestconfig)

    def make() -> Forge:
        server = _start(tmp_path_factory.mktemp("forge-extra"), _option(pytestconfig, "git_engine"),
                        admin_url)
        servers.append(server)
        return Forge(server)

    yield make
    for server in servers:
        _stop(server, admin_url)


@pytest.fixture(scope="session")
def forge_postgres(pytestconfig: pytest.Config) -> Iterator[str]:
    """The URL of a PostgreSQL server where tests may create databases (`forge.pgcluster`).

    The run's own (`--forge-database`), or a throwaway cluster started for this session.
    Without PostgreSQL installed it skips, except under `CI=true`, where it fails.
    """
    admin_url = postgres_admin_url(pytestconfig)
    if admin_url:
        yield admin_url
        return
    from forge.pgcluster import PostgresCluster, PostgresUnavailable
    try:
        cluster = PostgresCluster()
    except PostgresUnavailable as exc:
        if ci_forbids_skips():
            pytest.fail(f"{exc} and CI is set, which forbids skipping PostgreSQL tests", pytrace=False)
        pytest.skip(str(exc))
    yield cluster.admin_url
    cluster.stop()


@pytest.fixture
def forge(forge_server: ForgeServer, request: pytest.FixtureRequest) -> Iterator[Forge]:
    """A live, empty forge (plus the configured seed); server errors fail the test."""
    from forge.testing import Forge

    harness = Forge(forge_server)
    harness.reset()
    seed_file = _option(request.config, "seed")
    if seed_file:
        path = Path(seed_file)
        if not path.is_absolute():
            path = Path(request.config.rootpath) / path
        harness.seed(path)
    yield harness
    errors = forge_server.state.take_errors()
    if errors:
        pytest.fail("the forge server raised during this test:\n\n" + "\n".join(errors),
                    pytrace=False)


@pytest.fixture(scope="session")
def forge_registry_server(forge_server: ForgeServer,
                          tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """The session's real Docker registry (Debian's `docker-registry`), trusting the forge."""
    from forge.dockerregistry import RegistryServer, find_binary

    if find_binary() is None:
        message = ("docker-registry is not installed; `make test` installs it "
                   "(apt-get install docker-registry)")
        if ci_forbids_skips():
            pytest.fail(message + " and CI is set, which forbids skipping registry tests", pytrace=False)
        pytest.skip(message)
    server = RegistryServer(forge_server, tmp_path_factory.mktemp("registry"))
    yield server
    server.stop()


@pytest.fixture
def forge_registry(forge: Forge, forge_registry_server: RegistryServer) -> Iterator[RegistryServer]:
    """A real registry with empty storage; while it is in use jobs get CI_REGISTRY_* variables."""
    forge_registry_server.clear()
    state = forge_registry_server.forge.state
    state.config = state.config.replace(registry_url=forge_registry_server.address)
    yield forge_registry_server
    state.config = state.config.replace(registry_url="")
