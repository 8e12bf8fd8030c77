"""The runner API driven over HTTP as a GitLab Runner drives it: registration, the queue,
the job lifecycle and its token, the log, artifacts, timeouts and tag matching."""

from __future__ import annotations

import io
import zipfile
from typing import Any

import pytest
import requests

from forge.testing import Forge, UserHandle

API = "/api/v4"


@pytest.fixture
def bob(forge: Forge) -> UserHandle:
    forge.create_group("acme")
    user = forge.create_user("bob")
    forge.create_project("acme/app", files={"README.md": "v1\n"}, members={"bob": "developer"})
    return user


def register(forge: Forge, **extra: Any) -> dict[str, Any]:
    response = requests.post(f"{forge.url}{API}/runners",
                             json={"token": forge.runner_registration_token,
                                   "description": "test", **extra})
    assert response.status_code == 201, response.text
    return dict(response.json())


def poll(forge: Forge, token: str) -> requests.Response:
    return requests.post(f"{forge.url}{API}/jobs/request",
                         json={"token": token, "info": {"name": "gitlab-runner", "version": "18.6.0",
                                                        "executor": "shell", "features": {}}})


def info_refs(forge: Forge, token: str) -> int:
    return requests.get(f"{forge.url}/acme/app.git/info/refs?service=git-upload-pack",
                        auth=("gitlab-ci-token", token)).status_code


def test_runners_register_verify_and_delete(forge: Forge) -> None:
    runner = register(forge, tag_list="docker, linux", run_untagged=False)
    assert runner["token"].startswith("glrt-") and runner["token_expires_at"] is None
    verified = requests.post(f"{forge.url}{API}/runners/verify", json={"token": runner["token"]})
    assert (verified.status_code, verified.json()["id"]) == (200, runner["id"])
    wrong = requests.post(f"{forge.url}{API}/runners", json={"token": "GR1348941wrong"})
    assert (wrong.status_code, wrong.json()) == (403, {"message": "403 Forbidden"})
    assert forge.last_event()["reason"] == "invalid_registration_token"
    assert requests.post(f"{forge.url}{API}/runners", json={}).json() == {"error": "token is missing"}
    untagged_only = requests.post(f"{forge.url}{API}/runners", json={
        "token": forge.runner_registration_token, "run_untagged": False})
    assert untagged_only.status_code == 400
    assert "tags list can not be empty" in untagged_only.json()["message"]
    for bad in ({"maximum_timeout": 2**70}, {"maximum_timeout": 60}, {"description": "d" * 1025},
                {"access_level": "everyone"}):
        refused = requests.post(f"{forge.url}{API}/runners",
                                json={"token": forge.runner_registration_token, **bad})
        assert refused.status_code == 400, (bad, refused.text)
    deleted = requests.delete(f"{forge.url}{API}/runners", data={"token": runner["token"]})
    assert deleted.status_code == 204
    gone = requests.post(f"{forge.url}{API}/runners/verify", json={"token": runner["token"]})
    assert (gone.status_code, gone.json()) == (403, {"message": "403 Forbidden"})


def test_runners_user_runners_need_the_right_role(forge: Forge, bob: UserHandle) -> None:
    url = f"{forge.url}{API}/user/runners"
    as_bob = {"PRIVATE-TOKEN": bob.token or ""}
    refused = requests.post(url, headers=as_bob, json={"runner_type": "project_type",
                                                       "project_id": 1})
    assert (refused.status_code, refused.json()) == (
        403, {"message": "403 Forbidden - Insufficient permissions"})
    assert requests.post(url, headers=as_bob, json={"runner_type": "instance_type"}).status_code == 403
    forge.add_member(bob, "maintainer", project="acme/app")
    created = requests.post(url, headers=as_bob, json={"runner_type": "project_type",
                                                       "project_id": 1, "tag_list": ["a"]})
    assert created.status_code == 201 and created.json()["token"].startswith("glrt-")
    root = requests.post(url, headers={"PRIVATE-TOKEN": forge.root_token},
                         json={"runner_type": "instance_type"})
    assert root.status_code == 201
    assert requests.post(url, json={"runner_type": "instance_type"}).status_code == 401
    assert requests.post(url, headers=as_bob, json={}).json() == {"error": "runner_type is missing"}
    verified = requests.post(f"{forge.url}{API}/runners/verify",
                             json={"token": created.json()["token"]})
    assert verified.status_code == 200


