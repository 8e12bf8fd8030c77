"""Instance endpoints and entity shapes: /version, /metadata, namespaces, Sudo, user status,
blocking, descriptions, and the keys GitLab's API documentation lists for each entity."""

from __future__ import annotations

from datetime import datetime, timedelta
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


def test_a_personal_namespace_id_never_names_a_group(forge: Forge, api: Api) -> None:
    """Users and groups share GitLab's namespace ids: a project created with the id of a user's
    namespace lands there, not in a group that happens to have the user's id."""
    forge.create_group("acme")
    alice, bob = forge.create_user("alice"), forge.create_user("bob")
    group_id = api("GET", "/namespaces/acme").json()["id"]
    mine = Api(forge, alice.token)
    own = mine("GET", "/namespaces/alice").json()
    assert own["id"] != group_id and own["kind"] == "user"
    assert mine("GET", f"/namespaces/{own['id']}").json()["full_path"] == "alice"
    assert api("GET", f"/namespaces/{group_id}").json()["full_path"] == "acme"
    made = mine("POST", "/projects", json={"name": "tool", "namespace_id": own["id"]})
    assert made.status_code == 201, made.text
    assert (made.json()["path_with_namespace"], made.json()["namespace"]["id"]) == ("alice/tool", own["id"])
    assert api("GET", f"/users/{alice.id}").json()["namespace_id"] == own["id"]
    by_admin = api("POST", "/projects", json={"name": "given", "namespace_id": own["id"]})
    assert by_admin.json()["path_with_namespace"] == "alice/given"
    # Projects::CreateService#allowed_namespace?: anywhere else is a validation error
    invalid = (400, {"message": {"namespace": ["is not valid"]}})
    as_bob = Api(forge, bob.token)
    theirs = as_bob("POST", "/projects", json={"name": "x", "namespace_id": own["id"]})
    assert (theirs.status_code, theirs.json()) == invalid
    forge.add_member("bob", "reporter", group="acme")
    in_group = as_bob("POST", "/projects", json={"name": "x", "namespace_id": group_id})
    assert (in_group.status_code, in_group.json()) == invalid
    nowhere = as_bob("POST", "/projects", json={"name": "x", "namespace_id": 999})
    assert (nowhere.status_code, nowhere.json()) == invalid
    assert forge.last_event(action="api_create_project")["reason"] == "namespace_not_valid"
    forge.add_member("bob", "maintainer", group="acme")
    assert as_bob("POST", "/projects", json={"name": "x", "namespace_id": group_id}).status_code == 201


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


def test_sudo_without_credentials_is_401_wherever_it_is_given(forge: Forge, api: Api) -> None:
    """lib/api/helpers.rb: `sudo!` runs whenever `sudo_identifier` (`params[:sudo] ||
    env['HTTP_SUDO']`: query, form or JSON body, then the header; "" is true in Ruby) is set,
    and answers `unauthorized!` when `initial_current_user` is nil, even where an anonymous
    caller could read (a public project)."""
    forge.create_group("acme")
    alice = forge.create_user("alice")
    public = forge.create_project("acme/pub", visibility="public", files={"a": "a"}).id
    unauthorized = (401, {"message": "401 Unauthorized"})
    anonymous = Api(forge, None)
    assert anonymous("GET", f"/projects/{public}").status_code == 200
    for sudo in ("alice", ""):
        got = Api(forge, None, Sudo=sudo)("GET", f"/projects/{public}")
        assert (got.status_code, got.json()) == unauthorized, sudo
    for sudo in ("alice", "", str(alice.id)):
        got = anonymous("GET", f"/projects/{public}", params={"sudo": sudo})
        assert (got.status_code, got.json()) == unauthorized, sudo
    for sent in ({"data": {"sudo": "alice", "name": "x"}}, {"json": {"sudo": "alice", "name": "x"}}):
        got = anonymous("POST", "/projects", **sent)
        assert (got.status_code, got.json()) == unauthorized, sent
    wrong = Api(forge, "glpat-not-a-token-at-all", Sudo="alice")("GET", f"/projects/{public}")
    assert (wrong.status_code, wrong.json()) == unauthorized
    # an admin's sudo token: the parameter, wherever it is, before the header
    sudo = Api(forge, forge.root_token, Sudo="root")
    assert sudo("GET", "/user", params={"sudo": "alice"}).json()["username"] == "alice"
    assert sudo("POST", "/projects", data={"sudo": "alice", "name": "form"}).json()[
        "path_with_namespace"] == "alice/form"
    assert sudo("POST", "/projects", json={"sudo": "alice", "name": "json"}).json()[
        "path_with_namespace"] == "alice/json"
    empty = Api(forge, forge.root_token, Sudo="")("GET", "/user")
    assert (empty.status_code, empty.json()) == (404, {
        "message": "404 User with ID or username '' Not Found"})


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


