"""A real runner takes jobs from forge: gitlab-python-runner (PyPI 14.3.20, installed by the
project's test extras), registered with the registration token, running job scripts with
its shell executor against the live forge."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from forge.testing import Forge, JobHandle, UserHandle

RUNNER = Path(sys.executable).parent / "gitlab-runner.py"
TAG = "forge-test"


@pytest.fixture
def runner(forge: Forge, tmp_path: Path, git_env: dict[str, str]) -> Path:
    """Register gitlab-python-runner as a user does; return its directory (gitlab-runner.yml)."""
    assert RUNNER.exists(), "gitlab-python-runner is missing: `make test` installs the test extras"
    home = tmp_path / "runner"
    home.mkdir()
    result = subprocess.run(
        [sys.executable, str(RUNNER), "--register", forge.url, "--regtoken",
         forge.runner_registration_token, "--type", "shell", "--shell", "/bin/sh", "--tag", TAG,
         "--desc", "python runner"],
        cwd=home, env=_env(git_env), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (home / "gitlab-runner.yml").exists()
    return home


def _env(git_env: dict[str, str]) -> dict[str, str]:
    return {**git_env, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}


def run_once(home: Path, git_env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], float]:
    """Let the runner take one job and run it (`--start ... --once`); return how it went."""
    started = time.monotonic()
    result = subprocess.run([sys.executable, str(RUNNER), "--start", "gitlab-runner.yml", "--once"],
                            cwd=home, env=_env(git_env), capture_output=True, text=True, timeout=300)
    return result, time.monotonic() - started


def info_refs(forge: Forge, job: JobHandle) -> int:
    return requests.get(f"{forge.url}/acme/app.git/info/refs?service=git-upload-pack",
                        auth=("gitlab-ci-token", job.token)).status_code


@pytest.fixture
def world(forge: Forge) -> dict[str, object]:
    forge.create_group("acme")
    bob = forge.create_user("bob")
    forge.create_project("acme/app", files={"README.md": "app\n"}, members={"bob": "developer"})
    forge.create_project("acme/lib", files={"lib.py": "VERSION = '1.2'\n"}, members={"bob": "reporter"})
    forge.create_project("acme/secret", files={"s.txt": "secret\n"}, members={"bob": "reporter"})
    forge.allow("acme/lib", source_project="acme/app")
    return {"bob": bob}


SCRIPT = [
    'git clone "http://gitlab-ci-token:${CI_JOB_TOKEN}@${CI_SERVER_HOST}:${CI_SERVER_PORT}/acme/lib.git" lib',
    "cat lib/lib.py",
    'curl --fail -sS -H "JOB-TOKEN: $CI_JOB_TOKEN" --upload-file lib/lib.py '
    '"$CI_API_V4_URL/projects/$CI_PROJECT_ID/packages/generic/lib/$CI_COMMIT_SHORT_SHA/lib.py"',
    'echo "vars: $CI_PROJECT_PATH $CI_COMMIT_REF_NAME $CI_COMMIT_BRANCH $CI_JOB_NAME_SLUG $DEPLOY_ENV"',
    'echo "secrets: $CI_JOB_TOKEN $API_KEY"',
]


def test_real_runner_runs_a_job_that_clones_and_publishes(forge: Forge, world: dict[str, object],
                                                         runner: Path, git_env: dict[str, str]) -> None:
    bob = world["bob"]
    assert isinstance(bob, UserHandle)
    job = forge.queue_job("acme/app", bob, SCRIPT, name="Publish Lib", tags=(TAG,),
                          variables={"DEPLOY_ENV": "staging",
                                     "API_KEY": {"value": "s3cr3t-value-xyz", "masked": True}})
    assert info_refs(forge, job) == 401  # pending: its token is refused
    assert forge.last_event()["reason"] == "job_not_running"
    result, seconds = run_once(runner, git_env)
    log = forge.job_log(job)
    shown = forge.job(job)
    assert shown["status"] == "success", log + result.stdout + result.stderr
    assert shown["runner"] is not None
    sha = shown["sha"][:8]
    assert "VERSION = '1.2'" in log
    assert "vars: acme/app main main publish-lib staging" in log
    # gitlab-python-runner masks nothing: forge hides the token and masked values itself
    assert f"secrets: {'x' * len(job.token)} {'x' * len('s3cr3t-value-xyz')}" in log
    assert job.token not in log and "s3cr3t-value-xyz" not in log
    package = requests.get(f"{forge.url}/api/v4/projects/acme%2Fapp/packages/generic/lib/{sha}/lib.py",
                           headers={"PRIVATE-TOKEN": bob.token or ""})
    assert (package.status_code, package.text) == (200, "VERSION = '1.2'\n")
    clone = [event for event in forge.events(project="acme/lib", action="read_code")
             if event["job_id"] == job.id]
    assert clone and all(event["credential"] == "job_token" and event["allowed"] for event in clone)
    assert clone[-1]["reason"] == "job_token_allowed" and clone[-1]["username"] == "bob"
    publish = forge.last_event(action="api_create_package")
    assert (publish["job_id"], publish["allowed"]) == (job.id, True)
    assert info_refs(forge, job) == 401  # the runner ended it: the token is dead
    assert forge.last_event()["reason"] == "job_not_running"
    print(f"real runner job took {seconds:.1f}s")


def test_real_runner_job_refused_by_the_allowlist_fails_with_gitlabs_message(
        forge: Forge, world: dict[str, object], runner: Path, git_env: dict[str, str]) -> None:
    bob = world["bob"]
    assert isinstance(bob, UserHandle)
    job: JobHandle = forge.queue_job("acme/app", bob, [
        'git clone "http://gitlab-ci-token:${CI_JOB_TOKEN}@${CI_SERVER_HOST}:${CI_SERVER_PORT}'
        '/acme/secret.git" secret'], tags=(TAG,))
    result, _ = run_once(runner, git_env)
    log = forge.job_log(job)
    assert forge.job(job)["status"] == "failed", log + result.stdout + result.stderr
    secret_id = forge.events(project="acme/secret")[-1]["project_id"]
    assert (f"Authentication by CI/CD job token not allowed from app to project #{secret_id}."
            in log)
    refused = forge.last_event(project="acme/secret")
    assert (refused["job_id"], refused["reason"]) == (job.id, "not_in_inbound_allowlist")


def test_real_runner_job_past_its_timeout_is_failed_and_its_token_dies(
        forge: Forge, world: dict[str, object], runner: Path, git_env: dict[str, str]) -> None:
    bob = world["bob"]
    assert isinstance(bob, UserHandle)
    job = forge.queue_job("acme/app", bob, [
        "sleep 5",
        'git clone "http://gitlab-ci-token:${CI_JOB_TOKEN}@${CI_SERVER_HOST}:${CI_SERVER_PORT}'
        '/acme/lib.git" lib'], tags=(TAG,), timeout=3)
    result, _ = run_once(runner, git_env)
    shown = forge.job(job)
    log = forge.job_log(job)
    assert (shown["status"], shown["failure_reason"]) == ("failed", "job_execution_timeout"), (
        log + result.stdout + result.stderr)
    assert log.endswith("ERROR: Job failed: execution took longer than 3 seconds (forge)\n")
    late = [event for event in forge.events(project="acme/lib") if event["job_id"] == job.id]
    # refused as timed out, or as failed when the runner's log update reached forge first
    assert late and all(event["status"] == 401 and event["reason"] in ("job_timed_out", "job_not_running")
                        for event in late)
    assert forge.last_event(action="runner_update_job")["reason"] in ("job_not_running", "job_timed_out")
