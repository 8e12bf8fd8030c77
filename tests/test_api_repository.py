"""Repository content over the REST API: empty repositories, commits, trees, archives, compare."""

from __future__ import annotations

import base64
import io
import json
import subprocess
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
        "message": "You can only create or edit files when you are on a branch"})


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


def test_commit_actions_as_curl_form_fields(forge: Forge, api: Api, app: int) -> None:
    # Rack nests `actions[][key]` into a list of hashes; a key seen again starts the next one
    fields = ["branch=feature", "start_branch=main", "commit_message=from a form",
              "actions[][action]=create", "actions[][file_path]=new.txt",
              "actions[][action]=update", "actions[][file_path]=README.md",
              "actions[][action]=delete", "actions[][file_path]=src/a.py"]
    command = ["curl", "-s", "-w", "\n%{http_code}", "-H", f"PRIVATE-TOKEN: {forge.root_token}",
               *[arg for field in fields[:5] for arg in ("-d", field)],
               "--data-urlencode", "actions[][content]=a & b\n",
               *[arg for field in fields[5:7] for arg in ("-d", field)],
               "--data-urlencode", "actions[][content]=# changed\n",
               *[arg for field in fields[7:] for arg in ("-d", field)],
               f"{api.base}/projects/{app}/repository/commits"]
    body, status = subprocess.run(command, capture_output=True, text=True, check=True).stdout.rsplit("\n", 1)
    assert status == "201", body
    assert json.loads(body)["title"] == "from a form"
    raw = f"/projects/{app}/repository/files/%s/raw?ref=feature"
    assert api("GET", raw % "new.txt").text == "a & b\n"
    assert api("GET", raw % "README.md").text == "# changed\n"
    assert api("GET", raw % "src%2Fa.py").status_code == 404
    missing = api("POST", f"/projects/{app}/repository/commits", data=[
        ("branch", "main"), ("commit_message", "m"), ("actions[][file_path]", "x")])
    assert (missing.status_code, missing.json()) == (400, {"error": "actions[action] is missing"})


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
        "message": "A file with this name already exists"})
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
        "message": "A file with this name doesn't exist"})


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


def _member_api(forge: Forge, project: int | str, username: str, role: str) -> Api:
    user = forge.create_user(username)
    forge.add_member(username, role, project=project)
    return Api(forge, user.token)


def test_commit_refused_on_a_protected_branch_with_gitlabs_messages(forge: Forge, api: Api, app: int) -> None:
    dev = _member_api(forge, "acme/app", "dev", "developer")
    reporter = _member_api(forge, "acme/app", "rep", "reporter")
    action = [{"action": "create", "file_path": "x.txt", "content": "x"}]
    # lib/api/commits.rb authorize_push_to_branch!: a 403 with the reason
    for who in (dev, reporter):
        refused = who("POST", f"/projects/{app}/repository/commits",
                      json={"branch": "main", "commit_message": "m", "actions": action})
        assert (refused.status_code, refused.json()) == (
            403, {"message": "403 Forbidden - You are not allowed to push into this branch"})
    picked = dev("POST", f"/projects/{app}/repository/commits/main/revert", json={"branch": "main"})
    assert (picked.status_code, picked.json()) == (
        403, {"message": "403 Forbidden - You are not allowed to push into this branch"})
    # lib/api/files.rb renders Commits::CreateService's error as a bare 400
    written = dev("POST", f"/projects/{app}/repository/files/x.txt",
                  json={"branch": "main", "content": "x", "commit_message": "m"})
    assert (written.status_code, written.json()) == (
        400, {"message": "You are not allowed to push into this branch"})
    assert reporter("POST", f"/projects/{app}/repository/files/x.txt", json={
        "branch": "main", "content": "x", "commit_message": "m"}).json() == {"message": "403 Forbidden"}
    # an unprotected branch is the developer's
    made = dev("POST", f"/projects/{app}/repository/commits",
               json={"branch": "topic", "start_branch": "main", "commit_message": "m", "actions": action})
    assert made.status_code == 201, made.text
    again = dev("POST", f"/projects/{app}/repository/commits",
                json={"branch": "topic", "start_branch": "main", "commit_message": "m", "actions": action})
    assert (again.status_code, again.json()) == (400, {
        "message": "A branch called 'topic' already exists. Switch to that branch in order to make changes"})