def test_user_status_clears_after_and_defaults_its_emoji(forge: Forge, api: Api) -> None:
    """Users::SetStatusService: a message alone gets speech_balloon; clear_status_after is one of
    UserStatus::CLEAR_STATUS_QUICK_OPTIONS and clears the status when its time comes."""
    set_ = api("PUT", "/user/status", json={"message": "out", "clear_status_after": "30_minutes"})
    assert set_.status_code == 200, set_.text
    assert (set_.json()["emoji"], set_.json()["clear_status_at"]) == (
        "speech_balloon", (forge.now() + timedelta(minutes=30)).isoformat(timespec="milliseconds") + "Z")
    refused = api("PUT", "/user/status", json={"message": "x", "clear_status_after": "1_week"})
    assert (refused.status_code, refused.json()) == (
        400, {"error": "clear_status_after does not have a valid value"})
    forge.advance_clock(31 * 60)
    assert api("GET", "/user/status").json()["message"] is None


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


def test_release_links_are_validated_as_gitlabs_model(forge: Forge, api: Api) -> None:
    """Releases::Links::CreateService/UpdateService answer the model's full messages, as a list."""
    forge.create_group("acme")
    pid = forge.create_project("acme/app", files={"a": "a"}).id
    api("POST", f"/projects/{pid}/releases", json={"tag_name": "v1", "ref": "main"}).raise_for_status()
    links = f"/projects/{pid}/releases/v1/assets/links"
    BLOCKED = "Url is blocked: Only allowed schemes are http, https, ftp"  # noqa: N806
    first = api("POST", links, json={"name": "bin", "url": "https://example.org/bin",
                                     "direct_asset_path": "/bin/tool"})
    assert first.status_code == 201, first.text
    cases = [
        ({"name": "bin", "url": "https://example.org/bin", "direct_asset_path": "/bin/tool"},
         ["Url has already been taken", "Name has already been taken", "Filepath has already been taken"]),
        ({"name": "other", "url": "not a url"}, [BLOCKED]),
        ({"name": "ssh", "url": "ssh://example.org/x"}, [BLOCKED]),
        ({"name": "v6", "url": "http://[::1"}, ["Url is blocked: URI is invalid"]),  # unparsable
        ({"name": "odd", "url": "https://example.org/odd", "direct_asset_path": "no-slash"},
         ["Filepath is invalid"]),
    ]
    for body, messages in cases:
        refused = api("POST", links, json=body)
        assert (refused.status_code, refused.json()) == (400, {"message": messages}), body
    second = api("POST", links, json={"name": "two", "url": "ftp://example.org/two"})
    assert second.status_code == 201, second.text
    broken = api("PUT", f"{links}/{second.json()['id']}", json={"url": "http://[::1"})
    assert (broken.status_code, broken.json()) == (400, {"message": ["Url is blocked: URI is invalid"]})
    clash = api("PUT", f"{links}/{second.json()['id']}", json={"name": "bin"})
    assert (clash.status_code, clash.json()) == (400, {"message": ["Name has already been taken"]})
    empty = api("PUT", f"{links}/{second.json()['id']}", json={"link_type": "image"})
    assert (empty.status_code, empty.json()) == (
        400, {"error": "name, url are missing, at least one parameter must be provided"})
    renamed = api("PUT", f"{links}/{second.json()['id']}", json={"name": "2"})
    assert (renamed.status_code, renamed.json()["name"]) == (200, "2")
    # Releases::Link.sorted: newest first, in the list and in the release's assets
    assert [link["name"] for link in api("GET", links).json()] == ["2", "bin"]
    assets = api("GET", f"/projects/{pid}/releases/v1").json()["assets"]["links"]
    assert [link["name"] for link in assets] == ["2", "bin"]


