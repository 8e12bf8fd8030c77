"""Predefined CI_* variables, each against the format GitLab documents for it
(doc/ci/variables/predefined_variables.md), for branch and tag jobs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from forge import GITLAB_VERSION, domain
from forge.jobs import slugify
from forge.testing import Forge, UserHandle

ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")  # 2022-01-31T16:47:55Z
ISO_OFFSET = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d$")  # ...T18:47:55+02:00
SHA = re.compile(r"^[0-9a-f]{40}$")


@pytest.fixture
def bob(forge: Forge) -> UserHandle:
    forge.create_group("Acme-Corp")
    forge.create_group("Acme-Corp/Platform.Team")
    user = forge.create_user("bob")
    forge.create_project("Acme-Corp/Platform.Team/My_App", files={"README.md": "v1\n"},
                         members={"bob": "maintainer"})
    return user


APP = "Acme-Corp/Platform.Team/My_App"


def push_history(forge: Forge, bob: UserHandle, git, tmp_path: Path) -> dict[str, str]:
    """Push a second commit to main, a topic branch, an annotated and a lightweight tag."""
    work = tmp_path / "work"
    url = forge.clone_url(APP, user=bob)
    git("clone", "-q", url, work)
    first = git("rev-parse", "HEAD", cwd=work).stdout.strip()
    (work / "b.txt").write_text("b\n")
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", "Add b\n\nWhy b matters.\nSecond line.", cwd=work)
    second = git("rev-parse", "HEAD", cwd=work).stdout.strip()
    git("tag", "-a", "v1.0", "-m", "Release 1.0", cwd=work)
    git("tag", "light", cwd=work)
    git("push", "-q", "origin", "main", "main:Feature/ABC_123", "v1.0", "light", cwd=work)
    return {"first": first, "second": second}


def test_variables_slugify_follows_gitlab_utils() -> None:
    assert slugify("main") == "main"
    assert slugify("Feature/ABC_123") == "feature-abc-123"
    assert slugify("9-staging") == "9-staging"
    assert slugify("--x.y--") == "x-y"
    assert slugify("ü-über") == "ber"  # non-ASCII letters become `-` too, then the ends go
    assert slugify("a" * 70) == "a" * 63
    assert slugify("a" * 62 + "/b") == "a" * 62  # cut to 63, then the trailing `-` goes


def test_variables_branch_job(forge: Forge, bob: UserHandle, git, tmp_path: Path) -> None:
    shas = push_history(forge, bob, git, tmp_path)
    v = forge.start_job(APP, bob, ref="main", name="Build Image: amd64", timeout=900).variables
    project_url = f"{forge.url}/{APP}"
    assert v["CI_COMMIT_SHA"] == shas["second"] and SHA.match(v["CI_COMMIT_SHA"])
    assert v["CI_COMMIT_SHORT_SHA"] == shas["second"][:8]
    assert v["CI_COMMIT_BEFORE_SHA"] == shas["first"]
    assert (v["CI_COMMIT_REF_NAME"], v["CI_COMMIT_BRANCH"], v["CI_COMMIT_REF_SLUG"]) == (
        "main", "main", "main")
    assert "CI_COMMIT_TAG" not in v and "CI_COMMIT_TAG_MESSAGE" not in v
    assert v["CI_COMMIT_REF_PROTECTED"] == "true"  # the default branch is protected
    assert v["CI_COMMIT_MESSAGE"] == "Add b\n\nWhy b matters.\nSecond line.\n"
    assert v["CI_COMMIT_TITLE"] == "Add b"
    # Commit#description: the message after its first newline, one trailing newline chomped
    # (so the blank line after the title stays)
    assert v["CI_COMMIT_DESCRIPTION"] == "\nWhy b matters.\nSecond line."
    assert ISO_OFFSET.match(v["CI_COMMIT_TIMESTAMP"]), v["CI_COMMIT_TIMESTAMP"]
    assert v["CI_COMMIT_AUTHOR"] == "Test <test@example.com>"
    assert v["CI_JOB_NAME"] == "Build Image: amd64" and v["CI_JOB_NAME_SLUG"] == "build-image--amd64"
    assert v["CI_JOB_TIMEOUT"] == "900" and ISO_UTC.match(v["CI_JOB_STARTED_AT"])
    assert v["CI_NODE_TOTAL"] == "1" and v["CI_CONFIG_PATH"] == ".gitlab-ci.yml"
    assert v["CI_PIPELINE_URL"] == f"{project_url}/-/pipelines/{v['CI_PIPELINE_ID']}"
    assert ISO_UTC.match(v["CI_PIPELINE_CREATED_AT"]) and v["CI_PIPELINE_SOURCE"] == "push"
    assert v["CI_PIPELINE_IID"] == "1"
    assert v["CI_PROJECT_PATH_SLUG"] == "acme-corp-platform-team-my-app"
    assert (v["CI_PROJECT_NAME"], v["CI_PROJECT_TITLE"]) == ("My_App", "My_App")
    assert v["CI_PROJECT_NAMESPACE"] == "Acme-Corp/Platform.Team"
    assert v["CI_PROJECT_ROOT_NAMESPACE"] == "Acme-Corp"
    with forge.app.app_context():
        group = domain.get_group("Acme-Corp/Platform.Team")
        assert v["CI_PROJECT_NAMESPACE_ID"] == str(group.id)
    assert v["CI_DEFAULT_BRANCH"] == "main" and v["CI_PROJECT_VISIBILITY"] == "private"


def test_variables_server_describe_the_forge(forge: Forge, bob: UserHandle) -> None:
    v = forge.start_job(APP, bob).variables
    host, port = forge.url.split("//")[1].split(":")
    major, minor, patch = GITLAB_VERSION.split(".")
    assert (v["CI_SERVER_NAME"], v["CI_SERVER_VERSION"]) == ("GitLab", GITLAB_VERSION)
    assert (v["CI_SERVER_VERSION_MAJOR"], v["CI_SERVER_VERSION_MINOR"],
            v["CI_SERVER_VERSION_PATCH"]) == (major, minor, patch)
    assert re.match(r"^\d+\.\d+\.\d+$", v["CI_SERVER_VERSION"])
    assert v["CI_SERVER_REVISION"]  # GitLab's revision; forge's is a placeholder
    assert v["CI_SERVER_FQDN"] == f"{host}:{port}"  # the port, as it is not 80
    assert (v["CI_SERVER_HOST"], v["CI_SERVER_PORT"], v["CI_SERVER_URL"]) == (host, port, forge.url)
    assert (v["CI_SERVER_SHELL_SSH_HOST"], v["CI_SERVER_SHELL_SSH_PORT"]) == (host, "22")
    assert v["CI_API_GRAPHQL_URL"] == f"{forge.url}/api/graphql" and v["CI_SERVER"] == "yes"


def test_variables_unprotected_branch_job(forge: Forge, bob: UserHandle, git, tmp_path: Path) -> None:
    shas = push_history(forge, bob, git, tmp_path)
    v = forge.start_job(APP, bob, ref="Feature/ABC_123").variables
    assert (v["CI_COMMIT_BRANCH"], v["CI_COMMIT_REF_SLUG"]) == ("Feature/ABC_123", "feature-abc-123")
    assert v["CI_COMMIT_REF_PROTECTED"] == "false" and v["CI_COMMIT_SHA"] == shas["second"]
    forge.protect_branch(APP, "Feature/*")
    assert forge.start_job(APP, bob, ref="Feature/ABC_123").variables[
        "CI_COMMIT_REF_PROTECTED"] == "true"


def test_variables_tag_job_has_the_tag_and_no_branch(forge: Forge, bob: UserHandle, git,
                                                      tmp_path: Path) -> None:
    shas = push_history(forge, bob, git, tmp_path)
    v = forge.start_job(APP, bob, ref="v1.0").variables
    assert (v["CI_COMMIT_TAG"], v["CI_COMMIT_REF_NAME"], v["CI_COMMIT_REF_SLUG"]) == (
        "v1.0", "v1.0", "v1-0")
    assert "CI_COMMIT_BRANCH" not in v
    assert v["CI_COMMIT_SHA"] == shas["second"]  # the commit, not the annotated tag object
    assert v["CI_COMMIT_TAG_MESSAGE"] == "Release 1.0"
    assert v["CI_COMMIT_REF_PROTECTED"] == "false"
    # a pushed tag is new: the push's old value, GitLab's before_sha, is the zero sha
    assert v["CI_COMMIT_BEFORE_SHA"] == "0" * 40 != shas["first"]
    light = forge.start_job(APP, bob, ref="light").variables
    assert (light["CI_COMMIT_TAG"], light["CI_COMMIT_TAG_MESSAGE"]) == ("light", "")


def test_variables_first_commit_has_zero_before_sha(forge: Forge, bob: UserHandle) -> None:
    assert forge.start_job(APP, bob).variables["CI_COMMIT_BEFORE_SHA"] == "0" * 40


def test_variables_job_on_missing_ref_is_refused(forge: Forge, bob: UserHandle) -> None:
    with pytest.raises(domain.DomainError, match=rf"^Reference not found: {APP} has no branch or "
                                                 r"tag 'nope'$"):
        forge.start_job(APP, bob, ref="nope")
    response = forge.server.app.test_client().post(
        "/-/forge/jobs", json={"project": APP, "user": "bob", "ref": "nope"},
        headers={"PRIVATE-TOKEN": forge.root_token})
    assert response.status_code == 400
    assert response.get_json() == {"message": f"Reference not found: {APP} has no branch or tag 'nope'"}


def test_variables_job_on_ambiguous_ref_is_refused(forge: Forge, bob: UserHandle, git,
                                                    tmp_path: Path) -> None:
    push_history(forge, bob, git, tmp_path)
    git("push", "-q", "origin", "main:refs/tags/main", cwd=tmp_path / "work")
    with pytest.raises(domain.DomainError, match="^Ref is ambiguous: 'main' is both a branch"):
        forge.start_job(APP, bob, ref="main")


def test_variables_empty_repository_job_has_no_commit_variables(forge: Forge, bob: UserHandle) -> None:
    forge.create_project("Acme-Corp/empty", members={"bob": "developer"})
    v = forge.start_job("Acme-Corp/empty", bob).variables
    assert not any(key.startswith("CI_COMMIT_") for key in v)
    with pytest.raises(domain.DomainError, match="Reference not found: .* is empty"):
        forge.start_job("Acme-Corp/empty", bob, ref="other")


def test_variables_defined_by_the_test_are_passed_on(forge: Forge, bob: UserHandle) -> None:
    job = forge.start_job(APP, bob, variables={
        "DEPLOY_ENV": "staging", "API_KEY": {"value": "s3cr3t-value-1", "masked": True}, "N": 3})
    assert (job.variables["DEPLOY_ENV"], job.variables["API_KEY"], job.variables["N"]) == (
        "staging", "s3cr3t-value-1", "3")
    assert forge.job_variables(job)["API_KEY"] == "s3cr3t-value-1"
    with pytest.raises(domain.DomainError, match="variables.SHORT: a masked value must be at "
                                                 "least 8 characters"):
        forge.start_job(APP, bob, variables={"SHORT": {"value": "abc", "masked": True}})
    with pytest.raises(domain.DomainError, match="variables: invalid name 'BAD-NAME'"):
        forge.start_job(APP, bob, variables={"BAD-NAME": "x"})


def test_variables_every_one_forge_sets_has_gitlabs_format(forge: Forge, bob: UserHandle) -> None:
    """Each variable of a runner job against the format GitLab documents; a new variable
    without a row here fails."""
    import requests

    host, port = forge.url.split("//")[1].split(":")
    url, project = forge.url, f"{forge.url}/{APP}"
    _, token = forge.create_runner(tags=("linux", "docker"), description="my runner")
    job = forge.queue_job(APP, bob, "true", name="build:linux", variables={"OWN": "x"})
    body = requests.post(f"{forge.url}/api/v4/jobs/request", json={"token": token}).json()
    listed = {v["key"]: v["value"] for v in body["variables"]}
    n = r"[1-9][0-9]*"
    formats = {
        "CI": "true", "GITLAB_CI": "true", "CI_SERVER": "yes", "CI_SERVER_NAME": "GitLab",
        "CI_SERVER_VERSION": r"\d+\.\d+\.\d+", "CI_SERVER_VERSION_MAJOR": r"\d+",
        "CI_SERVER_VERSION_MINOR": r"\d+", "CI_SERVER_VERSION_PATCH": r"\d+",
        "CI_SERVER_REVISION": r"forge0000000", "CI_SERVER_URL": re.escape(url),
        "CI_SERVER_HOST": re.escape(host), "CI_SERVER_PORT": port, "CI_SERVER_PROTOCOL": "http",
        "CI_SERVER_FQDN": re.escape(f"{host}:{port}"), "CI_SERVER_SHELL_SSH_HOST": re.escape(host),
        "CI_SERVER_SHELL_SSH_PORT": "22", "CI_API_V4_URL": re.escape(f"{url}/api/v4"),
        "CI_API_GRAPHQL_URL": re.escape(f"{url}/api/graphql"), "GITLAB_FEATURES": "",
        "CI_JOB_ID": str(job.id), "CI_JOB_NAME": "build:linux", "CI_JOB_NAME_SLUG": "build-linux",
        "CI_JOB_STAGE": "test", "CI_JOB_STATUS": "running", "CI_JOB_TIMEOUT": "3600",
        "CI_JOB_URL": re.escape(f"{project}/-/jobs/{job.id}"), "CI_JOB_STARTED_AT": ISO_UTC.pattern[1:-1],
        "CI_JOB_TOKEN": re.escape(job.token), "CI_NODE_TOTAL": "1", "CI_CONFIG_PATH": r"\.gitlab-ci\.yml",
        "CI_REPOSITORY_URL": re.escape(f"http://gitlab-ci-token:{job.token}@{host}:{port}/{APP}.git"),
        "CI_PIPELINE_ID": n, "CI_PIPELINE_IID": n, "CI_PIPELINE_SOURCE": "push",
        "CI_PIPELINE_URL": re.escape(f"{project}/-/pipelines/") + n,
        "CI_PIPELINE_CREATED_AT": ISO_UTC.pattern[1:-1],
        "CI_COMMIT_SHA": SHA.pattern[1:-1], "CI_COMMIT_SHORT_SHA": r"[0-9a-f]{8}",
        "CI_COMMIT_BEFORE_SHA": "0{40}", "CI_COMMIT_REF_NAME": "main", "CI_COMMIT_REF_SLUG": "main",
        "CI_COMMIT_BRANCH": "main", "CI_COMMIT_REF_PROTECTED": "true|false",
        "CI_COMMIT_MESSAGE": "Initial commit\n",
        "CI_COMMIT_TITLE": "Initial commit", "CI_COMMIT_DESCRIPTION": "",
        "CI_COMMIT_TIMESTAMP": ISO_OFFSET.pattern[1:-1], "CI_COMMIT_AUTHOR": r"[^<>]+ <[^<>@]+@[^<>]+>",
        "CI_PROJECT_ID": n, "CI_PROJECT_NAME": "My_App", "CI_PROJECT_TITLE": "My_App",
        "CI_PROJECT_DESCRIPTION": "", "CI_PROJECT_PATH": re.escape(APP),
        "CI_PROJECT_PATH_SLUG": "acme-corp-platform-team-my-app",
        "CI_PROJECT_NAMESPACE": re.escape("Acme-Corp/Platform.Team"),
        "CI_PROJECT_NAMESPACE_SLUG": "acme-corp-platform-team", "CI_PROJECT_NAMESPACE_ID": n,
        "CI_PROJECT_ROOT_NAMESPACE": "Acme-Corp", "CI_PROJECT_URL": re.escape(project),
        "CI_PROJECT_VISIBILITY": "private|internal|public", "CI_DEFAULT_BRANCH": "main",
        "CI_DEFAULT_BRANCH_SLUG": "main", "CI_RUNNER_ID": n, "CI_RUNNER_DESCRIPTION": "my runner",
        "CI_RUNNER_TAGS": re.escape('["docker", "linux"]'), "GITLAB_USER_ID": str(bob.id),
        "GITLAB_USER_EMAIL": "bob@example.com", "GITLAB_USER_LOGIN": "bob", "GITLAB_USER_NAME": "Bob",
        "OWN": "x", "CI_JOB_GROUP_NAME": "build:linux", "CI_PROJECT_TOPICS": "",
        "CI_TEMPLATE_REGISTRY_HOST": r"registry\.gitlab\.com",
        # tag jobs (test_variables_tag_job_has_the_tag_and_no_branch), with --registry (test_registry_*)
        "CI_COMMIT_TAG": None, "CI_COMMIT_TAG_MESSAGE": None, "CI_REGISTRY": None,
        "CI_REGISTRY_IMAGE": None, "CI_REGISTRY_USER": None, "CI_REGISTRY_PASSWORD": None,
    }
    unformatted = sorted(set(listed) - set(formats))
    assert unformatted == []
    for key, value in listed.items():
        pattern = formats[key]
        assert pattern is not None and re.fullmatch(pattern, value), (key, value)


def test_variables_long_title_description_is_the_whole_message(forge: Forge, bob: UserHandle, git,
                                                                tmp_path: Path) -> None:
    work = tmp_path / "work"
    git("clone", "-q", forge.clone_url(APP, user=bob), work)
    message = "T" * 100 + "\n\nbody\n"
    git("commit", "-q", "--allow-empty", "-m", message, cwd=work)
    git("push", "-q", "origin", "main", cwd=work)
    v = forge.start_job(APP, bob).variables
    assert (v["CI_COMMIT_TITLE"], v["CI_COMMIT_DESCRIPTION"]) == ("T" * 100, message)


def test_variables_project_description_is_the_projects(forge: Forge, bob: UserHandle) -> None:
    import requests

    response = requests.put(f"{forge.url}/api/v4/projects/{APP.replace('/', '%2F')}",
                            json={"description": "The app, as users see it"},
                            headers={"PRIVATE-TOKEN": forge.root_token})
    assert response.status_code == 200, response.text
    assert forge.start_job(APP, bob).variables["CI_PROJECT_DESCRIPTION"] == "The app, as users see it"


def test_variables_commit_timestamp_keeps_the_committers_offset(forge: Forge, bob: UserHandle, git,
                                                                 git_env: dict[str, str],
                                                                 tmp_path: Path) -> None:
    # Gitlab::Git::Commit#init_date_from_gitaly: Time.strptime("<seconds> <timezone>", "%s %z"),
    # written with Time#xmlschema (GitLab.com shows e.g. 2026-07-31T19:38:51+02:00)
    work = tmp_path / "work"
    git("clone", "-q", forge.clone_url(APP, user=bob), work)
    for date, shown in (("2022-01-31T18:47:55+0200", "2022-01-31T18:47:55+02:00"),
                        ("2022-01-31T11:17:55-0530", "2022-01-31T11:17:55-05:30"),
                        ("2022-01-31T16:47:55+0000", "2022-01-31T16:47:55+00:00")):
        git_env["GIT_COMMITTER_DATE"] = date
        git("commit", "-q", "--allow-empty", "-m", "x", cwd=work)
        git("push", "-q", "origin", "main", cwd=work)
        assert forge.start_job(APP, bob).variables["CI_COMMIT_TIMESTAMP"] == shown


@pytest.mark.parametrize(("name", "group"), [
    ("build", "build"), ("build:linux", "build:linux"), ("rspec 1/3", "rspec"),
    ("rspec:test: [ruby, ubuntu]", "rspec:test"), ("test 2:4", "test"), ("a 1/2 3/4", "a")])
def test_variables_job_group_name_is_gitlabs(forge: Forge, bob: UserHandle, name: str,
                                              group: str) -> None:
    # CommitStatus#group_name: the name without a `parallel:` suffix (`1/3`, `[ruby, ubuntu]`)
    assert forge.start_job(APP, bob, name=name).variables["CI_JOB_GROUP_NAME"] == group


def test_variables_server_version_is_the_one_the_api_reports(forge: Forge, bob: UserHandle) -> None:
    """One forge is one GitLab: a script comparing CI_SERVER_VERSION with GET /version agrees."""
    import requests

    version = requests.get(f"{forge.url}/api/v4/version",
                           headers={"PRIVATE-TOKEN": forge.root_token}).json()
    v = forge.start_job(APP, bob).variables
    assert (v["CI_SERVER_VERSION"], v["CI_SERVER_REVISION"]) == (version["version"], version["revision"])
    assert "CI_COMMIT_MESSAGE_IS_TRUNCATED" not in v  # GitLab 18.6's, after the 18.3 forge follows
