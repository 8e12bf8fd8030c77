"""The job token scope API, statuses and bodies as in spec section 5."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from forge.testing import Forge


@pytest.fixture
def world(forge: Forge) -> dict[str, Any]:
    forge.create_group("acme")
    forge.create_group("hidden")
    people = {role: forge.create_user(role) for role in ("maintainer", "developer", "outsider")}
    target = forge.create_project("acme/lib", members={"maintainer": "maintainer",
                                                       "developer": "developer"})
    source = forge.create_project("acme/app", members={"maintainer": "reporter"})
    secret = forge.create_project("hidden/secret")
    return {"people": people, "target": target, "source": source, "secret": secret,
            "hidden": forge.create_group("hidden/inner")}


class Api:
    def __init__(self, forge: Forge, token: str | None) -> None:
        self.base = f"{forge.url}/api/v4"
        self.headers = {"PRIVATE-TOKEN": token} if token else {}

    def __call__(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return requests.request(method, self.base + path, headers=self.headers, **kwargs)


def test_scope_read_and_toggle(forge: Forge, world: dict[str, Any]) -> None:
    api = Api(forge, world["people"]["maintainer"].token)
    lib = world["target"].id
    response = api("GET", f"/projects/{lib}/job_token_scope")
    assert (response.status_code, response.json()) == (
        200, {"inbound_enabled": True, "outbound_enabled": False})
    missing = api("PATCH", f"/projects/{lib}/job_token_scope", json={})
    assert (missing.status_code, missing.json()) == (400, {"error": "enabled is missing"})
    off = api("PATCH", f"/projects/{lib}/job_token_scope", json={"enabled": False})
    assert (off.status_code, off.content) == (204, b"")
    assert api("GET", "/projects/acme%2Flib/job_token_scope").json()["inbound_enabled"] is False


@pytest.mark.parametrize("who,status,body", [
    ("developer", 403, {"message": "403 Forbidden"}),
    ("outsider", 404, {"message": "404 Project Not Found"}),
    (None, 401, {"message": "401 Unauthorized"}),  # authenticate! comes first
])
def test_scope_needs_maintainer(forge: Forge, world: dict[str, Any], who: str | None, status: int,
                                body: dict[str, str]) -> None:
    token = world["people"][who].token if who else None
    api = Api(forge, token)
    lib = world["target"].id
    for method, path, kwargs in (
            ("GET", f"/projects/{lib}/job_token_scope", {}),
            ("PATCH", f"/projects/{lib}/job_token_scope", {"json": {"enabled": False}}),
            ("GET", f"/projects/{lib}/job_token_scope/allowlist", {}),
            ("POST", f"/projects/{lib}/job_token_scope/allowlist",
             {"json": {"target_project_id": world["source"].id}}),
            ("GET", f"/projects/{lib}/job_token_scope/groups_allowlist", {})):
        response = api(method, path, **kwargs)
        assert (response.status_code, response.json()) == (status, body), (method, path)


def test_project_allowlist(forge: Forge, world: dict[str, Any]) -> None:
    api = Api(forge, world["people"]["maintainer"].token)
    lib, app = world["target"].id, world["source"].id
    path = f"/projects/{lib}/job_token_scope/allowlist"
    assert [p["id"] for p in api("GET", path).json()] == [lib]  # the project itself, first
    added = api("POST", path, json={"target_project_id": app})
    # GitLab's entity: the two ids, nothing else (forge's extension fields were not sent)
    assert (added.status_code, added.json()) == (201, {
        "source_project_id": lib, "target_project_id": app})
    listing = api("GET", path)
    assert [p["path_with_namespace"] for p in listing.json()] == ["acme/lib", "acme/app"]
    assert listing.headers["X-Total"] == "2"
    duplicate = api("POST", path, json={"target_project_id": app})
    assert (duplicate.status_code, duplicate.json()) == (400, {
        "message": "400 Bad request - This project is already in the job token allowlist."})
    itself = api("POST", path, json={"target_project_id": lib})
    assert (itself.status_code, itself.json()) == (400, {
        "message": "400 Bad request - Target project can't be the same as the source project"})
    assert api("POST", path, json={}).json() == {"error": "target_project_id is missing"}
    invalid = api("POST", path, json={"target_project_id": "abc"})
    assert (invalid.status_code, invalid.json()) == (400, {"error": "target_project_id is invalid"})
    for unknown in (999999, world["secret"].id):  # missing, or not visible to the caller
        response = api("POST", path, json={"target_project_id": unknown})
        assert (response.status_code, response.json()) == (404, {"message": "404 Project Not Found"})
    policies = api("POST", path, json={"target_project_id": world["secret"].id,
                                       "job_token_policies": ["read_nothing"]})
    assert policies.status_code == 404
    removed = api("DELETE", f"{path}/{app}")
    assert (removed.status_code, removed.content) == (204, b"")
    again = api("DELETE", f"{path}/{app}")
    assert (again.status_code, again.json()) == (404, {"message": "404 Not Found"})


def test_group_allowlist(forge: Forge, world: dict[str, Any]) -> None:
    api = Api(forge, world["people"]["maintainer"].token)
    lib = world["target"].id
    path = f"/projects/{lib}/job_token_scope/groups_allowlist"
    forge.add_member("maintainer", "guest", group="acme")  # must see the group it adds
    groups = requests.get(f"{forge.url}/api/v4/groups", headers={"PRIVATE-TOKEN": forge.root_token})
    acme_id = next(g["id"] for g in groups.json() if g["full_path"] == "acme")
    added = api("POST", path, json={"target_group_id": acme_id})
    assert (added.status_code, added.json()) == (201, {"source_project_id": lib,
                                                       "target_group_id": acme_id})
    assert [g["full_path"] for g in api("GET", path).json()] == ["acme"]
    duplicate = api("POST", path, json={"target_group_id": acme_id})
    assert (duplicate.status_code, duplicate.json()) == (400, {
        "message": "400 Bad request - This group is already in the job token allowlist."})
    hidden = api("POST", path, json={"target_group_id": world["hidden"]})
    assert (hidden.status_code, hidden.json()) == (404, {"message": "404 Group Not Found"})
    assert api("POST", path, json={}).json() == {"error": "target_group_id is missing"}
    assert api("DELETE", f"{path}/{acme_id}").status_code == 204
    assert api("DELETE", f"{path}/{acme_id}").status_code == 404
    assert api("DELETE", f"{path}/nope").json() == {"error": "target_group_id is invalid"}


def test_allowlist_limit_is_200_groups(forge: Forge, world: dict[str, Any]) -> None:
    from forge import domain
    from forge.models import db
    with forge.app.app_context():
        target = domain.get_project("acme/lib")
        for i in range(200):
            domain.allow_group(forge.now(), target, domain.create_group(forge.now(), f"g{i}"))
        db.session.commit()
    extra = forge.create_group("one-too-many")
    api = Api(forge, forge.root_token)
    response = api("POST", f"/projects/{world['target'].id}/job_token_scope/groups_allowlist",
                   json={"target_group_id": extra})
    assert (response.status_code, response.json()) == (400, {
        "message": "400 Bad request - The group allowlist is limited to 200 groups."})


def test_fine_grained_entry_fields_are_validated(forge: Forge, world: dict[str, Any]) -> None:
    api = Api(forge, forge.root_token)
    path = f"/projects/{world['target'].id}/job_token_scope/allowlist"
    bad = api("POST", path, json={"target_project_id": world["source"].id,
                                  "job_token_policies": ["read_everything"]})
    assert (bad.status_code, bad.json()) == (400, {
        "message": "400 Bad request - job_token_policies does not have a valid value: read_everything"})
    good = api("POST", path, json={"target_project_id": world["source"].id,
                                   "default_permissions": False,
                                   "job_token_policies": ["read_packages", "admin_releases"]})
    assert good.json()["job_token_policies"] == ["read_packages", "admin_releases"]
    assert good.json()["default_permissions"] is False


def test_scope_anonymous_gets_401_before_any_lookup(forge: Forge, world: dict[str, Any]) -> None:
    api = Api(forge, None)
    for project in (world["target"].id, 99999999, "no%2Fsuch"):
        for method, suffix in (("GET", ""), ("PATCH", ""), ("GET", "/allowlist"),
                               ("POST", "/allowlist"), ("DELETE", "/allowlist/1"),
                               ("GET", "/groups_allowlist"), ("POST", "/groups_allowlist"),
                               ("DELETE", "/groups_allowlist/1")):
            response = api(method, f"/projects/{project}/job_token_scope{suffix}",
                           json={"enabled": True, "target_project_id": 1, "target_group_id": 1})
            assert (response.status_code, response.json()) == (401, {"message": "401 Unauthorized"}), (
                method, project, suffix)


@pytest.mark.parametrize("value", ["maybe", "", "tru", "2", "null", [True], {"a": 1}])
def test_scope_enabled_must_be_a_boolean(forge: Forge, world: dict[str, Any], value: Any) -> None:
    api = Api(forge, world["people"]["maintainer"].token)
    path = f"/projects/{world['target'].id}/job_token_scope"
    response = api("PATCH", path, json={"enabled": value})
    want = {"error": "enabled is missing"} if value == "" else {"error": "enabled is invalid"}
    assert (response.status_code, response.json()) == (400, want)
    assert api("GET", path).json()["inbound_enabled"] is True  # a typo never opens the allowlist


@pytest.mark.parametrize("value,enabled", [(False, False), ("false", False), ("0", False),
                                           (True, True), ("true", True), ("1", True)])
def test_scope_enabled_spellings_grape_accepts(forge: Forge, world: dict[str, Any], value: Any,
                                               enabled: bool) -> None:
    api = Api(forge, world["people"]["maintainer"].token)
    path = f"/projects/{world['target'].id}/job_token_scope"
    assert api("PATCH", path, data={"enabled": value} if isinstance(value, str) else None,
               json=None if isinstance(value, str) else {"enabled": value}).status_code == 204
    assert api("GET", path).json()["inbound_enabled"] is enabled


def test_allowlist_entry_shows_forge_fields_only_when_sent(forge: Forge, world: dict[str, Any]) -> None:
    api = Api(forge, forge.root_token)
    path = f"/projects/{world['target'].id}/job_token_scope/allowlist"
    sent = api("POST", path, json={"target_project_id": world["source"].id, "default_permissions": "maybe"})
    assert (sent.status_code, sent.json()) == (400, {"error": "default_permissions is invalid"})
    sent = api("POST", path, json={"target_project_id": world["source"].id, "default_permissions": True})
    assert sent.json() == {"source_project_id": world["target"].id,
                           "target_project_id": world["source"].id,
                           "default_permissions": True, "job_token_policies": []}