def test_project_and_group_lists_filter_and_order_as_gitlab(forge: Forge, api: Api) -> None:
    """lib/api/projects.rb and groups.rb: newest projects first, groups by name; declared filters
    checked (a typo is 400, never a filter silently dropped) and applied."""
    forge.create_group("zeta", visibility="public")
    forge.create_group("alpha")
    forge.create_group("alpha/beta")
    alice = forge.create_user("alice")
    forge.create_project("zeta/old", visibility="public")
    forge.create_project("alpha/mid")
    forge.create_project("alpha/new", visibility="internal")
    forge.add_member(alice, "developer", project="alpha/mid")
    forge.add_member(alice, "owner", group="alpha/beta")
    names = lambda answer: [item["path_with_namespace"] for item in answer.json()]  # noqa: E731
    assert names(api("GET", "/projects")) == ["alpha/new", "alpha/mid", "zeta/old"]
    assert names(api("GET", "/projects?order_by=path&sort=asc")) == ["alpha/mid", "alpha/new", "zeta/old"]
    assert names(api("GET", "/projects?visibility=public")) == ["zeta/old"]
    assert names(api("GET", "/projects?archived=true")) == []
    mine = Api(forge, alice.token)
    assert names(mine("GET", "/projects?min_access_level=30")) == ["alpha/mid"]
    assert names(api("GET", f"/users/{alice.id}/projects?visibility=public")) == []
    for path, error in (("/projects?visibility=secret", "visibility does not have a valid value"),
                        ("/projects?order_by=stars", "order_by does not have a valid value"),
                        ("/projects?sort=up", "sort does not have a valid value"),
                        ("/projects?min_access_level=33", "min_access_level does not have a valid value"),
                        (f"/users/{alice.id}/projects?owned=maybe", "owned is invalid"),
                        ("/groups?all_available=maybe", "all_available is invalid"),
                        ("/namespaces?owned_only=maybe", "owned_only is invalid")):
        refused = api("GET", path)
        assert (refused.status_code, refused.json()) == (400, {"error": error}), path
    full = lambda answer: [item["full_path"] for item in answer.json()]  # noqa: E731
    assert full(api("GET", "/groups")) == ["alpha", "alpha/beta", "zeta"]
    assert full(api("GET", "/groups?top_level_only=true&sort=desc")) == ["zeta", "alpha"]
    assert full(mine("GET", "/groups?owned=true")) == ["alpha/beta"]
    assert full(mine("GET", "/namespaces?owned_only=true")) == ["alice", "alpha/beta"]
    assert full(api("GET", "/namespaces?top_level_only=true&search=alpha")) == ["alpha"]


def test_a_guest_sees_releases_but_not_their_code(forge: Forge, api: Api) -> None:
    """ProjectPolicy gives guests read_release; Entities::Release hides the tag, commit and sources
    from whoever may not download the code, and one release by tag needs the code (reporter)."""
    forge.create_group("acme")
    pid = forge.create_project("acme/app", files={"a": "a"}).id
    made = api("POST", f"/projects/{pid}/releases", json={"tag_name": "v1", "ref": "main", "name": "One",
                                                          "description": "notes"}).json()
    api("POST", f"/projects/{pid}/releases/v1/assets/links",
        json={"name": "bin", "url": "https://example.org/bin"}).raise_for_status()
    guest = forge.create_user("guest")
    forge.add_member(guest, "guest", project="acme/app")
    listed = Api(forge, guest.token)("GET", f"/projects/{pid}/releases")
    assert listed.status_code == 200, listed.text
    seen = listed.json()[0]
    assert seen["name"].startswith("Release-") and seen["description"] == "notes"
    assert not {"tag_name", "commit", "commit_path", "tag_path"} & seen.keys()
    assert (seen["assets"]["count"], "sources" in seen["assets"]) == (1, False)
    assert [link["name"] for link in seen["assets"]["links"]] == ["bin"]
    one = Api(forge, guest.token)("GET", f"/projects/{pid}/releases/v1")
    assert (one.status_code, one.json()) == (403, {"message": "403 Forbidden"})
    full = api("GET", f"/projects/{pid}/releases").json()[0]
    assert (full["name"], full["tag_name"], full["assets"]["count"]) == ("One", "v1", 5)
    assert full["commit"]["id"] == made["commit"]["id"]


