"""pytest plugin: a live forge per test session (per xdist worker), reset before each test.

Fixtures: `forge` (the usual one), `forge_server` (the session's server) and
`forge_factory` (extra, independent forges). Option: `--forge-seed FILE` or the
ini key `forge_seed`, a scenario applied after every reset.
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


def _option(config: pytest.Config, name: str) -> Any:
    value = config.getoption(f"--forge-{name.replace('_', '-')}")
    if value is None or value == "":
        value = config.getini(f"forge_{name}")
    return value


def _start(data_dir: Path, engine: str = "auto") -> ForgeServer:
    from forge.config import ForgeConfig
    from forge.server import ForgeServer

    config = ForgeConfig(data_dir=data_dir, testing=True, password_hash_method="pbkdf2:sha256:1000",
                         git_engine=engine or "auto")
    return ForgeServer(config).start()


@pytest.fixture(scope="session")
def forge_server(tmp_path_factory: pytest.TempPathFactory,
                 pytestconfig: pytest.Config) -> Iterator[ForgeServer]:
    """The session's live forge on 127.0.0.1 and a free port."""
    server = _start(tmp_path_factory.mktemp("forge"), _option(pytestconfig, "git_engine"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def forge_factory(tmp_path_factory: pytest.TempPathFactory,
                  pytestconfig: pytest.Config) -> Iterator[Callable[[], Forge]]:
    """Make extra forges, each with its own server and data; all stop at session end."""
    from forge.testing import Forge

    servers: list[ForgeServer] = []

    def make() -> Forge:
        server = _start(tmp_path_factory.mktemp("forge-extra"), _option(pytestconfig, "git_engine"))
        servers.append(server)
        return Forge(server)

    yield make
    for server in servers:
        server.stop()


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
