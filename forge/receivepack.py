"""dulwich's receive-pack with GitLab's semantics: per-ref rules, one ref lock, hidden refs.

Per-ref push rules run inside the handler, as GitLab's pre-receive hook does, and are
reported through git's report-status; every ref update is a compare-and-swap under the
repository's ref lock, shared with every other writer; a pack that leaves a ref pointing
at missing objects is refused; push options are read and kept.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Generator, Iterable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from dulwich.objects import Commit, ObjectID, Tag, Tree
from dulwich.pack import Pack
from dulwich.protocol import (
    CAPABILITY_ATOMIC,
    CAPABILITY_PUSH_OPTIONS,
    CAPABILITY_REPORT_STATUS,
    CAPABILITY_SIDE_BAND_64K,
    SIDE_BAND_CHANNEL_PROGRESS,
    ReceivableProtocol,
    extract_capabilities,
)
from dulwich.refs import Ref, check_ref_format
from dulwich.server import ReceivePackHandler

from forge import permissions as perm
from forge.gitproc import git_binary
from forge.housekeeping import record_refused_packs, sweep
from forge.repos import RepositoryBusy, current_ref, in_use, maintenance, ref_lock
from forge.repository_ops import peel

# Refs GitLab keeps for itself: hidden from pushers and refused with git's wording.
HIDDEN_REFS = (b"refs/pipelines/", b"refs/keep-around/", b"refs/merge-requests/",
               b"refs/environments/")
REPORT_STATUS_V2 = b"report-status-v2"
# What Gitaly's receive-pack tells fsck to ignore (receive.fsck.<id>=ignore): old
# histories are full of these.
GITALY_FSCK_IGNORES = "badTimezone=ignore,missingSpaceBeforeDate=ignore,zeroPaddedFilemode=ignore"
RefCheck = Callable[[str, str, str, bool, list[str]], perm.Decision]


class ForgeReceivePackHandler(ReceivePackHandler):
    """receive-pack with GitLab's per-ref rules, a connectivity check and one push at a time."""

    def __init__(self, backend: Any, args: Any, proto: Any, stateless_rpc: bool = False,
                 advertise_refs: bool = False, check_ref: RefCheck | None = None,
                 repo_dir: Path | None = None) -> None:
        super().__init__(backend, args, proto, stateless_rpc=stateless_rpc,
                         advertise_refs=advertise_refs)
        self.check_ref = check_ref
        self.repo_dir = repo_dir
        # The packs (file names without suffix) this push added: its own only, whatever
        # other pushes add to the repository meanwhile.
        self._own_packs: set[str] = set()
        self._clashed = False
        self._connected: bool | None = None
        self.repo = _HidingRefs(self.repo)  # type: ignore[assignment]
        self._held = ExitStack()
        self._locked = False
        self._accepted = False
        self._refused = False

    @property
    def accepted(self) -> bool:
        """Whether the push changed at least one ref."""
        return self._accepted

    def capabilities(self) -> list[bytes]:
        """dulwich's capabilities plus `push-options` and `report-status-v2`, as Gitaly's."""
        return [*super().capabilities(), CAPABILITY_PUSH_OPTIONS, REPORT_STATUS_V2]

    def set_client_capabilities(self, caps: Iterable[bytes]) -> None:
        """Accept `report-status-v2`: its `ok`/`ng` lines are report-status's, which forge
        writes (v2 only adds `option` lines after an `ok`, for refs a hook rewrote, and
        forge rewrites none)."""
        caps = list(caps)
        if REPORT_STATUS_V2 in caps and CAPABILITY_REPORT_STATUS not in caps:
            caps.append(CAPABILITY_REPORT_STATUS)
        super().set_client_capabilities(caps)

    def handle(self) -> None:
        """Receive the push; ref updates happen under the repository's ref lock."""
        if self.advertise_refs or self.repo_dir is None:
            super().handle()
            return
        store: Any = self.repo.object_store
        add_thin_pack = store.add_thin_pack

        def own_pack(*args: Any, **kwargs: Any) -> Any:  # this push's pack, not a neighbour's
            pack = add_thin_pack(*args, **kwargs)
            if pack is not None:
                self._own_packs.add(Path(pack.index.path).stem)
            return pack

        store.add_thin_pack = own_pack  # this request's store only
        with in_use(self.repo_dir), ExitStack() as self._held:
            super().handle()
            if self._refused or not self._accepted:
                # What this push brought may be referenced by nothing: housekeeping checks
                # and drops such packs.
                record_refused_packs(self.repo_dir, sorted(self._own_packs))
        # A pack that failed to unpack leaves a temporary file. When nobody else is using
        # the repository, sweep it now; otherwise housekeeping does, after this push.
        if any((self.repo_dir / "objects").glob("tmp_pack_*")):
            with maintenance(self.repo_dir) as alone:
                if alone:
                    sweep(self.repo_dir)

    def _apply_pack(self, refs: list[tuple[Any, Any, Any]]) -> Iterator[tuple[bytes, bytes]]:
        """dulwich's, with the received objects checked as Gitaly's receive-pack checks them
        (`receive.fsckObjects`) before any ref moves, and with git's words for the refs an
        `--atomic` push did not apply because another was refused (dulwich says `atomic
        push failed`)."""
        statuses = self._apply_pack_hiding(refs)
        results: list[tuple[bytes, bytes]] = []
        for ref, status in statuses:
            if ref == b"unpack" and status == b"ok" and (problems := self._fsck()):
                statuses.close()  # no ref is applied: the pack is dropped by housekeeping
                for line in problems:
                    self._error(line.removeprefix("error: "))
                yield b"unpack", b"index-pack abnormal exit"
                for _, _, name in refs:
                    yield name, b"unpacker error"
                return
            results.append((ref, b"atomic push failure" if status == b"atomic push failed" else status))
        refs_only = [status for ref, status in results if ref != b"unpack"]
        if self._clashed and self.has_capability(CAPABILITY_ATOMIC) and set(refs_only) <= {
                b"atomic push failure", b"failed to update ref"}:
            # git finds a D/F conflict in the ref transaction itself, which fails whole
            results = [(ref, status if ref == b"unpack" else b"atomic transaction failed")
                       for ref, status in results]
        yield from results

    def _fsck(self) -> list[str]:
        """What git's fsck finds wrong in the packs this push brought (`hasDotgit`,
        `badDate`, ...), as lines of git's; nothing when all is well or git is missing.
        What Gitaly lets through is let through (`GITALY_FSCK_IGNORES`)."""
        git = find_git()
        if git is None or self.repo_dir is None:
            return []
        problems: list[str] = []
        for name in sorted(self._own_packs):
            checked = subprocess.run(
                [git, "index-pack", "--verify", f"--strict={GITALY_FSCK_IGNORES}",
                 str(self.repo_dir / "objects" / "pack" / f"{name}.pack")],
                cwd=self.repo_dir, capture_output=True, env={**os.environ, "GIT_DIR": str(self.repo_dir)})
            if checked.returncode != 0:
                problems += [line for line in checked.stderr.decode(errors="replace").splitlines()
                             if line.startswith("error: ")] or ["error: fsck error in packed object"]
        return problems

    def _apply_pack_hiding(self, refs: list[tuple[Any, Any, Any]]
                           ) -> Generator[tuple[bytes, bytes], None, None]:
        """dulwich's, except that an `--atomic` push refuses its hidden refs first and applies
        the rest atomically, as git's receive-pack (`reject_updates_to_hidden` runs before
        the transaction, which skips what it refused)."""
        zero = perm.ZERO_SHA.encode()
        hidden = {ref for _, _, ref in refs if ref.startswith(HIDDEN_REFS)}
        rest = [command for command in refs if command[2] not in hidden]
        brings_pack = any(new != zero for _, new, _ in rest)
        if (not hidden or not rest or not self.has_capability(CAPABILITY_ATOMIC)
                or (not brings_pack and any(new != zero for _, new, _ in refs))):
            yield from super()._apply_pack(refs)
            return
        results = dict(super()._apply_pack(rest))
        unpacked = results.pop(b"unpack")
        yield b"unpack", unpacked
        if unpacked != b"ok":  # as dulwich: no ref lines after a failed unpack
            return
        for _, _, ref in refs:
            yield ref, b"deny updating a hidden ref" if ref in hidden else results[ref]

    def _on_update(self, ref_name: bytes, old_sha: bytes, new_sha: bytes) -> bytes | None:
        """Refuse a ref update that would point at missing objects or that the rules deny."""
        error = self._check_update(ref_name, old_sha, new_sha)
        if error:
            self._refused = True
        else:
            self._accepted = True
        return error

    def _check_update(self, ref_name: bytes, old_sha: bytes, new_sha: bytes) -> bytes | None:
        """Decide one ref update: None to let dulwich apply it, or git's status for a refusal.

        The first update takes the ref lock, held until the push ends, so checking the
        ref's current value here and dulwich's update after it are one compare-and-swap
        against every other writer (pushes, REST, seeds) in every process.
        """
        error = super()._on_update(ref_name, old_sha, new_sha)  # type: ignore[arg-type]
        if error:
            return error
        if not check_ref_format(Ref(ref_name[len(b"refs/"):])):  # refs/foo: dulwich cannot store it
            return b"funny refname"
        if ref_name.startswith(HIDDEN_REFS):
            return b"deny updating a hidden ref"
        if self.repo_dir is not None and not self._locked:
            try:
                self._held.enter_context(ref_lock(self.repo_dir))
            except RepositoryBusy:
                return b"failed to lock"
            self._locked = True
        current = current_ref(self.repo, ref_name)  # type: ignore[arg-type]
        if current != old_sha:
            self._error(f"cannot lock ref '{_name(ref_name)}': is at {current.decode()} but "
                        f"expected {old_sha.decode()}")
            return b"failed to update ref"
        zero = perm.ZERO_SHA.encode()
        if new_sha != zero and not self._objects_connected(new_sha):
            return b"missing necessary objects"
        if self.check_ref is not None:
            fast_forward = old_sha == zero or new_sha == zero or self._is_ancestor(old_sha, new_sha)
            decision = self.check_ref(ref_name.decode(errors="surrogateescape"), old_sha.decode(),
                                      new_sha.decode(), fast_forward,
                                      getattr(self.proto, "push_options", None) or [])
            if not decision.allowed:
                if self.has_capability(CAPABILITY_SIDE_BAND_64K):
                    self.proto.write_sideband(SIDE_BAND_CHANNEL_PROGRESS,
                                              f"GitLab: {decision.message}\n".encode())
                return b"pre-receive hook declined"
        if ref_name.startswith(b"refs/heads/") and new_sha != zero and not isinstance(
                self.repo.object_store[ObjectID(new_sha)], Commit):
            self._error(f"cannot update ref '{_name(ref_name)}': trying to write non-commit "
                        f"object {new_sha.decode()} to branch '{_name(ref_name)}'")
            return b"failed to update ref"  # git's ref store: a branch names a commit
        if new_sha != zero and old_sha == zero and (clash := self._clash(ref_name)):
            self._clashed = True
            self._error(f"cannot lock ref '{_name(ref_name)}': '{_name(clash)}' exists; "
                        f"cannot create '{_name(ref_name)}'")
            return b"failed to update ref"
        return None

    def _clash(self, ref_name: bytes) -> bytes | None:
        """An existing ref that a new `ref_name` cannot live beside in a ref store of files:
        `refs/heads/a` when creating `refs/heads/a/b`, or `refs/heads/a/b` when creating
        `refs/heads/a` (git's D/F conflict)."""
        names = set(self.repo.refs.allkeys())
        parts = ref_name.split(b"/")
        for end in range(2, len(parts)):
            if (prefix := b"/".join(parts[:end])) in names:
                return prefix
        below = ref_name + b"/"
        return next((name for name in sorted(names) if name.startswith(below)), None)

    def _error(self, message: str) -> None:
        """Tell the pusher why, as git's receive-pack does (`remote: error: ...`)."""
        if self.has_capability(CAPABILITY_SIDE_BAND_64K):
            self.proto.write_sideband(SIDE_BAND_CHANNEL_PROGRESS, f"error: {message}\n".encode())

    def _is_ancestor(self, old_sha: bytes, new_sha: bytes) -> bool:
        """Whether the update is a fast-forward: `old_sha` (peeled to a commit) is an
        ancestor of `new_sha`, however their commit dates run, as `git merge-base
        --is-ancestor` (GitLab's `ancestor?`) answers."""
        store = self.repo.object_store
        old_commit, new_commit = peel(store, old_sha), peel(store, new_sha)
        if old_commit is None or new_commit is None:
            return False
        old, new = old_commit.id, new_commit.id
        if old == new:
            return True
        git = find_git()
        if git is not None and self.repo_dir is not None:
            answer = subprocess.run(
                [git, "merge-base", "--is-ancestor", old.decode(), new.decode()],
                cwd=self.repo_dir, capture_output=True,
                env={**os.environ, "GIT_DIR": str(self.repo_dir)})
            if answer.returncode in (0, 1):
                return answer.returncode == 0
        seen, todo = {new}, [new]  # without git: every ancestor, no date cut-off
        while todo:
            commit = store[ObjectID(todo.pop())]
            for parent in commit.parents:  # type: ignore[attr-defined]
                if parent == old:
                    return True
                if parent not in seen and parent in store:
                    seen.add(parent)
                    todo.append(parent)
        return False

    def _objects_connected(self, new_sha: bytes) -> bool:
        """Check that `new_sha` exists and every object the push added has its references."""
        store = self.repo.object_store
        if ObjectID(new_sha) not in store:
            return False
        if self._connected is None:
            assert self.repo_dir is not None
            self._connected = all(
                self._pack_connected(self.repo_dir / "objects" / "pack" / name)
                for name in self._own_packs)
        return self._connected

    def _pack_connected(self, basename: Path) -> bool:
        """Whether every object of one new pack has what it points at in the store."""
        store = self.repo.object_store
        pack = Pack(str(basename), object_format=self.repo.object_format)
        try:
            return all(all(ref in store for ref in _references(pack[sha]))  # type: ignore[operator]
                       for sha in pack)
        finally:
            pack.close()


