"""Tokens as GitLab mints them, and the digest they are stored as (never the token itself)."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import tempfile
from collections.abc import Callable
from pathlib import Path


def digest(secret: str) -> str:
    """Return the stored form of a token: its SHA-256 hex digest."""
    return hashlib.sha256(secret.encode()).hexdigest()


def same_digest(stored: str, secret: str) -> bool:
    """Compare a stored digest with a presented secret in constant time."""
    return hmac.compare_digest(stored.encode(), digest(secret).encode())


def new_personal_token() -> str:
    """Mint a PAT in GitLab's format: `glpat-` and 20 URL-safe characters."""
    return "glpat-" + secrets.token_urlsafe(15)


def new_job_token(partition_id: int = 100) -> str:
    """Mint a job token in GitLab's classic format: `glcbt-<partition hex>_<random>`."""
    return f"glcbt-{partition_id:x}_{secrets.token_urlsafe(15)}"


RUNNER_TOKEN_PREFIX = "glrt-"  # GitLab's runner authentication tokens
REGISTRATION_TOKEN_PREFIX = "GR1348941"  # GitLab's runner registration tokens


def new_registration_token() -> str:
    """Mint an instance runner registration token in GitLab's format."""
    return REGISTRATION_TOKEN_PREFIX + secrets.token_urlsafe(15)


def new_runner_token() -> str:
    """Mint a runner authentication token: `glrt-` and random characters."""
    return RUNNER_TOKEN_PREFIX + secrets.token_urlsafe(20)


def kept_secret(path: Path, make: Callable[[], str]) -> str:
    """The secret kept in `path` (mode 0600), made by `make()` the first time. Processes
    that race to make it all end up with the one that was linked into place first, and
    none ever reads a half-written file."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".secret-")  # mode 0600
        try:
            os.write(fd, make().encode() + b"\n")
            os.close(fd)
            try:
                os.link(temporary, path)
            except FileExistsError:
                pass
        finally:
            os.unlink(temporary)
    return path.read_text().strip()
