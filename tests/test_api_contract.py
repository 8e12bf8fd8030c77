"""Every API endpoint walked with a PAT of each role, and anonymously: GitLab's statuses.

Then malformed ids, paths and bodies: never a 500.
"""

from __future__ import annotations

from typing import Any

import pytest
import requests

from forge.testing import Forge

ROLES = ["anonymous", "non_member", "guest", "reporter", "developer", "maintainer", "owner", "admin"]
RANK = {role: i for i, role in enumerate(ROLES)}

# (method, path, json body, requirement, status on success)
# requirements: "user" any authenticated; "admin" instance admin; "public" anyone;
# a role name: that role or higher in the private project acme/app (admins count as owners).
ENDPOINTS: list[tuple[str, str, dict[str, Any] | None, str, int]] = [
    ("GET", "/user", None, "user", 200),
    ("GET", "/users", None, "user", 200),
    ("GET", "/users/{extra}", None, "user", 200),
    ("POST", "/users", {"username": "newbie", "email": "n@example.org", "name": "N",
                        "password": "newbie-password"}, "admin", 201),
    ("PUT", "/users/{extra}", {"name": "Extra Person"}, "admin", 200),
    ("POST", "/users/{extra}/personal_access_tokens", {"name": "t", "scopes": ["api"]}, "admin", 201),
    ("POST", "/users/{extra}/block", None, "admin", 201),
    ("POST", "/users/{extra}/unblock", None, "admin", 201),
    ("GET", "/personal_access_tokens", None, "user", 200),
    ("GET", "/groups/{site_group}", None, "public", 200),
    ("GET", "/groups", None, "public", 200),
    ("POST", "/groups", {"name": "Top", "path": "top"}, "user", 201),
    ("GET", "/projects", None, "public", 200),
    ("GET", "/projects/{p}", None, "guest", 200),
    ("GET", "/projects/acme%2Fapp", None, "guest", 200),
    ("PUT", "/projects/{p}", {"name": "app"}, "maintainer", 200),
    ("GET", "/projects/{p}/members", None, "guest", 200),
    ("GET", "/projects/{p}/members/all", None, "guest", 200),
    ("POST", "/projects/{p}/members", {"user_id": "{extra}", "access_level": 10}, "maintainer", 201),
    ("PUT", "/projects/{p}/members/{extra}", {"access_level": 20}, "maintainer", 200),
    ("DELETE", "/projects/{p}/members/{extra}", None, "maintainer", 204),
    ("GET", "/projects/{p}/protected_branches", None, "guest", 200),
    ("POST", "/projects/{p}/protected_branches", {"name": "rel/*"}, "maintainer", 201),
    ("DELETE", "/projects/{p}/protected_branches/rel%2F%2A", None, "maintainer", 204),
    ("GET", "/projects/{p}/repository/branches", None, "reporter", 200),
    ("GET", "/projects/{p}/repository/branches/main", None, "reporter", 200),
    ("POST", "/projects/{p}/repository/branches", {"branch": "b", "ref": "main"}, "developer", 201),
    ("DELETE", "/projects/{p}/repository/branches/stale", None, "developer", 204),
    ("GET", "/projects/{p}/repository/tags", None, "reporter", 200),
    ("GET", "/projects/{p}/repository/tags/v0", None, "reporter", 200),
    ("POST", "/projects/{p}/repository/tags", {"tag_name": "t1", "ref": "main"}, "developer", 201),
    ("DELETE", "/projects/{p}/repository/tags/v0", None, "developer", 204),
    ("GET", "/projects/{p}/repository/files/README.md?ref=main", None, "reporter", 200),
    ("GET", "/projects/{p}/repository/files/README.md/raw?ref=main", None, "reporter", 200),
    ("GET", "/projects/{p}/repository/commits/main", None, "reporter", 200),
    ("GET", "/projects/{p}/job_token_scope", None, "maintainer", 200),
    ("PATCH", "/projects/{p}/job_token_scope", {"enabled": True}, "maintainer", 204),
    ("GET", "/projects/{p}/job_token_scope/allowlist", None, "maintainer", 200),
    ("POST", "/projects/{p}/job_token_scope/allowlist", {"target_project_id": "{site}"},
     "maintainer", 201),
    ("DELETE", "/projects/{p}/job_token_scope/allowlist/{site}", None, "maintainer", 204),
    ("GET", "/projects/{p}/job_token_scope/groups_allowlist", None, "maintainer", 200),
    ("POST", "/projects/{p}/job_token_scope/groups_allowlist", {"target_group_id": "{site_group}"},
     "maintainer", 201),
    ("DELETE", "/projects/{p}/job_token_scope/groups_allowlist/{site_group}", None, "maintainer", 204),
    ("PUT", "/projects/{p}/packages/generic/pkg/1.0/f.bin", None, "developer", 201),
    ("GET", "/projects/{p}/packages/generic/seeded/1.0/f.bin", None, "reporter", 200),
    ("GET", "/projects/{p}/releases", None, "reporter", 200),
    ("GET", "/projects/{p}/releases/v0rel", None, "reporter", 200),
    ("POST", "/projects/{p}/releases", {"tag_name": "r1", "ref": "main"}, "developer", 201),
    ("DELETE", "/projects/{p}/delete-me-never", None, "public", 404),
    ("DELETE", "/projects/{p}", None, "owner", 202),
]


