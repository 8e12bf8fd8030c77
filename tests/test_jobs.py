"""Job tokens end to end with real git: lifetime, the user's current role, the allowlist."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from forge import domain
from forge.testing import Forge


@pytest.fixture
def world(forge: Forge) -> dict[str, object]:
    """acme/app (the job's project), acme/platform/lib and other/lib (private targets)."""
    forge.create_group("acme")
    forge.create_group("acme/platform")
    forge.create_group("other")
    bob = forge.create_user("bob")
    app = forge.create_project("acme/app", files={"a": "app\n"}, members={"bob": "developer"})
    lib = forge.create_project("acme/platform/lib", files={"l": "lib\n"}, members={"bob": "reporter"})
    ext = forge.create_project("other/lib", files={"o": "other\n"}, members={"bob": "developer"})
    job = forge.start_job(app, bob)
    return {"bob": bob, "app": app, "lib": lib, "ext": ext, "job": job}


def test_job_token_dies_when_job_finishes(forge: Forge, world: dict[str, object], git,
                                          tmp_path: Path, denied_401: str) -> None:
    job = world["job"]
    url = forge.clone_url("acme/app", job=job)  # type: ignore[arg-type]
    git("clone", "-q", url, tmp_path / "before")
    forge.finish_job(job)  # type: ignore[arg-type]
    result = git("clone", url, tmp_path / "after", check=False)
    assert result.returncode != 0
    assert "HTTP Basic: Access denied" in result.stderr
    response = requests.get(f"{forge.url}/acme/app.git/info/refs?service=git-upload-pack",
                            auth=("gitlab-ci-token", job.token))  # type: ignore[attr-defined]
    assert (response.status_code, response.text) == (401, denied_401)
    event = forge.last_event(credential="job_token")
    assert (event["reason"], event["job_id"], event["username"]) == (
        "job_not_running", job.id, "bob")  # type: ignore[attr-defined]


@pytest.mark.parametrize("status", ["canceled", "failed", "pending", "created"])
def test_job_token_refused_unless_running(forge: Forge, world: dict[str, object],
                                          status: str) -> None:
    forge.set_job_status(world["job"], status)  # type: ignore[arg-type]
    response = requests.get(f"{forge.url}/acme/app.git/info/refs?service=git-upload-pack",
                            auth=("gitlab-ci-token", world["job"].token))  # type: ignore[attr-defined]
    assert response.status_code == 401
    assert forge.last_event()["reason"] == "job_not_running"


def test_job_token_dies_after_timeout(forge: Forge, world: dict[str, object]) -> None:
    job = forge.start_job("acme/app", "bob", timeout=60)
    info = f"{forge.url}/acme/app.git/info/refs?service=git-upload-pack"
    assert requests.get(info, auth=("gitlab-ci-token", job.token)).status_code == 200
    forge.advance_clock(61)
    assert requests.get(info, auth=("gitlab-ci-token", job.token)).status_code == 401
    assert forge.last_event()["reason"] == "job_timed_out"


def test_job_token_dies_when_user_is_blocked(forge: Forge, world: dict[str, object]) -> None:
    forge.block_user("bob")
    response = requests.get(f"{forge.url}/acme/app.git/info/refs?service=git-upload-pack",
                            auth=("gitlab-ci-token", world["job"].token))  # type: ignore[attr-defined]
    assert response.status_code == 401
    assert forge.last_event()["reason"] == "user_blocked"


def test_demoting_triggering_user_mid_job_refuses_next_clone(
        forge: Forge, world: dict[str, object], git, tmp_path: Path) -> None:
    job = world["job"]
    url = forge.clone_url("acme/app", job=job)  # type: ignore[arg-type]
    git("clone", "-q", url, tmp_path / "before")
    forge.set_role("bob", "guest", project="acme/app")
    result = git("clone", url, tmp_path / "guest", check=False)
    assert "remote: You are not allowed to download code from this project." in result.stderr
    assert forge.last_event()["reason"] == "insufficient_role"
    forge.remove_member("bob", project="acme/app")
    result = git("clone", url, tmp_path / "removed", check=False)
    app_id = world["app"].id  # type: ignore[attr-defined]
    assert f"remote: Insufficient permissions to pull from the repository of project #{app_id}." \
        in result.stderr
    assert forge.last_event()["reason"] == "insufficient_permissions"
    forge.set_role("bob", "maintainer", project="acme/app")
    git("clone", "-q", url, tmp_path / "promoted")


def test_allowlist_project_entry_makes_refused_clone_succeed(
        forge: Forge, world: dict[str, object], git, tmp_path: Path) -> None:
    url = forge.clone_url("acme/platform/lib", job=world["job"])  # type: ignore[arg-type]
    result = git("clone", url, tmp_path / "refused", check=False)
    lib_id = world["lib"].id  # type: ignore[attr-defined]
    message = f"Authentication by CI/CD job token not allowed from app to project #{lib_id}."
    assert f"remote: {message}" in result.stderr
    response = requests.get(
        f"{forge.url}/acme/platform/lib.git/info/refs?service=git-upload-pack",
        auth=("gitlab-ci-token", world["job"].token))  # type: ignore[attr-defined]
    assert (response.status_code, response.text) == (403, message)
    assert forge.last_event()["reason"] == "not_in_inbound_allowlist"

    forge.allow("acme/platform/lib", source_project="acme/app")
    git("clone", "-q", url, tmp_path / "allowed")
    assert (tmp_path / "allowed/l").read_text() == "lib\n"
    assert forge.last_event(project="acme/platform/lib")["reason"] == "job_token_allowed"


@pytest.mark.parametrize("group", ["acme", "acme/platform"])
def test_allowlist_group_entry_covers_descendant_projects(
        forge: Forge, world: dict[str, object], git, tmp_path: Path, group: str) -> None:
    forge.create_group("acme/platform/ci")
    forge.create_project("acme/platform/ci/runner", files={"r": "1"}, members={"bob": "developer"})
    runner_job = forge.start_job("acme/platform/ci/runner", "bob")
    url = forge.clone_url("other/lib", job=runner_job)
    assert git("clone", url, tmp_path / "refused", check=False).returncode != 0
    forge.allow("other/lib", source_group=group)
    git("clone", "-q", url, tmp_path / "allowed")
    # acme/app is below acme but not below acme/platform
    app_url = forge.clone_url("other/lib", job=world["job"])  # type: ignore[arg-type]
    allowed = git("clone", app_url, tmp_path / "app", check=False).returncode == 0
    assert allowed is (group == "acme")


def test_disabled_inbound_allowlist_admits_every_project(
        forge: Forge, world: dict[str, object], git, tmp_path: Path) -> None:
    forge.update_project("other/lib", inbound_enabled=False)
    git("clone", "-q", forge.clone_url("other/lib", job=world["job"]), tmp_path / "o")  # type: ignore[arg-type]


def test_public_and_internal_projects_need_no_allowlist(
        forge: Forge, world: dict[str, object], git, tmp_path: Path) -> None:
    forge.create_project("other/site", visibility="public", files={"p": "1"})
    forge.create_project("other/wiki", visibility="internal", files={"w": "1"})
    job = world["job"]
    git("clone", "-q", forge.clone_url("other/site", job=job), tmp_path / "site")  # type: ignore[arg-type]
    git("clone", "-q", forge.clone_url("other/wiki", job=job), tmp_path / "wiki")  # type: ignore[arg-type]
    eve = forge.create_user("eve", external=True)
    forge.add_member(eve, "developer", project="acme/app")
    eve_job = forge.start_job("acme/app", eve)
    result = git("clone", forge.clone_url("other/wiki", job=eve_job), tmp_path / "ext", check=False)
    assert "Authentication by CI/CD job token not allowed from app" in result.stderr


def test_admin_job_without_membership_cannot_clone_private_project(
        forge: Forge, world: dict[str, object], git, tmp_path: Path) -> None:
    admin = forge.create_user("ada", admin=True)
    forge.add_member(admin, "developer", project="acme/app")
    forge.update_project("other/lib", inbound_enabled=False)
    job = forge.start_job("acme/app", admin)
    result = git("clone", forge.clone_url("other/lib", job=job), tmp_path / "x", check=False)
    assert "Insufficient permissions to pull from the repository" in result.stderr
    git("clone", "-q", forge.clone_url("other/lib", user=admin), tmp_path / "pat")


def test_starting_job_needs_developer_role(forge: Forge, world: dict[str, object]) -> None:
    forge.create_user("rita")
    forge.add_member("rita", "reporter", project="acme/app")
    with pytest.raises(domain.Forbidden, match="rita may not run CI jobs in acme/app"):
        forge.start_job("acme/app", "rita")


def test_job_variables_match_gitlab(forge: Forge, world: dict[str, object], git,
                                    tmp_path: Path) -> None:
    job = world["job"]
    v = forge.job_variables(job)  # type: ignore[arg-type]
    host, port = forge.url.split("//")[1].split(":")
    app = world["app"]
    assert v["CI_JOB_TOKEN"] == job.token and v["CI_JOB_TOKEN"].startswith("glcbt-64_")  # type: ignore[attr-defined]
    assert v["CI_PROJECT_ID"] == str(app.id) and v["CI_PROJECT_PATH"] == "acme/app"  # type: ignore[attr-defined]
    assert v["CI_PROJECT_NAMESPACE"] == "acme" and v["CI_PROJECT_NAME"] == "app"
    assert (v["CI_SERVER_HOST"], v["CI_SERVER_PORT"], v["CI_SERVER_PROTOCOL"]) == (host, port, "http")
    assert v["CI_API_V4_URL"] == f"{forge.url}/api/v4"
    assert v["CI_JOB_URL"] == f"{forge.url}/acme/app/-/jobs/{job.id}"  # type: ignore[attr-defined]
    assert v["GITLAB_USER_LOGIN"] == "bob" and v["CI"] == "true" and v["GITLAB_CI"] == "true"
    assert v["CI_COMMIT_REF_NAME"] == "main" and len(v["CI_COMMIT_SHA"]) == 40
    git("clone", "-q", v["CI_REPOSITORY_URL"], tmp_path / "ci")
    assert git("rev-parse", "HEAD", cwd=tmp_path / "ci").stdout.strip() == v["CI_COMMIT_SHA"]
