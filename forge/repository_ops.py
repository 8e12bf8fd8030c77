"""Repository content as GitLab's API shows and changes it: commits of file actions, trees,
history, diffs and archives, on a dulwich repository.

No Flask and no database here: the REST views open the repository (holding its ref lock
when they write), call these functions and move refs themselves. Refusals raise
`ContentError` with Gitaly's message, which the views render as GitLab does.
"""

from __future__ import annotations

import io
import stat
import tarfile
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

from dulwich.annotate import annotate_lines
from dulwich.diff_tree import tree_changes
from dulwich.object_store import BaseObjectStore, commit_tree_changes
from dulwich.objects import S_ISGITLINK, Blob, Commit, ObjectID, Tag, Tree, TreeEntry
from dulwich.patch import unified_diff
from dulwich.repo import Repo

FILE_EXISTS = "A file with this name already exists"
FILE_MISSING = "A file with this name doesn't exist"
DIRECTORY_EXISTS = "A directory with this name already exists"
ACTIONS = ("create", "update", "delete", "move", "chmod")
# GitLab's archive formats (lib/api/repositories.rb) and what each is written as.
ARCHIVE_FORMATS = {"tar.gz": "w:gz", "tgz": "w:gz", "gz": "w:gz", "tar.bz2": "w:bz2", "tbz": "w:bz2",
                   "tbz2": "w:bz2", "tb2": "w:bz2", "bz2": "w:bz2", "tar": "w", "zip": "zip"}


class ContentError(ValueError):
    """A change Gitaly would refuse; the message is Gitaly's."""


@dataclass(frozen=True)
class Action:
    """One entry of `actions` in `POST /repository/commits` (or a files API write)."""

    action: str
    file_path: str
    content: bytes | None = None
    previous_path: str | None = None
    execute_filemode: bool | None = None
    last_commit_id: str | None = None  # the writer's view: refused when the file changed since


def changed_since(repo: Repo, parent: Commit | None, action: Action) -> bool:
    """Files::BaseService#file_has_changed?: the last commit touching the path is not `last_commit_id`."""
    if parent is None or not action.last_commit_id:
        return False
    touched = history(repo, [parent.id], path=action.file_path)
    return bool(touched) and touched[0].id.decode() != action.last_commit_id


EARLIEST = datetime(1, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)


def git_time(seconds: int, offset: int = 0) -> datetime:
    """A git timestamp as an aware datetime, in its own offset (UTC for an offset of a day or
    more, which git stores but a datetime cannot hold). Any pusher can write a commit dated
    past year 9999: such a time is clamped to the range, as Gitaly's parser falls back to
    its largest time, rather than failing every view of the branch."""
    try:
        zone = timezone(timedelta(seconds=offset))
    except ValueError:
        zone = UTC
    try:
        return datetime.fromtimestamp(seconds, zone)
    except (ValueError, OverflowError, OSError):
        return LATEST if seconds > 0 else EARLIEST


def set_head(repo: Repo, branch: str) -> None:
    """Point HEAD at `branch` (Project#change_head), so clones check it out."""
    repo.refs.set_symbolic_ref(b"HEAD", f"refs/heads/{branch}".encode())  # type: ignore[arg-type]


def peel(repo: Repo | BaseObjectStore, sha: bytes) -> Commit | None:
    """The commit an object id names, through annotated tags; None for anything else
    (`repo`: a repository or its object store)."""
    try:
        obj = repo[ObjectID(sha)]
        while isinstance(obj, Tag):
            obj = repo[obj.object[1]]
    except (KeyError, ValueError):
        return None
    return obj if isinstance(obj, Commit) else None