def expected(requirement: str, role: str, success: int) -> int:
    """The status GitLab gives `role` for an endpoint with `requirement`."""
    if requirement == "public":
        return success
    if requirement == "user":
        return 401 if role == "anonymous" else success
    if requirement == "admin":
        return {"anonymous": 401, "admin": success}.get(role, 403)
    if role in ("anonymous", "non_member"):
        return 404  # a private project is invisible to them
    return success if RANK[role] >= RANK[requirement] else 403


@pytest.fixture
def world(forge: Forge) -> dict[str, Any]:
    forge.create_group("acme")
    forge.create_group("site", visibility="public")
    users = {role: forge.create_user(f"{role.replace('_', '-')}-user", admin=role == "admin")
             for role in ROLES[1:]}
    extra = forge.create_user("extra")
    project = forge.create_project(
        "acme/app", files={"README.md": "# app\n"},
        members={u.username: role for role, u in users.items() if role in RANK
                 and RANK["guest"] <= RANK[role] <= RANK["owner"]})
    site = forge.create_project("site/www", visibility="public", files={"i": "1"})
    root = {"PRIVATE-TOKEN": forge.root_token}
    api = f"{forge.url}/api/v4/projects/{project.id}"
    for method, path, body in (
            ("POST", "/repository/branches", {"branch": "stale", "ref": "main"}),
            ("POST", "/repository/tags", {"tag_name": "v0", "ref": "main"}),
            ("POST", "/releases", {"tag_name": "v0rel", "ref": "main"})):
        requests.request(method, api + path, json=body, headers=root).raise_for_status()
    requests.put(api + "/packages/generic/seeded/1.0/f.bin", data=b"x", headers=root).raise_for_status()
    with forge.app.app_context():
        from forge import domain
        site_group = domain.get_group("site").id
    return {"users": users, "ids": {"p": project.id, "extra": extra.id, "site": site.id,
                                    "site_group": site_group}}


@pytest.mark.parametrize("role", ROLES)
def test_api_contract_every_endpoint_every_role(forge: Forge, world: dict[str, Any],
                                                role: str) -> None:
    headers = {} if role == "anonymous" else {"PRIVATE-TOKEN": world["users"][role].token}
    ids = world["ids"]
    failures = []
    for method, path, body, requirement, success in ENDPOINTS:
        url = f"{forge.url}/api/v4{path.format(**ids)}"
        data = None if body is None else {
            k: (int(v.format(**ids)) if isinstance(v, str) and v.startswith("{") else v)
            for k, v in body.items()}
        response = requests.request(method, url, json=data, headers=headers,
                                    data=b"pkg" if "packages" in path and method == "PUT" else None)
        want = expected(requirement, role, success)
        if response.status_code != want:
            failures.append(f"{method} {path}: {response.status_code} (want {want}) {response.text[:120]}")
        if response.status_code >= 400:
            assert response.headers["Content-Type"] == "application/json", (method, path)
    assert not failures, "\n".join(failures)
    denied = [e for e in forge.denials() if e["action"].startswith("api_")]
    assert all(e["reason"] for e in denied)


def test_api_job_endpoint_statuses(forge: Forge, world: dict[str, Any]) -> None:
    assert requests.get(f"{forge.url}/api/v4/job").status_code == 401
    pat = requests.get(f"{forge.url}/api/v4/job",
                       headers={"PRIVATE-TOKEN": world["users"]["admin"].token})
    assert pat.status_code == 404


