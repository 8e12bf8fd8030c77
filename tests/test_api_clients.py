"""The REST API through python-gitlab (admin setup, job_token mode) and plain requests."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import gitlab
import pytest
import requests

from forge.testing import Forge

PACKAGE = b"binary package content\n" * 100


@pytest.fixture
def gl(forge: Forge) -> gitlab.Gitlab:
    client = gitlab.Gitlab(forge.url, private_token=forge.root_token)
    client.auth()
    return client


@pytest.fixture
def setup(forge: Forge, gl: gitlab.Gitlab) -> dict[str, Any]:
    """Everything created through python-gitlab only."""
    bob = gl.users.create({"username": "bob", "email": "bob@example.org", "name": "Bob",
                           "password": "bob-password-1"})
    eve = gl.users.create({"username": "eve", "email": "eve@example.org", "name": "Eve",
                           "password": "eve-password-1", "external": True})
    token = bob.personal_access_tokens.create({"name": "laptop", "scopes": ["api"]}).token
    acme = gl.groups.create({"name": "Acme", "path": "acme"})
    platform = gl.groups.create({"name": "Platform", "path": "platform", "parent_id": acme.id})
    app = gl.projects.create({"name": "app", "namespace_id": acme.id, "initialize_with_readme": True})
    lib = gl.projects.create({"name": "lib", "namespace_id": platform.id,
                              "initialize_with_readme": True})
    app.members.create({"user_id": bob.id, "access_level": gitlab.const.AccessLevel.DEVELOPER})
    lib.members.create({"user_id": bob.id, "access_level": gitlab.const.AccessLevel.REPORTER})
    return {"bob": bob, "eve": eve, "token": token, "acme": acme, "platform": platform,
            "app": app, "lib": lib}


def test_python_gitlab_setup_then_git(forge: Forge, gl: gitlab.Gitlab, setup: dict[str, Any], git,
                                      commit, tmp_path: Path) -> None:
    app, lib, token = setup["app"], setup["lib"], setup["token"]
    assert gl.user.username == "root"
    assert gl.projects.get("acme/platform/lib").id == lib.id
    assert [g.full_path for g in gl.groups.get(setup["acme"].id).subgroups.list()] == ["acme/platform"]
    assert {m.username for m in lib.members.list()} == {"bob"}
    assert gl.users.list(username="eve")[0].external is True

    app.protectedbranches.create({"name": "release/*", "push_access_level": 40})
    assert sorted(b.name for b in app.protectedbranches.list()) == ["main", "release/*"]
    work = tmp_path / "app"
    git("clone", "-q", f"http://oauth2:{token}@{forge.url.split('//')[1]}/acme/app.git", work)
    commit(work, {"f": "1"})
    git("push", "-q", "origin", "HEAD:topic", cwd=work)
    result = git("push", "origin", "HEAD:release/1", cwd=work, check=False)
    assert "You are not allowed to create protected branches on this project." in result.stderr

    job = forge.start_job("acme/app", "bob")
    url = forge.clone_url("acme/platform/lib", job=job)
    assert "not allowed from app" in git("clone", url, tmp_path / "refused", check=False).stderr
    scope = lib.job_token_scope.get()
    scope.groups_allowlist.create({"target_group_id": setup["acme"].id})
    git("clone", "-q", url, tmp_path / "allowed")
    assert (tmp_path / "allowed/README.md").read_text() == "# lib\n"

    scope.groups_allowlist.delete(setup["acme"].id)
    assert git("clone", url, tmp_path / "again", check=False).returncode != 0
    scope.allowlist.create({"target_project_id": app.id})
    git("clone", "-q", url, tmp_path / "by-project")

    lib.members.update(setup["bob"].id, {"access_level": gitlab.const.AccessLevel.GUEST})
    result = git("clone", url, tmp_path / "guest", check=False)
    assert "You are not allowed to download code from this project." in result.stderr
    gl.users.get(setup["bob"].id).block()
    assert git("clone", url, tmp_path / "blocked", check=False).returncode != 0
    assert forge.last_event()["reason"] == "user_blocked"


def test_python_gitlab_visibility_and_push_setting(forge: Forge, gl: gitlab.Gitlab,
                                                   setup: dict[str, Any], git, commit,
                                                   tmp_path: Path) -> None:
    app = setup["app"]
    job = forge.start_job("acme/app", "bob")
    work = tmp_path / "w"
    git("clone", "-q", forge.clone_url("acme/app", job=job), work)
    commit(work, {"gen": "1"})
    assert git("push", "origin", "HEAD:gen", cwd=work, check=False).returncode != 0
    app.ci_push_repository_for_job_token_allowed = True
    app.save()
    git("push", "-q", "origin", "HEAD:gen", cwd=work)
    lib = setup["lib"]
    lib.visibility = "public"
    lib.save()
    git("clone", "-q", f"{forge.url}/acme/platform/lib.git", tmp_path / "anon")


@pytest.fixture
def jobs(forge: Forge, setup: dict[str, Any]) -> dict[str, Any]:
    job = forge.start_job("acme/app", "bob")
    return {"job": job, "jgl": gitlab.Gitlab(forge.url, job_token=job.token)}


def test_job_token_generic_packages_own_and_other_project(
        forge: Forge, setup: dict[str, Any], jobs: dict[str, Any], tmp_path: Path) -> None:
    jgl, app, lib = jobs["jgl"], setup["app"], setup["lib"]
    own = jgl.projects.get(app.id, lazy=True)
    own.generic_packages.upload(package_name="tool", package_version="1.0.0", file_name="tool.bin",
                                data=PACKAGE)
    assert own.generic_packages.download("tool", "1.0.0", "tool.bin") == PACKAGE

    # curl style, with Basic gitlab-ci-token, into the same project
    url = f"{forge.url}/api/v4/projects/{app.id}/packages/generic/tool/1.0.1/tool.bin"
    response = requests.put(url, data=PACKAGE, auth=("gitlab-ci-token", jobs["job"].token))
    assert (response.status_code, response.json()) == (201, {"message": "201 Created"})
    checked = requests.put(url, data=PACKAGE, params={"select": "package_file"},
                           auth=("gitlab-ci-token", jobs["job"].token)).json()
    assert (checked["file_sha256"], checked["file_md5"], checked["size"]) == (
        hashlib.sha256(PACKAGE).hexdigest(), hashlib.md5(PACKAGE).hexdigest(), len(PACKAGE))

    # lib's package, uploaded by root, read from app's job
    requests.put(f"{forge.url}/api/v4/projects/{lib.id}/packages/generic/lib/2.0/lib.tgz",
                 data=b"lib", headers={"PRIVATE-TOKEN": forge.root_token}).raise_for_status()
    other = f"{forge.url}/api/v4/projects/{lib.id}/packages/generic/lib/2.0/lib.tgz"
    refused = requests.get(other, headers={"JOB-TOKEN": jobs["job"].token})
    assert (refused.status_code, refused.json()) == (403, {
        "message": "403 Forbidden - Authentication by CI/CD job token not allowed from app to lib."})
    assert forge.last_event(action="api_read_packages")["reason"] == "not_in_inbound_allowlist"
    forge.allow("acme/platform/lib", source_project="acme/app")
    assert requests.get(other, headers={"JOB-TOKEN": jobs["job"].token}).content == b"lib"
    assert requests.get(other, params={"job_token": jobs["job"].token}).content == b"lib"
    missing = requests.get(other.replace("2.0", "9.9"), headers={"JOB-TOKEN": jobs["job"].token})
    assert (missing.status_code, missing.json()) == (404, {"message": "404 Package Not Found"})
    # the job's user is only a reporter in lib: no uploads there
    upload = requests.put(other, data=b"x", headers={"JOB-TOKEN": jobs["job"].token})
    assert (upload.status_code, upload.json()) == (403, {"message": "403 Forbidden"})


def test_job_token_creates_release_and_reads_repository(
        forge: Forge, setup: dict[str, Any], jobs: dict[str, Any]) -> None:
    jgl, app = jobs["jgl"], setup["app"]
    project = jgl.projects.get(app.id, lazy=True)
    release = project.releases.create({"tag_name": "v1.0", "ref": "main", "name": "One",
                                       "description": "first"})
    assert (release.tag_name, release.name, release.author["username"]) == ("v1.0", "One", "bob")
    assert [r.tag_name for r in project.releases.list()] == ["v1.0"]
    assert project.tags.get("v1.0").commit["id"] == release.commit["id"]
    headers = {"JOB-TOKEN": jobs["job"].token}
    again = requests.post(f"{forge.url}/api/v4/projects/{app.id}/releases",
                          json={"tag_name": "v1.0"}, headers=headers)
    assert (again.status_code, again.json()) == (409, {"message": "Release already exists"})
    raw = requests.get(f"{forge.url}/api/v4/projects/acme%2Fapp/repository/files/README.md/raw",
                       params={"ref": "main"}, headers=headers)
    assert raw.text == "# app\n"
    assert [b.name for b in project.branches.list()] == ["main"]


def test_api_job_endpoint(forge: Forge, setup: dict[str, Any], jobs: dict[str, Any]) -> None:
    job = jobs["job"]
    url = f"{forge.url}/api/v4/job"
    for headers in ({"JOB-TOKEN": job.token}, {"Authorization": f"Bearer {job.token}"}):
        data = requests.get(url, headers=headers).json()
        assert (data["id"], data["status"], data["user"]["username"]) == (job.id, "running", "bob")
        assert data["pipeline"]["project_id"] == setup["app"].id
    assert jobs["jgl"].http_get("/job")["id"] == job.id
    pat = requests.get(url, headers={"PRIVATE-TOKEN": setup["token"]})
    assert (pat.status_code, pat.json()) == (404, {"message": "404 Job Not Found"})
    anonymous = requests.get(url)
    assert (anonymous.status_code, anonymous.json()) == (401, {"message": "401 Unauthorized"})
    forge.finish_job(job)
    dead = requests.get(url, headers={"JOB-TOKEN": job.token})
    assert (dead.status_code, dead.json()) == (401, {"message": "401 Unauthorized"})


def test_job_token_is_no_credential_on_other_endpoints(forge: Forge, setup: dict[str, Any],
                                                       jobs: dict[str, Any]) -> None:
    headers = {"JOB-TOKEN": jobs["job"].token}
    app = setup["app"]
    assert requests.get(f"{forge.url}/api/v4/projects/{app.id}", headers=headers).status_code == 404
    response = requests.get(f"{forge.url}/api/v4/user", headers=headers)
    assert (response.status_code, response.json()) == (401, {"message": "401 Unauthorized"})


def test_fine_grained_permissions(forge: Forge, gl: gitlab.Gitlab, setup: dict[str, Any],
                                  jobs: dict[str, Any]) -> None:
    lib, app = setup["lib"], setup["app"]
    lib.members.update(setup["bob"].id, {"access_level": gitlab.const.AccessLevel.DEVELOPER})
    lib.job_token_policies_enabled = True  # forge extension: enforce the entries' policies
    lib.save()
    scope = gl.projects.get(lib.id).job_token_scope.get()
    scope.allowlist.create({"target_project_id": app.id, "default_permissions": False,
                            "job_token_policies": ["read_packages"]})
    requests.put(f"{forge.url}/api/v4/projects/{lib.id}/packages/generic/lib/1/lib.tgz",
                 data=b"lib", headers={"PRIVATE-TOKEN": forge.root_token}).raise_for_status()
    headers = {"JOB-TOKEN": jobs["job"].token}
    package = f"{forge.url}/api/v4/projects/{lib.id}/packages/generic/lib/1/lib.tgz"
    assert requests.get(package, headers=headers).content == b"lib"

    def policy_error(policy: str) -> dict[str, str]:
        return {"message": "403 Forbidden - Insufficient permissions to access this resource in "
                           f"project lib. The following token permission is required: {policy}."}

    upload = requests.put(package, data=b"new", headers=headers)
    assert (upload.status_code, upload.json()) == (403, policy_error("admin_packages"))
    release = requests.post(f"{forge.url}/api/v4/projects/{lib.id}/releases",
                            json={"tag_name": "v1", "ref": "main"}, headers=headers)
    assert (release.status_code, release.json()) == (403, policy_error("admin_releases"))
    files = requests.get(f"{forge.url}/api/v4/projects/{lib.id}/repository/files/README.md/raw",
                         params={"ref": "main"}, headers=headers)
    assert (files.status_code, files.json()) == (403, policy_error("read_repositories"))
    assert forge.last_event()["reason"] == "missing_job_token_policy"
    # the job's own project is never restricted
    own = requests.put(f"{forge.url}/api/v4/projects/{app.id}/packages/generic/a/1/a.bin",
                       data=b"a", headers=headers)
    assert own.status_code == 201
    # admin_X implies read_X; default_permissions restores role-based access
    scope.allowlist.delete(app.id)
    scope.allowlist.create({"target_project_id": app.id, "default_permissions": False,
                            "job_token_policies": ["admin_releases"]})
    assert requests.get(f"{forge.url}/api/v4/projects/{lib.id}/releases",
                        headers=headers).status_code == 200
    scope.allowlist.delete(app.id)
    scope.allowlist.create({"target_project_id": app.id, "default_permissions": True})
    assert requests.put(package, data=b"new", headers=headers).status_code == 201
    assert requests.post(f"{forge.url}/api/v4/projects/{lib.id}/releases",
                         json={"tag_name": "v1", "ref": "main"}, headers=headers).status_code == 201


def test_python_gitlab_files_branches_and_pagination(forge: Forge, gl: gitlab.Gitlab,
                                                     setup: dict[str, Any], git,
                                                     tmp_path: Path) -> None:
    app = setup["app"]
    app.files.create({"file_path": "ci/build.sh", "branch": "main", "content": "echo hi\n",
                      "commit_message": "Add build script"})
    f = app.files.get(file_path="ci/build.sh", ref="main")
    assert f.decode() == b"echo hi\n"
    f.content = "echo bye\n"
    f.save(branch="main", commit_message="Change it")
    assert app.files.raw(file_path="ci/build.sh", ref="main") == b"echo bye\n"
    with pytest.raises(gitlab.exceptions.GitlabCreateError, match="already exists"):
        app.files.create({"file_path": "ci/build.sh", "branch": "main", "content": "x",
                          "commit_message": "again"})
    app.branches.create({"branch": "feature", "ref": "main"})
    app.tags.create({"tag_name": "v1", "ref": "feature"})
    assert app.commits.get("v1").title == "Change it"
    git("clone", "-q", "--branch", "v1", forge.clone_url("acme/app", token=setup["token"]),
        tmp_path / "v1")
    assert (tmp_path / "v1/ci/build.sh").read_text() == "echo bye\n"
    # a developer may not commit to the protected default branch through the API either
    bob_gl = gitlab.Gitlab(forge.url, private_token=setup["token"])
    with pytest.raises(gitlab.exceptions.GitlabCreateError) as refused:
        bob_gl.projects.get(app.id, lazy=True).files.create({
            "file_path": "x", "branch": "main", "content": "x", "commit_message": "x"})
    # lib/api/files.rb renders Commits::CreateService#validate_permissions!'s error as a bare 400
    assert refused.value.response_code == 400
    assert refused.value.error_message == "You are not allowed to push into this branch"
    for i in range(5):
        gl.groups.create({"name": f"g{i}", "path": f"g{i}"})
    page = requests.get(f"{forge.url}/api/v4/groups", params={"per_page": 2, "page": 2},
                        headers={"PRIVATE-TOKEN": forge.root_token})
    h = page.headers
    assert (h["X-Total"], h["X-Total-Pages"], h["X-Page"], h["X-Per-Page"]) == ("7", "4", "2", "2")
    assert (h["X-Next-Page"], h["X-Prev-Page"]) == ("3", "1")
    assert 'rel="next"' in h["Link"] and "page=3" in h["Link"]
    assert len(page.json()) == 2
    assert len(gl.groups.list(get_all=True, per_page=2)) == 7
