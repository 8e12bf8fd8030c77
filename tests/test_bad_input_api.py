"""Bad input to the REST API and LFS gets GitLab's 4xx answer, never a 500.

The listed cases pin GitLab's exact status and body; the probe at the end walks every
REST and LFS route with wrong types, lone surrogates, long strings, traversal forms and
broken bodies and headers, and only asks that nothing answers 500.
"""

from __future__ import annotations

import base64
import http.client
import json
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from sqlalchemy import select

from forge import auth, domain
from forge.models import PersonalAccessToken
from forge.testing import Forge, UserHandle

LFS_JSON = "application/vnd.git-lfs+json"
DEEP_LIST = b"[" * 5000 + b"]" * 5000
DEEP_DICT = b'{"a":' * 5000 + b"1" + b"}" * 5000
TOO_DEEP = {"error": "Parameters nested too deeply"}
LONG = "x" * 5000
HUGE = 10**30
SURROGATE = "%ED%A0%80"  # U+D800 as UTF-8 bytes: a lone surrogate, not valid UTF-8


def raw(forge: Forge, method: str, path: str, body: bytes | None = None,
        headers: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Send exactly `path` and `body`; return status, content type and text."""
    url = urlsplit(forge.url)
    conn = http.client.HTTPConnection(url.hostname or "", url.port, timeout=60)
    conn.putrequest(method, path, skip_accept_encoding=True)
    for key, value in (headers or {}).items():
        conn.putheader(key, value)
    conn.putheader("Content-Length", str(len(body or b"")))
    conn.endheaders(body or None)
    response = conn.getresponse()
    text = response.read().decode(errors="replace")
    conn.close()
    return response.status, response.getheader("Content-Type") or "", text


def basic(user: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()


@pytest.fixture
def world(forge: Forge) -> dict[str, Any]:
    forge.create_group("acme")
    dev = forge.create_user("dev")
    app = forge.create_project("acme/app", files={"README.md": "v1\n", "dir/a.txt": "a\n"},
                               members={"dev": "developer"})
    lib = forge.create_project("acme/lib", files={"lib.txt": "l\n"})
    with forge.app.app_context():
        group = domain.get_group("acme").id
        token = domain.db.session.scalar(select(PersonalAccessToken.id).where(
            PersonalAccessToken.user_id == dev.id))
    # a runner holding a running job, for the runner API
    runner_id, runner_token = forge.create_runner()
    job = forge.queue_job("acme/app", dev, "true")
    taken = requests.post(f"{forge.url}/api/v4/jobs/request", json={"token": runner_token})
    assert taken.status_code == 201
    # `t` is dev's token: the probe must never revoke root's, which outlives the reset.
    return {"dev": dev, "p": app.id, "p2": lib.id, "g": group, "u": dev.id, "t": token,
            "reg": forge.runner_registration_token, "rt": runner_token, "r": runner_id,
            "j": job.id, "jt": job.token}


def root(forge: Forge) -> dict[str, str]:
    return {"PRIVATE-TOKEN": forge.root_token}


# -- deeply nested and malformed JSON ----------------------------------------------------

JSON_ROUTES = [
    ("POST", "/api/v4/projects/{p}/repository/branches"),
    ("POST", "/api/v4/projects/{p}/repository/tags"),
    ("POST", "/api/v4/projects/{p}/repository/files/new.txt"),
    ("PUT", "/api/v4/projects/{p}/repository/files/README.md"),
    ("GET", "/api/v4/projects/{p}/repository/files/README.md"),
    ("GET", "/api/v4/projects/{p}/repository/branches"),
    ("POST", "/api/v4/users"),
    ("PUT", "/api/v4/users/{u}"),
    ("POST", "/api/v4/users/{u}/personal_access_tokens"),
    ("POST", "/api/v4/projects/{p}/releases"),
    ("POST", "/api/v4/groups"),
    ("POST", "/api/v4/projects"),
    ("PUT", "/api/v4/projects/{p}"),
    ("POST", "/api/v4/projects/{p}/protected_branches"),
]


@pytest.mark.parametrize("body", [DEEP_LIST, DEEP_DICT], ids=["list", "dict"])
@pytest.mark.parametrize("method,route", JSON_ROUTES)
def test_api_deeply_nested_json_gets_400(forge: Forge, world: dict[str, Any], method: str,
                                         route: str, body: bytes) -> None:
    status, ctype, text = raw(forge, method, route.format(**world), body,
                              {**root(forge), "Content-Type": "application/json"})
    assert (status, ctype, json.loads(text)) == (400, "application/json", TOO_DEEP)


@pytest.mark.parametrize("route", ["/acme/app.git/info/lfs/objects/batch",
                                   "/acme/app.git/info/lfs/locks",
                                   "/acme/app.git/info/lfs/locks/1/unlock"])
def test_lfs_deeply_nested_json_gets_400(forge: Forge, world: dict[str, Any], route: str) -> None:
    dev: UserHandle = world["dev"]
    for body in (DEEP_LIST, DEEP_DICT):
        status, ctype, text = raw(forge, "POST", route, body, {
            "Authorization": basic("dev", dev.password or ""), "Content-Type": LFS_JSON})
        assert (status, ctype, json.loads(text)) == (400, "application/json", TOO_DEEP)


def test_api_json_depth_limit_is_gitlabs_32(forge: Forge, world: dict[str, Any]) -> None:
    url = f"/api/v4/projects/{world['p']}"
    headers = {**root(forge), "Content-Type": "application/json"}
    deep_32 = b'{"name": "app", "x": ' + b"[" * 31 + b"]" * 31 + b"}"
    deep_33 = b'{"name": "app", "x": ' + b"[" * 32 + b"]" * 32 + b"}"
    assert raw(forge, "PUT", url, deep_32, headers)[0] == 200
    status, _, text = raw(forge, "PUT", url, deep_33, headers)
    assert (status, json.loads(text)) == (400, TOO_DEEP)


@pytest.mark.parametrize("body", [b"{not json", b'{"a": NaN}', b"\xff\xfe", b'{"a": 1' + b"1" * 5000 + b"}"])
def test_api_malformed_json_gets_gitlabs_invalid_json(forge: Forge, world: dict[str, Any],
                                                      body: bytes) -> None:
    status, ctype, text = raw(forge, "POST", "/api/v4/projects", body,
                              {**root(forge), "Content-Type": "application/json"})
    assert (status, ctype, json.loads(text)) == (400, "application/json", {"error": "Invalid JSON format"})


def test_uploads_with_a_json_content_type_are_content_not_parameters(forge: Forge,
                                                                     world: dict[str, Any]) -> None:
    url = f"{forge.url}/api/v4/projects/{world['p']}/packages/generic/pkg/1.0/deep.json"
    for data in (DEEP_LIST, b"{not json", b'{"a": "\\ud800"}'):
        stored = requests.put(url, data=data, headers={**root(forge), "Content-Type": "application/json"})
        assert stored.status_code == 201
        assert requests.get(url, headers=root(forge)).content == data


# -- lone surrogates, NUL bytes, invalid UTF-8 -------------------------------------------

@pytest.mark.parametrize("path", [
    f"/api/v4/projects/{SURROGATE}",
    f"/api/v4/projects/acme%2F{SURROGATE}",
    "/api/v4/projects/{p}/repository/files/" + SURROGATE + "?ref=main",
    "/api/v4/projects/{p}/repository/files/README.md?ref=" + SURROGATE,
    "/api/v4/projects/{p}/repository/branches/" + SURROGATE,
    "/api/v4/projects/{p}/repository/branches?search=" + SURROGATE,
    "/api/v4/projects/{p}/repository/commits/" + SURROGATE,
    "/api/v4/users?username=" + SURROGATE,
    "/api/v4/users?search=a%00b",
    "/api/v4/projects/{p}/repository/files/%FF%FE?ref=main",
    f"/acme/{SURROGATE}.git/info/lfs/locks",
    f"/acme/app.git/info/lfs/locks?path={SURROGATE}",
])
def test_malformed_strings_in_urls_get_bad_request(forge: Forge, world: dict[str, Any],
                                                   path: str) -> None:
    dev: UserHandle = world["dev"]
    status, ctype, text = raw(forge, "GET", path.format(**world),
                              headers={**root(forge), "Authorization": basic("dev", dev.password or "")})
    assert (status, ctype, text) == (400, "text/plain", "Bad Request")


@pytest.mark.parametrize("method,route,body", [
    ("POST", "/api/v4/projects/{p}/repository/branches", {"branch": "\ud800", "ref": "main"}),
    ("POST", "/api/v4/projects/{p}/repository/branches", {"branch": "x", "ref": "\ud800"}),
    ("POST", "/api/v4/projects/{p}/repository/tags", {"tag_name": "t\ud800", "ref": "main"}),
    ("POST", "/api/v4/projects/{p}/repository/files/new.txt",
     {"branch": "main", "content": "\ud800", "commit_message": "m"}),
    ("PUT", "/api/v4/projects/{p}/repository/files/README.md",
     {"branch": "main", "content": "x", "commit_message": "a\x00b"}),
    ("PUT", "/api/v4/users/{u}", {"name": "\udfff"}),
    ("POST", "/api/v4/users/{u}/personal_access_tokens", {"name": "\ud800", "scopes": ["api"]}),
    ("POST", "/api/v4/projects/{p}/protected_branches", {"name": "\ud800"}),
    ("PUT", "/api/v4/projects/{p}", {"default_branch": "\ud800"}),
    ("POST", "/api/v4/projects/{p}/releases", {"tag_name": "\ud800", "ref": "main"}),
    ("POST", "/api/v4/projects/{p}/job_token_scope/allowlist",
     {"target_project_id": "{p2}", "job_token_policies": ["\ud800"]}),
])
def test_malformed_strings_in_json_get_bad_request(forge: Forge, world: dict[str, Any], method: str,
                                                   route: str, body: dict[str, Any]) -> None:
    body = {k: (world[v[1:-1]] if isinstance(v, str) and v.startswith("{") else v)
            for k, v in body.items()}
    status, ctype, text = raw(forge, method, route.format(**world), json.dumps(body).encode(),
                              {**root(forge), "Content-Type": "application/json"})
    assert (status, ctype, text) == (400, "text/plain", "Bad Request")


def test_parameters_of_conflicting_shapes_get_bad_request(forge: Forge, world: dict[str, Any]) -> None:
    # Rack's ParameterTypeError (and a name nested too deeply): ActionDispatch's BadRequest,
    # which GitLab's HandleMalformedStrings answers
    form = {**root(forge), "Content-Type": "application/x-www-form-urlencoded"}
    commits = f"/api/v4/projects/{world['p']}/repository/commits"
    assert raw(forge, "GET", "/api/v4/projects?search=a&search[x]=b", headers=root(forge)) == (
        400, "text/plain", "Bad Request")
    assert raw(forge, "POST", commits, b"branch=main&actions=x&actions[][action]=create", form) == (
        400, "text/plain", "Bad Request")
    deep = ("a" + "[b]" * 100 + "=1").encode()
    assert raw(forge, "POST", commits, deep, form) == (400, "text/plain", "Bad Request")
    assert raw(forge, "GET", "/api/v4/projects?" + deep.decode(), headers=root(forge))[0] == 400


def test_lfs_lock_with_lone_surrogate_gets_bad_request(forge: Forge, world: dict[str, Any]) -> None:
    dev: UserHandle = world["dev"]
    status, _, text = raw(forge, "POST", "/acme/app.git/info/lfs/locks", b'{"path": "\\ud800"}',
                          {"Authorization": basic("dev", dev.password or ""), "Content-Type": LFS_JSON})
    assert (status, text) == (400, "Bad Request")


def test_malformed_credentials_get_bad_request(forge: Forge, world: dict[str, Any]) -> None:
    credentials = "Basic " + base64.b64encode(b"dev:\xed\xa0\x80").decode()
    for path in ("/api/v4/projects", "/acme/app.git/info/lfs/locks"):
        assert raw(forge, "GET", path, headers={"Authorization": credentials}) == (
            400, "text/plain", "Bad Request")


def test_file_path_with_nul_is_refused_and_tree_stays_readable(forge: Forge, world: dict[str, Any],
                                                               git: Callable[..., Any],
                                                               tmp_path: Path) -> None:
    status, _, text = raw(forge, "POST", f"/api/v4/projects/{world['p']}/repository/files/a%00b",
                          json.dumps({"branch": "main", "content": "x", "commit_message": "m"}).encode(),
                          {**root(forge), "Content-Type": "application/json"})
    assert (status, text) == (400, "Bad Request")  # GitLab's middleware: NUL anywhere in the path
    for path in ("%2Fetc%2Fpasswd", "a%2F..%2F..%2Fx", "..", "dir%2F.git%2Fx", "a%2F%2Fb"):
        status, _, text = raw(forge, "POST", f"/api/v4/projects/{world['p']}/repository/files/{path}",
                              json.dumps({"branch": "main", "content": "x", "commit_message": "m"}).encode(),
                              {**root(forge), "Content-Type": "application/json"})
        assert (status, json.loads(text)) == (400, {"error": "file_path should be a valid file path"}), path
    status, _, text = raw(forge, "GET", f"/api/v4/projects/{world['p']}/repository/files/"
                                        "..%2F..%2Fconfig?ref=main", headers=root(forge))
    assert (status, json.loads(text)) == (400, {"error": "file_path should be a valid file path"})
    git("clone", "-q", forge.clone_url("acme/app", token=forge.root_token), tmp_path / "w")
    git("fsck", "--full", "--strict", cwd=tmp_path / "w")


def test_file_path_under_a_file_or_onto_a_directory_is_refused(forge: Forge,
                                                               world: dict[str, Any]) -> None:
    url = f"{forge.url}/api/v4/projects/{world['p']}/repository/files"
    body = {"branch": "main", "content": "x", "commit_message": "m"}
    under = requests.post(f"{url}/README.md%2Fx", json=body, headers=root(forge))
    assert (under.status_code, under.json()) == (
        400, {"message": "A file with this name already exists"})
    for method in ("POST", "PUT"):
        onto = requests.request(method, f"{url}/dir", json=body, headers=root(forge))
        assert (onto.status_code, onto.json()) == (
            400, {"message": "A directory with this name already exists"})
    kept = requests.get(f"{url}/dir%2Fa.txt?ref=main", headers=root(forge))
    assert kept.status_code == 200


# -- ref names ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", [
    LONG, "x/" + "a" * 251, "a/" * 2500 + "a", "refs/heads/x", "refs/remotes/origin/x", "HEAD", "-x", "a..b",
    "a b", "a:b", "x.lock", "x/", ".x", "a//b", "a@{b", "a\\b", "a~1",
])
def test_invalid_branch_and_tag_names_get_gitlabs_400(forge: Forge, world: dict[str, Any],
                                                      name: str) -> None:
    url = f"{forge.url}/api/v4/projects/{world['p']}/repository"
    branch = requests.post(f"{url}/branches", json={"branch": name, "ref": "main"}, headers=root(forge))
    assert (branch.status_code, branch.json()) == (400, {"message": "Branch name is invalid"})
    tag = requests.post(f"{url}/tags", json={"tag_name": name, "ref": "main"}, headers=root(forge))
    assert (tag.status_code, tag.json()) == (400, {"message": "Tag name invalid"})
    release = requests.post(f"{forge.url}/api/v4/projects/{world['p']}/releases",
                            json={"tag_name": name, "ref": "main"}, headers=root(forge))
    assert (release.status_code, release.json()) == (400, {"message": "Tag name invalid"})


def test_long_branch_name_lookups_and_file_writes_answer_4xx(forge: Forge, world: dict[str, Any]) -> None:
    api = f"{forge.url}/api/v4/projects/{world['p']}"
    lookups = {
        f"{api}/repository/branches/{LONG}": (404, {"message": "404 Branch Not Found"}),
        f"{api}/repository/commits/{LONG}": (404, {"message": "404 Commit Not Found"}),
        f"{api}/repository/files/README.md?ref={LONG}": (404, {"message": "404 Commit Not Found"}),
    }
    for url, answer in lookups.items():
        response = requests.get(url, headers=root(forge))
        assert (response.status_code, response.json()) == answer
    write = requests.post(f"{api}/repository/files/new.txt", headers=root(forge),
                          json={"branch": LONG, "content": "x", "commit_message": "m"})
    assert (write.status_code, write.json()) == (
        400, {"message": "You can only create or edit files when you are on a branch"})


def test_ref_names_that_collide_with_existing_refs_get_400(forge: Forge, world: dict[str, Any]) -> None:
    url = f"{forge.url}/api/v4/projects/{world['p']}/repository"
    for name in ("refs/heads", "refs/foo"):  # valid for GitLab: refs/heads/refs/heads
        created = requests.post(f"{url}/branches", json={"branch": name, "ref": "main"},
                                headers=root(forge))
        assert (created.status_code, created.json()["name"]) == (201, name)
    refs = requests.post(f"{url}/branches", json={"branch": "refs", "ref": "main"}, headers=root(forge))
    assert (refs.status_code, refs.json()) == (400, {
        "message": "Failed to create branch 'refs': 'refs/heads/refs/foo' exists; "
                   "cannot create 'refs/heads/refs'"})
    below = requests.post(f"{url}/branches", json={"branch": "main/x", "ref": "main"},
                          headers=root(forge))
    assert (below.status_code, below.json()) == (400, {
        "message": "Failed to create branch 'main/x': 'refs/heads/main' exists; "
                   "cannot create 'refs/heads/main/x'"})
    unknown = requests.post(f"{url}/branches", json={"branch": "new", "ref": LONG}, headers=root(forge))
    assert (unknown.status_code, unknown.json()) == (400, {
        "message": f"Failed to create branch 'new': invalid reference name '{LONG}'"})
    requests.post(f"{url}/tags", json={"tag_name": "v1", "ref": "main"}, headers=root(forge))
    tag = requests.post(f"{url}/tags", json={"tag_name": "v1/rc", "ref": "main"}, headers=root(forge))
    assert (tag.status_code, tag.json()) == (400, {
        "message": "Failed to create tag 'v1/rc': 'refs/tags/v1' exists; cannot create 'refs/tags/v1/rc'"})


# -- wrong types in user and token bodies -------------------------------------------------

USER = {"username": "neo", "email": "neo@example.org", "name": "Neo", "password": "neo-password-1"}


@pytest.mark.parametrize("field,value", [
    ("password", ["a"]), ("password", {"a": 1}), ("username", ["neo"]), ("email", {"x": 1}),
    ("name", ["Neo"]), ("admin", "maybe"), ("admin", ["true"]), ("external", 7),
    ("reset_password", {"a": 1}),
])
def test_user_fields_of_the_wrong_type_get_grapes_invalid(forge: Forge, world: dict[str, Any],
                                                          field: str, value: Any) -> None:
    response = requests.post(f"{forge.url}/api/v4/users", json={**USER, field: value},
                             headers=root(forge))
    assert (response.status_code, response.json()) == (400, {"error": f"{field} is invalid"})
    update = requests.put(f"{forge.url}/api/v4/users/{world['u']}", json={field: value},
                          headers=root(forge))
    if field in ("name", "admin", "external"):
        assert (update.status_code, update.json()) == (400, {"error": f"{field} is invalid"})


@pytest.mark.parametrize("field,value,error", [
    ("expires_at", 20991231, "expires_at is invalid"),
    ("expires_at", "2099-13-45", "expires_at is invalid"),
    ("expires_at", ["2099-01-01"], "expires_at is invalid"),
    ("expires_at", True, "expires_at is invalid"),
    ("expires_at", "tomorrow", "expires_at is invalid"),
    ("scopes", 7, "scopes is invalid"),
    ("scopes", True, "scopes is invalid"),
    ("scopes", {"api": 1}, "scopes is invalid"),
    ("scopes", [["api"]], "scopes is invalid"),
    ("scopes", ["everything"], "scopes does not have a valid value"),
    ("name", ["t"], "name is invalid"),
])
def test_token_fields_of_the_wrong_type_get_grapes_invalid(forge: Forge, world: dict[str, Any],
                                                           field: str, value: Any, error: str) -> None:
    body = {"name": "t", "scopes": ["api"], "expires_at": "2099-01-01", field: value}
    response = requests.post(f"{forge.url}/api/v4/users/{world['u']}/personal_access_tokens",
                             json=body, headers=root(forge))
    assert (response.status_code, response.json()) == (400, {"error": error})


@pytest.mark.parametrize("method,route,body,field", [
    ("GET", "/projects/{p}/repository/commits?since=9999-12-31T23:59:59-01:00", None, "since"),
    ("GET", "/projects/{p}/repository/commits?until=9999-12-31T23:59:59-01:00", None, "until"),
    ("POST", "/projects/{p}/releases",
     {"tag_name": "v9", "ref": "main", "released_at": "0001-01-01T00:00:00+01:00"}, "released_at"),
    ("POST", "/projects/{p}/releases",
     {"tag_name": "v9", "ref": "main", "released_at": "9999-12-31T23:00:00-02:00"}, "released_at"),
])
def test_times_beyond_year_9999_or_before_1_in_utc_are_invalid(
        forge: Forge, world: dict[str, Any], method: str, route: str, body: Any, field: str) -> None:
    response = requests.request(method, f"{forge.url}/api/v4{route.format(**world)}", json=body,
                                headers=root(forge))
    assert (response.status_code, response.json()) == (400, {"error": f"{field} is invalid"})


@pytest.mark.parametrize("method,route,body,answer", [
    ("GET", "/projects/" + "9" * 40, None, (404, {"message": "404 Project Not Found"})),
    ("GET", "/users/" + "9" * 40, None, (404, {"message": "404 User Not Found"})),
    ("GET", "/groups/" + "9" * 40, None, (404, {"message": "404 Group Not Found"})),
    ("DELETE", "/personal_access_tokens/" + "9" * 40, None, (404, {"message": "404 Not Found"})),
    ("POST", "/projects/{p}/members", {"user_id": HUGE, "access_level": 30},
     (404, {"message": "404 User Not Found"})),
    ("DELETE", "/projects/{p}/members/" + "9" * 40, None, (404, {"message": "404 Member Not Found"})),
    ("POST", "/projects/{p}/job_token_scope/allowlist", {"target_project_id": HUGE},
     (404, {"message": "404 Project Not Found"})),
    ("POST", "/projects/{p}/job_token_scope/groups_allowlist", {"target_group_id": HUGE},
     (404, {"message": "404 Group Not Found"})),
    ("DELETE", "/projects/{p}/job_token_scope/allowlist/" + "9" * 40, None,
     (404, {"message": "404 Project Not Found"})),
    ("POST", "/groups", {"name": "x", "path": "x", "parent_id": HUGE},
     (404, {"message": "404 Group Not Found"})),
    ("POST", "/projects", {"name": "x", "namespace_id": HUGE},
     (400, {"message": {"namespace": ["is not valid"]}})),
    ("GET", "/personal_access_tokens?user_id=" + "9" * 40, None, (200, [])),
    ("POST", "/projects/{p}/members", {"user_id": True, "access_level": 30},
     (400, {"error": "user_id is invalid"})),
    ("POST", "/projects/{p}/members", {"user_id": 1.5, "access_level": 30},
     (400, {"error": "user_id is invalid"})),
])
def test_ids_out_of_range_or_of_the_wrong_type_get_4xx(forge: Forge, world: dict[str, Any], method: str,
                                                       route: str, body: Any,
                                                       answer: tuple[int, Any]) -> None:
    response = requests.request(method, f"{forge.url}/api/v4{route.format(**world)}", json=body,
                                headers=root(forge))
    assert (response.status_code, response.json()) == answer


def test_lfs_lock_ids_out_of_range_are_not_found(forge: Forge, world: dict[str, Any]) -> None:
    dev: UserHandle = world["dev"]
    auth_ = ("dev", dev.password or "")
    listed = requests.get(f"{forge.url}/acme/app.git/info/lfs/locks?id={'9' * 40}", auth=auth_)
    assert (listed.status_code, listed.json()) == (200, {"locks": []})
    unlock = requests.post(f"{forge.url}/acme/app.git/info/lfs/locks/{'9' * 40}/unlock", auth=auth_,
                           json={}, headers={"Content-Type": LFS_JSON})
    assert (unlock.status_code, unlock.json()) == (404, {"message": "Lock not found"})


# -- LFS locks ----------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["../x", "a/../../x", "/etc/passwd", "./a", "a//b", "a/.", "..", "a\nb"])
def test_lfs_lock_path_traversal_is_refused(forge: Forge, world: dict[str, Any], path: str) -> None:
    dev: UserHandle = world["dev"]
    response = requests.post(f"{forge.url}/acme/app.git/info/lfs/locks", json={"path": path},
                             auth=("dev", dev.password or ""), headers={"Content-Type": LFS_JSON})
    assert (response.status_code, response.json()) == (422, {"message": "path is invalid"})
    assert response.headers["Content-Type"] == LFS_JSON


def test_lfs_lock_race_loser_gets_409_already_locked(forge: Forge, world: dict[str, Any],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    dev: UserHandle = world["dev"]
    url, auth_ = f"{forge.url}/acme/app.git/info/lfs/locks", ("dev", dev.password or "")
    first = requests.post(url, json={"path": "model.bin"}, auth=auth_)
    assert first.status_code == 201
    # The loser of a race checked before the winner committed: its check finds nothing.
    monkeypatch.setattr(domain, "find_lock", lambda project, path: None)
    second = requests.post(url, json={"path": "model.bin"}, auth=auth_)
    assert (second.status_code, second.headers["Content-Type"]) == (409, LFS_JSON)
    assert second.json() == {"lock": first.json()["lock"], "message": "already locked"}


def test_lfs_concurrent_locks_of_one_path_one_wins(forge: Forge, world: dict[str, Any]) -> None:
    dev: UserHandle = world["dev"]
    url, auth_ = f"{forge.url}/acme/app.git/info/lfs/locks", ("dev", dev.password or "")
    barrier = threading.Barrier(8)
    answers: list[requests.Response] = []

    def lock() -> None:
        barrier.wait()
        answers.append(requests.post(url, json={"path": "same.bin"}, auth=auth_))

    threads = [threading.Thread(target=lock) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [201] + [409] * 7
    winner = next(a for a in answers if a.status_code == 201).json()["lock"]
    for answer in answers:
        if answer.status_code == 409:
            assert answer.json() == {"lock": winner, "message": "already locked"}


# -- domain.create_project content names --------------------------------------------------

@pytest.mark.parametrize("kind,name", [
    ("files", "../x"), ("files", ".git/config"), ("files", "a/../../x"), ("files", "/abs"),
    ("files", "a\x00b"), ("files", "dir/.git/hooks/x"), ("lfs_files", "../model.bin"),
    ("submodules", "../../x"), ("submodules", ".git/modules/x"), ("files", "README.md/x"),
])
def test_create_project_refuses_bad_file_names(forge: Forge, kind: str, name: str) -> None:
    forge.create_group("acme")
    forge.create_project("acme/lib", files={"lib.txt": "l\n"})
    content: dict[str, Any] = {"files": {"README.md": "r\n"}}
    content[kind] = {**content.get(kind, {}), name: "../lib.git" if kind == "submodules" else "x"}
    before = sorted(p.name for p in forge.state.backend.root.iterdir())
    with forge.app.app_context():
        with pytest.raises(domain.DomainError) as refused:
            domain.create_project(forge.now(), forge.state.backend, "acme/app", lfs=forge.state.lfs,
                                  **content)
        domain.db.session.rollback()
        assert domain.find_project("acme/app") is None
    assert refused.value.status == 400
    assert repr(name) in str(refused.value)
    assert sorted(p.name for p in forge.state.backend.root.iterdir()) == before


# -- password checks take the same path for unknown users --------------------------------

def test_password_check_runs_once_with_the_configured_method_for_unknown_users(
        forge: Forge, world: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real = auth.check_password_hash

    def spy(pwhash: str, password: str) -> bool:
        calls.append(pwhash)
        return real(pwhash, password)

    monkeypatch.setattr(auth, "check_password_hash", spy)
    method = forge.state.config.password_hash_method
    nobody = forge.create_user("nopass", password=None)
    for username in ("dev", "nobody-here", nobody.username, "ghost@example.org"):
        calls.clear()
        response = requests.get(f"{forge.url}/acme/app.git/info/lfs/locks", auth=(username, "wrong"))
        assert response.status_code == 401
        assert len(calls) == 1, username
        assert calls[0].startswith(method + "$"), (username, calls[0][:30])
    calls.clear()
    good = requests.get(f"{forge.url}/acme/app.git/info/lfs/locks",
                        auth=("dev", world["dev"].password))
    assert good.status_code == 200 and len(calls) == 1


# -- the probe: every REST and LFS route, wrong types in every field ----------------------

# (method, route, a valid body); `{n}` makes names unique per request, destructive routes last.
ROUTES: list[tuple[str, str, dict[str, Any]]] = [
    ("GET", "/api/v4/user", {}),
    ("GET", "/api/v4/users", {"username": "dev", "search": "d"}),
    ("GET", "/api/v4/users/{u}", {}),
    ("POST", "/api/v4/users", {"username": "u{n}", "email": "u{n}@example.org", "name": "U",
                               "password": "password-{n}", "admin": False, "external": False}),
    ("PUT", "/api/v4/users/{u}", {"name": "Dev", "admin": False, "external": False}),
    ("POST", "/api/v4/users/{u}/personal_access_tokens",
     {"name": "t", "scopes": ["api"], "expires_at": "2099-01-01"}),
    ("GET", "/api/v4/personal_access_tokens", {"user_id": 1}),
    ("GET", "/api/v4/groups", {"search": "a"}),
    ("GET", "/api/v4/groups/{g}", {}),
    ("GET", "/api/v4/groups/{g}/subgroups", {}),
    ("GET", "/api/v4/groups/{g}/projects", {}),
    ("POST", "/api/v4/groups", {"name": "G", "path": "g{n}", "visibility": "private", "parent_id": "{g}"}),
    ("GET", "/api/v4/projects", {"search": "a", "membership": True, "page": 1, "per_page": 5}),
    ("GET", "/api/v4/projects/{p}", {}),
    ("POST", "/api/v4/projects", {"name": "P{n}", "path": "p{n}", "namespace_id": "{g}",
                                  "initialize_with_readme": True, "visibility": "private",
                                  "default_branch": "main"}),
    ("PUT", "/api/v4/projects/{p}", {"visibility": "private", "default_branch": "main", "name": "app",
                                     "lfs_enabled": True, "ci_push_repository_for_job_token_allowed": False,
                                     "job_token_policies_enabled": False}),
    ("GET", "/api/v4/projects/{p}/members", {}),
    ("GET", "/api/v4/projects/{p}/members/all", {}),
    ("GET", "/api/v4/groups/{g}/members/{u}", {}),
    ("POST", "/api/v4/groups/{g}/members", {"user_id": "{u}", "access_level": 30}),
    ("PUT", "/api/v4/projects/{p}/members/{u}", {"access_level": 40}),
    ("PUT", "/api/v4/groups/{g}/members/{u}", {"access_level": 40}),
    ("GET", "/api/v4/groups/{g}/members/all", {}),
    ("GET", "/api/v4/projects/{p}/protected_branches", {}),
    ("GET", "/api/v4/projects/{p}/protected_branches/main", {}),
    ("POST", "/api/v4/projects/{p}/protected_branches",
     {"name": "rel{n}*", "push_access_level": 30, "allow_force_push": False}),
    ("GET", "/api/v4/projects/{p}/repository/branches", {"search": "m"}),
    ("GET", "/api/v4/projects/{p}/repository/branches/main", {}),
    ("POST", "/api/v4/projects/{p}/repository/branches", {"branch": "b{n}", "ref": "main"}),
    ("GET", "/api/v4/projects/{p}/repository/tags", {}),
    ("GET", "/api/v4/projects/{p}/repository/tags/v1", {}),
    ("POST", "/api/v4/projects/{p}/repository/tags", {"tag_name": "t{n}", "ref": "main"}),
    ("GET", "/api/v4/projects/{p}/repository/files/README.md", {"ref": "main"}),
    ("GET", "/api/v4/projects/{p}/repository/files/README.md/raw", {"ref": "main"}),
    ("POST", "/api/v4/projects/{p}/repository/files/f{n}.txt",
     {"branch": "main", "content": "x", "commit_message": "m", "encoding": "text"}),
    ("PUT", "/api/v4/projects/{p}/repository/files/README.md",
     {"branch": "main", "content": "eA==", "commit_message": "m", "encoding": "base64"}),
    ("GET", "/api/v4/projects/{p}/repository/commits/main", {}),
    ("GET", "/api/v4/projects/{p}/releases", {}),
    ("GET", "/api/v4/projects/{p}/releases/v1", {}),
    ("POST", "/api/v4/projects/{p}/releases", {"tag_name": "r{n}", "ref": "main", "name": "R",
                                               "description": "d"}),
    ("GET", "/api/v4/job", {}),
    ("PUT", "/api/v4/projects/{p}/packages/generic/pkg/1.0/f.bin", {"select": "package_file"}),
    ("GET", "/api/v4/projects/{p}/packages/generic/pkg/1.0/f.bin", {}),
    ("GET", "/api/v4/projects/{p}/job_token_scope", {}),
    ("PATCH", "/api/v4/projects/{p}/job_token_scope", {"enabled": True}),
    ("GET", "/api/v4/projects/{p}/job_token_scope/allowlist", {}),
    ("GET", "/api/v4/projects/{p}/job_token_scope/groups_allowlist", {}),
    ("POST", "/api/v4/projects/{p}/job_token_scope/allowlist",
     {"target_project_id": "{p2}", "default_permissions": False, "job_token_policies": ["read_packages"]}),
    ("POST", "/api/v4/projects/{p}/job_token_scope/groups_allowlist", {"target_group_id": "{g}"}),
    # issue 10's endpoints
    ("GET", "/api/v4/version", {}),
    ("GET", "/api/v4/namespaces", {"search": "a", "owned_only": True}),
    ("GET", "/api/v4/namespaces/{g}", {}),
    ("GET", "/api/v4/namespaces/acme/exists", {"parent_id": "{g}"}),
    ("PUT", "/api/v4/user/status", {"message": "m", "emoji": "coffee", "availability": "busy",
                                    "clear_status_at": "2099-01-01T00:00:00Z"}),
    ("POST", "/api/v4/features/f{n}", {"value": True}),
    ("GET", "/api/v4/users", {"blocked": False, "active": True}),
    ("GET", "/api/v4/users/{u}/projects", {}),
    ("PUT", "/api/v4/groups/{g}", {"name": "Acme", "description": "d", "visibility": "private"}),
    ("GET", "/api/v4/groups/{g}/descendant_groups", {}),
    ("GET", "/api/v4/groups/{g}/packages", {}),
    ("GET", "/api/v4/projects", {"owned": True}),
    ("GET", "/api/v4/projects/{p}/groups", {"search": "a"}),
    ("GET", "/api/v4/projects/{p}/packages", {}),
    ("GET", "/api/v4/projects/{p}/merge_requests", {}),
    ("PATCH", "/api/v4/projects/{p}/protected_branches/main",
     {"allow_force_push": False, "push_access_level": 40, "merge_access_level": 30}),
    ("POST", "/api/v4/projects/{p}/protected_branches",
     {"name": "m{n}*", "push_access_level": 30, "merge_access_level": 40}),
    ("GET", "/api/v4/projects/{p}/repository/commits",
     {"ref_name": "main", "path": "README.md", "since": "2000-01-01T00:00:00Z",
      "until": "2099-01-01T00:00:00Z", "all": False, "first_parent": False}),
    ("POST", "/api/v4/projects/{p}/repository/commits",
     {"branch": "c{n}", "start_branch": "main", "commit_message": "m", "author_name": "A",
      "author_email": "a@example.org",
      "actions": [{"action": "create", "file_path": "c{n}.txt", "content": "c", "encoding": "text",
                   "execute_filemode": False}]}),
    ("GET", "/api/v4/projects/{p}/repository/commits/main/diff", {}),
    ("GET", "/api/v4/projects/{p}/repository/commits/main/refs", {"type": "all"}),
    ("POST", "/api/v4/projects/{p}/repository/commits/main/cherry_pick", {"branch": "main", "dry_run": True}),
    ("POST", "/api/v4/projects/{p}/repository/commits/main/revert", {"branch": "main"}),
    ("GET", "/api/v4/projects/{p}/repository/tree", {"path": "", "ref": "main", "recursive": True}),
    ("GET", "/api/v4/projects/{p}/repository/archive.zip", {"sha": "main", "path": ""}),
    ("GET", "/api/v4/projects/{p}/repository/compare", {"from": "main", "to": "main", "straight": False}),
    ("GET", "/api/v4/projects/{p}/repository/merge_base", {"refs[]": "main"}),
    ("GET", "/api/v4/projects/{p}/repository/files/README.md/blame", {"ref": "main"}),
    ("PUT", "/api/v4/projects/{p}/releases/v1", {"name": "R", "description": "d"}),
    ("POST", "/api/v4/projects/{p}/releases/v1/assets/links",
     {"name": "l{n}", "url": "https://example.org/{n}", "link_type": "other", "direct_asset_path": "/b"}),
    ("PUT", "/api/v4/projects/{p}/releases/v1/assets/links/1", {"name": "l", "url": "https://x.org"}),
    ("DELETE", "/api/v4/projects/{p}/repository/files/README.md", {"branch": "main", "commit_message": "rm"}),
    # issue 11's runner API and jobs
    ("POST", "/api/v4/runners", {"token": "{reg}", "description": "d", "tag_list": ["a"],
                                 "run_untagged": True, "maximum_timeout": 3600, "paused": False,
                                 "locked": False, "access_level": "not_protected", "info": {"name": "r"}}),
    ("POST", "/api/v4/runners/verify", {"token": "{rt}"}),
    ("POST", "/api/v4/user/runners", {"runner_type": "project_type", "project_id": "{p}",
                                      "description": "d", "tag_list": ["a"], "run_untagged": True}),
    ("POST", "/api/v4/jobs/request", {"token": "{rt}", "last_update": "x", "info": {"name": "r"}}),
    ("PUT", "/api/v4/jobs/{j}", {"token": "{jt}", "state": "running", "exit_code": 0,
                                 "failure_reason": "script_failure"}),
    ("PATCH", "/api/v4/jobs/{j}/trace", {"token": "{jt}"}),
    ("POST", "/api/v4/jobs/{j}/artifacts", {"token": "{jt}", "artifact_type": "archive",
                                            "artifact_format": "zip"}),
    ("GET", "/api/v4/jobs/{j}/artifacts", {"token": "{jt}"}),
    ("GET", "/api/v4/projects/{p}/jobs", {"scope": "running"}),
    ("GET", "/api/v4/projects/{p}/jobs/{j}", {}),
    ("GET", "/api/v4/projects/{p}/jobs/{j}/trace", {}),
    ("POST", "/acme/app.git/info/lfs/objects/batch",
     {"operation": "download", "transfers": ["basic"], "objects": [{"oid": "a" * 64, "size": 1}]}),
    ("GET", "/acme/app.git/info/lfs/locks", {"path": "a.bin", "id": 1}),
    ("POST", "/acme/app.git/info/lfs/locks", {"path": "l{n}.bin"}),
    ("POST", "/acme/app.git/info/lfs/locks/verify", {"ref": {"name": "refs/heads/main"}}),
    ("POST", "/acme/app.git/info/lfs/locks/1/unlock", {"force": True}),
    ("GET", "/acme/app.git/gitlab-lfs/objects/" + "a" * 64, {}),
    ("PUT", "/acme/app.git/gitlab-lfs/objects/" + "a" * 64 + "/1", {}),
    ("POST", "/acme/app.git/info/lfs/objects", {}),
    ("GET", "/acme/app.git/info/lfs/objects/" + "a" * 64, {}),
    ("DELETE", "/api/v4/runners", {"token": "{rt}"}),
    ("DELETE", "/api/v4/projects/{p}/job_token_scope/allowlist/{p2}", {}),
    ("DELETE", "/api/v4/projects/{p}/job_token_scope/groups_allowlist/{g}", {}),
    ("DELETE", "/api/v4/projects/{p}/repository/tags/gone", {}),
    ("POST", "/api/v4/users/{u}/unblock", {}),
    ("DELETE", "/api/v4/projects/{p}/protected_branches/main", {}),
    ("DELETE", "/api/v4/projects/{p}/repository/branches/gone", {}),
    ("DELETE", "/api/v4/personal_access_tokens/{t}", {}),
    ("POST", "/api/v4/users/{u}/block", {}),
    ("DELETE", "/api/v4/projects/{p}/members/{u}", {}),
    ("DELETE", "/api/v4/users/{u}", {}),
    ("DELETE", "/api/v4/projects/{p}", {}),
    ("DELETE", "/api/v4/groups/{g}", {}),
]

BAD_VALUES: dict[str, Any] = {
    "list": ["a"], "dict": {"a": 1}, "number": 1.5, "bool": True, "null": None, "huge": HUGE,
    "surrogate": "\ud800", "long": LONG, "dotdot": "../x", "absolute": "/etc/passwd",
    "nul": "a\x00b",
}


def _fill(template: str, world: dict[str, Any], n: int) -> str:
    return template.format(n=n, **{k: v for k, v in world.items() if k != "dev"})


def _value(value: Any, world: dict[str, Any], n: int) -> Any:
    if isinstance(value, str) and value.startswith("{") and value.endswith("}") and value != "{n}":
        return world[value[1:-1]]
    return _fill(value, world, n) if isinstance(value, str) else value


def _query(values: dict[str, Any]) -> str:
    from urllib.parse import quote
    return "&".join(f"{k}=" + quote(v if isinstance(v, str) else json.dumps(v), safe="",
                                    errors="surrogatepass") for k, v in values.items())


def _credentials(forge: Forge, route: str) -> dict[str, str]:
    if route.startswith("/api/"):
        return root(forge)
    return {"Authorization": basic("root", forge.root_token)}


def _answer_is_clean(response: requests.Response) -> bool:
    status, ctype = response.status_code, response.headers.get("Content-Type", "")
    if status == 501 and "batch API only" in response.text:  # GitLab's answer to pre-batch LFS
        return True
    return status < 500 and (ctype.startswith(("application/json", LFS_JSON, "text/plain"))
                             or status in (204, 200))


@pytest.mark.parametrize("label", list(BAD_VALUES))
def test_probe_wrong_values_in_every_field_never_500(forge: Forge, world: dict[str, Any],
                                                     label: str) -> None:
    bad, failures, n = BAD_VALUES[label], [], 0
    with requests.Session() as session:
        for method, route, base in ROUTES:
            for field in base or ["id"]:
                n += 1
                body = {k: _value(v, world, n) for k, v in base.items()}
                body[field] = bad
                url = forge.url + _fill(route, world, n)
                headers = {**_credentials(forge, route), "Content-Type": "application/json"}
                data = json.dumps(body).encode()
                if method in ("GET", "DELETE"):
                    url += "?" + _query({k: v for k, v in body.items() if v is not None})
                response = session.request(method, url, data=data, headers=headers)
                if not _answer_is_clean(response):
                    failures.append((method, route, field, response.status_code, response.text[:200]))
    assert failures == []


BROKEN: dict[str, tuple[dict[str, str], bytes]] = {
    "text-plain-json": ({"Content-Type": "text/plain"}, b'{"name": "x"}'),
    "form-surrogate": ({"Content-Type": "application/x-www-form-urlencoded"},
                       b"name=%ED%A0%80&branch=%ED%A0%80"),
    "form-nul": ({"Content-Type": "application/x-www-form-urlencoded"}, b"name=a%00b"),
    "multipart-garbage": ({"Content-Type": "multipart/form-data; boundary=zz"}, b"--zz\r\nnonsense"),
    "json-list": ({"Content-Type": "application/json"}, b"[1, 2]"),
    "json-string": ({"Content-Type": "application/json"}, b'"\\ud800"'),
    "json-deep": ({"Content-Type": "application/json"}, DEEP_LIST),
    "json-bad-utf8": ({"Content-Type": "application/json"}, b'{"name": "\xff"}'),
    "bearer-long": ({"Authorization": "Bearer " + LONG}, b""),
    "basic-garbage": ({"Authorization": "Basic !!!"}, b""),
    "basic-latin1": ({"Authorization": "Basic " + base64.b64encode(b"r\xf6\xf6t:\xff").decode()}, b""),
    "private-token-long": ({"PRIVATE-TOKEN": LONG}, b""),
    "job-token-garbage": ({"JOB-TOKEN": "glcbt-\x7f\x01"}, b""),
}


@pytest.mark.parametrize("label", list(BROKEN))
def test_probe_broken_bodies_and_headers_never_500(forge: Forge, world: dict[str, Any],
                                                   label: str) -> None:
    extra, body = BROKEN[label]
    failures = []
    with requests.Session() as session:
        for n, (method, route, _) in enumerate(ROUTES):
            headers = {**_credentials(forge, route), **extra}
            response = session.request(method, forge.url + _fill(route, world, n), data=body,
                                       headers=headers)
            if not _answer_is_clean(response):
                failures.append((method, route, response.status_code, response.text[:200]))
    assert failures == []


BAD_SEGMENTS = {
    "surrogate": SURROGATE, "bad-utf8": "%FF%FE", "nul": "a%00b", "long": LONG, "dotdot": "..",
    "encoded-dotdot": "%2E%2E%2Fx", "absolute": "%2Fetc%2Fpasswd", "huge": "9" * 40,
}


@pytest.mark.parametrize("label", list(BAD_SEGMENTS))
def test_probe_bad_path_segments_never_500(forge: Forge, world: dict[str, Any], label: str) -> None:
    bad, failures = BAD_SEGMENTS[label], []
    for n, (method, route, base) in enumerate(ROUTES):
        path = _fill(route, world, n)
        body = json.dumps({k: _value(v, world, n) for k, v in base.items()}).encode()
        segments, template = path.split("/"), route.split("/")
        # the segments a caller chooses: ids, names, paths (and the last, e.g. a file name)
        chosen = [i for i, part in enumerate(template) if "{" in part or i == len(template) - 1
                  or (i == 1 and not route.startswith("/api/"))]
        for i in chosen:
            probe = "/".join([*segments[:i], bad, *segments[i + 1:]])
            status, ctype, text = raw(forge, method, probe, body, {
                **_credentials(forge, route), "Content-Type": "application/json"})
            if status >= 500 and not (status == 501 and "batch API only" in text):
                failures.append((method, probe[:120], status, text[:200]))
    assert failures == []


# -- races on unique names ------------------------------------------------------------------

def _race(count: int, send: Callable[[], requests.Response]) -> list[requests.Response]:
    barrier = threading.Barrier(count)
    answers: list[requests.Response] = []

    def run() -> None:
        barrier.wait()
        answers.append(send())

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


@pytest.mark.parametrize("route,body", [
    ("/api/v4/users", USER),
    ("/api/v4/groups", {"name": "Top", "path": "top"}),
    ("/api/v4/projects", {"name": "same", "namespace_id": "{g}"}),
    ("/api/v4/projects/{p}/protected_branches", {"name": "rel/*"}),
    ("/api/v4/projects/{p}/members", {"user_id": "{other}", "access_level": 30}),
    ("/api/v4/projects/{p}/job_token_scope/allowlist", {"target_project_id": "{p2}"}),
])
def test_concurrent_creates_of_one_name_one_wins_the_rest_get_4xx(
        forge: Forge, world: dict[str, Any], route: str, body: dict[str, Any]) -> None:
    world = {**world, "other": forge.create_user("other").id}
    body = {k: (world[v[1:-1]] if isinstance(v, str) and v.startswith("{") else v)
            for k, v in body.items()}
    url = forge.url + route.format(**world)
    answers = _race(6, lambda: requests.post(url, json=body, headers=root(forge)))
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses[0] == 201 and statuses.count(201) == 1, [a.text[:100] for a in answers]
    assert all(400 <= status < 500 for status in statuses[1:]), [a.text[:100] for a in answers]
    assert all(a.headers["Content-Type"] == "application/json" for a in answers)


def test_concurrent_uploads_of_one_lfs_object_all_succeed(forge: Forge, world: dict[str, Any]) -> None:
    import hashlib
    data = b"same object\n" * 1000
    oid = hashlib.sha256(data).hexdigest()
    dev: UserHandle = world["dev"]
    url = f"{forge.url}/acme/app.git/gitlab-lfs/objects/{oid}/{len(data)}"
    answers = _race(6, lambda: requests.put(url, data=data, auth=("dev", dev.password or "")))
    assert [a.status_code for a in answers] == [200] * 6, [a.text[:100] for a in answers]


# -- text that is not ASCII ----------------------------------------------------------------

def test_api_non_ascii_query_and_form_text_is_read_as_utf8(forge: Forge, world: dict[str, Any]) -> None:
    p, headers = world["p"], root(forge)
    assert requests.get(f"{forge.url}/api/v4/projects?search=%C3%BC", headers=headers).json() == []
    url = urlsplit(forge.url)  # the same query with the UTF-8 bytes sent raw, as some clients do
    with socket.create_connection((url.hostname or "", url.port or 80), timeout=30) as sock:
        sock.sendall(b"GET /api/v4/projects?search=\xc3\xbc HTTP/1.1\r\nHost: x\r\n"
                     b"PRIVATE-TOKEN: " + forge.root_token.encode() + b"\r\nConnection: close\r\n\r\n")
        assert sock.makefile("rb").readline().startswith(b"HTTP/1.1 200")
    created = requests.post(f"{forge.url}/api/v4/projects/{p}/repository/branches", headers=headers,
                            data={"branch": "fö-☃", "ref": "main"})
    assert (created.status_code, created.json()["name"]) == (201, "fö-☃")
    found = requests.get(f"{forge.url}/api/v4/projects/{p}/repository/files/README.md",
                         params={"ref": "fö-☃"}, headers=headers)
    assert (found.status_code, found.json()["ref"]) == (200, "fö-☃")


def test_api_file_names_outside_latin1_come_back_in_utf8_headers(forge: Forge,
                                                                 world: dict[str, Any]) -> None:
    p, headers = world["p"], root(forge)
    created = requests.post(f"{forge.url}/api/v4/projects/{p}/repository/files/%E6%97%A5%2F%E2%98%83.txt",
                            headers=headers, json={"branch": "main", "content": "snow\n",
                                                   "commit_message": "snow"})
    assert created.status_code == 201, created.text
    for suffix in ("", "/raw"):
        answer = requests.get(f"{forge.url}/api/v4/projects/{p}/repository/files/"
                              f"%E6%97%A5%2F%E2%98%83.txt{suffix}?ref=main", headers=headers)
        assert answer.status_code == 200
        # requests reads header bytes as latin-1; GitLab (Rails) sends them as UTF-8
        assert answer.headers["X-Gitlab-File-Name"].encode("latin-1").decode() == "☃.txt"
        assert answer.headers["X-Gitlab-File-Path"].encode("latin-1").decode() == "日/☃.txt"


def test_api_access_token_counts_before_a_job_token(forge: Forge, world: dict[str, Any]) -> None:
    answer = requests.get(f"{forge.url}/api/v4/user",
                          headers={**root(forge), "JOB-TOKEN": world["jt"]})
    assert (answer.status_code, answer.json()["username"]) == (200, "root")


def test_api_expired_and_revoked_tokens_get_oauth_invalid_token(forge: Forge,
                                                                world: dict[str, Any]) -> None:
    expired = forge.create_token("dev", expires_at=forge.now())
    answer = requests.get(f"{forge.url}/api/v4/user", headers={"PRIVATE-TOKEN": expired})
    assert (answer.status_code, answer.json()) == (401, {
        "error": "invalid_token",
        "error_description": "Token is expired. You can either do re-authorization or token refresh."})
    assert answer.headers["WWW-Authenticate"].startswith('Bearer realm="Protected by OAuth 2.0", '
                                                         'error="invalid_token"')
    forge.revoke_tokens("dev")
    answer = requests.get(f"{forge.url}/api/v4/projects/{world['p']}",
                          headers={"Authorization": f"Bearer {world['dev'].token}"})
    assert (answer.status_code, answer.json()["error_description"]) == (
        401, "Token was revoked. You have to re-authorize from the user.")
    assert forge.last_event()["reason"] == "token_revoked"
    unknown = requests.get(f"{forge.url}/api/v4/user", headers={"PRIVATE-TOKEN": "glpat-nothing"})
    assert (unknown.status_code, unknown.json()) == (401, {"message": "401 Unauthorized"})


def test_api_project_lists_search_and_subgroups_as_gitlab(forge: Forge, world: dict[str, Any]) -> None:
    forge.create_group("acme/sub")
    forge.create_project("acme/sub/deep", files={"d": "d\n"})
    api, headers = f"{forge.url}/api/v4", root(forge)

    def paths(url: str, **query: str) -> list[str]:
        answer = requests.get(url, params=query, headers=headers)
        assert answer.status_code == 200, answer.text
        return sorted(p["path_with_namespace"] for p in answer.json())

    # Project.search looks at path, name and description; the namespace only when asked
    assert paths(f"{api}/projects", search="acme") == []
    assert paths(f"{api}/projects", search="acme", search_namespaces="true") == [
        "acme/app", "acme/lib", "acme/sub/deep"]
    assert paths(f"{api}/projects", search="dee") == ["acme/sub/deep"]
    assert paths(f"{api}/groups/acme/projects") == ["acme/app", "acme/lib"]
    assert paths(f"{api}/groups/acme/projects", include_subgroups="true") == [
        "acme/app", "acme/lib", "acme/sub/deep"]
    answer = requests.get(f"{api}/groups/acme/projects", params={"include_subgroups": "maybe"},
                          headers=headers)
    assert (answer.status_code, answer.json()) == (400, {"error": "include_subgroups is invalid"})


def test_api_tags_and_branches_in_gitlabs_orders(forge: Forge, world: dict[str, Any], git,
                                                 git_env: dict[str, str], tmp_path: Path) -> None:
    import subprocess
    work = tmp_path / "w"
    git("clone", "-q", forge.url.replace("//", f"//root:{forge.root_token}@") + "/acme/lib.git", work)
    for n, (tag, day) in enumerate([("v1.9", 3), ("v1.10", 1), ("v1.2", 2)]):
        (work / "f").write_text(str(n))
        git("add", "f", cwd=work)
        stamp = f"2026-01-0{day}T12:00:00Z"
        subprocess.run(["git", "commit", "-qm", tag], cwd=work, check=True,
                       env={**git_env, "GIT_COMMITTER_DATE": stamp, "GIT_AUTHOR_DATE": stamp})
        git("tag", tag, cwd=work)
        git("branch", f"b-{tag}", cwd=work)
    git("push", "-q", "origin", "--tags", "b-v1.9", "b-v1.10", "b-v1.2", cwd=work)
    base = f"{forge.url}/api/v4/projects/{world['p2']}/repository"

    def names(kind: str, **query: str) -> list[str]:
        answer = requests.get(f"{base}/{kind}", params=query, headers=root(forge))
        assert answer.status_code == 200, answer.text
        return [item["name"] for item in answer.json()]

    assert names("tags") == ["v1.9", "v1.2", "v1.10"]  # updated (commit date), newest first
    assert names("tags", order_by="name", sort="asc") == ["v1.10", "v1.2", "v1.9"]
    assert names("tags", order_by="version") == ["v1.10", "v1.9", "v1.2"]
    assert names("branches")[:3] == ["b-v1.10", "b-v1.2", "b-v1.9"]
    assert names("branches", sort="updated_asc")[:3] == ["b-v1.10", "b-v1.2", "b-v1.9"]
    assert names("branches", sort="updated_desc") == ["main", "b-v1.9", "b-v1.2", "b-v1.10"]
    answer = requests.get(f"{base}/tags", params={"order_by": "bogus"}, headers=root(forge))
    assert (answer.status_code, answer.json()) == (400, {"error": "order_by does not have a valid value"})
    # A branch named like a tag changes nothing about the tag
    git("push", "-q", "origin", "b-v1.9:refs/heads/v1.10", cwd=work)
    assert names("tags") == ["v1.9", "v1.2", "v1.10"]
    tag = requests.get(f"{base}/tags/v1.10", headers=root(forge)).json()
    assert tag["commit"]["title"] == "v1.10"
    made = requests.post(f"{base}/tags", json={"tag_name": "v1.9\u00b2", "ref": "main"},
                         headers=root(forge))  # a digit to str.isdigit(), none to int()
    assert made.status_code == 201, made.text
    assert sorted(names("tags", order_by="version")) == ["v1.10", "v1.2", "v1.9", "v1.9\u00b2"]


@pytest.mark.parametrize("stamp", ["253402300800 +0000", "99999999999999 +0000",
                                   "1700000000 +9959", "0 +0000"])
def test_commit_dates_git_accepts_never_break_a_view(forge: Forge, world: dict[str, Any], git,
                                                      tmp_path: Path, stamp: str) -> None:
    """Past year 9999, an offset of a day or more, the epoch: a pushed commit with such a
    date used to make its branch list, commit views, zip archives and jobs answer 500."""
    import subprocess
    work = tmp_path / "w"
    git("clone", "-q", forge.url.replace("//", f"//root:{forge.root_token}@") + "/acme/lib.git", work)
    tree = git("rev-parse", "HEAD^{tree}", cwd=work).stdout.strip()
    head = git("rev-parse", "HEAD", cwd=work).stdout.strip()
    raw = (f"tree {tree}\nparent {head}\nauthor A <a@example.com> {stamp}\n"
           f"committer A <a@example.com> {stamp}\n\nodd date\n")
    sha = subprocess.run(["git", "hash-object", "-t", "commit", "--literally", "-w", "--stdin"],
                         cwd=work, input=raw, capture_output=True, text=True, check=True).stdout.strip()
    git("-c", "transfer.fsckObjects=false", "push", "-q", "origin", f"{sha}:refs/heads/odd", cwd=work)
    base = f"{forge.url}/api/v4/projects/{world['p2']}"
    for path in ("/repository/branches", "/repository/branches/odd", "/repository/commits/odd",
                 "/repository/commits?ref_name=odd", "/repository/compare?from=main&to=odd",
                 "/repository/archive.zip?sha=odd", "/repository/archive.tar.gz?sha=odd"):
        answer = requests.get(base + path, headers=root(forge), timeout=30)
        assert answer.status_code == 200, (path, answer.status_code, answer.text[:200])
    dated = requests.get(f"{base}/repository/commits/odd", headers=root(forge), timeout=30).json()
    assert dated["committed_date"].endswith("Z")
    started = requests.post(f"{forge.url}/-/forge/jobs", headers=root(forge), timeout=30,
                            json={"project": "acme/lib", "user": "root", "ref": "odd"})
    assert started.status_code == 201, started.text
    assert started.json()["variables"]["CI_COMMIT_TIMESTAMP"]


def test_expect_100_continue_is_answered_once(forge: Forge) -> None:
    url = urlsplit(forge.url)
    with socket.create_connection((url.hostname or "", url.port or 80), timeout=30) as sock:
        sock.sendall(b"POST /api/v4/projects HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 13\r\nExpect: 100-continue\r\n\r\n")
        assert sock.recv(65536) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b'{"name":"x"}\n')
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 401 Unauthorized\r\n"), answer[:100]