def test_members_are_added_by_user_id_or_username(forge: Forge, api: Api) -> None:
    """lib/api/members.rb: user_id or username, mutually exclusive, one of them required."""
    forge.create_group("acme")
    pid = forge.create_project("acme/app").id
    bob = forge.create_user("bob")
    added = api("POST", f"/projects/{pid}/members", json={"username": "bob", "access_level": 30})
    assert (added.status_code, added.json()["id"], added.json()["access_level"]) == (201, bob.id, 30)
    for body, error in (
            ({"access_level": 30}, "user_id, username are missing, at least one parameter must be provided"),
            ({"user_id": bob.id, "username": "bob", "access_level": 30},
             "user_id, username are mutually exclusive")):
        refused = api("POST", f"/projects/{pid}/members", json=body)
        assert (refused.status_code, refused.json()) == (400, {"error": error})
    nobody = api("POST", f"/projects/{pid}/members", json={"username": "nobody", "access_level": 30})
    assert (nobody.status_code, nobody.json()) == (404, {"message": "404 User Not Found"})


def test_a_release_is_created_with_its_asset_links(forge: Forge, api: Api) -> None:
    """Releases::CreateService builds links_attributes from assets[links]; an invalid one fails the
    release.save! (the tag it created stays)."""
    forge.create_group("acme")
    pid = forge.create_project("acme/app", files={"a": "a"}).id
    made = api("POST", f"/projects/{pid}/releases", json={
        "tag_name": "v1", "ref": "main",
        "assets": {"links": [{"name": "bin", "url": "https://example.org/bin", "link_type": "package"},
                             {"name": "doc", "url": "https://example.org/doc",
                              "direct_asset_path": "/docs/index"}]}})
    assert made.status_code == 201, made.text
    assert [(link["name"], link["link_type"]) for link in made.json()["assets"]["links"]] == [
        ("doc", "other"), ("bin", "package")]
    assert made.json()["assets"]["count"] == 6
    assert len(api("GET", f"/projects/{pid}/releases/v1/assets/links").json()) == 2
    bad = api("POST", f"/projects/{pid}/releases", json={
        "tag_name": "v2", "ref": "main", "assets": {"links": [{"name": "x", "url": "file:///etc"}]}})
    assert (bad.status_code, bad.json()) == (400, {
        "message": "Validation failed: Links url is blocked: Only allowed schemes are http, https, ftp"})
    assert api("GET", f"/projects/{pid}/repository/tags/v2").status_code == 200
    broken = api("POST", f"/projects/{pid}/releases", json={
        "tag_name": "v2", "assets": {"links": [{"name": "x", "url": "http://[::1"}]}})
    assert (broken.status_code, broken.json()) == (400, {
        "message": "Validation failed: Links url is blocked: URI is invalid"})
    no_url = api("POST", f"/projects/{pid}/releases", json={
        "tag_name": "v3", "ref": "main", "assets": {"links": [{"name": "x"}]}})
    assert (no_url.status_code, no_url.json()) == (400, {"error": "assets[links][url] is missing"})


@pytest.mark.parametrize("value,state", [
    ("1", "on"), ("7", "on"), ("0", "off"), ("true", "on"), ("false", "off"),
    ("\u00b2", None), ("yes", None), ("-1", None),
])
def test_feature_value_is_a_boolean_or_a_whole_number(forge: Forge, api: Api, value: str,
                                                      state: str | None) -> None:
    answer = api("POST", "/features/some_flag", json={"value": value})
    if state is None:
        assert (answer.status_code, answer.json()) == (400, {"error": "value is invalid"})
    else:
        assert (answer.status_code, answer.json()["state"]) == (201, state)