def test_runners_job_lifecycle_follows_the_job_token_rules(forge: Forge, bob: UserHandle,
                                                           denied_401: str) -> None:
    runner = register(forge)
    assert poll(forge, runner["token"]).status_code == 204
    job = forge.queue_job("acme/app", bob, ["echo hello"], variables={
        "SECRET": {"value": "hunter2-hunter2", "masked": True}, "PLAIN": "x"})
    assert forge.job(job)["status"] == "pending"
    assert info_refs(forge, job.token) == 401  # a pending job's token is refused
    assert forge.last_event()["reason"] == "job_not_running"

    taken = poll(forge, runner["token"])
    assert taken.status_code == 201
    body = taken.json()
    assert (body["id"], body["token"]) == (job.id, job.token)
    assert forge.job(job)["status"] == "running"
    assert info_refs(forge, job.token) == 200  # a running one works
    assert poll(forge, runner["token"]).status_code == 204  # nothing else queued

    trace = f"{forge.url}{API}/jobs/{job.id}/trace"
    first = requests.patch(trace, data=b"hello\n", headers={"Job-Token": job.token,
                                                            "Content-Range": "0-5"})
    assert (first.status_code, first.headers["Range"], first.headers["Job-Status"]) == (
        202, "0-6", "running")
    wrong = requests.patch(trace, data=b"again\n", headers={"Job-Token": job.token,
                                                            "Content-Range": "3-8"})
    assert (wrong.status_code, wrong.headers["Range"]) == (416, "0-6")
    assert wrong.json() == {"message": "416 Range Not Satisfiable"}
    no_range = requests.patch(trace, data=b"x", headers={"Job-Token": job.token})
    assert no_range.json() == {"message": "400 Missing header Content-Range"}
    requests.patch(trace, data=b"done\n", headers={"Job-Token": job.token, "Content-Range": "6-10"})

    update = requests.put(f"{forge.url}{API}/jobs/{job.id}",
                          json={"token": job.token, "state": "success", "exit_code": 0})
    assert update.status_code == 200
    assert info_refs(forge, job.token) == 401  # the very next request after the runner ended it
    again = requests.put(f"{forge.url}{API}/jobs/{job.id}", json={"token": job.token,
                                                                  "state": "failed"})
    assert (again.status_code, again.json(), again.headers["Job-Status"]) == (
        403, {"message": "403 Forbidden - Job is not running"}, "success")
    shown = forge.job(job)
    assert (shown["status"], shown["exit_code"], shown["failure_reason"]) == ("success", 0, None)
    assert forge.job_log(job) == "hello\ndone\n"
    rest = requests.get(f"{forge.url}{API}/projects/acme%2Fapp/jobs/{job.id}/trace",
                        headers={"PRIVATE-TOKEN": bob.token or ""})
    assert (rest.status_code, rest.text, rest.headers["Content-Type"]) == (
        200, "hello\ndone\n", "text/plain; charset=utf-8")
    outsider = forge.create_user("eve")
    hidden = requests.get(f"{forge.url}{API}/projects/acme%2Fapp/jobs/{job.id}/trace",
                          headers={"PRIVATE-TOKEN": outsider.token or ""})
    assert (hidden.status_code, hidden.json()) == (404, {"message": "404 Project Not Found"})
    taken_event = forge.last_event(action="runner_take_job")
    assert (taken_event["job_id"], taken_event["credential"]) == (job.id, "job_token")


