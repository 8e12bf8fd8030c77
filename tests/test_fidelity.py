"""Side by side with `git http-backend` (Gitaly's settings): the same client command, the same outcome.

Each case runs against a forge project and against http-backend serving a repository
that received the same pushes, then compares what the client ends up with. The git
engine must match every case; the dulwich engine the subset the README documents.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from forge.httpbackend import HttpBackend, configure
from forge.testing import Forge

DULWICH_LACKS = {"v2-ls-refs", "shallow-since", "shallow-exclude", "deepen", "filter-blob-none",
                 "filter-tree-0"}


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpBackend]:
    root = tmp_path_factory.mktemp("http-backend")
    server = HttpBackend(root)
    yield server
    server.stop()


@pytest.fixture
def pair(forge: Forge, backend: HttpBackend, git, dated_history, tmp_path: Path,
         request: pytest.FixtureRequest) -> dict[str, object]:
    """The same history on forge (acme/app, public; dev maintains it) and on http-backend."""
    name = f"r{abs(hash(request.node.nodeid)) % 10**8}"
    forge.create_group("acme")
    dev = forge.create_user("dev")
    forge.create_project("acme/app", visibility="public", members={"dev": "maintainer"})
    forge.unprotect_branch("acme/app", "main")
    bare = backend.root / f"{name}.git"
    git("init", "-q", "--bare", bare)
    configure(bare)
    work = tmp_path / "origin"
    shas = dated_history(work)
    git("checkout", "-q", "-b", "gone", cwd=work)
    (work / "gone.txt").write_text("gone\n")
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", "gone", cwd=work)
    gone = git("rev-parse", "HEAD", cwd=work).stdout.strip()
    git("checkout", "-q", "main", cwd=work)
    urls = {"forge": forge.clone_url("acme/app", user=dev), "backend": f"{backend.url}/{name}.git"}
    for url in urls.values():
        git("push", "-q", url, "main", "v1", "gone", cwd=work)
        git("push", "-q", url, ":gone", cwd=work)  # `gone` is now unreachable on both
    return {"urls": urls, "shas": shas, "gone": gone, "work": work}


def _objects(git, repo: Path) -> tuple[int, int]:
    """(commits reachable, objects missing) in a clone."""
    commits = len(git("rev-list", "--all", cwd=repo).stdout.split())
    listing = git("rev-list", "--objects", "--all", "--missing=print", cwd=repo).stdout
    return commits, sum(1 for line in listing.splitlines() if line.startswith("?"))


def _fetch_case(case: str, git, url: str, target: Path, shas: list[str], gone: str) -> object:
    """Run one fetch-side case against `url`; return what the client ends up with."""
    def run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        return git(*args, cwd=cwd, check=False)

    if case == "clone-v2" or case == "clone-v0":
        version = case[-1]
        result = run("-c", f"protocol.version={version}", "clone", "-q", url, target)
        return result.returncode, _objects(git, target) if result.returncode == 0 else None
    if case == "v2-ls-refs":
        return run("-c", "protocol.version=2", "ls-remote", url, "refs/tags/*").stdout.split("\t")[1]
    if case in ("depth-1", "depth-20"):
        run("clone", "-q", "--depth", case.split("-")[1], url, target)
        return _objects(git, target)
    if case == "shallow-since":
        run("clone", "-q", "--shallow-since", "2026-01-21T00:00:00Z", url, target)  # a bare date: now's time
        return _objects(git, target)
    if case == "shallow-exclude":
        run("clone", "-q", "--shallow-exclude", "v1", url, target)
        return _objects(git, target)
    if case == "deepen":
        run("clone", "-q", "--depth", "3", url, target)
        return run("fetch", "-q", "--deepen=5", cwd=target).returncode, _objects(git, target)
    if case == "unshallow":
        run("clone", "-q", "--depth", "3", url, target)
        return run("fetch", "-q", "--unshallow", cwd=target).returncode, _objects(git, target)
    if case in ("filter-blob-none", "filter-tree-0"):
        spec = "blob:none" if case == "filter-blob-none" else "tree:0"
        run("clone", "-q", f"--filter={spec}", "--no-checkout", url, target)
        before = _objects(git, target)
        checkout = run("checkout", "-q", shas[3], cwd=target)
        return before[1] > 0, checkout.returncode, (target / "f3.txt").read_text()
    if case in ("fetch-reachable-sha", "fetch-unreachable-sha"):
        sha = shas[5] if case == "fetch-reachable-sha" else gone
        run("init", "-q", target)
        fetched = run("fetch", "-q", url, sha, cwd=target)
        return fetched.returncode, run("cat-file", "-t", sha, cwd=target).stdout.strip()
    if case == "shallow-fetch-older-tag":  # clone --depth 1, then tags from before the cut
        run("clone", "-q", "--depth", "1", url, target)
        return run("fetch", "-q", "--tags", cwd=target).returncode, _objects(git, target)
    if case == "runner-fetch":
        run("init", "-q", target)
        run("remote", "add", "origin", url, cwd=target)
        fetched = run("fetch", "origin", "--prune", "--depth", "20",
                      "+refs/heads/main:refs/remotes/origin/main", "+refs/tags/*:refs/tags/*",
                      cwd=target)
        run("checkout", "-f", "-q", shas[-1], cwd=target)
        return fetched.returncode, _objects(git, target)
    raise AssertionError(case)


CONTENT = "day 3\n" * 4
FETCH_EXPECTED: dict[str, object] = {
    "clone-v2": (0, (30, 0)), "clone-v0": (0, (30, 0)), "depth-1": (1, 0), "depth-20": (20, 0),
    "shallow-since": (10, 0), "shallow-exclude": (20, 0), "deepen": (0, (8, 0)),
    "unshallow": (0, (30, 0)), "v2-ls-refs": "refs/tags/v1\n", "filter-blob-none": (True, 0, CONTENT),
    "filter-tree-0": (True, 0, CONTENT), "fetch-reachable-sha": (0, "commit"),
    "fetch-unreachable-sha": (0, "commit"), "runner-fetch": (0, (30, 0)),
    "shallow-fetch-older-tag": (0, (11, 0)),
}
FETCH_CASES = ["clone-v2", "clone-v0", "v2-ls-refs", "depth-1", "depth-20", "shallow-since",
               "shallow-exclude", "deepen", "unshallow", "filter-blob-none", "filter-tree-0",
               "fetch-reachable-sha", "fetch-unreachable-sha", "runner-fetch",
               "shallow-fetch-older-tag"]


@pytest.mark.parametrize(("engine_name", "case"), [
    (engine_name, case) for engine_name in ("git", "dulwich") for case in FETCH_CASES
    if engine_name == "git" or case not in DULWICH_LACKS])  # the README's table of engines
def test_fidelity_fetch(forge: Forge, pair: dict[str, object], use_engine, git, tmp_path: Path,
                        engine_name: str, case: str) -> None:
    use_engine(engine_name)
    urls, shas, gone = pair["urls"], pair["shas"], pair["gone"]
    assert isinstance(urls, dict) and isinstance(shas, list) and isinstance(gone, str)
    outcomes = {side: _fetch_case(case, git, url, tmp_path / side, shas, gone)
                for side, url in urls.items()}
    assert outcomes["forge"] == outcomes["backend"] == FETCH_EXPECTED[case]


def _push_case(case: str, git, url: str, work: Path) -> object:
    """Run one push-side case from `work` against `url`; return the outcome and the remote refs."""
    def push(*args: str) -> int:
        options = [a for a in args if a.startswith("-")]
        refspecs = [a for a in args if not a.startswith("-")]
        return git("push", *options, url, *refspecs, cwd=work, check=False).returncode

    if case == "branches-and-tags":
        git("tag", "-f", "v2", cwd=work)
        outcome: object = push("main:refs/heads/copy", "v2")
    elif case == "delete":
        outcome = (push("main:refs/heads/doomed"), push(":refs/heads/doomed"))
    elif case == "force":
        outcome = (push("HEAD~5:refs/heads/main"), push("--force", "HEAD~5:refs/heads/main"))
    elif case == "force-with-lease":
        head = git("rev-parse", "HEAD", cwd=work).stdout.strip()
        outcome = (push("--force-with-lease=main:" + "1" * 40, "HEAD~2:refs/heads/main"),
                   push(f"--force-with-lease=main:{head}", "HEAD~2:refs/heads/main"))
    elif case == "atomic":
        outcome = (push("--atomic", "main:refs/heads/x", "main:refs/pipelines/1"),
                   push("--atomic", "main:refs/heads/y", "main:refs/heads/z"))
    elif case == "push-options":
        outcome = push("--push-option=ci.skip", "--push-option=ci.variable=A=1", "main:refs/heads/opt")
    elif case == "hidden-ref":
        outcome = push("main:refs/pipelines/1")
    elif case == "d-f-conflict":  # `dir` beside `dir/sub`: refused, and --atomic lands nothing
        outcome = (push("main:refs/heads/dir/sub"),
                   push("--atomic", "main:refs/heads/at", "main:refs/heads/dir"),
                   push("main:refs/heads/dir/sub/deeper"))
    elif case == "old-history":  # what Gitaly's fsck lets through: old tools wrote these
        def literally(kind: str, text: str) -> str:
            return subprocess.run(["git", "hash-object", "-t", kind, "--literally", "-w", "--stdin"],
                                  cwd=work, input=text.encode("latin-1"), capture_output=True,
                                  check=True).stdout.decode().strip()
        head = git("rev-parse", "HEAD", cwd=work).stdout.strip()
        base = git("rev-parse", "HEAD^{tree}", cwd=work).stdout.strip()
        nospace = literally("commit", f"tree {base}\nparent {head}\nauthor A <a@x>1700000000 +0000\n"
                            f"committer A <a@x> 1700000000 +0000\n\nno space before the date\n")
        padded = literally("tree", "040000 dir\0" + bytes.fromhex(base).decode("latin-1"))
        old = literally("commit", f"tree {padded}\nparent {nospace}\n"
                        "author A <a@x> 1700000000 +0000\ncommitter A <a@x> 1700000000 +0000\n\n"
                        "a zero-padded mode\n")
        outcome = push(f"{old}:refs/heads/old")
    elif case == "fsck":  # a tree with a `.git` entry (receive.fsckObjects, as Gitaly)
        blob = git("rev-parse", "HEAD:" + git("ls-tree", "--name-only", "HEAD", cwd=work)
                   .stdout.split()[0], cwd=work).stdout.strip()
        tree = subprocess.run(["git", "mktree"], cwd=work, input=f"100644 blob {blob}\t.git\n",
                              capture_output=True, text=True, check=True).stdout.strip()
        bad = git("commit-tree", tree, "-p", "HEAD", "-m", "a .git entry", cwd=work).stdout.strip()
        outcome = push(f"{bad}:refs/heads/dotgit", "main:refs/heads/beside")
    else:
        raise AssertionError(case)
    refs = git("ls-remote", url, cwd=work).stdout
    return outcome, sorted(line.split("\t")[1] for line in refs.splitlines()
                           if not line.endswith(("HEAD", "^{}")))


PUSH_EXPECTED = {
    "branches-and-tags": (0, ["refs/heads/copy", "refs/heads/main", "refs/tags/v1", "refs/tags/v2"]),
    "delete": ((0, 0), ["refs/heads/main", "refs/tags/v1"]),
    "force": ((1, 0), ["refs/heads/main", "refs/tags/v1"]),
    "force-with-lease": ((1, 0), ["refs/heads/main", "refs/tags/v1"]),
    "atomic": ((1, 0), ["refs/heads/main", "refs/heads/x", "refs/heads/y", "refs/heads/z",
                        "refs/tags/v1"]),
    "push-options": (0, ["refs/heads/main", "refs/heads/opt", "refs/tags/v1"]),
    "hidden-ref": (1, ["refs/heads/main", "refs/tags/v1"]),
    "d-f-conflict": ((0, 1, 1), ["refs/heads/dir/sub", "refs/heads/main", "refs/tags/v1"]),
    "fsck": (1, ["refs/heads/main", "refs/tags/v1"]),
    "old-history": (0, ["refs/heads/main", "refs/heads/old", "refs/tags/v1"]),
}


@pytest.mark.parametrize("case", ["branches-and-tags", "delete", "force", "force-with-lease",
                                  "atomic", "push-options", "hidden-ref", "d-f-conflict",
                                  "fsck", "old-history"])
def test_fidelity_push(forge: Forge, pair: dict[str, object], git, case: str) -> None:
    urls, work = pair["urls"], pair["work"]
    assert isinstance(urls, dict) and isinstance(work, Path)
    outcomes = {}
    for side, url in urls.items():
        git("fetch", "-q", url, "main", cwd=work)
        git("checkout", "-q", "-B", "main", "FETCH_HEAD", cwd=work)
        outcomes[side] = _push_case(case, git, url, work)
    assert outcomes["forge"] == outcomes["backend"] == PUSH_EXPECTED[case]
