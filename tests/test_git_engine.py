"""Fetches served by the real `git upload-pack`: everything git's own server does, behind forge's rules."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from forge import domain
from forge.testing import Forge, UserHandle


@pytest.fixture
def git_engine(use_engine) -> None:
    """Serve this test's fetches with real git."""
    use_engine("git")


@pytest.fixture
def history(forge: Forge, git, dated_history, tmp_path: Path) -> tuple[UserHandle, Path, list[str]]:
    """acme/app with 30 commits (one a day), pushed by a developer; returns the work tree."""
    forge.create_group("acme")
    dev = forge.create_user("dev")
    forge.create_project("acme/app", members={"dev": "maintainer"})
    work = tmp_path / "origin"
    shas = dated_history(work)
    git("remote", "add", "origin", forge.clone_url("acme/app", user=dev), cwd=work)
    git("push", "-q", "origin", "main", "v1", cwd=work)
    return dev, work, shas


def count(git, repo: Path) -> int:
    return len(git("rev-list", "--all", cwd=repo).stdout.split())


def test_clone_v0(forge: Forge, engine: str, history, git, tmp_path: Path) -> None:
    dev, _, shas = history
    git("-c", "protocol.version=0", "clone", "-q", forge.clone_url("acme/app", user=dev), tmp_path / "c")
    assert git("rev-parse", "HEAD", cwd=tmp_path / "c").stdout.strip() == shas[-1]


def test_git_engine_clone_speaks_protocol_v2_and_v0(forge: Forge, git_engine: None, history, git,
                                                    tmp_path: Path) -> None:
    dev, _, shas = history
    url = forge.clone_url("acme/app", user=dev)
    traced = subprocess.run(["git", "-c", "protocol.version=2", "clone", "-q", url, tmp_path / "v2"],
                            env={**os.environ, "GIT_TRACE_PACKET": "1"}, capture_output=True, text=True)
    assert traced.returncode == 0, traced.stderr
    assert "git< version 2" in traced.stderr
    git("-c", "protocol.version=0", "clone", "-q", url, tmp_path / "v0")
    for name in ("v2", "v0"):
        assert git("rev-parse", "HEAD", cwd=tmp_path / name).stdout.strip() == shas[-1]


def test_git_engine_ls_remote_honours_ref_prefixes(forge: Forge, git_engine: None, history, git) -> None:
    dev, _, shas = history
    out = git("-c", "protocol.version=2", "ls-remote", forge.clone_url("acme/app", user=dev),
              "refs/tags/*").stdout
    assert out.split("\t")[1].strip() == "refs/tags/v1"
    assert "refs/heads/main" not in out


@pytest.mark.parametrize(("args", "expected"), [
    (["--shallow-since", "2026-01-21T00:00:00Z"], 10),  # a bare date takes the time of day
    (["--shallow-exclude", "v1"], 20),
])
def test_git_engine_shallow_clones(forge: Forge, git_engine: None, history, git, tmp_path: Path,
                                   args: list[str], expected: int) -> None:
    dev, _, _ = history
    git("clone", "-q", *args, forge.clone_url("acme/app", user=dev), tmp_path / "c")
    assert count(git, tmp_path / "c") == expected


@pytest.mark.parametrize("depth", ["1", "20"])
def test_depth_clones_and_unshallow(forge: Forge, engine: str, history, git, tmp_path: Path,
                                    depth: str) -> None:
    dev, _, _ = history
    clone = tmp_path / "c"
    git("clone", "-q", "--depth", depth, forge.clone_url("acme/app", user=dev), clone)
    assert count(git, clone) == int(depth)
    git("fetch", "-q", "--unshallow", cwd=clone)
    assert count(git, clone) == 30


def test_git_engine_deepen_and_unshallow(forge: Forge, git_engine: None, history, git,
                                         tmp_path: Path) -> None:
    dev, _, _ = history
    clone = tmp_path / "c"
    git("clone", "-q", "--depth", "3", forge.clone_url("acme/app", user=dev), clone)
    git("fetch", "-q", "--deepen=5", cwd=clone)
    assert count(git, clone) == 8
    git("fetch", "-q", "--unshallow", cwd=clone)
    assert count(git, clone) == 30


