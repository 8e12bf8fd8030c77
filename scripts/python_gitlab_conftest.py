"""python-gitlab's functional tests against a fresh `forge serve` instead of a GitLab container.

`scripts/python-gitlab-suite.sh` copies this file to `tests/functional/api/conftest.py` in
python-gitlab's sdist. It replaces the fixtures that start and reset a docker GitLab
(`gitlab_url`, `gitlab_token`, `gl`) and leaves every other fixture as python-gitlab wrote it.
The forge is started once per run, in a new data directory, with a fixed root token;
`FORGE_URL` and `FORGE_TOKEN` point the tests at a running forge instead.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import tempfile
from collections.abc import Iterator

import gitlab
import pytest


@pytest.fixture(scope="session")
def forge_service() -> Iterator[tuple[str, str]]:
    """A fresh forge for the session: its URL and root token."""
    if os.environ.get("FORGE_URL"):
        yield os.environ["FORGE_URL"].rstrip("/"), os.environ["FORGE_TOKEN"]
        return
    token = "glpat-" + secrets.token_urlsafe(15)
    with tempfile.TemporaryDirectory(prefix="forge-python-gitlab-") as data_dir:
        process = subprocess.Popen(
            [sys.executable, "-m", "forge.cli", "serve", "--port", "0", "--data-dir", data_dir,
             "--fresh", "--quiet", "--root-token", token],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.startswith("forge listening on "):
            process.kill()
            raise RuntimeError(f"forge serve did not start: {line!r}")
        try:
            yield line.split()[-1], token
        finally:
            process.terminate()
            process.wait(timeout=30)


@pytest.fixture(scope="session")
def gitlab_url(forge_service: tuple[str, str]) -> str:
    return forge_service[0]


@pytest.fixture(scope="session")
def gitlab_token(forge_service: tuple[str, str]) -> str:
    return forge_service[1]


@pytest.fixture(scope="session")
def gl(gitlab_url: str, gitlab_token: str) -> gitlab.Gitlab:
    """The admin's client. A fresh forge holds nothing to reset (the upstream fixture also
    deletes topics and instance variables, which forge does not have)."""
    instance = gitlab.Gitlab(gitlab_url, private_token=gitlab_token)
    instance.auth()
    return instance