def _name(ref: bytes) -> str:
    return ref.decode(errors="replace")


def find_git() -> str | None:
    """The git that checks pushes (ancestry, fsck); None: dulwich does what it can alone."""
    return git_binary()


class _HidingRefs:
    """A repository whose ref listing leaves out the refs GitLab hides from pushers."""

    def __init__(self, repo: Any) -> None:
        self._repo = repo

    def get_refs(self) -> dict[bytes, bytes]:
        """The refs a pusher sees: all but the hidden ones."""
        return {name: sha for name, sha in self._repo.get_refs().items()
                if not name.startswith(HIDDEN_REFS)}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._repo, name)


def _references(obj: Any) -> Iterator[bytes]:
    """Yield the ids an object points at (gitlinks excluded: they name other repositories)."""
    if isinstance(obj, Commit):
        yield obj.tree
        yield from obj.parents
    elif isinstance(obj, Tree):
        for entry in obj.iteritems():
            if entry.mode != 0o160000:
                yield entry.sha
    elif isinstance(obj, Tag):
        yield obj.object[1]


class PushProtocol(ReceivableProtocol):
    """The receive-pack protocol with what dulwich's reader lacks: shallow lines, push options.

    dulwich reads every command line as a ref update; git sends `shallow <sha>` first
    when pushing from a `--depth` clone (the connectivity check makes ignoring them
    safe). A client that was offered `push-options` and uses them (`git push -o ci.skip`)
    sends them after the commands, before the pack; they are read off here and kept.
    """

    _commands_done = False
    _first = True
    push_options: list[str] | None = None

    def read_pkt_line(self) -> bytes | None:
        """Read a pkt-line, skipping `shallow` lines and collecting push options."""
        while True:
            line = super().read_pkt_line()
            if self._commands_done:
                return line
            if line is None:
                self._commands_done = True
                if self.push_options is not None:
                    while (option := super().read_pkt_line()) is not None:
                        self.push_options.append(option.rstrip(b"\n").decode(errors="replace"))
                return line
            if line.startswith(b"shallow "):
                continue
            if self._first:
                self._first = False
                _, caps = extract_capabilities(line)
                if CAPABILITY_PUSH_OPTIONS in caps:
                    self.push_options = []
            return line
