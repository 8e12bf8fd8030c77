"""Pushes with real git: roles, protected branches per ref, job tokens, races, big packs."""

from __future__ import annotations

import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from forge import receivepack
from forge.testing import Forge, UserHandle

# GitLab's per-ref refusal (spec section 1), as git prints it
PROTECTED = "remote: GitLab: You are not allowed to push code to protected branches on this project."


@pytest.fixture
def users(forge: Forge) -> dict[str, UserHandle]:
    forge.create_group("acme")
    people = {role: forge.create_user(role[:4] + "user") for role in
              ("reporter", "developer", "maintainer")}
    forge.create_project("acme/app", files={"README.md": "v1\n"},
                         members={u.username: role for role, u in people.items()})
    return people


def clone(forge: Forge, git, tmp_path: Path, user: UserHandle, name: str = "work") -> Path:
    work = tmp_path / name
    git("clone", "-q", forge.clone_url("acme/app", user=user), work)
    return work


def test_push_reporter_refused(forge: Forge, users: dict[str, UserHandle], git, commit,
                               tmp_path: Path) -> None:
    work = clone(forge, git, tmp_path, users["reporter"])
    commit(work, {"x": "1"})
    result = git("push", "origin", "HEAD:feature", cwd=work, check=False)
    assert result.returncode != 0
    assert "remote: You are not allowed to push code to this project." in result.stderr
    assert forge.last_event(action="push_code")["reason"] == "insufficient_role"


def test_push_developer_unprotected_accepted_protected_default_refused_per_ref(
        forge: Forge, users: dict[str, UserHandle], git, commit, tmp_path: Path) -> None:
    work = clone(forge, git, tmp_path, users["developer"])
    sha = commit(work, {"x": "1"})
    result = git("push", "origin", "HEAD:main", "HEAD:feature", cwd=work, check=False)
    assert result.returncode != 0
    assert PROTECTED in result.stderr
    assert "! [remote rejected] HEAD -> main (pre-receive hook declined)" in result.stderr
    assert "* [new branch]      HEAD -> feature" in result.stderr
    refs = git("ls-remote", forge.clone_url("acme/app", user=users["developer"])).stdout
    assert f"{sha}\trefs/heads/feature" in refs
    assert f"{sha}\trefs/heads/main" not in refs
    event = forge.last_event(action="push_ref", allowed=False)
    assert (event["ref"], event["reason"], event["status"]) == (
        "refs/heads/main", "protected_branch", 403)


def test_push_maintainer_to_default_branch_accepted(forge: Forge, users: dict[str, UserHandle],
                                                    git, commit, tmp_path: Path) -> None:
    work = clone(forge, git, tmp_path, users["maintainer"])
    sha = commit(work, {"x": "1"})
    git("push", "-q", "origin", "main", cwd=work)
    assert git("ls-remote", "origin", "main", cwd=work).stdout.startswith(sha)


def test_push_force_and_delete_of_protected_branch_refused(
        forge: Forge, users: dict[str, UserHandle], git, commit, tmp_path: Path) -> None:
    forge.protect_branch("acme/app", "stable")
    maintainer = users["maintainer"]
    work = clone(forge, git, tmp_path, maintainer)
    commit(work, {"x": "1"})
    git("push", "-q", "origin", "main", "main:stable", cwd=work)
    git("reset", "-q", "--hard", "HEAD~1", cwd=work)
    commit(work, {"y": "diverged"})
    result = git("push", "--force", "origin", "main", cwd=work, check=False)
    assert ("remote: GitLab: You are not allowed to force push code to a protected branch "
            "on this project.") in result.stderr
    assert "! [remote rejected] main -> main (pre-receive hook declined)" in result.stderr
    result = git("push", "origin", ":stable", cwd=work, check=False)
    assert "remote: GitLab: You can only delete protected branches using the web interface." in result.stderr
    result = git("push", "origin", ":main", cwd=work, check=False)
    assert "remote: GitLab: The default branch of a project cannot be deleted." in result.stderr
    # below maintainer, BranchCheck refuses for the role before it asks about the web
    developer = clone(forge, git, tmp_path, users["developer"], "developer")
    result = git("push", "origin", ":stable", cwd=developer, check=False)
    assert ("remote: GitLab: You are not allowed to delete protected branches from this project. "
            "Only a project maintainer or owner can delete a protected branch.") in result.stderr
    reasons = [e["reason"] for e in forge.events(action="push_ref", allowed=False)]
    assert reasons == ["protected_branch_force_push", "protected_branch_delete",
                       "default_branch_delete", "protected_branch_delete_role"]