MALFORMED: list[tuple[str, str, Any]] = [
    ("GET", "/projects/abc", None),
    ("GET", "/projects/999999", None),
    ("GET", "/projects/..%2F..%2Fetc", None),
    ("GET", "/projects/acme%2F..%2F..%2Fapp", None),
    ("GET", "/projects/%00", None),
    ("GET", "/projects/-1", None),
    ("GET", "/projects/1e9999", None),
    ("GET", "/users/abc", None),
    ("GET", "/groups/..%2F", None),
    ("POST", "/projects", "{not json"),
    ("POST", "/projects", {"name": None}),
    ("POST", "/projects", {"name": "x", "namespace_id": "abc"}),
    ("POST", "/projects", {"name": "../../etc", "path": "../../etc"}),
    ("POST", "/projects", {"name": "ok", "visibility": "secret"}),
    ("POST", "/groups", {"name": "x", "path": "../x"}),
    ("POST", "/groups", {"name": "x", "path": "x", "parent_id": 99999}),
    ("POST", "/users", {"username": "a b", "email": "x", "name": "y", "password": "p"}),
    ("POST", "/users", {}),
    ("POST", "/users/{extra}/personal_access_tokens", {"name": "t", "scopes": ["nope"]}),
    ("POST", "/users/{extra}/personal_access_tokens", {"name": "t", "scopes": "api",
                                                        "expires_at": "tomorrow"}),
    ("POST", "/projects/{p}/members", {"user_id": "x", "access_level": 30}),
    ("POST", "/projects/{p}/members", {"user_id": 99999, "access_level": 30}),
    ("POST", "/projects/{p}/members", {"user_id": "{extra}", "access_level": 31}),
    ("PUT", "/projects/{p}/members/99999", {"access_level": 30}),
    ("POST", "/projects/{p}/protected_branches", {}),
    ("POST", "/projects/{p}/protected_branches", {"name": "x", "push_access_level": "high"}),
    ("POST", "/projects/{p}/repository/branches", {"branch": "../../x", "ref": "main"}),
    ("POST", "/projects/{p}/repository/branches", {"branch": "x", "ref": "nope"}),
    ("POST", "/projects/{p}/repository/branches", {"branch": "x y:z", "ref": "main"}),
    ("POST", "/projects/{p}/repository/tags", {"tag_name": "t", "ref": "0" * 40}),
    ("GET", "/projects/{p}/repository/files/..%2F..%2Fconfig?ref=main", None),
    ("GET", "/projects/{p}/repository/files/README.md", None),
    ("GET", "/projects/{p}/repository/files/README.md?ref=..%2F..", None),
    ("GET", "/projects/{p}/repository/commits/zzzz", None),
    ("GET", "/projects/{p}/repository/branches/..%2F..%2Fx", None),
    ("PUT", "/projects/{p}/packages/generic/..%2F..%2Fx/1/f", b"x"),
    ("PUT", "/projects/{p}/packages/generic/pkg/1..2/f", b"x"),
    ("GET", "/projects/{p}/packages/generic/pkg/1/..%2Fforge.db", None),
    ("POST", "/projects/{p}/releases", {}),
    ("POST", "/projects/{p}/releases", {"tag_name": "r"}),
    ("PATCH", "/projects/{p}/job_token_scope", {"enabled": None}),
    ("POST", "/projects/{p}/job_token_scope/allowlist", {"target_project_id": [1]}),
    ("DELETE", "/projects/{p}/job_token_scope/allowlist/abc", None),
    ("GET", "/projects/{p}/nothing-here", None),
    ("PATCH", "/user", None),
    ("GET", "/projects?page=abc&per_page=-4", None),
]


@pytest.mark.parametrize("method,path,body", MALFORMED)
def test_api_malformed_input_never_500(forge: Forge, world: dict[str, Any], method: str, path: str,
                                       body: Any) -> None:
    ids = world["ids"]
    url = f"{forge.url}/api/v4{path.format(**ids)}"
    headers = {"PRIVATE-TOKEN": forge.root_token}
    if isinstance(body, dict):
        body = {k: (int(v.format(**ids)) if isinstance(v, str) and v.startswith("{") else v)
                for k, v in body.items()}
        response = requests.request(method, url, json=body, headers=headers)
    else:
        response = requests.request(method, url, data=body, headers={
            **headers, "Content-Type": "application/json"} if isinstance(body, str) else headers)
    assert 400 <= response.status_code < 500 or response.status_code == 200, (
        response.status_code, response.text)
    assert response.headers["Content-Type"] == "application/json"
