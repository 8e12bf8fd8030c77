"""Keep repositories healthy outside the request path, as GitLab's housekeeping does.

Every push adds a pack; a repository with hundreds of packs makes each clone open
hundreds of files. After a push, a worker thread takes the repository alone (readers
and writers hold its maintenance lock shared, see `forge.repos.in_use`), sweeps what
interrupted or refused pushes left behind, and repacks once packs or loose objects pass
a threshold: with `git repack` when git is installed, else with dulwich. Loose refs
(one file each: every pushed tag, every pipeline's `refs/pipelines/<id>`) are packed
into `packed-refs` past a threshold too, as GitLab's housekeeping runs `git pack-refs`:
each fetch reads the refs to key the pack cache. Without git they stay loose.
"""

from __future__ import annotations

import logging
import os
import queue
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dulwich.pack import load_pack_index

from forge.gitproc import git_binary
from forge.repos import Alone, RepositoryBackend, maintenance, open_repo

log = logging.getLogger(__name__)

REFUSED_PACKS = "forge-refused-packs"


@dataclass(frozen=True)
class Limits:
    """When a repository is repacked: more packs, or more loose objects, than these; and
    when its refs are packed: more loose refs than `loose_refs`."""

    packs: int = 10
    loose_objects: int = 1000
    loose_refs: int = 100


def pack_count(repo_dir: Path) -> int:
    """How many packs the repository has."""
    return len(list((repo_dir / "objects" / "pack").glob("*.idx")))


def loose_count(repo_dir: Path) -> int:
    """How many loose objects the repository has."""
    objects = repo_dir / "objects"
    return sum(len(os.listdir(d)) for d in objects.iterdir()
               if len(d.name) == 2 and d.is_dir())


def loose_ref_count(repo_dir: Path) -> int:
    """How many refs the repository keeps as files of their own."""
    return sum(1 for _, _, files in os.walk(repo_dir / "refs")
               for name in files if not name.endswith(".lock"))


def pack_refs(repo_dir: Path, git: str, alone: Alone) -> None:
    """Move every loose ref into `packed-refs` with git, which records each annotated
    tag's peeled target there (under maintenance: `alone`, passed on to git)."""
    subprocess.run([git, "pack-refs", "--all", "--prune"], cwd=repo_dir, check=True,
                   capture_output=True, env={**os.environ, "GIT_DIR": str(repo_dir)},
                   pass_fds=alone.fds)


def record_refused_packs(repo_dir: Path, names: Iterable[str]) -> None:
    """Remember packs that a push brought but whose ref updates were all refused."""
    names = list(names)
    if names:
        with open(repo_dir / REFUSED_PACKS, "a") as handle:
            handle.writelines(f"{name}\n" for name in names)


def sweep(repo_dir: Path) -> list[str]:
    """Remove what interrupted writers left: temporary packs and stale ref lock files.

    Only call while holding the repository's maintenance lock alone: then no forge
    writer is running, and every temporary file belongs to one that died.
    """
    removed: list[Path] = []
    objects = repo_dir / "objects"
    removed += objects.glob("tmp_pack_*")
    pack_dir = objects / "pack"
    removed += [p for p in pack_dir.glob("tmp*") if p.is_file()]
    removed += [p for p in pack_dir.glob("*.pack") if not p.with_suffix(".idx").exists()]
    # dulwich's and git's own ref locks: a writer killed mid-update leaves them, and they
    # would refuse that ref forever.
    removed += (repo_dir / "refs").rglob("*.lock")
    removed += [p for p in (repo_dir / "packed-refs.lock",) if p.exists()]
    for path in removed:
        path.unlink(missing_ok=True)
    return [str(p.relative_to(repo_dir)) for p in removed]


def sweep_orphans(backend: RepositoryBackend, project_ids: Iterable[int]) -> list[str]:
    """Remove repository directories no project owns (a seed killed half-way leaves them).

    Only while holding the data directory's lock: then no seed can be creating one now.
    """
    keep = {f"{key}.git" for key in project_ids}
    removed = []
    if backend.root.is_dir():
        for child in backend.root.iterdir():
            if child.name not in keep:
                shutil.rmtree(child, ignore_errors=True)
                removed.append(child.name)
    return removed


def drop_refused_packs(repo_dir: Path, git: str | None) -> list[str]:
    """Delete the packs of refused pushes whose objects no ref reaches (under maintenance)."""
    listing = repo_dir / REFUSED_PACKS
    if not listing.exists():
        return []
    names = set(listing.read_text().split())
    listing.unlink()
    pack_dir = repo_dir / "objects" / "pack"
    candidates = [n for n in names if (pack_dir / f"{n}.idx").exists()]
    if not candidates:
        return []
    reachable = _reachable(repo_dir, git)
    dropped = []
    with open_repo(repo_dir) as repo:
        object_format = repo.object_format
    for name in candidates:
        index = load_pack_index(pack_dir / f"{name}.idx", object_format)
        try:
            if not any(sha in reachable for sha in index):
                dropped.append(name)
        finally:
            index.close()
    for name in dropped:
        for suffix in (".pack", ".idx", ".rev", ".bitmap"):
            (pack_dir / f"{name}{suffix}").unlink(missing_ok=True)
    return dropped