@pytest.mark.parametrize("ancestry", ["git", "dulwich"])
def test_push_fast_forward_of_older_commits_to_a_protected_branch_is_no_force_push(
        forge: Forge, users: dict[str, UserHandle], git, git_env: dict[str, str],
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ancestry: str) -> None:
    if ancestry == "dulwich":
        monkeypatch.setattr(receivepack, "find_git", lambda: None)
    work = clone(forge, git, tmp_path, users["maintainer"])
    for n in range(2):  # committed (rebased, cherry-picked) before the tip they follow
        (work / "x").write_text(str(n))
        git("add", "x", cwd=work)
        subprocess.run(["git", "commit", "-qm", f"old {n}"], cwd=work, check=True,
                       env={**git_env, "GIT_COMMITTER_DATE": "2001-01-01T00:00:00Z",
                            "GIT_AUTHOR_DATE": "2001-01-01T00:00:00Z"})
    result = git("push", "origin", "main", cwd=work, check=False)
    assert result.returncode == 0, result.stderr
    sha = git("rev-parse", "HEAD", cwd=work).stdout.strip()
    assert git("ls-remote", "origin", "main", cwd=work).stdout.startswith(sha)
    assert forge.last_event(action="push_ref")["reason"] == "protected_branch_allowed"


def test_push_annotated_tags_move_and_never_land_on_a_branch(
        forge: Forge, users: dict[str, UserHandle], git, commit, tmp_path: Path) -> None:
    work = clone(forge, git, tmp_path, users["developer"])
    commit(work, {"a": "1"})
    git("tag", "-a", "-m", "first", "t1", "HEAD~1", cwd=work)
    git("tag", "light", "HEAD~1", cwd=work)
    git("push", "-q", "origin", "t1", "light", cwd=work)
    git("tag", "-f", "-a", "-m", "second", "t1", "HEAD", cwd=work)
    git("tag", "-f", "-a", "-m", "now annotated", "light", "HEAD", cwd=work)
    result = git("push", "-f", "origin", "t1", "light", cwd=work, check=False)
    assert result.returncode == 0, result.stderr
    assert "(forced update)" in result.stderr
    remote = git("ls-remote", "origin", "refs/tags/*", cwd=work).stdout
    for tag in ("t1", "light"):
        assert f"{git('rev-parse', tag, cwd=work).stdout.strip()}\trefs/tags/{tag}\n" in remote
    # git's ref store refuses a tag object as a branch tip.
    result = git("push", "origin", "t1:refs/heads/from-tag", cwd=work, check=False)
    assert "! [remote rejected] t1 -> from-tag (failed to update ref)" in result.stderr
    assert git("ls-remote", "origin", "from-tag", cwd=work).stdout == ""
    git("push", "-q", "origin", "t1^{}:refs/heads/from-tag", cwd=work)  # its commit is fine


def test_push_force_to_unprotected_branch_by_developer(
        forge: Forge, users: dict[str, UserHandle], git, commit, tmp_path: Path) -> None:
    work = clone(forge, git, tmp_path, users["developer"])
    git("checkout", "-q", "-b", "topic", cwd=work)
    commit(work, {"a": "1"})
    git("push", "-q", "origin", "topic", cwd=work)
    git("reset", "-q", "--hard", "HEAD~1", cwd=work)
    sha = commit(work, {"b": "rewritten"})
    git("push", "-q", "--force", "origin", "topic", cwd=work)
    assert git("ls-remote", "origin", "topic", cwd=work).stdout.startswith(sha)
    git("push", "-q", "origin", ":topic", cwd=work)
    assert git("ls-remote", "origin", "topic", cwd=work).stdout == ""


def test_push_with_job_token_needs_the_project_setting(
        forge: Forge, users: dict[str, UserHandle], git, commit, tmp_path: Path) -> None:
    job = forge.start_job("acme/app", users["developer"])
    work = tmp_path / "job"
    git("clone", "-q", forge.clone_url("acme/app", job=job), work)
    commit(work, {"ci": "generated"})
    result = git("push", "origin", "HEAD:ci-branch", cwd=work, check=False)
    assert "remote: You are not allowed to push code to this project." in result.stderr
    assert forge.last_event(action="push_code")["reason"] == "job_token_push_disabled"

    forge.update_project("acme/app", job_push_allowed=True)
    git("push", "-q", "origin", "HEAD:ci-branch", cwd=work)
    result = git("push", "origin", "HEAD:main", cwd=work, check=False)
    assert PROTECTED in result.stderr


