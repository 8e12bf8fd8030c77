"""Repository content over the REST API: empty repositories, commits, trees, archives, compare."""

from __future__ import annotations

import base64
import io
import tarfile
import zipfile
from typing import Any

import pytest
import requests

from forge.testing import Forge


class Api:
    def __init__(self, forge: Forge, token: str | None) -> None:
        self.base = f"{forge.url}/api/v4"
        self.headers = {"PRIVATE-TOKEN": token} if token else {}

    def __call__(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return requests.request(method, self.base + path, headers=self.headers, **kwargs)


@pytest.fixture
def api(forge: Forge) -> Api:
    return Api(forge, forge.root_token)


def _empty_project(api: Api, name: str = "empty") -> dict[str, Any]:
    created = api("POST", "/projects", json={"name": name})
    assert created.status_code == 201, created.text
    assert created.json()["empty_repo"] is True
    return dict(created.json())


def test_empty_repository_first_file_creates_the_default_branch(forge: Forge, api: Api) -> None:
    project = _empty_project(api)
    pid = project["id"]
    written = api("POST", f"/projects/{pid}/repository/files/README.md",
                  json={"branch": "main", "content": "hello\n", "commit_message": "first"})
    assert (written.status_code, written.json()) == (201, {"file_path": "README.md", "branch": "main"})
    assert [b["name"] for b in api("GET", f"/projects/{pid}/repository/branches").json()] == ["main"]
    assert api("GET", f"/projects/{pid}").json()["empty_repo"] is False
    raw = api("GET", f"/projects/{pid}/repository/files/README.md/raw")  # no ref: the default branch
    assert (raw.status_code, raw.text) == (200, "hello\n")
    assert api("GET", f"/projects/{pid}/repository/files/README.md/raw?ref=HEAD").text == "hello\n"
    second = api("POST", f"/projects/{pid}/repository/files/b.txt",
                 json={"branch": "other", "content": "x", "commit_message": "m"})
    assert (second.status_code, second.json()) == (400, {
        "message": "400 Bad request - You can only create or edit files when you are on a branch"})


def test_empty_repository_first_commit_through_the_commits_api(forge: Forge, api: Api) -> None:
    pid = _empty_project(api)["id"]
    commit = api("POST", f"/projects/{pid}/repository/commits", json={
        "branch": "main", "commit_message": "init",
        "actions": [{"action": "create", "file_path": "a/b.txt", "content": "b"},
                    {"action": "create", "file_path": "c.bin",
                     "content": base64.b64encode(b"\0\1").decode(), "encoding": "base64"}]})
    assert commit.status_code == 201, commit.text
    assert commit.json()["title"] == "init" and commit.json()["parent_ids"] == []
    tree = api("GET", f"/projects/{pid}/repository/tree?recursive=true").json()
    assert [(e["path"], e["type"]) for e in tree] == [("a", "tree"), ("a/b.txt", "blob"), ("c.bin", "blob")]


def test_empty_repository_branch_create_adds_readme_to_default_branch_first(forge: Forge, api: Api) -> None:
    pid = _empty_project(api)["id"]
    created = api("POST", f"/projects/{pid}/repository/branches", json={"branch": "feature", "ref": "main"})
    assert created.status_code == 201, created.text
    assert created.json()["name"] == "feature"
    names = [b["name"] for b in api("GET", f"/projects/{pid}/repository/branches").json()]
    assert names == ["feature", "main"]
    readme = api("GET", f"/projects/{pid}/repository/files/README.md?ref=main").json()
    assert (readme["size"], readme["content"]) == (0, "")
    main = api("GET", f"/projects/{pid}/repository/commits/main").json()
    assert main["title"] == "Add README.md"
    again = api("POST", f"/projects/{pid}/repository/branches", json={"branch": "main", "ref": "main"})
    assert (again.status_code, again.json()) == (400, {"message": "Branch already exists"})


@pytest.fixture
def app(forge: Forge) -> int:
    forge.create_group("acme")
    return forge.create_project("acme/app", files={"README.md": "# app\n", "src/a.py": "a = 1\n"}).id


def test_commits_create_list_diff_refs(forge: Forge, api: Api, app: int) -> None:
    made = api("POST", f"/projects/{app}/repository/commits", json={
        "branch": "feature", "start_branch": "main", "commit_message": "change things",
        "author_name": "Ann", "author_email": "ann@example.org",
        "actions": [{"action": "update", "file_path": "README.md", "content": "# app 2\n"},
                    {"action": "move", "previous_path": "src/a.py", "file_path": "src/b.py"},
                    {"action": "create", "file_path": "run.sh", "content": "echo",
                     "execute_filemode": True}]})
    assert made.status_code == 201, made.text
    body = made.json()
    assert (body["author_name"], body["author_email"]) == ("Ann", "ann@example.org")
    assert body["stats"]["total"] == 5
    assert {"trailers", "extended_trailers", "web_url", "parent_ids"} <= body.keys()
    on_main = api("GET", f"/projects/{app}/repository/commits").json()
    assert body["id"] not in [c["id"] for c in on_main]
    assert body["id"] in [c["id"] for c in api("GET", f"/projects/{app}/repository/commits?all=true").json()]
    on_src = api("GET", f"/projects/{app}/repository/commits?ref_name=feature&path=src").json()
    assert [c["id"] for c in on_src] == [body["id"], on_main[0]["id"]]
    assert api("GET", f"/projects/{app}/repository/commits?ref_name=feature&since=2999-01-01T00:00:00Z"
               ).json() == []
    bad = api("GET", f"/projects/{app}/repository/commits?since=yesterday")
    assert (bad.status_code, bad.json()) == (400, {"error": "since is invalid"})
    diff = api("GET", f"/projects/{app}/repository/commits/{body['id']}/diff").json()
    assert {d["new_path"] for d in diff} == {"README.md", "src/b.py", "run.sh", "src/a.py"}
    readme = next(d for d in diff if d["new_path"] == "README.md")
    assert "@@" in readme["diff"] and "+# app 2" in readme["diff"]
    assert api("GET", f"/projects/{app}/repository/commits/{body['id']}/refs").json() == [
        {"type": "branch", "name": "feature"}]
    assert api("GET", f"/projects/{app}/repository/commits/{body['id']}/merge_requests").json() == []
    exists = api("POST", f"/projects/{app}/repository/commits", json={
        "branch": "main", "commit_message": "m", "actions": [{"action": "create", "file_path": "README.md"}]})
    assert (exists.status_code, exists.json()) == (400, {
        "message": "400 Bad request - A file with this name already exists"})
    taken = api("POST", f"/projects/{app}/repository/commits", json={
        "branch": "feature", "start_branch": "main", "commit_message": "m",
        "actions": [{"action": "create", "file_path": "x"}]})
    assert taken.status_code == 400 and "already exists" in taken.json()["message"]
    assert api("POST", f"/projects/{app}/repository/commits", json={
        "branch": "main", "commit_message": "m", "actions": [{"action": "explode", "file_path": "x"}]
    }).json() == {"error": "actions[action] does not have a valid value"}
    assert api("POST", f"/projects/{app}/repository/commits", json={
        "branch": "main", "commit_message": "m"}).json() == {"error": "actions is missing"}


def test_file_delete_and_head(forge: Forge, api: Api, app: int) -> None:
    head = api("HEAD", f"/projects/{app}/repository/files/README.md?ref=main")
    assert (head.status_code, head.headers["X-Gitlab-File-Path"]) == (200, "README.md")
    gone = api("DELETE", f"/projects/{app}/repository/files/README.md",
               json={"branch": "main", "commit_message": "rm"})
    assert gone.status_code == 204
    again = api("DELETE", f"/projects/{app}/repository/files/README.md",
                json={"branch": "main", "commit_message": "rm"})
    assert (again.status_code, again.json()) == (400, {
        "message": "400 Bad request - A file with this name doesn't exist"})


def test_tree_blob_archive_compare(forge: Forge, api: Api, app: int) -> None:
    top = api("GET", f"/projects/{app}/repository/tree").json()
    assert [(e["name"], e["type"], e["mode"]) for e in top] == [("README.md", "blob", "100644"),
                                                                  ("src", "tree", "040000")]
    assert [e["path"] for e in api("GET", f"/projects/{app}/repository/tree?path=src").json()] == ["src/a.py"]
    assert api("GET", f"/projects/{app}/repository/tree?path=nope").status_code == 404
    blob = api("GET", f"/projects/{app}/repository/blobs/{top[0]['id']}/raw")
    assert (blob.status_code, blob.text) == (200, "# app\n")
    for suffix, check in (("", tarfile.is_tarfile), (".tar.gz", tarfile.is_tarfile),
                          (".tar.bz2", tarfile.is_tarfile), (".tar", tarfile.is_tarfile),
                          (".zip", zipfile.is_zipfile)):
        archive = api("GET", f"/projects/{app}/repository/archive{suffix}")
        assert archive.status_code == 200 and check(io.BytesIO(archive.content)), suffix
    with tarfile.open(fileobj=io.BytesIO(api("GET", f"/projects/{app}/repository/archive").content)) as tar:
        names = tar.getnames()
    assert any(n.endswith("/src/a.py") for n in names) and names[0].startswith("app-main-")
    assert api("GET", f"/projects/{app}/repository/archive.rar").status_code == 404
    api("POST", f"/projects/{app}/repository/commits", json={
        "branch": "topic", "start_branch": "main", "commit_message": "t",
        "actions": [{"action": "create", "file_path": "t.txt", "content": "t\n"}]})
    compared = api("GET", f"/projects/{app}/repository/compare?from=main&to=topic").json()
    assert [c["title"] for c in compared["commits"]] == ["t"]
    assert [d["new_path"] for d in compared["diffs"]] == ["t.txt"]
    assert compared["compare_same_ref"] is False
    missing = api("GET", f"/projects/{app}/repository/compare?from=main&to=nope")
    assert missing.status_code == 404
    snap = api("GET", f"/projects/{app}/snapshot")
    assert snap.status_code == 200 and tarfile.is_tarfile(io.BytesIO(snap.content))


def test_cherry_pick_and_revert_as_gitlab(forge: Forge, api: Api, app: int) -> None:
    made = api("POST", f"/projects/{app}/repository/commits", json={
        "branch": "main", "commit_message": "add c",
        "actions": [{"action": "create", "file_path": "c.txt", "content": "c\n"}]}).json()
    api("POST", f"/projects/{app}/repository/branches", json={"branch": "old", "ref": made["parent_ids"][0]})
    pick = f"/projects/{app}/repository/commits/{made['id']}/cherry_pick"
    picked = api("POST", pick, json={"branch": "old"})
    assert picked.status_code == 201, picked.text
    assert picked.json()["message"] == f"add c\n\n(cherry picked from commit {made['id']})"
    again = api("POST", pick, json={"branch": "old"})
    assert (again.status_code, again.json()["error_code"]) == (400, "empty")
    assert again.json()["message"].startswith("Sorry, we cannot cherry-pick this commit automatically.")
    reverted = api("POST", f"/projects/{app}/repository/commits/{made['id']}/revert", json={"branch": "main"})
    assert reverted.json()["message"] == f'Revert "add c"\n\nThis reverts commit {made["id"]}'
    assert api("GET", f"/projects/{app}/repository/files/c.txt?ref=main").status_code == 404
    twice = api("POST", f"/projects/{app}/repository/commits/{made['id']}/revert", json={"branch": "main"})
    assert (twice.status_code, twice.json()["error_code"]) == (400, "empty")
    base = api("GET", f"/projects/{app}/repository/merge_base",
               params={"refs[]": ["main", "old"]}).json()
    assert base["id"] == made["parent_ids"][0]
    one = api("GET", f"/projects/{app}/repository/merge_base", params={"refs[]": ["main"]})
    assert (one.status_code, one.json()) == (400, {"message": "Provide at least 2 refs"})
    blame = api("GET", f"/projects/{app}/repository/files/README.md/blame?ref=main").json()
    assert [(b["commit"]["title"], b["lines"]) for b in blame] == [("Initial commit", ["# app"])]


def test_package_lists_and_project_groups(forge: Forge, api: Api, app: int) -> None:
    assert api("PUT", f"/projects/{app}/packages/generic/tool/1.0/a.bin", data=b"a").status_code == 201
    assert api("PUT", f"/projects/{app}/packages/generic/tool/1.0/b.bin", data=b"b").status_code == 201
    packages = api("GET", f"/projects/{app}/packages").json()
    assert [(p["name"], p["version"], p["package_type"]) for p in packages] == [("tool", "1.0", "generic")]
    assert [p["name"] for p in api("GET", "/groups/acme/packages").json()] == ["tool"]
    assert [g["full_path"] for g in api("GET", f"/projects/{app}/groups").json()] == ["acme"]
