"""Read a seed's `template:` directory, confined to one root and bounded in size.

A template names a directory below a root: the seed file's directory (`forge serve
--seed`, `forge seed FILE`, the fixture) or the templates directory a server was started
with (`POST /-/forge/seed`). Absolute names, `..`, and symbolic links anywhere are
refused, and so are templates of more than `MAX_FILES` files or `MAX_BYTES` bytes, before
they are read: a template can neither read the server's files nor exhaust its memory.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path, PurePosixPath

MAX_FILES = 1000
MAX_BYTES = 32 * 1024 * 1024


class TemplateError(ValueError):
    """The template is outside its root, not a directory, holds a link, or is too large."""


def read_template(root: Path, name: object, max_files: int = MAX_FILES,
                  max_bytes: int = MAX_BYTES) -> dict[str, bytes]:
    """Read every regular file below `root/name` into a name -> content mapping (.git skipped)."""
    if not isinstance(name, str) or not name.strip():
        raise TemplateError("expected the name of a directory")
    relative = PurePosixPath(name.replace("\\", "/"))
    if relative.is_absolute() or name.startswith("~"):
        raise TemplateError(f"{name!r} must be relative to the templates directory")
    if ".." in relative.parts:
        raise TemplateError(f"{name!r} must not contain '..'")
    base = root.resolve()
    top = (base / relative).resolve()
    if not top.is_relative_to(base):
        raise TemplateError(f"{name!r} leads out of the templates directory "
                            "(a symbolic link)")
    if not top.is_dir():
        raise TemplateError(f"{name!r} is not a directory in the templates directory")
    files: dict[str, bytes] = {}
    total = 0

    def fail(error: OSError) -> None:
        raise TemplateError(f"{name!r}: cannot read {error.filename!r}: {error.strerror}")

    for dirpath, dirnames, filenames in os.walk(top, onerror=fail):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if d != ".git")
        for entry in dirnames + sorted(filenames):
            path = here / entry
            shown = path.relative_to(top).as_posix()
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                raise TemplateError(f"{name!r}: {shown!r} is a symbolic link; templates hold "
                                    "regular files and directories only")
            if stat.S_ISDIR(info.st_mode):
                continue
            if not stat.S_ISREG(info.st_mode):
                raise TemplateError(f"{name!r}: {shown!r} is not a regular file")
            if len(files) >= max_files:
                raise TemplateError(f"{name!r} holds more than {max_files} files")
            total += info.st_size
            if total > max_bytes:
                raise TemplateError(f"{name!r} holds more than {max_bytes} bytes")
            files[shown] = _read(path, max_bytes - total + info.st_size, name, shown)
    return files


def _read(path: Path, limit: int, name: str, shown: str) -> bytes:
    """Read at most `limit` bytes of a regular file, never through a link swapped in meanwhile."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise TemplateError(f"{name!r}: {shown!r} is not a regular file")
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise TemplateError(f"{name!r} grew while it was read")
    return data