def lookup(repo: Repo, commit: Commit | None, path: str) -> tuple[str, int, bytes] | None:
    """What `path` names in the commit's tree: ("file" | "directory" | "submodule" |
    "under a file", mode, sha). A submodule's commit is another repository's: never read."""
    if commit is None:
        return None
    obj: Blob | Tree = repo[commit.tree]  # type: ignore[assignment]
    mode, sha = stat.S_IFDIR, commit.tree
    parts = path.split("/")
    for number, part in enumerate(parts, 1):
        if not isinstance(obj, Tree):
            return "under a file", mode, sha
        if part.encode() not in obj:
            return None
        mode, sha = obj[part.encode()]
        if S_ISGITLINK(mode):
            return ("submodule" if number == len(parts) else "under a file"), mode, sha
        obj = repo[sha]  # type: ignore[assignment]
    return ("file" if isinstance(obj, Blob) else "directory"), mode, sha


def apply_actions(repo: Repo, parent: Commit | None, actions: Sequence[Action]) -> ObjectID:
    """Store the blobs of `actions` and return the tree they make of `parent`'s tree."""
    tree_id = parent.tree if parent is not None else _empty_tree(repo)
    for change in actions:
        current = _lookup_tree(repo, tree_id, change.file_path)
        changes: list[tuple[bytes, int | None, bytes | None]] = []
        if change.action == "create":
            if current is not None:
                raise ContentError(DIRECTORY_EXISTS if current[0] == "directory" else FILE_EXISTS)
            changes.append(_blob(repo, change, change.content or b"", None))
        elif change.action in ("update", "chmod"):
            if current is not None and current[0] == "directory":
                raise ContentError(DIRECTORY_EXISTS)
            if current is None or current[0] != "file":
                raise ContentError(FILE_MISSING)
            content = change.content if change.action == "update" else None
            data = content if content is not None else repo[current[2]].as_raw_string()
            changes.append(_blob(repo, change, data, current[1]))
        elif change.action == "delete":
            if current is None or current[0] != "file":
                raise ContentError(FILE_MISSING)
            changes.append((change.file_path.encode(), None, None))
        elif change.action == "move":
            source = _lookup_tree(repo, tree_id, change.previous_path or "")
            if source is None or source[0] != "file":
                raise ContentError(FILE_MISSING)
            if current is not None:
                raise ContentError(FILE_EXISTS)
            data = change.content if change.content is not None else repo[source[2]].as_raw_string()
            changes += [(str(change.previous_path).encode(), None, None),
                        _blob(repo, change, data, source[1])]
        else:
            raise ContentError(f"Unknown action '{change.action}'")
        tree_id = commit_tree_changes(repo.object_store, repo[tree_id], changes)  # type: ignore[arg-type]
    return tree_id


def _blob(repo: Repo, change: Action, data: bytes, old_mode: int | None) -> tuple[bytes, int, bytes]:
    blob = Blob.from_string(data)
    repo.object_store.add_object(blob)
    mode = old_mode or 0o100644
    if change.execute_filemode is not None:
        mode = 0o100755 if change.execute_filemode else 0o100644
    return change.file_path.encode(), mode, blob.id


def _empty_tree(repo: Repo) -> ObjectID:
    tree = Tree()
    repo.object_store.add_object(tree)
    return tree.id


def _lookup_tree(repo: Repo, tree_id: bytes, path: str) -> tuple[str, int, bytes] | None:
    fake = Commit()
    fake.tree = ObjectID(tree_id)
    return lookup(repo, fake, path)


def new_commit(repo: Repo, tree: ObjectID, parents: Sequence[bytes], author: str, message: str,
               when: datetime, committer: str | None = None) -> Commit:
    """Write a commit at `when` (naive UTC, the forge's clock) and return it; the caller
    moves the branch."""
    commit = Commit()
    commit.tree = tree
    commit.parents = [ObjectID(p) for p in parents]
    commit.author = author.encode()
    commit.committer = (committer or author).encode()
    commit.author_time = commit.commit_time = int(when.replace(tzinfo=UTC).timestamp())
    commit.author_timezone = commit.commit_timezone = 0
    commit.encoding = b"UTF-8"
    commit.message = message.encode()  # as given: Gitaly adds no newline either
    repo.object_store.add_object(commit)
    return commit


