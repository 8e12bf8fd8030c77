"""The control API under /-/forge/ and the seed format, with a plain HTTP client."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests
import yaml

from forge.testing import Forge

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def api(forge: Forge) -> requests.Session:
    session = requests.Session()
    session.headers["PRIVATE-TOKEN"] = forge.root_token
    return session


SCENARIO = {
    "users": [
        {"username": "alice", "password": "alice-pass-1",
         "tokens": [{"name": "ci", "scopes": ["read_repository"], "token": "glpat-fixed-alice-0001"}]},
        {"username": "bob"},
    ],
    "groups": [{"path": "acme/sub"}, {"path": "acme", "members": {"alice": "maintainer"}}],
    "projects": [
        {"path": "acme/sub/lib", "files": {"lib.txt": "lib\n"},
         "job_token_scope": {"allowlist": {"groups": ["acme"], "projects": ["acme/app"]}}},
        {"path": "acme/app", "members": [{"user": "bob", "role": "developer"}],
         "protected_branches": [{"name": "release/*", "push_access_level": "developer"}]},
    ],
    "jobs": [{"project": "acme/app", "user": "bob", "token": "glcbt-64_fixedJobToken00001"},
             {"project": "acme/app", "user": "bob", "status": "success"}],
}


def test_health(forge: Forge) -> None:
    response = requests.get(f"{forge.url}/-/health")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


def test_control_api_needs_admin_token(forge: Forge) -> None:
    url = f"{forge.url}/-/forge/events"
    response = requests.get(url)
    assert (response.status_code, response.json()) == (401, {"message": "401 Unauthorized"})
    response = requests.get(url, headers={"PRIVATE-TOKEN": "glpat-wrongwrongwrong"})
    assert response.status_code == 401
    user = forge.create_user("plain")
    response = requests.get(url, headers={"PRIVATE-TOKEN": user.token or ""})
    assert (response.status_code, response.json()) == (403, {"message": "403 Forbidden"})
    assert [e["reason"] for e in forge.denials()] == ["login_required", "unknown_token", "not_admin"]


def test_seed_json_returns_ids_and_secrets(forge: Forge, api: requests.Session, git,
                                           tmp_path: Path) -> None:
    response = api.post(f"{forge.url}/-/forge/seed", json=SCENARIO)
    assert response.status_code == 201, response.text
    result = response.json()
    assert set(result["projects"]) == {"acme/sub/lib", "acme/app"}
    assert result["users"]["alice"]["tokens"] == {"ci": "glpat-fixed-alice-0001"}
    assert set(result["groups"]) == {"acme", "acme/sub"}
    running, finished = result["jobs"]
    assert running["token"] == "glcbt-64_fixedJobToken00001" and running["status"] == "running"
    assert finished["token"].startswith("glcbt-") and finished["status"] == "success"
    git("clone", "-q", forge.clone_url("acme/sub/lib", token="glpat-fixed-alice-0001"), tmp_path / "a")
    git("clone", "-q", forge.clone_url("acme/app", job=_job(running)), tmp_path / "j")
    result = git("clone", forge.clone_url("acme/sub/lib", job=_job(running)), tmp_path / "l",
                 check=False)  # on lib's allowlist, but bob is no member of lib
    assert "Insufficient permissions to pull from the repository of project" in result.stderr


def _job(data: dict[str, object]):  # type: ignore[no-untyped-def]
    from forge.testing import JobHandle
    return JobHandle(int(data["id"]), str(data["token"]), str(data["project"]), str(data["user"]))  # type: ignore[call-overload]


def test_seed_yaml_content_type(forge: Forge, api: requests.Session) -> None:
    response = api.post(f"{forge.url}/-/forge/seed", data=yaml.safe_dump(SCENARIO),
                        headers={"Content-Type": "application/yaml"})
    assert response.status_code == 201, response.text


@pytest.mark.parametrize("scenario,message", [
    ({"users": [{"username": "a", "pasword": "x"}]}, "users[0] (a): unknown key 'pasword'"),
    ({"projects": [{"path": "nowhere/app"}]}, "projects[0] (nowhere/app): namespace 'nowhere'"),
    ({"groups": [{"path": "g", "members": {"ghost": "developer"}}]},
     "groups[0] (g).members: user 'ghost' does not exist"),
    ({"users": [{"username": "u"}], "groups": [{"path": "g"}],
      "projects": [{"path": "g/p", "job_token_scope": {"allowlist": {"projects": ["g/missing"]}}}]},
     "projects[0] (g/p).job_token_scope.allowlist.projects[0]: project 'g/missing' does not exist"),
    ({"users": [{"username": "u"}], "groups": [{"path": "g"}], "projects": [{"path": "g/p"}],
      "jobs": [{"project": "g/p", "user": "u"}]}, "jobs[0]: u may not run CI jobs in g/p"),
    ({"projects": [{"path": "x/y", "visibility": "secret"}]}, "projects[0] (x/y)"),
    ({"colours": []}, "scenario: unknown key 'colours'"),
    ({"users": [{"username": "../etc"}]}, "invalid username '../etc'"),
])
def test_seed_errors_name_the_entry_and_create_nothing(
        forge: Forge, api: requests.Session, scenario: dict[str, object], message: str) -> None:
    response = api.post(f"{forge.url}/-/forge/seed", json=scenario)
    assert response.status_code in (400, 403, 404), response.text
    assert message in response.json()["message"]
    assert api.post(f"{forge.url}/-/forge/seed", json={"users": [{"username": "fresh"}]}).status_code == 201
    assert forge.state.backend.root.exists()
    assert not list(forge.state.backend.root.iterdir())  # no repository left behind


def test_jobs_lifecycle(forge: Forge, api: requests.Session) -> None:
    api.post(f"{forge.url}/-/forge/seed", json=SCENARIO).raise_for_status()
    response = api.post(f"{forge.url}/-/forge/jobs", json={
        "project": "acme/app", "user": "bob", "ref": "main", "name": "build", "timeout": 3600})
    assert response.status_code == 201
    job = response.json()
    assert job["status"] == "running" and job["token"].startswith("glcbt-64_")
    assert (job["project"], job["user"], job["ref"]) == ("acme/app", "bob", "main")
    assert job["variables"]["CI_JOB_TOKEN"] == job["token"]
    assert job["variables"]["CI_JOB_ID"] == str(job["id"])
    info = f"{forge.url}/acme/sub/lib.git/info/refs?service=git-upload-pack"
    assert requests.get(info, auth=("gitlab-ci-token", job["token"])).status_code == 403  # bob not a member
    shown = api.get(f"{forge.url}/-/forge/jobs/{job['id']}").json()
    assert shown["status"] == "running" and "token" not in shown
    response = api.patch(f"{forge.url}/-/forge/jobs/{job['id']}", json={"status": "success"})
    assert response.json()["status"] == "success"
    assert requests.get(info, auth=("gitlab-ci-token", job["token"])).status_code == 401
    assert api.patch(f"{forge.url}/-/forge/jobs/{job['id']}", json={"status": "done"}).status_code == 400
    assert api.get(f"{forge.url}/-/forge/jobs/999999").status_code == 404


def test_jobs_refused_for_reporter_and_unknown_names(forge: Forge, api: requests.Session) -> None:
    api.post(f"{forge.url}/-/forge/seed", json=SCENARIO).raise_for_status()
    api.put(f"{forge.url}/-/forge/members",
            json={"user": "bob", "project": "acme/app", "role": "reporter"}).raise_for_status()
    response = api.post(f"{forge.url}/-/forge/jobs", json={"project": "acme/app", "user": "bob"})
    assert response.status_code == 403
    assert response.json()["message"].startswith("bob may not run CI jobs in acme/app")
    assert api.post(f"{forge.url}/-/forge/jobs", json={"project": "no/pe", "user": "bob"}).status_code == 404
    response = api.post(f"{forge.url}/-/forge/jobs", json={"user": "bob"})
    assert response.json() == {"message": "project is missing"}
    assert api.post(f"{forge.url}/-/forge/jobs", data="{not json").status_code == 400


def test_members_and_allowlist_endpoints(forge: Forge, api: requests.Session) -> None:
    api.post(f"{forge.url}/-/forge/seed", json=SCENARIO).raise_for_status()
    job = api.post(f"{forge.url}/-/forge/jobs", json={"project": "acme/app", "user": "bob"}).json()
    api.put(f"{forge.url}/-/forge/members",
            json={"user": "bob", "group": "acme/sub", "role": "developer"}).raise_for_status()
    info = f"{forge.url}/acme/sub/lib.git/info/refs?service=git-upload-pack"
    assert requests.get(info, auth=("gitlab-ci-token", job["token"])).status_code == 200
    response = api.post(f"{forge.url}/-/forge/allowlist",
                        json={"project": "acme/sub/lib", "source_project": "acme/app"})
    assert response.json() == {"message": "This project is already in the job token allowlist."}


def test_events_since_pages_the_log(forge: Forge, api: requests.Session) -> None:
    for _ in range(3):
        requests.get(f"{forge.url}/x/y.git/info/refs?service=git-upload-pack")
    events = api.get(f"{forge.url}/-/forge/events").json()
    assert [e["reason"] for e in events] == ["project_not_found"] * 3
    assert events[0]["path"] == "/x/y.git/info/refs" and events[0]["status"] == 401
    later = api.get(f"{forge.url}/-/forge/events", params={"since": events[0]["id"]}).json()
    assert [e["id"] for e in later] == [e["id"] for e in events[1:]]
    assert api.get(f"{forge.url}/-/forge/events", params={"since": "x"}).status_code == 400


def test_reset_keeps_root(forge: Forge, api: requests.Session) -> None:
    api.post(f"{forge.url}/-/forge/seed", json=SCENARIO).raise_for_status()
    assert api.post(f"{forge.url}/-/forge/reset").status_code == 200
    assert api.get(f"{forge.url}/-/forge/events").json() == []
    assert api.post(f"{forge.url}/-/forge/seed", json=SCENARIO).status_code == 201


def test_demo_scenario_is_valid(forge: Forge) -> None:
    result = forge.seed(ROOT / "fixtures" / "demo.yml")
    assert "acme/platform/lib" in result["projects"]
    assert [job["status"] for job in result["jobs"]] == ["running", "success"]


def test_control_clock_moves_and_reset_restores_it(forge: Forge) -> None:
    headers = {"PRIVATE-TOKEN": forge.root_token}
    before = forge.now()
    moved = requests.post(f"{forge.url}/-/forge/clock", json={"advance": 7200}, headers=headers)
    assert moved.status_code == 200 and moved.json()["offset"] == 7200
    assert (forge.now() - before).total_seconds() >= 7200
    assert requests.post(f"{forge.url}/-/forge/clock", json={"advance": "soon"},
                         headers=headers).status_code == 400
    requests.post(f"{forge.url}/-/forge/reset", headers=headers)
    assert (forge.now() - before).total_seconds() < 60


def test_control_clock_moves_at_most_100_years(forge: Forge, api: requests.Session) -> None:
    clock = f"{forge.url}/-/forge/clock"
    for _ in range(3):  # 3 * 999999999 s is about 95 years
        assert api.post(clock, json={"advance": 999999999}).status_code == 200
    too_far = api.post(clock, json={"advance": 999999999})
    assert (too_far.status_code, too_far.json()) == (
        400, {"message": "the clock may move at most 100 years from the real time"})
    assert forge.state.clock_offset().total_seconds() == 3 * 999999999
    assert api.get(f"{forge.url}/-/forge/events").status_code == 200
    back = api.post(clock, json={"offset": -999999999})
    assert (back.status_code, back.json()["offset"]) == (200, -999999999)
    for _ in range(2):
        assert api.post(clock, json={"advance": -999999999}).status_code == 200
    assert api.post(clock, json={"advance": -999999999}).status_code == 400


@pytest.mark.parametrize("stored", ["1e12", "-1e12", "inf", "nan", "soon"])
def test_control_clock_file_out_of_range_is_ignored_with_a_warning(
        forge: Forge, api: requests.Session, caplog: pytest.LogCaptureFixture, stored: str) -> None:
    """As an older forge could leave it: else every request failed, reset included."""
    (forge.state.config.data_dir / "clock-offset").write_text(stored)
    response = api.get(f"{forge.url}/-/forge/events")
    assert (response.status_code, response.json()) == (200, [])
    assert abs((forge.now() - datetime.now(UTC).replace(tzinfo=None)).total_seconds()) < 60
    assert "ignoring the clock offset in" in caplog.text
    assert api.post(f"{forge.url}/-/forge/clock", json={"offset": 60}).json()["offset"] == 60


def test_control_clock_file_out_of_range_lets_a_forge_start(tmp_path: Path) -> None:
    from forge.config import ForgeConfig
    from forge.server import ForgeServer

    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "clock-offset").write_text("1e12")  # past year 9999
    server = ForgeServer(ForgeConfig(data_dir=tmp_path / "d", testing=True)).start()
    try:
        answer = requests.post(f"{server.url}/-/forge/reset",
                               headers={"PRIVATE-TOKEN": server.state.config.root_token})
        assert (answer.status_code, answer.json()) == (200, {"status": "reset"})
        assert not (tmp_path / "d" / "clock-offset").exists()
    finally:
        server.stop()


def test_unknown_control_routes_and_filters_answer_json(forge: Forge, api: requests.Session) -> None:
    for method, path, status in (("GET", "/-/forge/nope", 404), ("GET", "/-/forge/jobs/1/variables", 404),
                                 ("GET", "/-/forge/jobs", 405)):
        answer = api.request(method, f"{forge.url}{path}")
        assert (answer.status_code, answer.headers["Content-Type"]) == (status, "application/json"), path
        assert "message" in answer.json()
    assert requests.get(f"{forge.url}/api/v4/nope").json() == {"error": "404 Not Found"}
    assert requests.get(f"{forge.url}/nope").status_code == 404
    typo = api.get(f"{forge.url}/-/forge/events", params={"user": "bob"})
    assert typo.status_code == 400
    assert typo.json()["message"].startswith("cannot filter events by user; use since, limit or ")
