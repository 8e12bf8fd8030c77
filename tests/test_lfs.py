"""Git LFS with the real `git lfs` client and with a plain HTTP client (spec section 4)."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import requests

from forge.plugin import ci_forbids_skips
from forge.testing import Forge

if ci_forbids_skips() and shutil.which("git-lfs") is None:  # pragma: no cover
    raise RuntimeError("CI is set but git-lfs is not installed: run `make test`, which installs it")

LFS_JSON = "application/vnd.git-lfs+json"
MODEL = b"\x00\x01model weights\n" * 500
MODEL_OID = hashlib.sha256(MODEL).hexdigest()
needs_lfs = pytest.mark.skipif(shutil.which("git-lfs") is None,
                               reason="git-lfs is not installed; `make test` installs it")


@pytest.mark.parametrize("value,fires", [("true", True), ("1", True), ("yes", True), ("", False),
                                         (None, False)])
def test_ci_forbids_skips_for_any_non_empty_value(monkeypatch: pytest.MonkeyPatch,
                                                  value: str | None, fires: bool) -> None:
    """The guard above (and conftest's, skopeo's, the registry fixture's) is this one helper."""
    if value is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", value)
    assert ci_forbids_skips() is fires
    assert ci_forbids_skips({} if value is None else {"CI": value}) is fires


@pytest.fixture
def lfs_git(git):  # type: ignore[no-untyped-def]
    """git with the LFS filters installed in the test's own HOME."""
    git("lfs", "install", "--skip-repo")
    return git


@pytest.fixture
def world(forge: Forge) -> dict[str, Any]:
    forge.create_group("acme")
    forge.create_group("other")
    dev = forge.create_user("dev")
    files = {"README.md": "readme\n"}
    forge.create_project("acme/app", files=files, lfs_files={"model.bin": MODEL},
                         members={"dev": "developer"})
    forge.create_project("acme/assets", files=files, lfs_files={"data/big.bin": MODEL},
                         members={"dev": "reporter"})
    forge.create_project("other/private", files=files, lfs_files={"x.bin": MODEL},
                         members={"dev": "developer"})
    forge.create_project("acme/site", visibility="public", files=files,
                         lfs_files={"logo.bin": MODEL})
    forge.allow("acme/assets", source_project="acme/app")
    return {"dev": dev, "job": forge.start_job("acme/app", dev)}


def batch(forge: Forge, path: str, operation: str, objects: list[Any],
          auth: tuple[str, str] | None = None) -> requests.Response:
    return requests.post(f"{forge.url}/{path}.git/info/lfs/objects/batch", auth=auth,
                         json={"operation": operation, "transfers": ["basic"], "objects": objects},
                         headers={"Accept": LFS_JSON, "Content-Type": LFS_JSON})


@needs_lfs
def test_lfs_push_as_developer_and_clone_with_job_tokens(
        forge: Forge, world: dict[str, Any], lfs_git, commit, tmp_path: Path) -> None:
    git = lfs_git
    dev = world["dev"]
    work = tmp_path / "work"
    git("clone", "-q", forge.clone_url("acme/app", user=dev), work)
    assert (work / "model.bin").read_bytes() == MODEL  # seeded LFS objects materialise
    git("lfs", "track", "*.dat", cwd=work)
    payload = os.urandom(300_000)
    git("checkout", "-q", "-b", "assets", cwd=work)
    commit(work, {"new.dat": payload})
    git("push", "-q", "origin", "assets", cwd=work)
    assert forge.last_event(action="lfs_upload")["allowed"] is True

    job = world["job"]
    own = tmp_path / "own"
    git("clone", "-q", "--branch", "assets", forge.clone_url("acme/app", job=job), own)
    assert (own / "new.dat").read_bytes() == payload
    assert (own / "model.bin").read_bytes() == MODEL
    allowed = tmp_path / "allowed"
    git("clone", "-q", forge.clone_url("acme/assets", job=job), allowed)
    assert (allowed / "data/big.bin").read_bytes() == MODEL
    assert forge.last_event(action="lfs_download")["reason"] == "job_token_allowed"


@needs_lfs
def test_lfs_upload_with_job_token_refused(forge: Forge, world: dict[str, Any], lfs_git, commit,
                                           tmp_path: Path) -> None:
    git = lfs_git
    forge.update_project("acme/app", job_push_allowed=True)  # git push allowed, LFS upload never
    work = tmp_path / "job"
    git("clone", "-q", forge.clone_url("acme/app", job=world["job"]), work)
    git("lfs", "track", "*.dat", cwd=work)
    commit(work, {"out.dat": os.urandom(1000)})
    result = git("push", "origin", "HEAD:build-output", cwd=work, check=False)
    assert result.returncode != 0
    assert "Access forbidden. Check your access level." in result.stderr
    assert forge.last_event(action="lfs_upload")["reason"] == "job_token_lfs_upload"


@needs_lfs
def test_lfs_download_refused_for_private_project_off_the_allowlist(
        forge: Forge, world: dict[str, Any], lfs_git, tmp_path: Path) -> None:
    response = batch(forge, "other/private", "download", [{"oid": MODEL_OID, "size": len(MODEL)}],
                     auth=("gitlab-ci-token", world["job"].token))
    assert response.status_code == 404
    assert response.headers["Content-Type"] == LFS_JSON
    assert response.json() == {"message": "Not found.", "documentation_url": f"{forge.url}/help"}
    assert forge.last_event(action="lfs_download")["reason"] == "not_in_inbound_allowlist"
    # git itself is refused before LFS is asked, with GitLab's message
    result = lfs_git("clone", forge.clone_url("other/private", job=world["job"]), tmp_path / "x",
                     check=False)
    assert "Authentication by CI/CD job token not allowed from app" in result.stderr


@needs_lfs
def test_lfs_lock_and_unlock_as_developer(forge: Forge, world: dict[str, Any], lfs_git,
                                          tmp_path: Path) -> None:
    git = lfs_git
    work = tmp_path / "work"
    git("clone", "-q", forge.clone_url("acme/app", user=world["dev"]), work)
    assert "Locked model.bin" in git("lfs", "lock", "model.bin", cwd=work).stdout
    listing = git("lfs", "locks", cwd=work).stdout
    assert listing.startswith("model.bin\tdev\tID:")
    result = git("lfs", "lock", "model.bin", cwd=work, check=False)
    assert result.returncode != 0 and "already locked" in result.stderr
    other = forge.create_user("ops")
    forge.add_member(other, "developer", project="acme/app")
    lock_id = listing.split("ID:")[1].strip()
    refused = requests.post(f"{forge.url}/acme/app.git/info/lfs/locks/{lock_id}/unlock",
                            auth=("ops", other.password), json={"force": False})
    assert refused.status_code == 403
    assert refused.json()["message"] == f"model.bin is locked by GitLab User {world['dev'].id}"
    assert "Unlocked model.bin" in git("lfs", "unlock", "model.bin", cwd=work).stdout
    assert git("lfs", "locks", cwd=work).stdout == ""


def test_lfs_force_unlock_needs_maintainer(forge: Forge, world: dict[str, Any]) -> None:
    dev = world["dev"]
    created = requests.post(f"{forge.url}/acme/app.git/info/lfs/locks", auth=("dev", dev.password),
                            json={"path": "model.bin"})
    assert created.status_code == 201 and created.headers["Content-Type"] == LFS_JSON
    lock = created.json()["lock"]
    assert (lock["path"], lock["owner"]) == ("model.bin", {"name": "dev"})
    other = forge.create_user("ops")
    forge.add_member(other, "developer", project="acme/app")
    url = f"{forge.url}/acme/app.git/info/lfs/locks/{lock['id']}/unlock"
    response = requests.post(url, auth=("ops", other.password), json={"force": True})
    assert response.json() == {"message": "You must have maintainer access to force delete a lock"}
    forge.set_role(other, "maintainer", project="acme/app")
    for not_true in ("false", "no", 0, "maybe"):  # only JSON true forces: a typo never does
        refused = requests.post(url, auth=("ops", other.password), json={"force": not_true})
        assert refused.status_code == 403, not_true
    assert requests.post(url, auth=("ops", other.password), json={"force": True}).status_code == 200
    verify = requests.post(f"{forge.url}/acme/app.git/info/lfs/locks/verify",
                           auth=("dev", dev.password), json={})
    assert verify.json() == {"ours": [], "theirs": []}


def test_lfs_batch_download_answers(forge: Forge, world: dict[str, Any]) -> None:
    missing = "0" * 64
    response = batch(forge, "acme/app", "download",
                     [{"oid": MODEL_OID, "size": len(MODEL)}, {"oid": missing, "size": 3},
                      {"oid": "not-an-oid", "size": 1}],
                     auth=("dev", world["dev"].password))
    assert response.status_code == 200
    assert response.headers["Content-Type"] == LFS_JSON
    body = response.json()
    assert body["transfer"] == "basic"
    found, absent, invalid = body["objects"]
    assert "authenticated" not in found  # private project
    assert found["actions"]["download"]["href"] == (
        f"{forge.url}/acme/app.git/gitlab-lfs/objects/{MODEL_OID}")
    assert absent == {"oid": missing, "size": 3, "error": {
        "code": 404,
        "message": "Object does not exist on the server or you don't have permissions to access it"}}
    assert invalid["error"]["code"] == 422
    href = found["actions"]["download"]
    content = requests.get(href["href"], headers=href["header"])
    assert content.content == MODEL
    assert content.headers["Content-Type"] == "application/octet-stream"
    # another project does not see this project's object
    other = batch(forge, "other/private", "download", [{"oid": "f" * 64, "size": 1}],
                  auth=("dev", world["dev"].password))
    assert other.json()["objects"][0]["error"]["code"] == 404


def test_lfs_batch_refusals(forge: Forge, world: dict[str, Any], denied_401: str) -> None:
    obj = [{"oid": MODEL_OID, "size": len(MODEL)}]
    anonymous = batch(forge, "acme/app", "download", obj)
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"] == 'Basic realm="GitLab"'
    assert anonymous.text == denied_401
    public = batch(forge, "acme/site", "download", [{"oid": MODEL_OID, "size": len(MODEL)}])
    assert public.status_code == 200 and "actions" in public.json()["objects"][0]
    assert public.json()["objects"][0]["authenticated"] is True
    reporter = forge.create_user("rep")
    forge.add_member(reporter, "reporter", project="acme/app")
    upload = batch(forge, "acme/app", "upload", obj, auth=("rep", reporter.password))
    assert (upload.status_code, upload.headers["Content-Type"]) == (403, LFS_JSON)
    assert upload.json() == {"message": "Access forbidden. Check your access level.",
                             "documentation_url": f"{forge.url}/help"}
    stranger = forge.create_user("stranger")
    hidden = batch(forge, "acme/app", "upload", obj, auth=("stranger", stranger.password))
    assert (hidden.status_code, hidden.json()["message"]) == (404, "Not found.")
    empty = batch(forge, "acme/app", "download", [], auth=("dev", world["dev"].password))
    assert empty.status_code == 404
    bad = requests.post(f"{forge.url}/acme/app.git/info/lfs/objects/batch", data="{{nope",
                        auth=("dev", world["dev"].password))
    assert bad.status_code == 422
    reasons = [e["reason"] for e in forge.denials() if e["action"].startswith("lfs_")]
    assert reasons == ["login_required", "insufficient_role", "project_not_visible"]


def test_lfs_disabled_project_answers_not_found(forge: Forge, world: dict[str, Any]) -> None:
    forge.update_project("acme/app", lfs_enabled=False)
    response = batch(forge, "acme/app", "download", [{"oid": MODEL_OID, "size": len(MODEL)}],
                     auth=("dev", world["dev"].password))
    assert (response.status_code, response.json()["message"]) == (404, "Not found.")
    assert forge.last_event()["reason"] == "lfs_disabled"


def test_lfs_upload_verifies_oid_and_size(forge: Forge, world: dict[str, Any]) -> None:
    dev = world["dev"]
    data = os.urandom(5000)
    oid = hashlib.sha256(data).hexdigest()
    answer = batch(forge, "acme/app", "upload", [{"oid": oid, "size": len(data)}],
                   auth=("dev", dev.password)).json()["objects"][0]
    upload = answer["actions"]["upload"]
    assert upload["href"] == f"{forge.url}/acme/app.git/gitlab-lfs/objects/{oid}/{len(data)}"
    url = upload["href"]
    store = forge.state.lfs
    for body, target in ((data[:-1], url), (data + b"x", url), (b"y" * len(data), url),
                         (data, url.rsplit("/", 1)[0] + f"/{len(data) + 1}")):
        response = requests.put(target, data=body, auth=("dev", dev.password))
        assert response.status_code == 422
        assert response.headers["Content-Type"] == LFS_JSON
    assert not store.exists(oid)
    assert not list((store.root / "tmp").iterdir())
    assert requests.put(url, data=data, auth=("dev", dev.password)).status_code == 200
    assert store.path_for(oid).read_bytes() == data
    again = batch(forge, "acme/app", "upload", [{"oid": oid, "size": len(data)}],
                  auth=("dev", dev.password)).json()["objects"][0]
    assert "actions" not in again  # already there: nothing to upload


def test_lfs_legacy_api_is_501(forge: Forge, world: dict[str, Any]) -> None:
    auth = ("dev", world["dev"].password)
    message = ("Server supports batch API only, please update your Git LFS client to version "
               "1.0.1 and up.")
    for response in (requests.get(f"{forge.url}/acme/app.git/info/lfs/objects/{MODEL_OID}", auth=auth),
                     requests.post(f"{forge.url}/acme/app.git/info/lfs/objects", auth=auth, json={})):
        assert response.status_code == 501
        assert response.json() == {"message": message, "documentation_url": f"{forge.url}/help"}
    assert requests.get(f"{forge.url}/acme/app.git/info/lfs/objects/{MODEL_OID}").status_code == 401


def test_lfs_object_download_needs_rights(forge: Forge, world: dict[str, Any]) -> None:
    url = f"{forge.url}/other/private.git/gitlab-lfs/objects/{MODEL_OID}"
    assert requests.get(url).status_code == 401
    response = requests.get(url, auth=("gitlab-ci-token", world["job"].token))
    assert (response.status_code, response.json()["message"]) == (404, "Not found.")
    assert requests.get(url, auth=("dev", world["dev"].password)).content == MODEL
    traversal = f"{forge.url}/other/private.git/gitlab-lfs/objects/..%2f..%2fforge.db"
    assert requests.get(traversal, auth=("dev", world["dev"].password)).status_code == 404
