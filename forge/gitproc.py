"""Serve fetches with the real `git upload-pack`, as Gitaly does behind GitLab's Workhorse.

forge has already authorized the request; git then does what it does best: protocol v2,
every shallow and filter option, fetches by any reachable sha, bitmaps and pack reuse.
The child gets the request body on stdin and its stdout is streamed in chunks; it is
killed when the client goes away or the request fails, so none outlives its request.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

log = logging.getLogger(__name__)

CHUNK = 64 * 1024
# The settings Gitaly runs upload-pack with (partial clone, fetch by any sha in want).
UPLOAD_PACK_CONFIG = (
    "uploadpack.allowFilter=true",
    "uploadpack.allowAnySHA1InWant=true",
    "safe.directory=*",
)
ENGINES = ("auto", "git", "dulwich")


class EngineError(ValueError):
    """The configured git engine cannot run here."""


@functools.cache
def git_binary() -> str | None:
    """The `git` on PATH, looked up once per process: what the git fetch engine, pushes
    (ancestry, fsck) and housekeeping run; None where git is not installed."""
    return shutil.which("git")


def find_git(engine: str) -> str | None:
    """The git binary fetches are served with, or None for dulwich."""
    if engine not in ENGINES:
        raise EngineError(f"unknown git engine {engine!r}; use one of {', '.join(ENGINES)}")
    if engine == "dulwich":
        return None
    git = git_binary()
    if git is None and engine == "git":
        raise EngineError("git engine: no `git` binary on PATH (install git, or use --git-engine dulwich)")
    return git


def wants_v2(protocol: str) -> bool:
    """Whether the client's Git-Protocol header asks for protocol version 2."""
    return "version=2" in protocol.split(":")


def _command(git: str, repo_dir: Path, advertise: bool) -> list[str]:
    config = [arg for item in UPLOAD_PACK_CONFIG for arg in ("-c", item)]
    return [git, *config, "upload-pack", "--stateless-rpc",
            *(["--advertise-refs"] if advertise else []), str(repo_dir)]


def _env(protocol: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("GIT_")}
    env.update(GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL=os.devnull, GIT_TERMINAL_PROMPT="0")
    if protocol:
        env["GIT_PROTOCOL"] = protocol
    return env


def advertise(git: str, repo_dir: Path, protocol: str) -> bytes:
    """The ref advertisement (v0) or capability list (v2), with the smart-HTTP preamble."""
    result = subprocess.run(_command(git, repo_dir, advertise=True), env=_env(protocol),
                            stdin=subprocess.DEVNULL, capture_output=True, timeout=300)
    if result.returncode != 0:
        raise OSError(f"git upload-pack --advertise-refs failed: {result.stderr.decode(errors='replace')}")
    if wants_v2(protocol):
        return result.stdout  # a v2 client expects the capability list alone
    return b"001e# service=git-upload-pack\n0000" + result.stdout


class UploadPack:
    """One `git upload-pack --stateless-rpc` run: request body in, response chunks out."""

    def __init__(self, git: str, repo_dir: Path, protocol: str,
                 read: Callable[[int], bytes]) -> None:
        self._read = read
        self._proc = subprocess.Popen(
            _command(git, repo_dir, advertise=False), env=_env(protocol),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self._stderr: list[bytes] = []
        self.input_error: BaseException | None = None
        self._feeder = threading.Thread(target=self._feed, name="git-upload-pack-stdin", daemon=True)
        self._feeder.start()
        self._drainer = threading.Thread(target=self._drain, name="git-upload-pack-stderr",
                                         daemon=True)
        self._drainer.start()

    def _feed(self) -> None:
        """Copy the request body to git's stdin (a thread, so a full pipe never deadlocks)."""
        stdin = self._proc.stdin
        assert stdin is not None
        try:
            while chunk := self._read(CHUNK):
                stdin.write(chunk)
        except BrokenPipeError:
            pass  # git stopped reading: it answered or failed, and says so on stdout/stderr
        except BaseException as exc:  # a bad or oversized body: stop git, report it
            self.input_error = exc
            self._proc.kill()
        finally:
            try:
                stdin.close()
            except BrokenPipeError:
                pass

    def _drain(self) -> None:
        stderr = self._proc.stderr
        assert stderr is not None
        while chunk := stderr.read(CHUNK):
            if sum(map(len, self._stderr)) < CHUNK:
                self._stderr.append(chunk)

    def first(self) -> bytes:
        """Read the first chunk of the response (b"" when git wrote nothing)."""
        return self._chunk()

    def _chunk(self) -> bytes:
        stdout = self._proc.stdout
        assert stdout is not None
        return os.read(stdout.fileno(), CHUNK)

    def rest(self) -> Iterator[bytes]:
        """Yield the rest of the response as git writes it."""
        while chunk := self._chunk():
            yield chunk

    @property
    def stderr(self) -> str:
        """What git printed on stderr (its first 64 KiB)."""
        self._drainer.join(timeout=5)
        return b"".join(self._stderr).decode(errors="replace")

    def close(self) -> int | None:
        """End the child: kill it if it still runs (the client left); return its exit code."""
        if self._proc.poll() is None:
            self._proc.kill()
        code = self._proc.wait()
        self._feeder.join(timeout=5)
        self._drainer.join(timeout=5)
        for pipe in (self._proc.stdout, self._proc.stderr):
            if pipe is not None:
                pipe.close()
        if code not in (0, -9):
            log.warning("git upload-pack exited with %s: %s", code, self.stderr.strip()[-500:])
        return code