def test_released_at_defaults_to_created_at_and_a_future_one_is_upcoming(forge: Forge, api: Api) -> None:
    """lib/api/releases.rb's `released_at` (DateTime): Release#set_released_at defaults it to
    created_at, upcoming_release? is a future one, and lists order by it unless asked."""
    forge.create_group("acme")
    pid = forge.create_project("acme/app", files={"a": "a"}).id
    releases = f"/projects/{pid}/releases"
    now = api("POST", releases, json={"tag_name": "v1", "ref": "main"}).json()
    assert (now["released_at"], now["upcoming_release"]) == (now["created_at"], False)
    created = datetime.fromisoformat(now["created_at"])
    soon = (created + timedelta(hours=1)).isoformat(timespec="seconds").replace("+00:00", "Z")
    future = api("POST", releases, data={"tag_name": "v2", "ref": "main", "released_at": soon})
    assert future.status_code == 201, future.text
    assert (future.json()["released_at"], future.json()["upcoming_release"]) == (
        soon.replace("Z", ".000Z"), True)
    past = api("POST", releases, json={"tag_name": "v3", "ref": "main",
                                       "released_at": "2019-03-15T08:00:00+02:00"})
    assert (past.json()["released_at"], past.json()["upcoming_release"]) == (
        "2019-03-15T06:00:00.000Z", False)

    def tags(query: str = "") -> list[str]:
        return [r["tag_name"] for r in api("GET", releases + query).json()]
    assert tags() == ["v2", "v1", "v3"]
    assert tags("?sort=asc") == ["v3", "v1", "v2"]
    assert tags("?order_by=created_at") == ["v3", "v2", "v1"]
    bad_order = api("GET", releases + "?order_by=name")
    assert (bad_order.status_code, bad_order.json()) == (400, {
        "error": "order_by does not have a valid value"})
    for value in ("soon", "2019-13-01", 5):
        bad = api("POST", releases, json={"tag_name": "v4", "ref": "main", "released_at": value})
        assert (bad.status_code, bad.json()) == (400, {"error": "released_at is invalid"})
    moved = api("PUT", f"{releases}/v3", json={"released_at": "2099-01-01"})
    assert (moved.status_code, moved.json()["released_at"], moved.json()["upcoming_release"]) == (
        200, "2099-01-01T00:00:00.000Z", True)
    assert api("PUT", f"{releases}/v3", json={"released_at": "yesterday"}).json() == {
        "error": "released_at is invalid"}
    forge.advance_clock(2 * 3600)
    assert api("GET", f"{releases}/v2").json()["upcoming_release"] is False


def test_a_taken_path_is_gitlabs_400_for_projects_and_groups(forge: Forge, api: Api) -> None:
    """What idempotent scripts match: render_validation_error! for projects, and groups.rb's
    'Failed to save group {:path=>[...]}' (forge answered 409 with its own words)."""
    acme = api("POST", "/groups", json={"name": "Acme", "path": "acme"}).json()
    again = api("POST", "/groups", json={"name": "Acme", "path": "acme"})
    assert (again.status_code, again.json()) == (
        400, {"message": 'Failed to save group {:path=>["has already been taken"]}'})
    forge.create_user("bob")
    user_path = api("POST", "/groups", json={"name": "Bob", "path": "bob"})
    assert (user_path.status_code, user_path.json()) == (
        400, {"message": 'Failed to save group {:path=>["has already been taken"]}'})
    sub = api("POST", "/groups", json={"name": "Sub", "path": "bob", "parent_id": acme["id"]})
    assert sub.status_code == 201, sub.text
    first = api("POST", "/projects", json={"name": "App", "namespace_id": acme["id"]})
    assert first.status_code == 201, first.text
    taken = api("POST", "/projects", json={"name": "App", "namespace_id": acme["id"]})
    assert (taken.status_code, taken.json()) == (400, {"message": {
        "project_namespace.name": ["has already been taken"], "name": ["has already been taken"],
        "path": ["has already been taken"]}})
    renamed = api("POST", "/projects", json={"name": "Other", "path": "app", "namespace_id": acme["id"]})
    assert (renamed.status_code, renamed.json()) == (400, {"message": {"path": ["has already been taken"]}})
    elsewhere = api("POST", "/projects", json={"name": "App"})  # root's own namespace
    assert elsewhere.status_code == 201, elsewhere.text


def test_a_taken_username_or_email_is_gitlabs_409(forge: Forge, api: Api) -> None:
    """lib/api/users.rb: conflict!('Email has already been taken'), then the username."""
    forge.create_user("bob", email="bob@example.org")
    username, email = "Username has already been taken", "Email has already been taken"
    for body, message in (({"username": "bob", "email": "other@example.org"}, username),
                          ({"username": "newbie", "email": "BOB@example.org"}, email),
                          ({"username": "bob", "email": "bob@example.org"}, email)):
        taken = api("POST", "/users", json={**body, "name": "N", "password": "a-long-password-1"})
        assert (taken.status_code, taken.json()) == (409, {"message": message}), body
