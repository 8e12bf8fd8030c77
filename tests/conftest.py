"""Shared helpers: run the real `git` CLI in isolation from the user's configuration."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from forge.plugin import ci_forbids_skips

if TYPE_CHECKING:
    from forge.testing import Forge

if ci_forbids_skips() and shutil.which("git") is None:  # pragma: no cover
    raise RuntimeError("CI is set but git is not installed: run `make test`, which installs it")

Git = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def denied_401(forge: Forge) -> str:
    """GitLab's 401 body for git, LFS and `/jwt/auth` on this forge (spec section 1).

    Written out word for word, not taken from forge's constant: a changed message must fail.
    """
    return ("HTTP Basic: Access denied. If a password was provided for Git authentication, the "
            "password was incorrect or you're required to use a token instead of a password. If a "
            "token was provided, it was either incorrect, expired, or improperly scoped. See "
            f"{forge.url}/help/topics/git/troubleshooting_git.md"
            "#error-on-git-fetch-http-basic-access-denied")


@pytest.fixture
def git_env(tmp_path: Path) -> dict[str, str]:
    """An environment where git never prompts and reads no user or system config."""
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(
        HOME=str(home), GIT_CONFIG_NOSYSTEM="1", GIT_TERMINAL_PROMPT="0", GIT_ASKPASS="",
        GIT_AUTHOR_NAME="Test", GIT_AUTHOR_EMAIL="test@example.com",
        GIT_COMMITTER_NAME="Test", GIT_COMMITTER_EMAIL="test@example.com", LC_ALL="C",
    )
    env.pop("SSH_ASKPASS", None)
    return env


@pytest.fixture
def git(git_env: dict[str, str], tmp_path: Path) -> Git:
    """Run git; `check=False` returns a failed process instead of raising."""

    def run(*args: str | Path, cwd: Path | None = None, check: bool = True,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["git", "-c", "init.defaultBranch=main",
             *map(str, args)],
            cwd=cwd or tmp_path, env=git_env, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"git {' '.join(map(str, args))} failed:\n{result.stderr}")
        return result

    return run


@pytest.fixture
def commit(git: Git) -> Callable[..., str]:
    """Write files into a work tree, commit them, and return the new sha."""

    def make(repo: Path, files: dict[str, str | bytes], message: str = "change") -> str:
        for name, content in files.items():
            path = repo / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content)
        git("add", "-A", cwd=repo)
        git("commit", "-q", "-m", message, cwd=repo)
        return git("rev-parse", "HEAD", cwd=repo).stdout.strip()

    return make


@pytest.fixture
def use_engine(forge: Any, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    """Serve this test's fetches with the named engine ("git" or "dulwich")."""
    from forge.gitproc import find_git

    def use(name: str) -> None:
        monkeypatch.setattr(forge.app.wsgi_app, "git", find_git(name))

    return use


@pytest.fixture(params=["git", "dulwich"])
def engine(use_engine: Callable[[str], None], request: pytest.FixtureRequest) -> str:
    """Run the test once with each fetch engine."""
    use_engine(request.param)
    return str(request.param)


@pytest.fixture
def dated_history(git: Git) -> Callable[[Path], list[str]]:
    """Make a repository of 30 commits, one a day from 2026-01-01, tagged v1 at the 10th."""

    def make(work: Path) -> list[str]:
        git("init", "-q", work)
        shas = []
        for day in range(30):
            (work / f"f{day % 5}.txt").write_text(f"day {day}\n" * (day + 1))
            git("add", "-A", cwd=work)
            stamp = f"2026-01-{day + 1:02d}T12:00:00Z"
            subprocess.run(["git", "commit", "-q", "-m", f"day {day}"], cwd=work, check=True,
                           env={**os.environ, "GIT_AUTHOR_DATE": stamp, "GIT_COMMITTER_DATE": stamp,
                                "GIT_AUTHOR_NAME": "a", "GIT_AUTHOR_EMAIL": "a@example.com",
                                "GIT_COMMITTER_NAME": "a", "GIT_COMMITTER_EMAIL": "a@example.com"})
            shas.append(git("rev-parse", "HEAD", cwd=work).stdout.strip())
            if day == 9:
                git("tag", "v1", cwd=work)
        return shas

    return make


@pytest.fixture
def api(forge: Any) -> Any:
    """A requests session carrying the root token (an admin's `api` PAT)."""
    import requests
    session = requests.Session()
    session.headers["PRIVATE-TOKEN"] = forge.root_token
    return session
