"""Pipelines: jobs share them, `refs/pipelines/<id>` pins their commit, the runner fetches it."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from forge import domain
from forge.housekeeping import Limits, loose_ref_count
from forge.testing import Forge, UserHandle


@pytest.fixture
def bob(forge: Forge) -> UserHandle:
    forge.create_group("acme")
    user = forge.create_user("bob")
    forge.create_project("acme/app", files={"README.md": "v1\n"}, members={"bob": "developer"})
    return user


def runner_source_fetch(git, work: Path, variables: dict[str, str], depth: int = 20) -> str:
    """GitLab Runner's fetch of a job's sources, as its shell executor runs it."""
    pipeline, ref = variables["CI_PIPELINE_ID"], variables["CI_COMMIT_REF_NAME"]
    git("init", "-q", work)
    git("remote", "add", "origin", variables["CI_REPOSITORY_URL"], cwd=work)
    git("fetch", "origin", "--prune", "--depth", str(depth),
        f"+refs/pipelines/{pipeline}:refs/pipelines/{pipeline}",
        f"+refs/heads/{ref}:refs/remotes/origin/{ref}", "+refs/tags/*:refs/tags/*", cwd=work)
    git("checkout", "-f", "-q", variables["CI_COMMIT_SHA"], cwd=work)
    return git("rev-parse", "HEAD", cwd=work).stdout.strip()


def test_pipeline_ref_is_listed_and_the_runner_source_fetch_checks_out_the_job(
        forge: Forge, bob: UserHandle, engine: str, git, tmp_path: Path) -> None:
    v = forge.start_job("acme/app", "bob").variables
    assert (v["CI_PIPELINE_SOURCE"], v["CI_PIPELINE_IID"]) == ("push", "1")
    refs = git("ls-remote", forge.clone_url("acme/app", user=bob)).stdout
    assert f"{v['CI_COMMIT_SHA']}\trefs/pipelines/{v['CI_PIPELINE_ID']}" in refs
    assert runner_source_fetch(git, tmp_path / "build", v) == v["CI_COMMIT_SHA"]
    assert (tmp_path / "build" / "README.md").read_text() == "v1\n"


def test_pipeline_runner_source_fetch_of_a_branch_that_moved(forge: Forge, bob: UserHandle,
                                                             engine: str, git, commit,
                                                             tmp_path: Path) -> None:
    work = tmp_path / "dev"
    git("clone", "-q", forge.clone_url("acme/app", user=bob), work)
    git("checkout", "-q", "-b", "topic", cwd=work)
    first = commit(work, {"a.txt": "1"})
    git("push", "-q", "origin", "topic", cwd=work)
    job = forge.start_job("acme/app", "bob", ref="topic")
    assert job.variables["CI_COMMIT_SHA"] == first
    commit(work, {"b.txt": "2"})
    git("push", "-q", "origin", "topic", cwd=work)  # the branch moves past the pipeline
    assert runner_source_fetch(git, tmp_path / "build", job.variables) == first
    assert not (tmp_path / "build" / "b.txt").exists()


def test_pipeline_refs_are_packed_and_still_fetched(forge: Forge, bob: UserHandle, git,
                                                    tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(forge.state.housekeeper, "limits", Limits(loose_refs=10))
    started = [forge.start_job("acme/app", "bob") for _ in range(15)]
    assert forge.state.housekeeper.wait_idle(60)
    with forge.app.app_context():
        repo = forge.state.backend.path_for(domain.get_project("acme/app").id)
    assert loose_ref_count(repo) <= 10  # packed each time they passed 10
    packed = (repo / "packed-refs").read_text()
    assert f"refs/pipelines/{started[4].pipeline}\n" in packed
    v = started[4].variables
    assert runner_source_fetch(git, tmp_path / "build", v) == v["CI_COMMIT_SHA"]


def test_pipeline_jobs_share_a_pipeline_and_iids_count_per_project(forge: Forge,
                                                                   bob: UserHandle) -> None:
    build = forge.start_job("acme/app", "bob", name="build")
    test = forge.start_job("acme/app", "bob", name="test", pipeline=build)
    other = forge.start_job("acme/app", "bob", name="lint")
    assert test.pipeline == build.pipeline != other.pipeline
    assert test.variables["CI_PIPELINE_ID"] == build.variables["CI_PIPELINE_ID"]
    assert (build.variables["CI_PIPELINE_IID"], other.variables["CI_PIPELINE_IID"]) == ("1", "2")
    forge.create_project("acme/lib", files={"x": "1"}, members={"bob": "developer"})
    assert forge.start_job("acme/lib", "bob").variables["CI_PIPELINE_IID"] == "1"
    with pytest.raises(Exception, match="belongs to another project"):
        forge.start_job("acme/lib", "bob", pipeline=build)


def test_pipeline_ref_is_refused_to_pushers(forge: Forge, bob: UserHandle, git,
                                            tmp_path: Path) -> None:
    job = forge.start_job("acme/app", "bob")
    work = tmp_path / "w"
    git("clone", "-q", forge.clone_url("acme/app", user=bob), work)
    pipeline = job.variables["CI_PIPELINE_ID"]
    result = git("push", "origin", f"HEAD:refs/pipelines/{pipeline}", cwd=work, check=False)
    assert (f"! [remote rejected] HEAD -> refs/pipelines/{pipeline} (deny updating a hidden ref)"
            in result.stderr)


def test_pipeline_labels_in_seeds_and_ids_in_the_control_api(forge: Forge) -> None:
    result = forge.seed({
        "users": [{"username": "bob"}],
        "groups": [{"path": "acme"}],
        "projects": [{"path": "acme/app", "files": {"a": "1"}, "members": {"bob": "developer"}}],
        "jobs": [{"project": "acme/app", "user": "bob", "name": "build", "pipeline": "p1"},
                 {"project": "acme/app", "user": "bob", "name": "test", "pipeline": "p1"},
                 {"project": "acme/app", "user": "bob", "name": "other"}],
    })
    pipelines = [job["pipeline"] for job in result["jobs"]]
    assert pipelines[0] == pipelines[1] != pipelines[2]
    headers = {"PRIVATE-TOKEN": forge.root_token}
    answer = requests.post(f"{forge.url}/-/forge/jobs", headers=headers, timeout=30, json={
        "project": "acme/app", "user": "bob", "name": "deploy", "pipeline": pipelines[0]})
    assert answer.status_code == 201, answer.text
    assert answer.json()["pipeline"] == pipelines[0]
    assert answer.json()["variables"]["CI_PIPELINE_ID"] == str(pipelines[0])
    missing = requests.post(f"{forge.url}/-/forge/jobs", headers=headers, timeout=30, json={
        "project": "acme/app", "user": "bob", "pipeline": 999})
    assert (missing.status_code, missing.json()) == (404, {"message": "pipeline 999 does not exist"})