def new_tag(repo: Repo, name: str, commit: Commit, tagger: str, message: str, when: datetime) -> Tag:
    """Write an annotated tag object for `commit` (what `message` asks of the Tags API)."""
    tag = Tag()
    tag.name = name.encode()
    tag.object = (Commit, commit.id)
    tag.tagger = tagger.encode()
    tag.tag_time = int(when.replace(tzinfo=UTC).timestamp())
    tag.tag_timezone = 0
    tag.message = message.encode()
    repo.object_store.add_object(tag)
    return tag


def history(repo: Repo, heads: Iterable[bytes], path: str | None = None,
            since: int | None = None, until: int | None = None,
            first_parent: bool = False) -> list[Commit]:
    """Commits reachable from `heads`, newest first (git log's date order), filtered as GitLab's
    `ref_name`, `path`, `since`, `until` and `first_parent` do."""
    include = [ObjectID(h) for h in heads]
    if not include:
        return []
    walker = repo.get_walker(include=include, paths=[path.encode()] if path else None,
                             follow=False)
    found = []
    for entry in walker:
        commit = entry.commit
        if since is not None and commit.commit_time < since:
            continue
        if until is not None and commit.commit_time > until:
            continue
        found.append(commit)
    if first_parent and found:
        chain: set[bytes] = set()
        tip: Commit | None = found[0]
        while tip is not None:
            chain.add(tip.id)
            tip = peel(repo, tip.parents[0]) if tip.parents else None
        found = [c for c in found if c.id in chain]
    return found


def diffs(repo: Repo, old_tree: bytes | None, new_tree: bytes) -> list[dict[str, object]]:
    """The changes between two trees as GitLab's diff entities (unified diff text per file)."""
    result = []
    old_id = ObjectID(old_tree) if old_tree is not None else None
    for change in tree_changes(repo.object_store, old_id, ObjectID(new_tree)):
        old, new = change.old, change.new
        paths = [e.path for e in (old, new) if e is not None and e.path]
        old_path = (old.path if old is not None and old.path else paths[0]).decode(errors="replace")
        new_path = (new.path if new is not None and new.path else paths[0]).decode(errors="replace")
        before, after = _diffed(repo, old), _diffed(repo, new)
        text = b"".join(unified_diff(before.splitlines(keepends=True), after.splitlines(keepends=True),
                                     n=3)).decode(errors="replace")
        lines = text.split("\n", 2)
        body = lines[2] if len(lines) > 2 and lines[0].startswith("---") else text
        result.append({
            "diff": body, "old_path": old_path, "new_path": new_path,
            "a_mode": f"{old.mode:o}" if old is not None and old.mode else "0",
            "b_mode": f"{new.mode:o}" if new is not None and new.mode else "0",
            "new_file": old is None or not old.sha, "renamed_file": change.type == "rename",
            "deleted_file": new is None or not new.sha, "generated_file": None})
    return result


def _diffed(repo: Repo, entry: TreeEntry | None) -> bytes:
    """What a diff compares of one side: a file's content, or for a submodule the line
    git shows (`Subproject commit <sha>`); nothing for a side that does not exist."""
    if entry is None or not entry.sha:
        return b""
    if entry.mode is not None and S_ISGITLINK(entry.mode):
        return b"Subproject commit " + entry.sha + b"\n"
    return repo[entry.sha].as_raw_string()


def walk_tree(repo: Repo, tree_id: bytes, prefix: str = "", recursive: bool = True
              ) -> Iterator[tuple[str, int, bytes]]:
    """(path, mode, sha) of every entry under a tree, directories before their content."""
    tree = repo[tree_id]
    assert isinstance(tree, Tree)
    for entry in tree.iteritems():
        path = f"{prefix}{entry.path.decode(errors='replace')}"
        yield path, entry.mode, entry.sha
        if recursive and stat.S_ISDIR(entry.mode):
            yield from walk_tree(repo, entry.sha, path + "/", recursive)