def _reachable(repo_dir: Path, git: str | None) -> set[bytes]:
    """Every object id reachable from a ref."""
    if git:
        out = subprocess.run([git, "rev-list", "--objects", "--all"], cwd=repo_dir, check=True,
                             capture_output=True).stdout
        return {line[:40] for line in out.splitlines()}
    with open_repo(repo_dir) as repo:
        heads = [sha for name, sha in repo.refs.as_dict().items() if name != b"HEAD"]
        missing = repo.object_store.find_missing_objects([], heads)
        return {sha for sha, _ in missing}


def repack(repo_dir: Path, git: str | None, alone: Alone) -> None:
    """Pack every object into one pack and drop loose copies (under maintenance: `alone`,
    passed on to git, which then holds the lock until it ends, even if forge is killed)."""
    if git:
        # -A keeps unreachable objects (loose) rather than dropping them at once:
        # a commit no ref points at any more can still be fetched by its sha.
        for command in ([git, "repack", "-A", "-d", "-q"], [git, "prune-packed", "-q"]):
            subprocess.run(command, cwd=repo_dir, check=True, capture_output=True,
                           env={**os.environ, "GIT_DIR": str(repo_dir)}, pass_fds=alone.fds)
        return
    with open_repo(repo_dir) as repo:
        repo.object_store.repack()


class Housekeeper:
    """One worker thread that maintains the repositories pushes were made to."""

    def __init__(self, backend: RepositoryBackend, limits: Limits | None = None,
                 git: str | None = None, wait: float = 30.0) -> None:
        self.backend = backend
        self.limits = limits or Limits()
        self.git = git if git is not None else git_binary()
        self.wait = wait
        self._queue: queue.Queue[int | None] = queue.Queue()
        self._pending: set[int] = set()
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._busy = 0
        self._thread: threading.Thread | None = None
        self._stopped = False
        self._tasks: list[list[Any]] = []  # [every seconds, task, last run]

    def every(self, seconds: float, task: Callable[[], object]) -> None:
        """Also run `task` on the worker thread every `seconds`."""
        self._tasks.append([seconds, task, time.monotonic()])

    def start(self) -> Housekeeper:
        """Start the worker thread (once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="forge-housekeeping",
                                            daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the worker after the work already queued, for good: later pushes queue nothing.

        A request still finishing, or a retry timer, must not start it again behind the
        back of whoever stopped it (a stopped server, a fleet's master about to fork).
        """
        self._stopped = True
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=60)
            self._thread = None

    def after_push(self, key: int) -> None:
        """Queue a look at repository `key` (a push, or a new pipeline's ref, changed it)."""
        with self._lock:
            if self._stopped or key in self._pending:
                return
            self._pending.add(key)
            self._busy += 1
        self._queue.put(key)
        self.start()

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Wait until queued work is done; tell whether it was done in time."""
        with self._idle:
            return self._idle.wait_for(lambda: self._busy == 0, timeout)

    def maintain(self, key: int) -> dict[str, object]:
        """Sweep, drop refused packs, repack and pack the refs of repository `key` if it
        needs it, now."""
        repo_dir = self.backend.path_for(key)
        if not repo_dir.is_dir():
            return {}
        with maintenance(repo_dir, self.wait) as alone:
            if not alone:
                return {"busy": True}
            report: dict[str, object] = {"swept": sweep(repo_dir),
                                         "dropped": drop_refused_packs(repo_dir, self.git)}
            packs, loose = pack_count(repo_dir), loose_count(repo_dir)
            if packs > self.limits.packs or loose > self.limits.loose_objects:
                repack(repo_dir, self.git, alone)
                report["repacked"] = (packs, loose)
            # Without git the refs stay loose: dulwich's packed-refs lacks the peeled
            # targets of tags packed after it was first read.
            refs = loose_ref_count(repo_dir) if self.git else 0
            if self.git and refs > self.limits.loose_refs:
                pack_refs(repo_dir, self.git, alone)
                report["packed_refs"] = refs
            return report

    def _run(self) -> None:
        while True:
            try:
                key = self._queue.get(timeout=1.0)
            except queue.Empty:
                key = -1
            if key is None:
                return
            if key >= 0:
                with self._lock:
                    self._pending.discard(key)
                try:
                    report = self.maintain(key)
                    if report.get("busy"):  # readers kept it: look again later
                        threading.Timer(1.0, self.after_push, (key,)).start()
                    elif any(report.values()):
                        log.info("housekeeping of repository %s: %s", key, report)
                except Exception:  # keep serving; a later push tries again
                    log.exception("housekeeping of repository %s failed", key)
                finally:
                    with self._idle:
                        self._busy -= 1
                        self._idle.notify_all()
            self._periodic()

    def _periodic(self) -> None:
        now = time.monotonic()
        for entry in self._tasks:
            seconds, task, last = entry
            if now - last >= seconds:
                entry[2] = now
                try:
                    task()
                except Exception:
                    log.exception("periodic housekeeping task failed")