def test_commit_anonymous_on_a_public_project_is_401(forge: Forge, api: Api) -> None:
    forge.create_group("pub", visibility="public")
    pid = forge.create_project("pub/site", visibility="public", files={"a": "a"}).id
    refused = Api(forge, None)("POST", f"/projects/{pid}/repository/commits", json={
        "branch": "main", "commit_message": "m",
        "actions": [{"action": "create", "file_path": "x", "content": "x"}]})
    assert (refused.status_code, refused.json()) == (401, {"message": "401 Unauthorized"})


def test_commit_from_start_sha_as_gitlab(forge: Forge, api: Api, app: int) -> None:
    base = api("GET", f"/projects/{app}/repository/commits/main").json()["id"]
    action = [{"action": "create", "file_path": "s.txt", "content": "s"}]
    made = api("POST", f"/projects/{app}/repository/commits", json={
        "branch": "from-sha", "start_sha": base, "commit_message": "m", "actions": action})
    assert made.status_code == 201, made.text
    assert made.json()["parent_ids"] == [base]
    for start_sha, message in (("deadbeef", "Invalid start_sha 'deadbeef'"),
                               ("f" * 40, f"Cannot find start_sha '{'f' * 40}'")):
        refused = api("POST", f"/projects/{app}/repository/commits", json={
            "branch": "other", "start_sha": start_sha, "commit_message": "m", "actions": action})
        assert (refused.status_code, refused.json()) == (400, {"message": message})
    both = api("POST", f"/projects/{app}/repository/commits", json={
        "branch": "other", "start_sha": base, "start_branch": "main", "commit_message": "m",
        "actions": action})
    assert (both.status_code, both.json()) == (
        400, {"error": "start_branch, start_sha are mutually exclusive"})


# GitLab marks only some repository reads `job_token_allowed` (lib/api/files.rb: raw; lib/api/commits.rb:
# one commit and its merge requests; branches and tags). Elsewhere a job token is no credential, so a
# private project answers 404 even to a job its allowlist lets in.
JOB_TOKEN_READS = ["/repository/files/README.md/raw", "/repository/commits/main",
                   "/repository/commits/main/merge_requests", "/repository/branches", "/repository/tags"]
NOT_JOB_TOKEN_READS = ["/repository/tree", "/repository/archive", "/repository/archive.zip",
                       "/repository/compare?from=main&to=main", "/repository/commits",
                       "/repository/commits/main/diff", "/repository/commits/main/refs",
                       "/repository/merge_base?refs[]=main&refs[]=main",
                       "/repository/files/README.md?ref=main", "/repository/files/README.md/blame?ref=main",
                       "/repository/blobs/{blob}/raw", "/repository/blobs/{blob}"]


def test_job_token_counts_only_on_gitlabs_job_token_reads(forge: Forge, api: Api, app: int) -> None:
    forge.create_project("acme/ci", files={"a": "a"})
    forge.create_user("bob")
    for project in ("acme/app", "acme/ci"):
        forge.add_member("bob", "developer", project=project)
    forge.allow("acme/app", source_project="acme/ci")
    job = forge.start_job("acme/ci", "bob")
    blob = api("GET", f"/projects/{app}/repository/files/README.md?ref=main").json()["blob_id"]
    headers = {"JOB-TOKEN": job.token}
    for path in JOB_TOKEN_READS:
        answer = requests.get(f"{forge.url}/api/v4/projects/{app}{path}", headers=headers)
        assert answer.status_code == 200, (path, answer.text)
    for path in NOT_JOB_TOKEN_READS:
        answer = requests.get(f"{forge.url}/api/v4/projects/{app}{path.format(blob=blob)}", headers=headers)
        assert (answer.status_code, answer.json()) == (404, {"message": "404 Project Not Found"}), path