@pytest.mark.parametrize("spec", ["blob:none", "tree:0"])
def test_git_engine_partial_clone_fetches_missing_objects_lazily(
        forge: Forge, git_engine: None, history, git, tmp_path: Path, spec: str) -> None:
    dev, _, shas = history
    clone = tmp_path / "c"
    git("clone", "-q", f"--filter={spec}", "--no-checkout", forge.clone_url("acme/app", user=dev), clone)
    missing = git("rev-list", "--objects", "--all", "--missing=print", cwd=clone).stdout
    assert "?" in missing  # objects really are missing before the checkout
    git("checkout", "-q", shas[3], cwd=clone)  # the lazy fetch goes through forge's rules too
    assert (clone / "f3.txt").read_text() == "day 3\n" * 4


def test_fetch_by_sha_reachable_and_unreachable(forge: Forge, engine: str, history, git,
                                                           tmp_path: Path) -> None:
    dev, work, shas = history
    clone = tmp_path / "c"
    git("init", "-q", clone)
    git("remote", "add", "origin", forge.clone_url("acme/app", user=dev), cwd=clone)
    git("fetch", "-q", "origin", shas[5], cwd=clone)  # not a ref tip
    assert git("cat-file", "-t", shas[5], cwd=clone).stdout.strip() == "commit"
    git("checkout", "-q", "-b", "topic", cwd=work)
    (work / "gone.txt").write_text("gone\n")
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", "soon unreachable", cwd=work)
    gone = git("rev-parse", "HEAD", cwd=work).stdout.strip()
    git("push", "-q", "origin", "topic", cwd=work)
    git("push", "-q", "origin", ":topic", cwd=work)  # no ref reaches `gone` any more
    git("fetch", "-q", "origin", gone, cwd=clone)
    assert git("cat-file", "-t", gone, cwd=clone).stdout.strip() == "commit"


def test_fetch_racing_pushes_never_fails(forge: Forge, engine: str, history, git, commit,
                                                    tmp_path: Path) -> None:
    dev, work, _ = history
    url = forge.clone_url("acme/app", user=dev)
    pushers = []
    for i in range(8):
        pusher = tmp_path / f"p{i}"
        git("clone", "-q", url, pusher)
        git("checkout", "-q", "-b", f"b{i}", cwd=pusher)
        pushers.append(pusher)
    fetcher = tmp_path / "fetcher"
    git("clone", "-q", url, fetcher)

    def push(pusher: Path) -> int:
        for n in range(3):
            commit(pusher, {f"{pusher.name}-{n}.txt": "x"})
            git("push", "-q", "origin", "HEAD", cwd=pusher)
        return 0

    fetches: list[subprocess.CompletedProcess[str]] = []

    def fetch_while_pushing() -> None:
        while len(fetches) < 12:
            fetches.append(git("fetch", "origin", cwd=fetcher, check=False))

    with ThreadPoolExecutor(max_workers=9) as pool:
        fetching = pool.submit(fetch_while_pushing)
        assert list(pool.map(push, pushers)) == [0] * 8
        fetching.result()
    assert [f.returncode for f in fetches] == [0] * 12, [f.stderr for f in fetches if f.returncode]


