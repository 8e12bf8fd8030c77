"""A throwaway PostgreSQL for tests: a cluster `initdb`'d in a temporary directory.

It listens on a Unix socket in its own directory only (no TCP port to collide on), trusts
local connections, and trades durability for speed (`fsync=off`): a test database, never
data to keep. PostgreSQL refuses to run as root, so as root the cluster belongs to the
`postgres` user that Debian's package creates (`runuser -u postgres`). Every forge gets
its own database (`create_database`), so forges sharing one cluster never see each other.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

from forge import inputs

SUPERUSER = "postgres"
SETTINGS = {
    "listen_addresses": "",  # the Unix socket only
    "fsync": "off", "synchronous_commit": "off", "full_page_writes": "off",
    "max_connections": "400",  # fleets of workers, each with a pool, in one test session
    "shared_buffers": "64MB",
}


class PostgresUnavailable(RuntimeError):
    """PostgreSQL's server programs are not installed (Debian: `apt-get install postgresql`)."""


def find_program(name: str) -> str | None:
    """Find a PostgreSQL server program: on PATH, else in Debian's /usr/lib/postgresql/<v>/bin."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                        key=lambda p: int(Path(p).parts[-3]) if inputs.digits(Path(p).parts[-3]) else 0)
    return candidates[-1] if candidates else None


def database_url(admin_url: str, name: str) -> str:
    """The URL of database `name` on the server `admin_url` points at."""
    from sqlalchemy.engine import make_url

    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def create_database(admin_url: str, name: str | None = None) -> str:
    """Create an empty database (a fresh name by default) and return its URL."""
    import psycopg

    name = name or f"forge_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_libpq(admin_url), autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    return database_url(admin_url, name)


def drop_database(admin_url: str, url: str) -> None:
    """Drop the database `url` names, disconnecting whoever still uses it."""
    import psycopg
    from sqlalchemy.engine import make_url

    name = make_url(url).database
    with psycopg.connect(_libpq(admin_url), autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _libpq(url: str) -> str:
    """A SQLAlchemy-style URL as libpq takes it (without `+psycopg`)."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


class PostgresCluster:
    """A PostgreSQL server of its own, in a temporary directory, until `stop()`."""

    def __init__(self) -> None:
        initdb, pg_ctl = find_program("initdb"), find_program("pg_ctl")
        if initdb is None or pg_ctl is None:
            raise PostgresUnavailable(
                "PostgreSQL's server is not installed (initdb, pg_ctl); `make test` installs it "
                "(apt-get install postgresql)")
        self.pg_ctl = pg_ctl
        self.root = Path(tempfile.mkdtemp(prefix="forge-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self._as: list[str] = []
        if os.geteuid() == 0:  # PostgreSQL will not run as root
            user = pwd.getpwnam(SUPERUSER)
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self._as = ["runuser", "-u", SUPERUSER, "--"]
        self._run([initdb, "-D", str(self.data), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8",
                   "--locale=C", "--no-sync", "--no-instructions"])
        options = " ".join(f"-c {key}={value}" for key, value in SETTINGS.items())
        self._run([pg_ctl, "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
                   "-o", f"-k {self.root} {options}", "start"])
        self.admin_url = f"postgresql+psycopg://{SUPERUSER}@/postgres?host={self.root}"

    def _run(self, command: list[str]) -> None:
        result = subprocess.run([*self._as, *command], capture_output=True, text=True,
                                stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            shutil.rmtree(self.root, ignore_errors=True)
            raise RuntimeError(f"{Path(command[0]).name} failed:\n{result.stdout}{result.stderr}{log}")

    def create_database(self, name: str | None = None) -> str:
        """Create an empty database on this cluster and return its URL."""
        return create_database(self.admin_url, name)

    def stop(self) -> None:
        """Stop the server at once and delete its directory."""
        subprocess.run([*self._as, self.pg_ctl, "-D", str(self.data), "-m", "immediate", "-w",
                        "stop"], capture_output=True, stdin=subprocess.DEVNULL)
        shutil.rmtree(self.root, ignore_errors=True)
