"""Instance endpoints and entity shapes: /version, /metadata, namespaces, Sudo, user status,
blocking, descriptions, and the keys GitLab's API documentation lists for each entity."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from forge.testing import Forge


class Api:
    def __init__(self, forge: Forge, token: str | None, **headers: str) -> None:
        self.base = f"{forge.url}/api/v4"
        self.headers = {**({"PRIVATE-TOKEN": token} if token else {}), **headers}

    def __call__(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return requests.request(method, self.base + path, headers=self.headers, **kwargs)


@pytest.fixture
def api(forge: Forge) -> Api:
    return Api(forge, forge.root_token)


def test_version_and_metadata_name_the_emulated_gitlab(forge: Forge, api: Api) -> None:
    for path in ("/version", "/metadata"):
        response = api("GET", path)
        assert response.json() == {
            "version": "18.3.0", "revision": "forge0000000", "enterprise": False,
            "kas": {"enabled": False, "externalUrl": None, "externalK8sProxyUrl": None, "version": None}}
        anonymous = Api(forge, None)("GET", path)
        assert (anonymous.status_code, anonymous.json()) == (401, {"message": "401 Unauthorized"})


def test_namespaces_by_id_or_path_for_members_only(forge: Forge, api: Api) -> None:
    forge.create_group("acme")
    forge.create_group("acme/platform")
    alice = forge.create_user("alice")
    forge.add_member(alice, "developer", group="acme/platform")
    sub = api("GET", "/namespaces/acme%2Fplatform").json()
    assert (sub["kind"], sub["full_path"], sub["parent_id"]) == ("group", "acme/platform",
                                                                  api("GET", "/namespaces/acme").json()["id"])
    assert api("GET", f"/namespaces/{sub['id']}").json()["full_path"] == "acme/platform"
    mine = Api(forge, alice.token)
    assert [n["full_path"] for n in mine("GET", "/namespaces").json()] == ["alice", "acme/platform"]
    assert mine("GET", "/namespaces/alice").json()["kind"] == "user"
    hidden = mine("GET", "/namespaces/acme")
    assert (hidden.status_code, hidden.json()) == (404, {"message": "404 Namespace Not Found"})
    assert [n["full_path"] for n in api("GET", "/namespaces?search=plat").json()] == ["acme/platform"]
    assert mine("GET", "/namespaces/alice/exists").json()["exists"] is True


def test_sudo_acts_as_the_named_user_for_an_admin_sudo_token(forge: Forge, api: Api) -> None:
    alice = forge.create_user("alice")
    as_alice = Api(forge, forge.root_token, Sudo="alice")
    assert as_alice("GET", "/user").json()["username"] == "alice"
    made = as_alice("POST", "/projects", json={"name": "mine"}).json()
    assert made["path_with_namespace"] == "alice/mine"
    assert Api(forge, forge.root_token, Sudo=str(alice.id))("GET", "/user").json()["id"] == alice.id
    missing = Api(forge, forge.root_token, Sudo="nobody")("GET", "/user")
    assert (missing.status_code, missing.json()) == (404, {
        "message": "404 User with ID or username 'nobody' Not Found"})
    not_admin = Api(forge, alice.token, Sudo="root")("GET", "/user")
    assert (not_admin.status_code, not_admin.json()) == (403, {
        "message": "403 Forbidden - Must be admin to use sudo"})
    no_scope = Api(forge, forge.create_token("root", ("api",)), Sudo="alice")("GET", "/user")
    assert (no_scope.status_code, no_scope.json()["scope"]) == (403, "sudo")
    anonymous = Api(forge, None, Sudo="alice")("GET", "/projects")
    assert (anonymous.status_code, anonymous.json()) == (401, {"message": "401 Unauthorized"})


def test_block_and_unblock_answer_as_gitlab(forge: Forge, api: Api) -> None:
    alice = forge.create_user("alice")
    assert (api("POST", f"/users/{alice.id}/block").status_code, api("GET", "/users?blocked=true").json()[0][
        "username"]) == (201, "alice")
    again = api("POST", f"/users/{alice.id}/block")
    assert (again.status_code, again.json()) == (201, None)
    assert api("POST", f"/users/{alice.id}/unblock").json() is True
    unblocked = api("POST", f"/users/{alice.id}/unblock")
    assert (unblocked.status_code, unblocked.json()) == (201, False)
    root_id = api("GET", "/user").json()["id"]
    itself = api("POST", f"/users/{root_id}/block")
    assert (itself.status_code, itself.json()) == (403, {
        "message": "403 Forbidden - The API you are trying to access is not allowed for you"})
    assert api("GET", "/users?blocked=maybe").json() == {"error": "blocked is invalid"}


def test_user_status_is_kept(forge: Forge, api: Api) -> None:
    assert api("GET", "/user/status").json()["message"] is None
    api("PUT", "/user/status", json={"message": "Test", "emoji": "thumbsup"})
    status = api("GET", "/user/status").json()
    assert (status["message"], status["emoji"], status["availability"]) == ("Test", "thumbsup", "not_set")


def test_descriptions_are_kept(forge: Forge, api: Api) -> None:
    group = api("POST", "/groups", json={"name": "Acme", "path": "acme", "description": "all"}).json()
    assert group["description"] == "all"
    assert api("PUT", f"/groups/{group['id']}", json={"description": "more"}).json()["description"] == "more"
    project = api("POST", "/projects", json={"name": "app", "namespace_id": group["id"],
                                             "description": "the app"}).json()
    assert project["description"] == "the app"
    assert api("PUT", "/projects/acme%2Fapp", json={"description": "x"}).json()["description"] == "x"
    assert api("GET", f"/groups/{group['id']}/descendant_groups").json() == []


# Keys GitLab's API documentation shows for each entity (null where forge has no such concept).
PROJECT_KEYS = {"id", "description", "name", "name_with_namespace", "path", "path_with_namespace",
                "created_at", "default_branch", "tag_list", "topics", "ssh_url_to_repo",
                "http_url_to_repo", "web_url", "readme_url", "forks_count", "avatar_url", "star_count",
                "last_activity_at", "namespace", "empty_repo", "archived", "visibility", "_links"}
GROUP_KEYS = {"id", "name", "path", "description", "visibility", "avatar_url", "web_url", "full_name",
              "full_path", "parent_id", "created_at", "lfs_enabled", "request_access_enabled"}
USER_KEYS = {"id", "username", "name", "state", "locked", "avatar_url", "web_url", "created_at", "bio",
             "public_email", "email", "is_admin", "identities", "can_create_group", "external",
             "two_factor_enabled", "last_sign_in_at", "confirmed_at"}
BRANCH_KEYS = {"name", "merged", "protected", "default", "developers_can_push", "developers_can_merge",
               "can_push", "web_url", "commit"}
TAG_KEYS = {"name", "message", "target", "commit", "release", "protected", "created_at"}
COMMIT_KEYS = {"id", "short_id", "title", "author_name", "author_email", "authored_date",
               "committer_name", "committer_email", "committed_date", "created_at", "message",
               "parent_ids", "web_url", "trailers", "extended_trailers"}
RELEASE_KEYS = {"tag_name", "description", "name", "created_at", "released_at", "author", "commit",
                "upcoming_release", "commit_path", "tag_path", "assets", "evidences", "_links"}


def test_entities_have_gitlabs_keys(forge: Forge, api: Api) -> None:
    forge.create_group("acme")
    pid = forge.create_project("acme/app", files={"a": "a"}).id
    api("POST", f"/projects/{pid}/releases", json={"tag_name": "v1", "ref": "main"})
    for path, keys in ((f"/projects/{pid}", PROJECT_KEYS), ("/groups/acme", GROUP_KEYS), ("/user", USER_KEYS),
                       (f"/projects/{pid}/repository/branches/main", BRANCH_KEYS),
                       (f"/projects/{pid}/repository/tags/v1", TAG_KEYS),
                       (f"/projects/{pid}/repository/commits/main", COMMIT_KEYS),
                       (f"/projects/{pid}/releases/v1", RELEASE_KEYS)):
        assert keys <= api("GET", path).json().keys(), (path, keys - api("GET", path).json().keys())
    assert api("GET", f"/projects/{pid}/repository/tags/v1").json()["release"] == {
        "tag_name": "v1", "description": ""}