def archive(repo: Repo, commit: Commit, prefix: str, fmt: str, path: str | None = None) -> bytes:
    """The commit's tree (or the subdirectory `path`) as a tar or zip file, under `prefix/`."""
    tree_id = commit.tree
    if path:
        found = lookup(repo, commit, path.strip("/"))
        if found is None or found[0] != "directory":
            raise ContentError(FILE_MISSING)
        tree_id = found[2]
    buffer = io.BytesIO()
    entries = [(name, mode, sha) for name, mode, sha in walk_tree(repo, tree_id)
               if not stat.S_ISDIR(mode) and not stat.S_ISLNK(mode) and mode != 0o160000]
    if ARCHIVE_FORMATS[fmt] == "zip":  # zip holds the years 1980 to 2107 only
        stamp = git_time(commit.commit_time)
        zip_time = max((1980, 1, 1, 0, 0, 0), min(
            (stamp.year, stamp.month, stamp.day, stamp.hour, stamp.minute, stamp.second),
            (2107, 12, 31, 23, 59, 58)))
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zipped:
            for name, mode, sha in entries:
                info = zipfile.ZipInfo(f"{prefix}/{name}", zip_time)
                info.external_attr = (mode & 0o777) << 16
                zipped.writestr(info, repo[sha].as_raw_string())
        return buffer.getvalue()
    with tarfile.open(fileobj=buffer, mode=ARCHIVE_FORMATS[fmt]) as tar:  # type: ignore[call-overload]
        for name, mode, sha in entries:
            data = repo[sha].as_raw_string()
            member = tarfile.TarInfo(f"{prefix}/{name}")
            member.size, member.mode, member.mtime = len(data), mode & 0o777, commit.commit_time
            tar.addfile(member, io.BytesIO(data))
    return buffer.getvalue()


def blame(repo: Repo, commit: Commit, path: str) -> list[tuple[Commit, list[str]]]:
    """The file's lines grouped into runs last changed by one commit, top to bottom."""
    runs: list[tuple[Commit, list[str]]] = []
    for (origin, _), line in annotate_lines(repo.object_store, commit.id, path.encode()):
        text = line.decode(errors="replace").rstrip("\n")
        if runs and runs[-1][0].id == origin.id:
            runs[-1][1].append(text)
        else:
            runs.append((origin, [text]))
    return runs


def pick(repo: Repo, onto: Commit, commit: Commit, reverse: bool = False) -> ObjectID:
    """The tree of `onto` with `commit`'s changes applied (cherry-pick) or undone (revert).

    A file-level three-way merge: a path takes the new side when `onto` still has the old
    one there. Raises ContentError("conflict") when `onto` changed such a path otherwise,
    and ContentError("empty") when every change is already there.
    """
    parent = peel(repo, commit.parents[0]) if commit.parents else None
    before = parent.tree if parent is not None else _empty_tree(repo)
    old_tree, new_tree = (commit.tree, before) if reverse else (before, commit.tree)
    changes: list[tuple[bytes, int | None, bytes | None]] = []
    for change in tree_changes(repo.object_store, old_tree, new_tree):
        path = (change.new.path if change.new is not None and change.new.path else
                change.old.path if change.old is not None else None)
        assert path is not None
        found = _lookup_tree(repo, onto.tree, path.decode(errors="surrogateescape"))
        current = (found[1], found[2]) if found is not None and found[0] in ("file", "submodule") else None
        was = (change.old.mode, change.old.sha) if change.old is not None and change.old.sha else None
        want = (change.new.mode, change.new.sha) if change.new is not None and change.new.sha else None
        if current == want:
            continue
        if current != was:
            raise ContentError("conflict")
        changes.append((path, want[0], want[1]) if want else (path, None, None))
    if not changes:
        raise ContentError("empty")
    return commit_tree_changes(repo.object_store, repo[onto.tree], changes)  # type: ignore[arg-type]
