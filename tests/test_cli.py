"""The `forge` command as a user runs it: serve the demo, paste its commands, start/finish jobs."""

from __future__ import annotations

import os
import re
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from serving import FORGE, ROOT, Served

from forge.testing import Forge


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    server = Served(tmp_path / "data", "--seed", str(ROOT / "fixtures" / "demo.yml"))
    yield server
    server.stop()


def shell(command: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", command], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=120)


NOT_FOUND = "The project you were looking for could not be found or you don't have permission to view it."
DENIED_401 = ("HTTP Basic: Access denied. If a password was provided for Git authentication, the "
              "password was incorrect or you're required to use a token instead of a password. If a "
              "token was provided, it was either incorrect, expired, or improperly scoped. See "
              "{url}/help/topics/git/troubleshooting_git.md#error-on-git-fetch-http-basic-access-denied")
JOB1 = "with the token of running job 1 of acme/app (bob)"
# What `make serve` prints for fixtures/demo.yml: each hint line, then what git must print when
# the command below it is pasted (None: the clone succeeds). Written out, not computed by forge's
# rules, so a wrong rule or message fails here instead of agreeing with itself.
DEMO_HINTS: list[tuple[str, str | None]] = [
    ("# acme/website (public), anonymously: expect: clones", None),
    ("# acme/handbook (internal) as alice (maintainer) with a password: expect: clones", None),
    ("# acme/handbook (internal) as bob (not a member) with a password: expect: clones", None),
    ("# acme/handbook (internal) as eve (not a member, external) with a password: expect: 404 "
     f"(project_not_visible) {NOT_FOUND}",
     f"remote: {NOT_FOUND}"),
    ("# acme/platform/lib (private) as alice (maintainer) with a password: expect: clones", None),
    ("# acme/app (private) as bob (developer) with a password: expect: clones", None),
    ("# acme/app (private) as mallory (developer, blocked) with a password: expect: 401 (user_blocked) "
     + DENIED_401,
     f"remote: {DENIED_401}"),
    ("# acme/platform/tools (private) as alice (maintainer) with a password: expect: clones", None),
    ("# acme/secret (private) as bob (developer) with a password: expect: clones", None),
    (f"# acme/website {JOB1}: expect: clones", None),
    (f"# acme/handbook {JOB1}: expect: clones", None),
    (f"# acme/platform/lib {JOB1}: expect: clones", None),
    (f"# acme/app {JOB1}: expect: clones", None),
    (f"# acme/platform/tools {JOB1}: expect: clones", None),
    (f"# acme/secret {JOB1}: expect: 403 (not_in_inbound_allowlist) Authentication by CI/CD job token "
     "not allowed from app to project #6.",
     "remote: Authentication by CI/CD job token not allowed from app to project #6."),
    ("# acme/app and its submodules (acme/platform/lib) with the token of job 1: expect: clones", None),
    ("# acme/app with the token of success job 2 of acme/app (bob): expect: 401 (job_not_running) "
     + DENIED_401,
     f"remote: {DENIED_401}"),
]


def test_serve_prints_listening_line_root_token_and_working_clone_commands(
        served: Served, git_env: dict[str, str], tmp_path: Path) -> None:
    assert served.lines[1].startswith("root token: glpat-")
    assert served.lines[1].endswith("   (admin `root`; header PRIVATE-TOKEN)")
    assert served.lines[2].startswith("runner registration token: GR1348941")
    assert served.lines[3:5] == ["", "Paste any of these into a terminal:"]
    pairs = [(served.lines[i], served.lines[i + 1]) for i in range(len(served.lines) - 1)
             if served.lines[i].startswith("# ") and "git clone" in served.lines[i + 1]]
    assert [comment for comment, _ in pairs] == [hint.format(url=served.url) for hint, _ in DEMO_HINTS]
    for (comment, command), (_, refusal) in zip(pairs, DEMO_HINTS, strict=True):
        command = command.replace("/tmp/forge-clones/", f"{tmp_path}/clones/")
        result = shell(command, git_env, tmp_path)
        if refusal is None:
            assert result.returncode == 0, (comment, result.stderr)
        else:
            assert result.returncode != 0, comment
            assert refusal.format(url=served.url) in result.stderr, (comment, result.stderr)
    assert served.lines[-2:] == [
        "# why was a request allowed or refused? the decision log:",
        f"curl -s -H 'PRIVATE-TOKEN: {served.root_token}' {served.url}/-/forge/events"]
    events = requests.get(f"{served.url}/-/forge/events",
                          headers={"PRIVATE-TOKEN": served.root_token}).json()
    assert {"project_not_visible", "user_blocked", "not_in_inbound_allowlist", "job_not_running"} <= {
        e["reason"] for e in events if not e["allowed"]}


def test_job_start_and_finish_talk_to_a_running_forge(
        served: Served, git_env: dict[str, str], tmp_path: Path) -> None:
    env = {**git_env, "FORGE_URL": served.url, "FORGE_TOKEN": served.root_token}
    start = subprocess.run([FORGE, "job", "start", "--project", "acme/app", "--user", "bob"],
                           env=env, capture_output=True, text=True, check=True)
    assert "export CI_JOB_TOKEN=glcbt-64_" in start.stdout
    job_id = re.search(r"export CI_JOB_ID=(\d+)", start.stdout).group(1)  # type: ignore[union-attr]
    clone = 'eval "$EXPORTS"; git clone -q "$CI_REPOSITORY_URL" "$1"'
    env["EXPORTS"] = start.stdout
    result = subprocess.run(["bash", "-c", clone, "-", str(tmp_path / "one")], env=env,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    lib = subprocess.run(["bash", "-c", 'eval "$EXPORTS"; git clone -q '
                          '"http://gitlab-ci-token:${CI_JOB_TOKEN}@${CI_SERVER_HOST}:'
                          '${CI_SERVER_PORT}/acme/platform/lib.git" "$1"', "-",
                          str(tmp_path / "lib")], env=env, capture_output=True, text=True)
    assert lib.returncode == 0, lib.stderr
    finish = subprocess.run([FORGE, "job", "finish", job_id, "--status", "failed"], env=env,
                            capture_output=True, text=True, check=True)
    assert finish.stdout.strip() == f"job {job_id} is failed"
    result = subprocess.run(["bash", "-c", clone, "-", str(tmp_path / "two")], env=env,
                            capture_output=True, text=True)
    assert result.returncode != 0 and "HTTP Basic: Access denied" in result.stderr
    refused = subprocess.run([FORGE, "job", "start", "--project", "acme/website", "--user", "eve"],
                             env=env, capture_output=True, text=True)
    assert refused.returncode != 0
    assert "403: eve may not run CI jobs in acme/website" in refused.stderr


def test_serve_on_ipv6_loopback_builds_bracketed_urls(git_env: dict[str, str], tmp_path: Path) -> None:
    try:
        socket.socket(socket.AF_INET6).close()
        socket.create_server(("::1", 0), family=socket.AF_INET6).close()
    except OSError:
        pytest.skip("no IPv6 loopback here")
    served = Served(tmp_path / "data", "--host", "::1", "--seed", str(ROOT / "fixtures" / "demo.yml"))
    try:
        assert re.fullmatch(r"http://\[::1\]:\d+", served.url), served.url
        website = next(line for line in served.lines if "git clone http://" in line and "website" in line)
        assert f"git clone {served.url}/acme/website.git " in website
        clone = shell(website.replace("/tmp/forge-clones/", f"{tmp_path}/clones/"), git_env, tmp_path)
        assert clone.returncode == 0, clone.stderr
        app = next(line for line in served.lines if "glcbt-64_" in line and "/acme/app.git" in line)
        assert f"@{served.url.removeprefix('http://')}/acme/app.git" in app
        refs = subprocess.run(["git", "ls-remote", f"{served.url}/acme/website.git"], env=git_env,
                              capture_output=True, text=True, timeout=60)
        assert refs.returncode == 0 and "\trefs/heads/main" in refs.stdout, refs.stderr
        assert served.lines[-1] == (f"curl -s -H 'PRIVATE-TOKEN: {served.root_token}' "
                                    f"{served.url}/-/forge/events")
        refused = requests.get(f"{served.url}/acme/app.git/info/refs?service=git-upload-pack",
                               auth=("bob", "wrong"), timeout=30)
        assert (refused.status_code, refused.text) == (401, DENIED_401.format(url=served.url))
    finally:
        served.stop()


def test_serve_keeps_state_across_restarts(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = Served(data, "--seed", str(ROOT / "fixtures" / "demo.yml"))
    token = first.root_token
    first.stop()
    second = Served(data, "--seed", str(ROOT / "fixtures" / "demo.yml"))
    try:
        assert second.root_token == token
        assert second.lines[-1] == "seed: the forge already holds projects; not seeding again"
        response = requests.get(f"{second.url}/acme/website.git/info/refs?service=git-upload-pack")
        assert response.status_code == 200
        assert oct((data / "root-token").stat().st_mode & 0o777) == "0o600"
    finally:
        second.stop()


def test_serve_fresh_empties_a_database_outside_the_data_directory(tmp_path: Path) -> None:
    """`make serve` twice on one --database-url: the second start is as new as the first,
    not a forge whose projects lost their repositories with the data directory."""
    url = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    args = ("--fresh", "--database-url", url, "--seed", str(ROOT / "fixtures" / "demo.yml"))
    first = Served(tmp_path / "data", *args)
    old_token = first.root_token
    first.stop()
    second = Served(tmp_path / "data", *args)
    try:
        assert second.lines[-1].startswith("curl ")  # seeded again
        refs = requests.get(f"{second.url}/acme/website.git/info/refs?service=git-upload-pack")
        assert refs.status_code == 200
        stale = requests.get(f"{second.url}/api/v4/user", headers={"PRIVATE-TOKEN": old_token})
        assert stale.status_code == 401
        assert requests.get(f"{second.url}/api/v4/user",
                            headers={"PRIVATE-TOKEN": second.root_token}).status_code == 200
    finally:
        second.stop()


def test_serve_listens_before_the_app_is_built_and_answers_the_first_request(tmp_path: Path) -> None:
    # The socket is bound and announced before the imports and the app: a client that
    # connects at once waits in the socket's queue and gets its answer, never a refusal.
    served = Served(tmp_path / "data")
    try:
        response = requests.get(f"{served.url}/-/health", timeout=30)
        assert (response.status_code, response.json()) == (200, {"status": "ok"})
        key = requests.get(f"{served.url}/-/forge/registry/certificate", timeout=30)
        assert key.status_code == 200 and key.text.startswith("-----BEGIN CERTIFICATE-----")
        assert (tmp_path / "data" / "registry" / "signing.key").stat().st_mode & 0o777 == 0o600
    finally:
        served.stop()


def test_serve_refuses_a_busy_port_and_a_missing_git_before_announcing_anything(tmp_path: Path) -> None:
    import socket
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        result = subprocess.run([FORGE, "serve", "--port", str(port), "--data-dir", str(tmp_path / "a")],
                                capture_output=True, text=True, timeout=30)
    assert result.returncode != 0 and result.stdout == ""
    assert f"Error: cannot listen on 127.0.0.1:{port}: Address already in use" in result.stderr
    env = {**os.environ, "PATH": str(Path(FORGE).parent)}  # the venv's tools, no git
    result = subprocess.run([FORGE, "serve", "--port", "0", "--data-dir", str(tmp_path / "b"),
                             "--git-engine", "git"], capture_output=True, text=True, timeout=30, env=env)
    assert result.returncode != 0 and result.stdout == ""
    assert "git engine: no `git` binary on PATH" in result.stderr
    again = Served(tmp_path / "a")  # neither left the data directory locked
    again.stop()


def test_serve_refuses_a_bad_seed_with_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text("projects:\n  - path: ghost/app\n")
    result = subprocess.run([FORGE, "serve", "--port", "0", "--data-dir", str(tmp_path / "d"),
                             "--seed", str(bad)], capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert "projects[0] (ghost/app): namespace 'ghost' of project 'ghost/app' does not exist" \
        in result.stderr
    assert "Traceback" not in result.stderr


def test_seed_command_posts_a_scenario(served: Served, tmp_path: Path) -> None:
    scenario = tmp_path / "more.yml"
    scenario.write_text("users:\n  - username: zed\n    tokens: [{name: z}]\n")
    env = {**os.environ, "FORGE_URL": served.url, "FORGE_TOKEN": served.root_token}
    result = subprocess.run([FORGE, "seed", str(scenario)], env=env, capture_output=True,
                            text=True, check=True)
    assert '"zed"' in result.stdout and "glpat-" in result.stdout


def test_job_log_status_line_starts_a_line_of_its_own(forge: Forge) -> None:
    """gitlab-python-runner's last log line has no newline: pasted, `job N is ...` must not
    stick to it."""
    forge.create_group("acme")
    bob = forge.create_user("bob")
    forge.create_project("acme/app", files={"README.md": "v1\n"}, members={"bob": "developer"})
    _, runner = forge.create_runner()
    job = forge.queue_job("acme/app", bob, "true")
    taken = requests.post(f"{forge.url}/api/v4/jobs/request", json={"token": runner})
    assert taken.status_code == 201
    requests.patch(f"{forge.url}/api/v4/jobs/{job.id}/trace", data=b"Job complete success=True",
                   headers={"Job-Token": job.token, "Content-Range": "0-25"})
    env = {**os.environ, "FORGE_URL": forge.url, "FORGE_TOKEN": forge.root_token}
    result = subprocess.run(f"{FORGE} job log {job.id} 2>&1", shell=True, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.stdout == f"Job complete success=True\njob {job.id} is running\n"
