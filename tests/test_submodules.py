"""Multi-project CI: a job clones its project with submodules that are other forge projects."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from forge.domain import DomainError
from forge.testing import Forge, JobHandle


@pytest.fixture
def world(forge: Forge) -> dict[str, Any]:
    """acme/app has submodules acme/lib (../lib.git) and shared/common (../../shared/common.git)."""
    forge.create_group("acme")
    forge.create_group("shared")
    dev = forge.create_user("dev")
    common = forge.create_project("shared/common", files={"common.txt": "common\n"},
                                  members={"dev": "reporter"})
    lib = forge.create_project("acme/lib", files={"lib.txt": "lib\n"}, members={"dev": "reporter"},
                               submodules={"vendor/common": "../../shared/common.git"})
    app = forge.create_project("acme/app", files={"app.txt": "app\n"}, members={"dev": "developer"},
                               submodules={"lib": "../lib.git"})
    job = forge.start_job(app, dev)
    return {"dev": dev, "job": job, "lib": lib, "common": common}


def clone_recursive(git, job: JobHandle, target: Path):  # type: ignore[no-untyped-def]
    return git("clone", "--recurse-submodules", job.variables["CI_REPOSITORY_URL"], target,
               check=False)


def test_submodules_refused_without_allowlist(forge: Forge, world: dict[str, Any], git,
                                              tmp_path: Path) -> None:
    result = clone_recursive(git, world["job"], tmp_path / "app")
    assert result.returncode != 0
    lib_id = world["lib"].id
    assert (f"remote: Authentication by CI/CD job token not allowed from app to project #{lib_id}."
            in result.stderr)
    assert (tmp_path / "app/app.txt").exists()  # the job's own project cloned fine
    event = forge.last_event(allowed=False)
    assert (event["project"], event["reason"]) == ("acme/lib", "not_in_inbound_allowlist")


def test_submodules_recursive_clone_with_project_entries(forge: Forge, world: dict[str, Any], git,
                                                         tmp_path: Path) -> None:
    forge.allow("acme/lib", source_project="acme/app")
    result = clone_recursive(git, world["job"], tmp_path / "half")
    common_id = world["common"].id
    assert f"not allowed from app to project #{common_id}." in result.stderr  # nested one next
    forge.allow("shared/common", source_project="acme/app")
    result = clone_recursive(git, world["job"], tmp_path / "app")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "app/lib/lib.txt").read_text() == "lib\n"
    assert (tmp_path / "app/lib/vendor/common/common.txt").read_text() == "common\n"


def test_submodules_allowed_through_a_group_entry(forge: Forge, world: dict[str, Any], git,
                                                  tmp_path: Path) -> None:
    forge.allow("acme/lib", source_group="acme")
    forge.allow("shared/common", source_group="acme")
    work = tmp_path / "app"
    git("clone", "-q", world["job"].variables["CI_REPOSITORY_URL"], work)
    git("submodule", "update", "--init", "--recursive", cwd=work)
    assert (work / "lib/vendor/common/common.txt").exists()


def test_submodules_need_the_users_membership_too(forge: Forge, world: dict[str, Any], git,
                                                  tmp_path: Path) -> None:
    forge.allow("acme/lib", source_project="acme/app")
    forge.remove_member("dev", project="acme/lib")
    result = clone_recursive(git, world["job"], tmp_path / "app")
    assert (f"Insufficient permissions to pull from the repository of project #{world['lib'].id}."
            in result.stderr)


def test_absolute_submodule_urls_with_the_runners_insteadof(forge: Forge, git,
                                                             tmp_path: Path) -> None:
    """Absolute URLs carry no token; runners rewrite them with url.<...>.insteadOf."""
    forge.create_group("acme")
    dev = forge.create_user("dev")
    forge.create_project("acme/lib", files={"lib.txt": "lib\n"}, members={"dev": "reporter"})
    forge.create_project("acme/app", files={"a": "a\n"}, members={"dev": "developer"},
                         submodules={"lib": f"{forge.url}/acme/lib.git"})
    forge.allow("acme/lib", source_project="acme/app")
    job = forge.start_job("acme/app", dev)
    host = urlsplit(forge.url).netloc
    git("config", "--global", f"url.http://gitlab-ci-token:{job.token}@{host}/.insteadOf",
        f"http://{host}/")
    work = tmp_path / "app"
    git("clone", "-q", "--recurse-submodules", f"http://{host}/acme/app.git", work)
    assert (work / "lib/lib.txt").read_text() == "lib\n"


def test_submodules_and_lfs_in_a_seed(forge: Forge) -> None:
    result = forge.seed({
        "users": [{"username": "dev"}],
        "groups": [{"path": "acme"}],
        "projects": [
            {"path": "acme/lib", "files": {"l": "1"}, "lfs_files": {"blob.bin": "binary"}},
            {"path": "acme/app", "submodules": {"lib": "../lib.git"}, "lfs_enabled": False},
        ],
    })
    assert set(result["projects"]) == {"acme/lib", "acme/app"}
    with pytest.raises(DomainError, match=r"projects\[0\] \(x/y\).*missing"):
        forge.seed({"groups": [{"path": "x"}],
                    "projects": [{"path": "x/y", "submodules": {"s": "../missing.git"}}]})


def test_rest_api_reads_and_writes_around_a_submodule(forge: Forge, world: dict[str, Any]) -> None:
    """A gitlink's commit lives in another repository: views show it as git does and never
    read it (each of these was a 500)."""
    import requests
    api = f"{forge.url}/api/v4/projects/acme%2Fapp"
    root = {"PRIVATE-TOKEN": forge.root_token}

    def call(method: str, path: str, **kwargs: Any) -> requests.Response:
        return requests.request(method, f"{api}{path}", headers=root, timeout=30, **kwargs)

    shown = call("GET", "/repository/commits/main/diff")
    assert shown.status_code == 200
    lib = next(d for d in shown.json() if d["new_path"] == "lib")
    assert (lib["b_mode"], lib["new_file"]) == ("160000", True)
    assert lib["diff"].startswith("@@ -0,0 +1 @@\n+Subproject commit ")
    assert call("GET", "/repository/commits/main").status_code == 200
    assert call("GET", "/repository/commits", params={"with_stats": "true"}).status_code == 200
    for path in ("/repository/files/lib?ref=main", "/repository/files/lib/raw?ref=main",
                 "/repository/files/lib/blame?ref=main", "/repository/files/lib%2Fx.txt?ref=main"):
        answer = call("GET", path)
        assert (answer.status_code, answer.json()) == (404, {"message": "404 File Not Found"}), path
    for path in ("lib", "lib/x"):
        answer = call("GET", "/repository/tree", params={"path": path})
        assert (answer.status_code, answer.json()) == (404, {"message": "404 Tree Not Found"}), path
    tree = call("GET", "/repository/tree").json()
    assert {"name": "lib", "type": "commit", "mode": "160000"}.items() <= next(
        e for e in tree if e["name"] == "lib").items()
    assert call("GET", "/repository/archive.tar.gz", params={"path": "lib"}).status_code == 404
    body = {"branch": "main", "content": "x", "commit_message": "m"}
    made = call("POST", "/repository/files/lib", json=body)
    assert (made.status_code, made.json()) == (400, {"message": "A file with this name already exists"})
    for method in ("PUT", "DELETE"):
        changed = call(method, "/repository/files/lib", json=body)
        assert (changed.status_code, changed.json()) == (
            400, {"message": "A file with this name doesn't exist"}), method
    under = call("POST", "/repository/files/lib%2Fx.txt", json=body)
    assert under.status_code == 400, under.text
    # a commit that moves the submodule can be reverted like any other
    branch = call("POST", "/repository/branches", json={"branch": "b2", "ref": "main"})
    assert branch.status_code == 201
    reverted = call("POST", "/repository/commits/main/revert", json={"branch": "b2"})
    assert reverted.status_code == 201, reverted.text
    assert all(e["name"] != "lib" for e in call("GET", "/repository/tree",
                                                 params={"ref": "b2"}).json())