def test_runners_payload_follows_gitlab(forge: Forge, bob: UserHandle) -> None:
    runner = register(forge)
    job = forge.queue_job("acme/app", bob, ["make", "make test"], name="unit tests",
                          stage="build", image="python:3.12", timeout=1800,
                          variables={"TOKEN": {"value": "abcdefgh1234", "masked": True}},
                          artifacts={"paths": ["dist/"], "expire_in": "1 week"})
    body = poll(forge, runner["token"]).json()
    git = body["git_info"]
    pipeline = forge.job(job)["pipeline"]
    assert git["repo_url"] == f"http://gitlab-ci-token:{job.token}@{forge.url.split('//')[1]}/acme/app.git"
    assert (git["ref"], git["ref_type"], git["depth"], git["before_sha"]) == ("main", "branch", 20, "0" * 40)
    assert git["refspecs"] == [f"+refs/pipelines/{pipeline}:refs/pipelines/{pipeline}",
                               "+refs/heads/main:refs/remotes/origin/main"]
    assert git["protected"] is True and len(git["sha"]) == 40
    assert body["steps"] == [{"name": "script", "script": ["make", "make test"], "timeout": 1800,
                              "when": "on_success", "allow_failure": False}]
    assert body["image"]["name"] == "python:3.12" and body["services"] == []
    assert body["artifacts"][0]["paths"] == ["dist/"]
    assert body["artifacts"][0]["artifact_format"] == "zip"
    assert body["job_info"]["name"] == "unit tests" and body["job_info"]["stage"] == "build"
    assert body["job_info"]["project_full_path"] == "acme/app"
    assert body["runner_info"]["timeout"] == 1800 and body["allow_git_fetch"] is True
    assert body["dependencies"] == [] and body["cache"] == []
    by_key = {v["key"]: v for v in body["variables"]}
    assert by_key["CI_JOB_TOKEN"] == {"key": "CI_JOB_TOKEN", "value": job.token, "public": False,
                                      "masked": True, "file": False, "raw": False}
    assert by_key["TOKEN"]["masked"] is True and by_key["TOKEN"]["public"] is False
    assert by_key["CI_COMMIT_BRANCH"]["public"] is True
    assert by_key["CI_RUNNER_ID"]["value"] == str(runner["id"])
    assert by_key["CI_JOB_STARTED_AT"]["value"].endswith("Z")


@pytest.mark.parametrize(("runner", "job_tags", "takes"), [
    ({}, (), True),
    ({}, ("docker",), False),
    ({"tag_list": ["docker", "linux"]}, ("docker",), True),
    ({"tag_list": ["docker"]}, ("docker", "gpu"), False),
    ({"tag_list": ["docker"], "run_untagged": False}, (), False),
    ({"tag_list": ["docker"], "run_untagged": True}, (), True),
    ({"paused": True}, (), False),
    ({"access_level": "ref_protected"}, (), True),  # main is protected
])
def test_runners_tags_match_as_gitlab(forge: Forge, bob: UserHandle, runner: dict[str, Any],
                                      job_tags: tuple[str, ...], takes: bool) -> None:
    token = register(forge, **runner)["token"]
    forge.queue_job("acme/app", bob, "true", tags=job_tags)
    assert poll(forge, token).status_code == (201 if takes else 204)


def test_runners_scope_project_runner_takes_only_its_project(forge: Forge, bob: UserHandle) -> None:
    forge.create_project("acme/other", files={"a": "a\n"}, members={"bob": "developer"})
    _, other_runner = forge.create_runner(project="acme/other")
    _, group_runner = forge.create_runner(group="acme")
    forge.queue_job("acme/app", bob, "true")
    assert poll(forge, other_runner).status_code == 204
    assert poll(forge, group_runner).status_code == 201


def test_runners_protected_runner_skips_unprotected_refs(forge: Forge, bob: UserHandle, git,
                                                         tmp_path) -> None:
    git("clone", "-q", forge.clone_url("acme/app", user=bob), tmp_path / "w")
    git("push", "-q", "origin", "main:topic", cwd=tmp_path / "w")
    _, token = forge.create_runner(access_level="ref_protected")
    forge.queue_job("acme/app", bob, "true", ref="topic")
    assert poll(forge, token).status_code == 204