def _children() -> list[int]:
    """Process ids of this process's children running git upload-pack."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == os.getpid() and b"upload-pack" in cmdline:
            found.append(int(pid))
    return found


def test_git_engine_client_leaving_mid_clone_leaves_no_git_behind(forge: Forge, git_engine: None,
                                                                  git, tmp_path: Path) -> None:
    forge.create_group("acme")
    forge.create_project("acme/big", visibility="public",
                         files={f"blob{i}.bin": os.urandom(256 * 1024) for i in range(40)})
    url = urlsplit(forge.url)
    ls = git("ls-remote", f"{forge.url}/acme/big.git", "refs/heads/main").stdout.split()[0]
    want = f"want {ls} side-band-64k ofs-delta\n".encode()
    body = f"{len(want) + 4:04x}".encode() + want + b"0000" + b"0009done\n"
    sock = socket.create_connection((url.hostname, url.port))
    sock.sendall(b"POST /acme/big.git/git-upload-pack HTTP/1.1\r\nHost: x\r\n"
                 b"Content-Type: application/x-git-upload-pack-request\r\n"
                 + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    assert sock.recv(4096).startswith(b"HTTP/1.1 200")  # the pack is on its way
    assert _children()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    sock.close()  # reset: the client is gone mid-pack
    deadline = time.monotonic() + 20
    while _children() and time.monotonic() < deadline:
        time.sleep(0.05)
    leftovers = _children()
    for pid in leftovers:
        os.kill(pid, signal.SIGKILL)
    assert leftovers == []


def test_push_to_hidden_refs_is_refused_with_gits_wording(forge: Forge, history, git) -> None:
    dev, work, _ = history
    result = git("push", "origin", "HEAD:refs/pipelines/1", "HEAD:refs/keep-around/x", cwd=work,
                 check=False)
    assert result.returncode != 0
    assert "! [remote rejected] HEAD -> refs/pipelines/1 (deny updating a hidden ref)" in result.stderr
    assert "! [remote rejected] HEAD -> refs/keep-around/x (deny updating a hidden ref)" in result.stderr


def test_push_options_are_accepted_and_recorded(forge: Forge, history, git, commit) -> None:
    dev, work, _ = history
    git("checkout", "-q", "-b", "topic", cwd=work)
    sha = commit(work, {"new.txt": "1"})
    git("push", "-q", "-o", "ci.skip", "-o", "ci.variable=A=1", "-o", "merge_request.create",
        "-o", "anything.else", "origin", "topic", cwd=work)
    assert f"{sha}\trefs/heads/topic" in git("ls-remote", "origin", cwd=work).stdout
    event = forge.last_event(action="push_ref")
    assert (event["ref"], event["allowed"]) == ("refs/heads/topic", True)
    assert event["push_options"] == ["ci.skip", "ci.variable=A=1", "merge_request.create",
                                     "anything.else"]
    commit(work, {"newer.txt": "2"})
    git("push", "-q", "origin", "topic", cwd=work)
    assert forge.last_event(action="push_ref")["push_options"] is None


def test_push_atomic_lands_all_or_nothing(forge: Forge, history, git, commit) -> None:
    dev, work, _ = history
    git("checkout", "-q", "-b", "a", cwd=work)
    sha = commit(work, {"a.txt": "1"})
    result = git("push", "--atomic", "origin", "a", "HEAD:main", "HEAD:refs/heads/b", cwd=work,
                 check=False)
    assert result.returncode == 0, result.stderr
    refs = git("ls-remote", "origin", cwd=work).stdout
    assert f"{sha}\trefs/heads/a" in refs and f"{sha}\trefs/heads/b" in refs
    commit(work, {"c.txt": "1"})
    forge.protect_branch("acme/app", "guarded", push_access_level="owner")
    refused = git("push", "--atomic", "origin", "HEAD:refs/heads/c", "HEAD:refs/heads/guarded",
                  cwd=work, check=False)
    assert refused.returncode != 0
    assert "! [remote rejected] HEAD -> c (atomic push failure)" in refused.stderr  # git's words
    assert "refs/heads/c" not in git("ls-remote", "origin", cwd=work).stdout  # nothing landed
    # As git's receive-pack: hidden refs are refused before the transaction, the rest lands.
    hidden = git("push", "--atomic", "origin", "HEAD:refs/heads/c", "HEAD:refs/pipelines/9",
                 cwd=work, check=False)
    assert hidden.returncode != 0
    assert "! [remote rejected] HEAD -> refs/pipelines/9 (deny updating a hidden ref)" in hidden.stderr
    assert "* [new branch]      HEAD -> c" in hidden.stderr
    refs = git("ls-remote", "origin", cwd=work).stdout
    assert "refs/heads/c" in refs and "refs/pipelines/9" not in refs


def test_push_ref_that_cannot_live_beside_another_is_refused_as_git(forge: Forge, history, git,
                                                                      commit) -> None:
    """A D/F conflict (`dir` beside `dir/sub`): git's status and its reason, and an
    `--atomic` push lands nothing (the other ref used to land)."""
    dev, work, _ = history
    git("push", "-q", "origin", "HEAD:refs/heads/dir/sub", "HEAD:refs/heads/top", cwd=work)
    atomic = git("push", "--atomic", "origin", "HEAD:refs/heads/at6", "HEAD:refs/heads/dir",
                 cwd=work, check=False)
    assert atomic.returncode != 0
    assert ("remote: error: cannot lock ref 'refs/heads/dir': 'refs/heads/dir/sub' exists; "
            "cannot create 'refs/heads/dir'") in atomic.stderr
    assert "! [remote rejected] HEAD -> dir (atomic transaction failed)" in atomic.stderr
    assert "! [remote rejected] HEAD -> at6 (atomic transaction failed)" in atomic.stderr
    assert "refs/heads/at6" not in git("ls-remote", "origin", cwd=work).stdout
    under = git("push", "origin", "HEAD:refs/heads/top/x", cwd=work, check=False)
    assert ("remote: error: cannot lock ref 'refs/heads/top/x': 'refs/heads/top' exists; "
            "cannot create 'refs/heads/top/x'") in under.stderr
    assert "! [remote rejected] HEAD -> top/x (failed to update ref)" in under.stderr
    git("tag", "-a", "annotated", "-m", "a tag object", cwd=work)
    tag = git("rev-parse", "annotated", cwd=work).stdout.strip()
    not_a_commit = git("push", "origin", "annotated:refs/heads/tagbr", cwd=work, check=False)
    assert (f"remote: error: cannot update ref 'refs/heads/tagbr': trying to write non-commit "
            f"object {tag} to branch 'refs/heads/tagbr'") in not_a_commit.stderr


def test_push_force_with_lease(forge: Forge, history, git, commit, tmp_path: Path) -> None:
    dev, work, shas = history
    git("checkout", "-q", "-b", "lease", cwd=work)
    git("push", "-q", "origin", "lease", cwd=work)
    other = tmp_path / "other"
    git("clone", "-q", "--branch", "lease", forge.clone_url("acme/app", user=dev), other)
    commit(other, {"theirs.txt": "1"})
    git("push", "-q", "origin", "lease", cwd=other)  # someone else moves the branch
    git("reset", "-q", "--hard", shas[-2], cwd=work)
    stale = git("push", "--force-with-lease=lease:" + shas[-1], "origin", "lease", cwd=work,
                check=False)
    assert stale.returncode != 0 and "stale info" in stale.stderr
    git("fetch", "-q", "origin", cwd=work)
    git("push", "-q", "--force-with-lease", "origin", "lease", cwd=work)
    assert git("ls-remote", "origin", "lease", cwd=work).stdout.split()[0] == shas[-2]


def test_pack_cache_serves_repeated_and_concurrent_identical_clones_once(
        forge: Forge, git_engine: None, history, git, commit, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from forge import gitproc
    dev, work, shas = history
    url = forge.clone_url("acme/app", user=dev)
    runs: list[int] = []
    original = gitproc.UploadPack.__init__

    def counting(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        runs.append(1)
        original(self, *args, **kwargs)

    monkeypatch.setattr(gitproc.UploadPack, "__init__", counting)
    adverts: list[int] = []
    advertise = gitproc.advertise
    monkeypatch.setattr(gitproc, "advertise", lambda *a: adverts.append(1) or advertise(*a))
    git("clone", "-q", "--bare", url, tmp_path / "first")
    cold, cold_adverts = len(runs), len(adverts)
    with ThreadPoolExecutor(max_workers=6) as pool:
        list(pool.map(lambda i: git("clone", "-q", "--bare", url, tmp_path / f"c{i}"), range(6)))
    assert len(runs) == cold  # every later identical clone came from the cache
    assert len(adverts) == cold_adverts  # and so did its ref advertisement
    for i in range(6):
        assert git("rev-parse", "main", cwd=tmp_path / f"c{i}").stdout.strip() == shas[-1]
        assert git("fsck", "--full", cwd=tmp_path / f"c{i}").returncode == 0
    # A push changes the refs: the next clone is answered afresh, and sees the new commit.
    git("checkout", "-q", "-b", "more", cwd=work)
    new = commit(work, {"more.txt": "1"})
    git("push", "-q", "origin", "more", cwd=work)
    git("clone", "-q", "--bare", url, tmp_path / "after")
    assert len(runs) > cold
    assert git("rev-parse", "more", cwd=tmp_path / "after").stdout.strip() == new


@pytest.mark.parametrize("version", ["0", "2"])
def test_cached_ref_advertisement_follows_every_ref_change(
        forge: Forge, git_engine: None, history, git, commit, version: str) -> None:
    dev, work, _ = history
    with forge.app.app_context():
        repo = forge.state.backend.path_for(domain.get_project("acme/app").id)

    def served() -> list[str]:
        lines = git("-c", f"protocol.version={version}", "ls-remote", "origin", cwd=work).stdout
        return sorted(line for line in lines.splitlines() if not line.endswith("\tHEAD"))

    def on_disk() -> list[str]:
        refs = git("for-each-ref", "--format=%(objectname)\t%(refname)", "refs/heads", "refs/tags",
                   cwd=repo).stdout
        return sorted(refs.splitlines())

    assert served() == served() == on_disk()  # the second answer came from the cache
    git("checkout", "-q", "-b", "adv", cwd=work)
    commit(work, {"adv.txt": "1"})
    for change in (["adv"], ["--tags"], ["-f", "HEAD~1:adv"], ["--delete", "adv"]):
        if change == ["--tags"]:
            git("tag", "v-adv", cwd=work)
        git("push", "-q", "origin", *change, cwd=work)
        assert served() == on_disk(), change


def test_pack_cache_can_be_switched_off(forge: Forge, git_engine: None, history, git,
                                        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from forge.packcache import PackCache
    dev, _, _ = history
    monkeypatch.setattr(forge.state, "pack_cache", PackCache(tmp_path / "cache", 0, 300))
    for name in ("a", "b"):
        git("clone", "-q", "--bare", forge.clone_url("acme/app", user=dev), tmp_path / name)
    assert forge.state.pack_cache.hits == forge.state.pack_cache.misses == 0
    assert not (tmp_path / "cache").exists()


def test_push_reports_status_v2_when_git_asks_for_it(forge: Forge, history, git, commit,
                                                     tmp_path: Path) -> None:
    dev, work, _ = history
    git("checkout", "-q", "-b", "v2", cwd=work)
    commit(work, {"v2.txt": "1"})
    traced = subprocess.run(["git", "push", "origin", "v2", "HEAD:refs/pipelines/5"], cwd=work,
                            env={**os.environ, "GIT_TRACE_PACKET": "1"}, capture_output=True,
                            text=True)
    first_command = next(line for line in traced.stderr.splitlines()
                         if "git> " in line and "report-status" in line)
    assert "report-status-v2" in first_command  # git asks for v2, as forge advertises it
    assert "git< ok refs/heads/v2" in traced.stderr
    assert "git< ng refs/pipelines/5 deny updating a hidden ref" in traced.stderr
    assert "* [new branch]      v2 -> v2" in traced.stderr


def dotgit_commit(git: Any, work: Path, message: str) -> tuple[str, str]:
    """A commit on HEAD whose tree has a `.git` entry (git's fsck: hasDotgit); (commit, tree)."""
    import subprocess
    blob = git("rev-parse", "HEAD:" + git("ls-tree", "--name-only", "HEAD", cwd=work).stdout.split()[0],
               cwd=work).stdout.strip()
    tree = subprocess.run(["git", "mktree"], cwd=work, input=f"100644 blob {blob}\t.git\n",
                          capture_output=True, text=True, check=True).stdout.strip()
    return git("commit-tree", tree, "-p", "HEAD", "-m", message, cwd=work).stdout.strip(), tree


def test_push_of_objects_gits_fsck_refuses_lands_nothing(forge: Forge, history, git) -> None:
    """Gitaly's receive-pack checks what it receives (receive.fsckObjects): a tree with a
    `.git` entry is refused whole, with git's words."""
    dev, work, _ = history
    bad, tree = dotgit_commit(git, work, "a .git entry")
    pushed = git("push", "origin", f"{bad}:refs/heads/dotgit", "HEAD:refs/heads/fine", cwd=work,
                 check=False)
    assert pushed.returncode != 0
    assert f"remote: error: object {tree}: hasDotgit: contains '.git'" in pushed.stderr
    assert "! [remote rejected] " in pushed.stderr and "(unpacker error)" in pushed.stderr
    refs = git("ls-remote", "origin", cwd=work).stdout
    assert "refs/heads/dotgit" not in refs and "refs/heads/fine" not in refs


def test_push_is_checked_on_its_own_pack_not_its_neighbours(forge: Forge, history, git, commit,
                                                           tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Another push's pack arriving meanwhile (here one git's fsck refuses) is that push's
    business: this push is connected and checked on the pack it brought."""
    import shutil
    import subprocess

    from forge import repos
    dev, work, _ = history
    bad, tree = dotgit_commit(git, work, "a neighbour's")
    prefix = tmp_path / "neighbour"
    subprocess.run(["git", "pack-objects", "-q", str(prefix)], cwd=work, input=f"{bad}\n{tree}\n",
                   text=True, check=True)
    repo = forge.repository_path("acme/app")
    real = repos.ForgeObjectStore.add_thin_pack

    def with_a_neighbour(self: Any, *args: Any, **kwargs: Any) -> Any:
        pack = real(self, *args, **kwargs)
        for made in tmp_path.glob("neighbour-*"):
            shutil.copy(made, repo / "objects" / "pack" / made.name)
        return pack

    monkeypatch.setattr(repos.ForgeObjectStore, "add_thin_pack", with_a_neighbour)
    mine = commit(work, {"mine.txt": "mine\n"})
    git("push", "-q", "origin", "HEAD:refs/heads/mine", cwd=work)
    assert f"{mine}\trefs/heads/mine" in git("ls-remote", "origin", cwd=work).stdout