def test_default_branch_change_moves_head_and_needs_the_branch(forge: Forge, api: Api, app: int) -> None:
    refused = api("PUT", f"/projects/{app}", json={"default_branch": "nope"})
    assert (refused.status_code, refused.json()) == (
        400, {"message": {"base": ["Could not change HEAD: branch 'nope' does not exist"]}})
    assert api("GET", f"/projects/{app}").json()["default_branch"] == "main"
    api("POST", f"/projects/{app}/repository/commits", json={
        "branch": "develop", "start_branch": "main", "commit_message": "dev",
        "actions": [{"action": "update", "file_path": "README.md", "content": "develop\n"}],
    }).raise_for_status()
    moved = api("PUT", f"/projects/{app}", json={"default_branch": "develop"})
    assert (moved.status_code, moved.json()["default_branch"]) == (200, "develop")
    assert api("GET", f"/projects/{app}/repository/files/README.md/raw?ref=HEAD").text == "develop\n"
    assert api("GET", f"/projects/{app}/repository/files/README.md/raw").text == "develop\n"
    url = forge.clone_url("acme/app", token=forge.root_token)
    heads = subprocess.run(["git", "ls-remote", "--symref", url, "HEAD"],
                           capture_output=True, text=True, check=True).stdout
    assert heads.startswith("ref: refs/heads/develop\tHEAD"), heads
    # an empty repository takes any name: its first commit creates that branch
    empty = _empty_project(api, "blank")["id"]
    assert api("PUT", f"/projects/{empty}", json={"default_branch": "trunk"}).status_code == 200
    api("POST", f"/projects/{empty}/repository/files/a.txt",
        json={"branch": "trunk", "content": "a", "commit_message": "m"}).raise_for_status()
    assert api("GET", f"/projects/{empty}/repository/files/a.txt/raw?ref=HEAD").text == "a"


def test_commit_reads_take_gitlabs_declared_parameters(forge: Forge, api: Api, app: int) -> None:
    """CommitDetail has stats; with_stats, author, the cherry-pick message are honoured; every other
    declared parameter of these endpoints is checked as Grape does."""
    made = api("POST", f"/projects/{app}/repository/commits", json={
        "branch": "main", "commit_message": "two lines", "author_name": "Ann",
        "author_email": "ann@example.org",
        "actions": [{"action": "create", "file_path": "n.txt", "content": "a\nb\n"}]}).json()
    one = api("GET", f"/projects/{app}/repository/commits/{made['id']}").json()
    assert (one["stats"], one["project_id"], one["status"], one["last_pipeline"]) == (
        {"additions": 2, "deletions": 0, "total": 2}, app, None, None)
    assert "stats" not in api("GET", f"/projects/{app}/repository/commits/main?stats=false").json()
    listed = api("GET", f"/projects/{app}/repository/commits?with_stats=true").json()
    assert [c["stats"]["additions"] for c in listed][:1] == [2]
    by_ann = api("GET", f"/projects/{app}/repository/commits?author=ann").json()
    assert [c["id"] for c in by_ann] == [made["id"]]
    picked = api("POST", f"/projects/{app}/repository/commits/{made['id']}/revert", json={"branch": "main"})
    assert picked.status_code == 201, picked.text
    again = api("POST", f"/projects/{app}/repository/commits/{made['id']}/cherry_pick",
                json={"branch": "main", "message": "bring it back"})
    assert (again.status_code, again.json()["message"]) == (201, "bring it back")
    for path, error in (
            ("/repository/commits?with_stats=maybe", "with_stats is invalid"),
            ("/repository/commits?trailers=maybe", "trailers is invalid"),
            ("/repository/commits?order=newest", "order does not have a valid value"),
            ("/repository/commits/main?stats=maybe", "stats is invalid"),
            ("/repository/commits/main/diff?unidiff=maybe", "unidiff is invalid"),
            ("/repository/archive?include_lfs_blobs=maybe", "include_lfs_blobs is invalid"),
            ("/repository/compare?from=main&to=main&unidiff=maybe", "unidiff is invalid"),
            ("/repository/compare?from=main&to=main&from_project_id=x", "from_project_id is invalid"),
            ("/repository/tree?pagination=pages", "pagination does not have a valid value"),
            ("/repository/tree?pagination=none", 'pagination cannot be "none" unless "recursive" is true')):
        refused = api("GET", f"/projects/{app}{path}")
        assert (refused.status_code, refused.json()) == (400, {"error": error}), path
    fork = api("GET", f"/projects/{app}/repository/compare?from=main&to=main&from_project_id=999")
    assert (fork.status_code, fork.json()) == (
        400, {"message": f"Target project id:999 is not a fork of project id:{app}"})