def test_runners_timed_out_job_is_failed_by_the_forge(forge: Forge, bob: UserHandle) -> None:
    _, token = forge.create_runner()
    job = forge.queue_job("acme/app", bob, "sleep 1000", timeout=60)
    assert poll(forge, token).status_code == 201
    assert info_refs(forge, job.token) == 200
    forge.advance_clock(61)
    assert info_refs(forge, job.token) == 401
    # job_not_running if the housekeeper's sweep (every 15 s) failed the job first
    assert forge.last_event()["reason"] in ("job_timed_out", "job_not_running")
    patch = requests.patch(f"{forge.url}{API}/jobs/{job.id}/trace", data=b"late\n",
                           headers={"Job-Token": job.token, "Content-Range": "0-4"})
    assert (patch.status_code, patch.json(), patch.headers["Job-Status"]) == (
        403, {"message": "403 Forbidden - Job is not running"}, "failed")
    shown = forge.job(job)
    assert (shown["status"], shown["failure_reason"]) == ("failed", "job_execution_timeout")
    assert forge.job_log(job) == ("ERROR: Job failed: execution took longer than 60 seconds "
                                  "(forge)\n")


def _zip(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def test_runners_needs_wait_and_get_artifacts(forge: Forge, bob: UserHandle) -> None:
    _, token = forge.create_runner()
    build = forge.queue_job("acme/app", bob, "make", name="build",
                            artifacts={"paths": ["dist/"]})
    test = forge.queue_job("acme/app", bob, "make test", name="test", needs=("build",),
                           pipeline=build)
    assert poll(forge, token).json()["id"] == build.id
    assert poll(forge, token).status_code == 204  # test waits for build
    upload = requests.post(f"{forge.url}{API}/jobs/{build.id}/artifacts",
                           headers={"Job-Token": build.token},
                           files={"file": ("artifacts.zip", _zip({"dist/app": "binary\n"}))},
                           data={"artifact_type": "archive", "artifact_format": "zip"})
    assert upload.status_code == 201, upload.text
    requests.put(f"{forge.url}{API}/jobs/{build.id}", json={"token": build.token, "state": "success"})
    body = poll(forge, token).json()
    assert body["id"] == test.id
    assert body["dependencies"] == [{"id": build.id, "name": "build", "token": test.token,
                                     "artifacts_file": {"filename": "artifacts.zip",
                                                        "size": len(_zip({"dist/app": "binary\n"}))}}]
    got = requests.get(f"{forge.url}{API}/jobs/{build.id}/artifacts", headers={"Job-Token": test.token})
    assert got.status_code == 200
    assert zipfile.ZipFile(io.BytesIO(got.content)).read("dist/app") == b"binary\n"
    refused = requests.get(f"{forge.url}{API}/jobs/{build.id}/artifacts",
                           headers={"Job-Token": "glcbt-64_unknown"})
    assert (refused.status_code, refused.json()) == (403, {"message": "403 Forbidden"})


def test_runners_failed_need_skips_the_job(forge: Forge, bob: UserHandle) -> None:
    _, token = forge.create_runner()
    build = forge.queue_job("acme/app", bob, "make", name="build")
    test = forge.queue_job("acme/app", bob, "make test", name="test", needs=("build",),
                           pipeline=build)
    poll(forge, token)
    requests.put(f"{forge.url}{API}/jobs/{build.id}", json={"token": build.token, "state": "failed",
                                                            "failure_reason": "script_failure",
                                                            "exit_code": 2})
    assert poll(forge, token).status_code == 204
    assert forge.job(test)["status"] == "skipped"
    shown = forge.job(build)
    assert (shown["status"], shown["failure_reason"], shown["exit_code"]) == ("failed", "script_failure", 2)


def test_runners_jobs_queue_from_control_api_and_seed(forge: Forge, bob: UserHandle) -> None:
    queued = requests.post(f"{forge.url}/-/forge/jobs", headers={"PRIVATE-TOKEN": forge.root_token},
                           json={"project": "acme/app", "user": "bob", "script": ["echo hi"],
                                 "image": "alpine", "variables": {"A": "1"}, "tags": ["t"]})
    assert queued.status_code == 201, queued.text
    assert (queued.json()["status"], queued.json()["script"]) == ("pending", ["echo hi"])
    bad = requests.post(f"{forge.url}/-/forge/jobs", headers={"PRIVATE-TOKEN": forge.root_token},
                        json={"project": "acme/app", "user": "bob", "script": ["x"], "needs": ["nope"]})
    assert bad.status_code == 400 and "has no job 'nope'" in bad.json()["message"]
    seeded = forge.seed({"jobs": [
        {"project": "acme/app", "user": "bob", "name": "lint", "script": "ruff check",
         "tags": ["t"], "variables": {"B": "2"}, "pipeline": "p"},
        {"project": "acme/app", "user": "bob", "name": "test", "script": ["pytest"],
         "needs": ["lint"], "pipeline": "p", "artifacts": {"paths": ["report.xml"]}}]})
    assert [job["status"] for job in seeded["jobs"]] == ["pending", "pending"]
    _, token = forge.create_runner(tags=("t",))
    assert poll(forge, token).json()["id"] == queued.json()["id"]
    assert poll(forge, token).json()["job_info"]["name"] == "lint"


def test_runners_racing_for_one_job_never_share_it(forge: Forge, bob: UserHandle) -> None:
    from concurrent.futures import ThreadPoolExecutor

    tokens = [forge.create_runner()[1] for _ in range(6)]
    job = forge.queue_job("acme/app", bob, "true")
    with ThreadPoolExecutor(len(tokens)) as pool:
        answers = list(pool.map(lambda token: poll(forge, token), tokens))
    assert sorted(answer.status_code for answer in answers) == [201] + [204] * 5
    assert next(a for a in answers if a.status_code == 201).json()["id"] == job.id
    assert len(forge.events(action="runner_take_job")) == 1


def taken_job(forge: Forge, bob: UserHandle, **extra: Any) -> dict[str, Any]:
    """Queue a job and let a fresh runner take it; return the runner's payload."""
    runner = register(forge)
    forge.queue_job("acme/app", bob, ["true"], **extra)
    response = poll(forge, runner["token"])
    assert response.status_code == 201, response.text
    return dict(response.json())


def test_runners_job_log_of_an_id_out_of_range_is_not_found(forge: Forge, bob: UserHandle) -> None:
    response = requests.get(f"{forge.url}{API}/projects/acme%2Fapp/jobs/{2**63}/trace",
                            headers={"PRIVATE-TOKEN": forge.root_token})
    assert (response.status_code, response.json()) == (404, {"message": "404 Job Not Found"})


def test_runners_update_with_an_exit_code_out_of_range_gets_400(forge: Forge, bob: UserHandle) -> None:
    job = taken_job(forge, bob)
    url = f"{forge.url}{API}/jobs/{job['id']}"
    response = requests.put(url, json={"token": job["token"], "state": "failed", "exit_code": 2**70})
    assert (response.status_code, response.json()) == (400, {"error": "exit_code is invalid"})
    ended = requests.put(url, json={"token": job["token"], "state": "failed", "exit_code": 2})
    assert ended.status_code == 200
    assert (forge.job(job["id"])["status"], forge.job(job["id"])["exit_code"]) == ("failed", 2)


def test_runners_job_log_hides_the_job_token_and_masked_values(forge: Forge, bob: UserHandle) -> None:
    secret = "hunter2-hunter2"
    job = taken_job(forge, bob, variables={"SECRET": {"value": secret, "masked": True},
                                           "PLAIN": "plain-value"})
    token, trace = job["token"], f"{forge.url}{API}/jobs/{job['id']}/trace"
    # GitLab's Ci::Build#hide_secrets: each character of the token becomes `x`, so the log
    # keeps the length the runner counts its offsets in; a secret split between two
    # patches is hidden all the same.
    text = f"token={token} secret={secret} plain=plain-value\n".encode()
    cut = text.index(token.encode()) + 5
    first = requests.patch(trace, data=text[:cut], headers={"Job-Token": token,
                                                            "Content-Range": f"0-{cut}"})
    second = requests.patch(trace, data=text[cut:], headers={
        "Job-Token": token, "Content-Range": f"{cut}-{len(text)}"})
    assert (first.status_code, second.status_code) == (202, 202)
    assert second.headers["Range"] == f"0-{len(text)}"
    log = forge.job_log(job["id"])
    assert log == f"token={'x' * len(token)} secret={'x' * len(secret)} plain=plain-value\n"


@pytest.mark.parametrize("sent", [{}, {"failure_reason": "no_such_reason"}])
def test_runners_failure_without_a_known_reason_is_unknown_failure(forge: Forge, bob: UserHandle,
                                                                   sent: dict[str, str]) -> None:
    # GitLab's Build::Status::Reason: a reason it does not know is nil, shown as unknown_failure
    # (gitlab-python-runner sends none; the official runner sends script_failure itself)
    job = taken_job(forge, bob)
    response = requests.put(f"{forge.url}{API}/jobs/{job['id']}",
                            json={"token": job["token"], "state": "failed", **sent})
    assert response.status_code == 200
    assert forge.job(job["id"])["failure_reason"] == "unknown_failure"


def test_runners_artifacts_upload_checks_type_and_retries_as_gitlab(forge: Forge, bob: UserHandle) -> None:
    job = taken_job(forge, bob)
    url, auth = f"{forge.url}{API}/jobs/{job['id']}/artifacts", {"Job-Token": job["token"]}
    for field, value in (("artifact_type", "x" * 5000), ("artifact_format", "rar")):
        refused = requests.post(url, headers=auth, data={field: value}, files={"file": ("a.zip", b"PK")})
        assert (refused.status_code, refused.json()) == (
            400, {"error": f"{field} does not have a valid value"})
    first = requests.post(url, headers=auth, files={"file": ("a" * 300 + ".zip", b"PK1")})
    assert (first.status_code, first.json()) == (201, 201)
    # a runner retrying the same upload succeeds; a different archive is refused
    again = requests.post(url, headers=auth, files={"file": ("a.zip", b"PK1")})
    assert again.status_code == 201
    other = requests.post(url, headers=auth, files={"file": ("a.zip", b"PK2")})
    assert (other.status_code, other.json()) == (
        400, {"message": "another artifact of the same type already exists"})
    junit = requests.post(url, headers=auth, data={"artifact_type": "junit", "artifact_format": "gzip"},
                          files={"file": ("junit.xml.gz", b"gz")})
    assert junit.status_code == 201
    download = requests.get(url, headers=auth)
    assert (download.status_code, download.content) == (200, b"PK1")


def test_runners_job_log_past_the_size_limit_fails_the_job(forge: Forge, bob: UserHandle,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from forge import runners

    monkeypatch.setattr(runners, "TRACE_SIZE_LIMIT_MB", 1)  # GitLab's default is 100 MB
    job = taken_job(forge, bob)
    trace, token = f"{forge.url}{API}/jobs/{job['id']}/trace", job["token"]
    small = requests.patch(trace, data=b"x" * 1000, headers={"Job-Token": token, "Content-Range": "0-1000"})
    assert small.status_code == 202
    big = b"y" * (1 << 20)
    refused = requests.patch(trace, data=big, headers={"Job-Token": token,
                                                       "Content-Range": f"1000-{1000 + len(big)}"})
    assert (refused.status_code, refused.json()) == (403, {"message": "403 Forbidden"})
    shown = forge.job(job["id"])
    assert (shown["status"], shown["failure_reason"]) == ("failed", "trace_size_exceeded")
    assert forge.job_log(job["id"]) == "x" * 1000
    assert info_refs(forge, token) == 401


def test_runners_jobs_api_shows_jobs_as_gitlab(forge: Forge, bob: UserHandle) -> None:
    runner = register(forge, description="my runner")
    build = forge.queue_job("acme/app", bob, ["make"], name="build")
    lint = forge.queue_job("acme/app", bob, ["make lint"], name="lint", tags=("docker",))
    assert poll(forge, runner["token"]).json()["id"] == build.id
    requests.put(f"{forge.url}{API}/jobs/{build.id}", json={
        "token": build.token, "state": "failed", "failure_reason": "script_failure", "exit_code": 1})
    headers = {"PRIVATE-TOKEN": bob.token or ""}
    jobs = f"{forge.url}{API}/projects/acme%2Fapp/jobs"
    shown = requests.get(f"{jobs}/{build.id}", headers=headers)
    assert shown.status_code == 200
    body = shown.json()
    assert (body["id"], body["name"], body["status"], body["failure_reason"]) == (
        build.id, "build", "failed", "script_failure")
    assert (body["runner"]["id"], body["runner"]["description"]) == (runner["id"], "my runner")
    assert body["web_url"] == f"{forge.url}/acme/app/-/jobs/{build.id}"
    assert body["pipeline"]["id"] == forge.job(build)["pipeline"]
    listed = requests.get(jobs, headers=headers)
    assert [job["id"] for job in listed.json()] == [lint.id, build.id]  # newest first
    assert listed.json()[0]["tag_list"] == ["docker"] and listed.json()[0]["runner"] is None
    pending = requests.get(jobs, params={"scope[]": ["pending", "running"]}, headers=headers)
    assert [job["id"] for job in pending.json()] == [lint.id]
    failed = requests.get(jobs, params={"scope": "failed"}, headers=headers)
    assert [job["id"] for job in failed.json()] == [build.id]
    bad = requests.get(jobs, params={"scope": "nope"}, headers=headers)
    assert (bad.status_code, bad.json()) == (400, {"error": "scope does not have a valid value"})
    for missing_id in (999, 2**63):
        gone = requests.get(f"{jobs}/{missing_id}", headers=headers)
        assert (gone.status_code, gone.json()) == (404, {"message": "404 Job Not Found"})
    outsider = forge.create_user("eve")
    hidden = requests.get(f"{jobs}/{build.id}", headers={"PRIVATE-TOKEN": outsider.token or ""})
    assert (hidden.status_code, hidden.json()) == (404, {"message": "404 Project Not Found"})
    log = requests.get(f"{jobs}/{build.id}/trace", headers=headers)
    assert log.headers["Content-Disposition"] == f'infile; filename="{build.id}.log"'


@pytest.mark.parametrize("tags", [{"a": 1}, [["a"]], [{"a": 1}]])
def test_runners_tag_list_of_the_wrong_type_is_invalid(forge: Forge, tags: Any) -> None:
    # Grape's Array[String]: a hash, or a list holding lists or hashes, is no tag list
    refused = requests.post(f"{forge.url}{API}/runners",
                            json={"token": forge.runner_registration_token, "tag_list": tags})
    assert (refused.status_code, refused.json()) == (400, {"error": "tag_list is invalid"})


def test_runners_job_of_a_blocked_user_is_dropped_not_handed_out(forge: Forge, bob: UserHandle) -> None:
    # GitLab's RegisterJobService drops it (user_blocked) instead of giving it to the runner
    tagged = register(forge, tag_list="docker", run_untagged=False)
    untagged = register(forge)
    job = forge.queue_job("acme/app", bob, ["true"])
    forge.block_user(bob)
    assert poll(forge, tagged["token"]).status_code == 204
    assert forge.job(job)["status"] == "pending"  # a runner that cannot run it leaves it be
    assert poll(forge, untagged["token"]).status_code == 204
    shown = forge.job(job)
    assert (shown["status"], shown["failure_reason"], shown["runner"]) == ("failed", "user_blocked", None)


def test_runners_trace_content_range_is_read_as_gitlab_reads_it(forge: Forge, bob: UserHandle) -> None:
    # AppendBuildTraceService: `content_range.split('-')[0].to_i`, so text that is no number
    # counts as 0 (never a 400); only a missing header is refused
    job = taken_job(forge, bob)
    trace, token = f"{forge.url}{API}/jobs/{job['id']}/trace", job["token"]
    first = requests.patch(trace, data=b"abc", headers={"Job-Token": token, "Content-Range": "garbage"})
    assert (first.status_code, first.headers["Range"]) == (202, "0-3")
    standard = requests.patch(trace, data=b"d", headers={"Job-Token": token, "Content-Range": "bytes 3-4"})
    assert (standard.status_code, standard.headers["Range"]) == (416, "0-3")  # "bytes 3".to_i is 0
    suffixed = requests.patch(trace, data=b"d", headers={"Job-Token": token, "Content-Range": "3x-9"})
    assert (suffixed.status_code, suffixed.headers["Range"]) == (202, "0-4")  # "3x".to_i is 3
    assert forge.job_log(job["id"]) == "abcd"