def test_push_ten_concurrent_pushes_lose_nothing(forge: Forge, users: dict[str, UserHandle], git,
                                                 commit, git_env: dict[str, str],
                                                 tmp_path: Path) -> None:
    developer = users["developer"]
    base = clone(forge, git, tmp_path, developer, "base")
    git("push", "-q", "origin", "HEAD:race", cwd=base)
    clones, shas = [], []
    for i in range(10):
        work = clone(forge, git, tmp_path, developer, f"w{i}")
        git("checkout", "-q", "-b", "race", "origin/race", cwd=work)
        shas.append(commit(work, {f"file{i}.txt": f"{i}\n"}, f"push {i}"))
        clones.append(work)

    def push(work: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["git", "push", "origin", "race"], cwd=work, env=git_env,
                              capture_output=True, text=True, timeout=120)

    with ThreadPoolExecutor(max_workers=10) as pool:
        results = list(pool.map(push, clones))
    landed = [sha for sha, r in zip(shas, results, strict=True) if r.returncode == 0]
    assert landed, [r.stderr for r in results]
    for result in results:
        if result.returncode != 0:
            assert "rejected" in result.stderr, result.stderr
    git("fetch", "-q", "origin", cwd=base)
    history = git("rev-list", "origin/race", cwd=base).stdout.split()
    for sha in landed:
        assert sha in history  # no accepted push was lost
    fsck = git("fsck", "--full", "--strict", cwd=forge.repository_path("acme/app"))
    assert "error" not in fsck.stderr.lower()


def test_push_8mb_chunked_body_lands(forge: Forge, users: dict[str, UserHandle], git, commit,
                                     tmp_path: Path) -> None:
    work = clone(forge, git, tmp_path, users["developer"])
    git("checkout", "-q", "-b", "big", cwd=work)
    sha = commit(work, {"big.bin": os.urandom(8 * 1024 * 1024)})
    git("push", "-q", "origin", "big", cwd=work)  # over http.postBuffer: chunked
    assert git("ls-remote", "origin", "big", cwd=work).stdout.startswith(sha)
    again = tmp_path / "again"
    git("clone", "-q", "--branch", "big", forge.clone_url("acme/app", user=users["developer"]),
        again)
    assert (again / "big.bin").read_bytes() == (work / "big.bin").read_bytes()
    git("fsck", "--full", cwd=forge.repository_path("acme/app"))


def test_first_branch_pushed_to_an_empty_project_becomes_its_default(
        forge: Forge, users: dict[str, UserHandle], git, commit, tmp_path: Path) -> None:
    """As GitLab's BranchHooksService: HEAD follows, and so does the default branch's
    protection; a clone checks the branch out."""
    import requests
    forge.create_project("acme/empty", members={users["maintainer"].username: "maintainer",
                                                users["developer"].username: "developer"})
    work = tmp_path / "new"
    git("init", "-q", "-b", "develop", work)
    commit(work, {"a.txt": "a\n"})
    git("push", "-q", forge.clone_url("acme/empty", user=users["maintainer"]), "develop", cwd=work)
    project = requests.get(f"{forge.url}/api/v4/projects/acme%2Fempty",
                           headers={"PRIVATE-TOKEN": forge.root_token}, timeout=30).json()
    assert project["default_branch"] == "develop"
    clone = git("clone", forge.clone_url("acme/empty", user=users["developer"]), tmp_path / "c")
    assert "warning" not in clone.stderr
    assert (tmp_path / "c" / "a.txt").read_text() == "a\n"
    commit(tmp_path / "c", {"b.txt": "b\n"})
    refused = git("push", "origin", "develop", cwd=tmp_path / "c", check=False)
    assert PROTECTED in refused.stderr  # the default branch's protection moved with it


def test_first_branch_pushed_keeps_its_own_protection_rule(
        forge: Forge, users: dict[str, UserHandle], git, commit, tmp_path: Path) -> None:
    import requests
    forge.create_project("acme/ruled", members={users["maintainer"].username: "maintainer"})
    forge.protect_branch("acme/ruled", "develop", push_access_level="developer")
    work = tmp_path / "new"
    git("init", "-q", "-b", "develop", work)
    commit(work, {"a.txt": "a\n"})
    git("push", "-q", forge.clone_url("acme/ruled", user=users["maintainer"]), "develop", cwd=work)
    rules = requests.get(f"{forge.url}/api/v4/projects/acme%2Fruled/protected_branches",
                         headers={"PRIVATE-TOKEN": forge.root_token}, timeout=30).json()
    assert [rule["name"] for rule in rules] == ["develop"]  # no rule left for the `main` that never came