def test_blob_by_id_as_json(forge: Forge, api: Api, app: int) -> None:
    blob = api("GET", f"/projects/{app}/repository/files/README.md?ref=main").json()["blob_id"]
    answer = api("GET", f"/projects/{app}/repository/blobs/{blob}")
    assert (answer.status_code, answer.json()) == (200, {
        "size": 6, "encoding": "base64", "content": base64.b64encode(b"# app\n").decode(), "sha": blob})
    missing = api("GET", f"/projects/{app}/repository/blobs/{'0' * 40}")
    assert (missing.status_code, missing.json()) == (404, {"message": "404 Blob Not Found"})


def test_branch_entity_answers_for_the_caller(forge: Forge, api: Api, app: int) -> None:
    """Entities::Branch: can_push is the caller's, developers_can_merge the rule's, merged: into main."""
    dev = _member_api(forge, "acme/app", "dev", "developer")
    reporter = _member_api(forge, "acme/app", "rep", "reporter")
    branches = f"/projects/{app}/repository/branches"
    api("POST", branches, json={"branch": "done", "ref": "main"}).raise_for_status()
    api("POST", f"/projects/{app}/repository/commits", json={
        "branch": "open", "start_branch": "main", "commit_message": "wip",
        "actions": [{"action": "create", "file_path": "w", "content": "w"}]}).raise_for_status()
    api("POST", f"/projects/{app}/protected_branches",
        json={"name": "rel-*", "push_access_level": 40, "merge_access_level": 30}).raise_for_status()
    api("POST", branches, json={"branch": "rel-1", "ref": "open"}).raise_for_status()

    def branch(who: Api, name: str) -> dict[str, Any]:
        return dict(who("GET", f"/projects/{app}/repository/branches/{name}").json())

    assert [branch(who, "open")["can_push"] for who in (api, dev, reporter)] == [True, True, False]
    assert [branch(who, "main")["can_push"] for who in (api, dev, reporter)] == [True, False, False]
    rel = branch(dev, "rel-1")
    assert (rel["protected"], rel["developers_can_push"], rel["developers_can_merge"], rel["can_push"]) == (
        True, False, True, False)
    assert (branch(api, "done")["merged"], branch(api, "open")["merged"], branch(api, "main")["merged"]) == (
        True, False, False)


def test_tag_with_a_message_is_annotated(forge: Forge, api: Api, app: int) -> None:
    """Tags::CreateService: a message makes an annotated tag (target: the tag object), as does a
    release's tag_message."""
    made = api("POST", f"/projects/{app}/repository/tags", json={"tag_name": "v2", "ref": "main",
                                                                 "message": "second"})
    assert made.status_code == 201, made.text
    tag = api("GET", f"/projects/{app}/repository/tags/v2").json()
    assert (tag["message"], tag["target"] != tag["commit"]["id"], tag["created_at"] is not None) == (
        "second", True, True)
    plain = api("POST", f"/projects/{app}/repository/tags", json={"tag_name": "v3", "ref": "main"}).json()
    assert (plain["message"], plain["target"]) == (None, plain["commit"]["id"])
    api("POST", f"/projects/{app}/releases", json={"tag_name": "v4", "ref": "main",
                                                   "tag_message": "fourth"}).raise_for_status()
    assert api("GET", f"/projects/{app}/repository/tags/v4").json()["message"] == "fourth"
    url = forge.clone_url("acme/app", token=forge.root_token)
    shown = subprocess.run(["git", "ls-remote", url, "refs/tags/v2*"], capture_output=True, text=True,
                           check=True).stdout
    assert "refs/tags/v2^{}" in shown  # an annotated tag peels to its commit


