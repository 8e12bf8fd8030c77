"""Bare repositories on disk: where they live, creating them, and committing files into them."""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from dulwich.config import ConfigFile
from dulwich.errors import NotGitRepository
from dulwich.object_store import DiskObjectStore
from dulwich.objects import Blob, Commit, ObjectID, Tree
from dulwich.refs import Ref
from dulwich.repo import Repo
from dulwich.server import Backend, BackendRepo

from forge import inputs

OID = re.compile(r"^[0-9a-f]{64}$")
ZERO = b"0" * 40
REF_LOCK = "forge-refs.lock"
MAINTENANCE_LOCK = "forge-maintenance.lock"
LOCK_WAIT = 30.0
TRASH = ".deleted-"  # repositories a reset moved aside, being deleted


class RepositoryBusy(OSError):
    """A repository lock was not free within the wait; nothing was changed."""


@contextmanager
def _flock(path: Path, mode: int, wait: float) -> Iterator[int | None]:
    """Hold an flock on `path`, polling up to `wait` seconds; yield the locked file's
    descriptor, or None when the lock was not taken."""
    with open(path, "a+b") as handle:
        deadline = time.monotonic() + wait
        delay = 0.005
        while True:
            try:
                fcntl.flock(handle, mode | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    yield None
                    return
                time.sleep(delay)
                delay = min(delay * 2, 0.1)
        try:
            yield handle.fileno()
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def in_use(repo_dir: Path, wait: float = LOCK_WAIT) -> Iterator[None]:
    """Keep housekeeping out while reading or writing the repository (a shared lock)."""
    with _flock(repo_dir / MAINTENANCE_LOCK, fcntl.LOCK_SH, wait) as taken:
        if taken is None:
            raise RepositoryBusy(f"{repo_dir.name} is being repacked")
        yield


@dataclass(frozen=True)
class Alone:
    """The maintenance lock, when taken (true) or not (false). `fds` is what a `git`
    housekeeping runs passes on (`subprocess.run(..., pass_fds=...)`): the child then
    holds the lock too, so a repack outliving a killed forge keeps others out until it
    ends."""

    fds: tuple[int, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.fds)


@contextmanager
def maintenance(repo_dir: Path, wait: float = 0.0) -> Iterator[Alone]:
    """Take the repository for housekeeping alone; yield a false `Alone` when it is in use."""
    with _flock(repo_dir / MAINTENANCE_LOCK, fcntl.LOCK_EX, wait) as fd:
        yield Alone((fd,) if fd is not None else ())


@contextmanager
def ref_lock(repo_dir: Path, wait: float = LOCK_WAIT) -> Iterator[None]:
    """Hold the repository's one ref lock: every writer of refs, in every process, takes it.

    Under it, reading a ref and then changing it is a true compare-and-swap; a writer
    that waited longer than `wait` gets RepositoryBusy.
    """
    with _flock(repo_dir / REF_LOCK, fcntl.LOCK_EX, wait) as taken:
        if taken is None:
            raise RepositoryBusy(f"the refs of {repo_dir.name} are locked")
        yield


@contextmanager
def writing(repo_dir: Path, wait: float = LOCK_WAIT) -> Iterator[Repo]:
    """Open the repository to add objects and move refs, holding its locks."""
    with in_use(repo_dir, wait), ref_lock(repo_dir, wait), open_repo(repo_dir) as repo:
        yield repo


def current_ref(repo: Repo, ref: bytes) -> bytes:
    """The sha `ref` points at, or forty zeros when it does not exist."""
    try:
        sha: bytes = repo.refs[Ref(ref)]
    except KeyError:
        return ZERO
    return sha


def compare_and_swap(repo: Repo, ref: bytes, old: bytes, new: bytes) -> bool:
    """Move `ref` from `old` to `new` (zeros: create, delete); False when it is not at `old`.

    The caller holds `ref_lock` (see `writing`), so no other forge writer moves the ref
    between the comparison and the change.
    """
    if current_ref(repo, ref) != old:
        return False
    if new == ZERO:
        return bool(repo.refs.remove_if_equals(Ref(ref), ObjectID(old)))
    return bool(repo.refs.set_if_equals(Ref(ref), None if old == ZERO else ObjectID(old),
                                        ObjectID(new)))


@dataclass(frozen=True)
class Gitlink:
    """A submodule entry in a tree: the commit of another repository."""

    sha: str


FileContent = str | bytes
TreeEntry = FileContent | Gitlink


class ForgeObjectStore(DiskObjectStore):
    """dulwich's on-disk object store, answering reachability by walking the commit graph.

    dulwich's bitmap path fails when some packs have a bitmap and others do not (a repo
    that `git gc` wrote bitmaps for, then received a push): every later fetch raises
    FileNotFoundError. Graph traversal is always correct.
    """

    def get_reachability_provider(self, prefer_bitmaps: bool = True) -> Any:
        """Return the graph-walking reachability provider, never the bitmap one."""
        return super().get_reachability_provider(prefer_bitmaps=False)

    def get_midx(self) -> None:
        """Use no multi-pack-index: forge writes none, and looking for one on every object
        lookup (a `stat` each) cost 12 % of a clone's time."""
        return None


def open_repo(path: Path) -> Repo:
    """Open a bare repository with forge's object store."""
    config = ConfigFile.from_path(str(path / "config"))
    store = ForgeObjectStore.from_config(str(path / "objects"), config)
    return Repo(str(path), object_store=store)


class RepositoryBackend(Backend):
    """Map a project id to its bare repository, refusing anything outside the root.

    dulwich's `FileSystemBackend` joins URL paths with `os.path.join`, so a path
    starting with `/` escapes its root; this backend only accepts numeric keys.
    """

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def path_for(self, key: str | int) -> Path:
        """Return the repository directory for a project id, or raise NotGitRepository."""
        key = str(key).strip("/")
        if not inputs.digits(key):
            raise NotGitRepository(f"no repository at {key!r}")
        path = (self.root / f"{int(key)}.git").resolve()
        if path.parent != self.root:
            raise NotGitRepository(f"no repository at {key!r}")
        return path

    def open_repository(self, path: str) -> BackendRepo:
        """Open the bare repository of the project whose id is `path`."""
        location = self.path_for(path)
        if not location.is_dir():
            raise NotGitRepository(f"no repository at {path!r}")
        return open_repo(location)

    def exists(self, key: str | int) -> bool:
        """Tell whether the project's repository exists on disk."""
        try:
            return self.path_for(key).is_dir()
        except NotGitRepository:
            return False

    def create(self, key: int, default_branch: str) -> AbstractContextManager[Repo]:
        """Create an empty bare repository whose HEAD names `default_branch`; open it for writing."""
        location = self.path_for(key)
        if location.exists():
            shutil.rmtree(location)
        location.mkdir(parents=True)
        with Repo.init_bare(str(location)) as repo:
            repo.refs.set_symbolic_ref(Ref(b"HEAD"), Ref(f"refs/heads/{default_branch}".encode()))
        return writing(location)

    def resolve(self, key: int, ref: str) -> str:
        """Return the sha a branch or tag name points at, or "" when there is none."""
        with open_repo(self.path_for(key)) as repo:
            refs = repo.refs.as_dict()
            sha = refs.get(Ref(f"refs/heads/{ref}".encode())) or refs.get(Ref(f"refs/tags/{ref}".encode()))
        return sha.decode() if sha else ""

    def has_head(self, key: int) -> bool:
        """Whether HEAD names a commit: false for an empty repository, or one whose HEAD
        names a branch that does not exist (yet)."""
        with open_repo(self.path_for(key)) as repo:
            try:
                return bool(repo.refs[Ref(b"HEAD")])  # follows the symbolic ref
            except KeyError:
                return False

    def is_empty(self, key: int) -> bool:
        """Tell whether the project's repository is missing or has no branch yet."""
        if not self.exists(key):
            return True
        with open_repo(self.path_for(key)) as repo:
            return not repo.refs.keys(base=Ref(b"refs/heads/"))

    def delete(self, key: int) -> None:
        """Remove the project's repository from disk."""
        shutil.rmtree(self.path_for(key), ignore_errors=True)

    def delete_all(self) -> None:
        """Remove every repository (used by reset): moved aside at once, one rename each,
        beside the root, and deleted there by a background thread (`sweep_trash` removes
        what a crash leaves)."""
        if not self.root.exists():
            return
        children = list(self.root.iterdir())
        if not children:
            return
        trash = Path(tempfile.mkdtemp(prefix=self.root.name + TRASH, dir=self.root.parent))
        for child in children:
            os.rename(child, trash / child.name)
        threading.Thread(target=shutil.rmtree, args=(trash,), kwargs={"ignore_errors": True},
                         name="forge-delete-repositories", daemon=True).start()

    def sweep_trash(self) -> list[Path]:
        """Remove the repositories resets moved aside and did not get to delete."""
        found = list(self.root.parent.glob(self.root.name + TRASH + "*"))
        for path in found:
            shutil.rmtree(path, ignore_errors=True)
        return found


def _tree_for(repo: Repo, files: Mapping[str, TreeEntry]) -> ObjectID:
    """Store blobs and nested trees for `files` and return the root tree id."""
    nested: dict[str, object] = {}
    for name, content in files.items():
        parts = [p for p in name.split("/") if p]
        if not parts or any(p in (".", "..", ".git") for p in parts):
            raise ValueError(f"invalid file name in repository content: {name!r}")
        node = nested
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ValueError(f"{name!r} is both a file and a directory")
            node = child
        node[parts[-1]] = content.encode() if isinstance(content, str) else content

    def build(node: Mapping[str, object]) -> ObjectID:
        tree = Tree()
        for entry, value in node.items():
            if isinstance(value, dict):
                tree.add(entry.encode(), 0o040000, build(value))
            elif isinstance(value, Gitlink):
                tree.add(entry.encode(), 0o160000, ObjectID(value.sha.encode()))
            else:
                assert isinstance(value, bytes)
                blob = Blob.from_string(value)
                repo.object_store.add_object(blob)
                mode = 0o100755 if entry.endswith(".sh") else 0o100644
                tree.add(entry.encode(), mode, blob.id)
        repo.object_store.add_object(tree)
        return tree.id

    return build(nested)


def commit_files(
    repo: Repo,
    branch: str,
    files: Mapping[str, TreeEntry],
    message: str = "Initial commit",
    author: str = "Forge <forge@example.com>",
    timestamp: int | None = None,
) -> str:
    """Commit `files` as the whole tree of a new commit on `branch`; return its sha.

    The caller holds the repository's ref lock (`writing`).
    """
    ref = f"refs/heads/{branch}".encode()
    commit = Commit()
    commit.tree = _tree_for(repo, files)
    parent = current_ref(repo, ref)
    commit.parents = [ObjectID(parent)] if parent != ZERO else []
    commit.author = commit.committer = author.encode()
    commit.author_time = commit.commit_time = int(time.time()) if timestamp is None else timestamp
    commit.author_timezone = commit.commit_timezone = 0
    commit.encoding = b"UTF-8"
    commit.message = message.encode() + b"\n"
    repo.object_store.add_object(commit)
    if not compare_and_swap(repo, ref, parent, commit.id):
        raise RepositoryBusy(f"{branch} moved while committing")
    return commit.id.decode()


class BlobStore:
    """Files on disk, content-addressed by their SHA-256 (LFS objects, package files)."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def path_for(self, oid: str) -> Path:
        """Where the object lives; raises ValueError for anything but a SHA-256 hex oid."""
        if not OID.match(oid):
            raise ValueError(f"invalid LFS oid {oid!r}")
        return self.root / "objects" / oid[:2] / oid[2:4] / oid

    def exists(self, oid: str) -> bool:
        """Tell whether the object's content is stored."""
        return self.path_for(oid).is_file()

    def put_bytes(self, data: bytes) -> tuple[str, int]:
        """Store `data`; return its oid and size."""
        oid = hashlib.sha256(data).hexdigest()
        path = self.path_for(oid)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, path)
        return oid, len(data)

    def put_stream(self, stream: IO[bytes], oid: str | None = None, size: int | None = None,
                   also: Sequence[Any] = ()) -> tuple[str, int] | None:
        """Store a stream; return its oid and size.

        With `oid` and `size`, the content must have exactly that many bytes hashing to
        that oid; when it does not, nothing is kept and None is returned. Hash objects in
        `also` (e.g. md5, sha1) see the same bytes.
        """
        if oid is not None:
            self.path_for(oid)  # validates the oid
        digest, count = hashlib.sha256(), 0
        (self.root / "tmp").mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.root / "tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                while chunk := stream.read(1024 * 1024):
                    count += len(chunk)
                    if size is not None and count > size:
                        return None
                    digest.update(chunk)
                    for hasher in also:
                        hasher.update(chunk)
                    handle.write(chunk)
            found = digest.hexdigest()
            if (size is not None and count != size) or (oid is not None and found != oid):
                return None
            target = self.path_for(found)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, target)
            return found, count
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def delete_all(self) -> None:
        """Remove every object (used by reset)."""
        shutil.rmtree(self.root / "objects", ignore_errors=True)


def lfs_pointer(oid: str, size: int) -> str:
    """The pointer file git stores in place of an LFS object."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {size}\n"