def test_merge_base_takes_comma_separated_refs(forge: Forge, api: Api, app: int) -> None:
    main = api("GET", f"/projects/{app}/repository/commits/main").json()["id"]
    api("POST", f"/projects/{app}/repository/branches",
        json={"branch": "b", "ref": "main"}).raise_for_status()
    for query in ("refs=main,b", "refs[]=main&refs[]=b", "refs=main&refs=b"):
        answer = api("GET", f"/projects/{app}/repository/merge_base?{query}")
        assert (answer.status_code, answer.json()["id"]) == (200, main), query


def test_last_commit_id_refuses_a_stale_write(forge: Forge, api: Api, app: int) -> None:
    """Files::UpdateService and MultiService: a last_commit_id that is not the file's last commit."""
    seen = api("GET", f"/projects/{app}/repository/files/README.md?ref=main").json()["last_commit_id"]
    fresh = api("PUT", f"/projects/{app}/repository/files/README.md", json={
        "branch": "main", "content": "one\n", "commit_message": "m", "last_commit_id": seen})
    assert fresh.status_code == 200, fresh.text
    stale = api("PUT", f"/projects/{app}/repository/files/README.md", json={
        "branch": "main", "content": "two\n", "commit_message": "m", "last_commit_id": seen})
    assert (stale.status_code, stale.json()) == (400, {
        "message": "You are attempting to update a file that has changed since you started editing it."})
    multi = api("POST", f"/projects/{app}/repository/commits", json={
        "branch": "main", "commit_message": "m", "actions": [
            {"action": "update", "file_path": "README.md", "content": "three\n", "last_commit_id": seen}]})
    assert (multi.status_code, multi.json()) == (400, {
        "message": "The file has changed since you started editing it: README.md"})
    untouched = api("POST", f"/projects/{app}/repository/commits", json={
        "branch": "main", "commit_message": "m", "actions": [
            {"action": "update", "file_path": "src/a.py", "content": "a = 2\n", "last_commit_id": seen}]})
    assert untouched.status_code == 201, untouched.text  # src/a.py last changed in that commit
    assert api("GET", f"/projects/{app}/repository/files/README.md/raw").text == "one\n"


def test_branch_deletion_through_the_api_is_a_change_from_the_web(forge: Forge, api: Api,
                                                                   app: int) -> None:
    """Branches::DeleteService runs the hooks as the web: a maintainer deletes a protected
    branch; the hook's refusals come back as a bare 400."""
    dev = _member_api(forge, "acme/app", "dev", "developer")
    forge.protect_branch("acme/app", "stable")
    for name in ("stable", "other"):
        assert api("POST", f"/projects/{app}/repository/branches",
                   json={"branch": name, "ref": "main"}).status_code == 201
    refused = dev("DELETE", f"/projects/{app}/repository/branches/stable")
    assert (refused.status_code, refused.json()) == (400, {"message": (
        "You are not allowed to delete protected branches from this project. "
        "Only a project maintainer or owner can delete a protected branch.")})
    refused = api("DELETE", f"/projects/{app}/repository/branches/main")
    assert (refused.status_code, refused.json()) == (
        400, {"message": "The default branch of a project cannot be deleted."})
    assert api("DELETE", f"/projects/{app}/repository/branches/stable").status_code == 204
    assert dev("DELETE", f"/projects/{app}/repository/branches/other").status_code == 204
    names = [b["name"] for b in api("GET", f"/projects/{app}/repository/branches").json()]
    assert names == ["main"]
    assert forge.last_event(action="api_push_ref")["reason"] == "unprotected_branch"
