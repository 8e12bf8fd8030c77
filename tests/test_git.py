"""Smart-HTTP git with the real `git` CLI and a plain HTTP client: every credential kind."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from forge.domain import Conflict
from forge.testing import Forge

NOT_FOUND = "The project you were looking for could not be found or you don't have permission to view it."
FILES = {"README.md": "hello\n", "src/app.py": "print('hi')\n"}


@pytest.fixture
def setup(forge: Forge) -> dict[str, object]:
    forge.create_group("acme")
    bob = forge.create_user("bob")
    app = forge.create_project("acme/app", files=FILES, members={"bob": "developer"})
    public = forge.create_project("acme/site", visibility="public", files=FILES)
    return {"bob": bob, "app": app, "public": public}


def credential_urls(forge: Forge, setup: dict[str, object]) -> dict[str, str]:
    bob, app = setup["bob"], setup["app"]
    job = forge.start_job(app, bob)  # type: ignore[arg-type]
    forge.update_project(app, job_push_allowed=True)  # type: ignore[arg-type]
    return {
        "job_token": forge.clone_url(app, job=job),  # type: ignore[arg-type]
        "pat_any_username": forge.clone_url(app, user=bob, username="anything"),  # type: ignore[arg-type]
        "password": forge.clone_url(app, user=bob, password=True),  # type: ignore[arg-type]
        "email_password": forge.clone_url(app, user=bob, password=True).replace(  # type: ignore[arg-type]
            "bob:", "bob%40example.com:"),
        # GitLab's User.by_login matches usernames and e-mails without regard to case
        "password_other_case": forge.clone_url(app, user=bob, password=True).replace(  # type: ignore[arg-type]
            "bob:", "Bob:"),
        "email_other_case": forge.clone_url(app, user=bob, password=True).replace(  # type: ignore[arg-type]
            "bob:", "BOB%40Example.COM:"),
    }


@pytest.mark.parametrize("kind", ["job_token", "pat_any_username", "password", "email_password",
                                  "password_other_case", "email_other_case"])
def test_git_clone_fetch_lsremote_depth_push_with_each_credential(
        forge: Forge, setup: dict[str, object], git, commit, tmp_path: Path, kind: str) -> None:
    url = credential_urls(forge, setup)[kind]
    listing = git("ls-remote", url).stdout
    assert "refs/heads/main" in listing and "HEAD" in listing

    work = tmp_path / "work"
    git("clone", "-q", url, work)
    assert (work / "src/app.py").read_text() == "print('hi')\n"

    shallow = tmp_path / "shallow"
    git("clone", "-q", "--depth", "1", url, shallow)
    assert git("rev-list", "--count", "HEAD", cwd=shallow).stdout.strip() == "1"

    git("checkout", "-q", "-b", f"topic-{kind}", cwd=work)
    sha = commit(work, {"new.txt": kind})
    git("push", "-q", "origin", f"topic-{kind}", cwd=work)
    git("fetch", "-q", "origin", f"topic-{kind}", cwd=shallow)  # a --depth clone is single-branch
    assert git("rev-parse", "FETCH_HEAD", cwd=shallow).stdout.strip() == sha

    git("checkout", "-q", "-b", f"from-shallow-{kind}", cwd=shallow)
    commit(shallow, {"shallow.txt": "pushed from a --depth 1 clone"})
    git("push", "-q", "origin", f"from-shallow-{kind}", cwd=shallow)
    assert f"refs/heads/from-shallow-{kind}" in git("ls-remote", url).stdout


def test_git_anonymous_clone_of_public_project(forge: Forge, setup: dict[str, object], git,
                                               tmp_path: Path) -> None:
    url = forge.clone_url(setup["public"])  # type: ignore[arg-type]
    git("clone", "-q", url, tmp_path / "site")
    assert (tmp_path / "site/README.md").exists()
    git("clone", "-q", "--depth", "1", url, tmp_path / "shallow")
    git("fetch", "-q", cwd=tmp_path / "site")
    assert forge.last_event(project="acme/site")["reason"] == "public_project"


def test_git_anonymous_push_to_public_project_is_challenged(
        forge: Forge, setup: dict[str, object], git, commit, tmp_path: Path, denied_401: str) -> None:
    url = forge.clone_url(setup["public"])  # type: ignore[arg-type]
    git("clone", "-q", url, tmp_path / "site")
    commit(tmp_path / "site", {"x": "y"})
    result = git("push", "origin", "HEAD:anon", cwd=tmp_path / "site", check=False)
    assert result.returncode != 0
    assert "could not read Username" in result.stderr  # git was asked for credentials
    response = requests.get(f"{forge.url}/acme/site.git/info/refs?service=git-receive-pack")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Basic realm="GitLab"'
    assert response.text == denied_401
    assert forge.last_event(action="push_code")["reason"] == "anonymous_push"


@pytest.mark.parametrize("path", ["acme/app", "acme/missing", "nobody/nothing"])
def test_git_401_identical_for_private_and_missing_projects(forge: Forge, setup: dict[str, object],
                                                            path: str, denied_401: str) -> None:
    response = requests.get(f"{forge.url}/{path}.git/info/refs?service=git-upload-pack")
    assert response.status_code == 401
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert response.headers["WWW-Authenticate"] == 'Basic realm="GitLab"'
    assert response.text == denied_401


@pytest.mark.parametrize("auth,reason", [
    (("bob", "wrong-password"), "invalid_password"),
    (("nobody", "whatever"), "unknown_user"),
    (("gitlab-ci-token", "glcbt-64_notAToken"), "unknown_job_token"),
    (("oauth2", "glpat-notatoken00000000"), "unknown_user"),
])
def test_git_bad_credentials_get_401_with_the_same_body(
        forge: Forge, setup: dict[str, object], git, tmp_path: Path,
        auth: tuple[str, str], reason: str, denied_401: str) -> None:
    response = requests.get(f"{forge.url}/acme/app.git/info/refs?service=git-upload-pack", auth=auth)
    assert response.status_code == 401
    assert response.text == denied_401
    assert forge.last_event()["reason"] == reason
    url = f"http://{auth[0]}:{auth[1]}@{forge.url.split('//')[1]}/acme/app.git"
    result = git("clone", url, tmp_path / "c", check=False)
    assert result.returncode != 0
    assert "HTTP Basic: Access denied" in result.stderr
    assert "Authentication failed" in result.stderr


def test_git_404_for_authenticated_user_who_cannot_see_project(
        forge: Forge, setup: dict[str, object], git, tmp_path: Path) -> None:
    carol = forge.create_user("carol")
    for path in ("acme/app", "acme/missing"):
        response = requests.get(f"{forge.url}/{path}.git/info/refs?service=git-upload-pack",
                                auth=("carol", carol.password))
        assert response.status_code == 404
        assert response.text == NOT_FOUND
    result = git("clone", forge.clone_url("acme/app", user=carol, password=True), tmp_path / "c",
                 check=False)
    assert f"remote: {NOT_FOUND}" in result.stderr


def test_git_guest_of_private_project_may_not_download(forge: Forge, setup: dict[str, object],
                                                        git, tmp_path: Path) -> None:
    guest = forge.create_user("gus")
    forge.add_member(guest, "guest", project="acme/app")
    response = requests.get(f"{forge.url}/acme/app.git/info/refs?service=git-upload-pack",
                            auth=("gus", guest.password))
    assert (response.status_code, response.text) == (
        403, "You are not allowed to download code from this project.")
    result = git("clone", forge.clone_url("acme/app", user=guest), tmp_path / "c", check=False)
    assert "remote: You are not allowed to download code from this project." in result.stderr
    assert forge.last_event()["reason"] == "insufficient_role"


def test_git_pat_scopes_decide_download_and_upload(forge: Forge, setup: dict[str, object]) -> None:
    info = f"{forge.url}/acme/app.git/info/refs?service="
    registry = forge.create_token("bob", ("read_registry",))
    response = requests.get(info + "git-upload-pack", auth=("oauth2", registry))
    assert (response.status_code, response.text) == (403, "You are not allowed to download code.")
    read = forge.create_token("bob", ("read_repository",))
    assert requests.get(info + "git-upload-pack", auth=("oauth2", read)).status_code == 200
    response = requests.get(info + "git-receive-pack", auth=("oauth2", read))
    assert (response.status_code, response.text) == (403, "You are not allowed to upload code.")


def test_git_revoked_and_expired_pats_and_blocked_users_get_401(
        forge: Forge, setup: dict[str, object], denied_401: str) -> None:
    info = f"{forge.url}/acme/app.git/info/refs?service=git-upload-pack"
    expired = forge.create_token("bob", expires_at=forge.now())
    assert requests.get(info, auth=("x", expired)).status_code == 401
    assert forge.last_event()["reason"] == "token_expired"
    bob = setup["bob"]
    forge.block_user(bob)  # type: ignore[arg-type]
    response = requests.get(info, auth=("bob", bob.password))  # type: ignore[attr-defined]
    assert (response.status_code, response.text) == (401, denied_401)
    assert forge.last_event()["reason"] == "user_blocked"
    forge.set_user_state(bob, "active")  # type: ignore[arg-type]
    forge.revoke_tokens(bob)  # type: ignore[arg-type]
    assert requests.get(info, auth=("x", bob.token)).status_code == 401  # type: ignore[attr-defined]
    assert forge.last_event()["reason"] == "token_revoked"


def test_git_routes_redirect_head_and_dumb_http(forge: Forge, setup: dict[str, object]) -> None:
    response = requests.get(f"{forge.url}/acme/site/info/refs?service=git-upload-pack",
                            allow_redirects=False)
    assert response.status_code == 301
    assert response.headers["Location"].endswith("/acme/site.git/info/refs?service=git-upload-pack")
    response = requests.head(f"{forge.url}/acme/site.git/info/refs?service=git-upload-pack")
    assert (response.status_code, response.text) == (403, "")
    assert requests.get(f"{forge.url}/acme/site.git/info/refs").status_code == 403


def test_git_clone_without_dot_git_follows_the_redirect(forge: Forge, setup: dict[str, object],
                                                        git, tmp_path: Path) -> None:
    git("clone", "-q", f"{forge.url}/acme/site", tmp_path / "site")
    assert (tmp_path / "site/README.md").read_text() == "hello\n"


def test_git_nested_group_paths(forge: Forge, git, tmp_path: Path) -> None:
    forge.create_group("a")
    forge.create_group("a/b")
    forge.create_group("a/b/c")
    forge.create_project("a/b/c/deep", visibility="public", files={"f": "deep\n"})
    git("clone", "-q", f"{forge.url}/a/b/c/deep.git", tmp_path / "deep")
    assert (tmp_path / "deep/f").read_text() == "deep\n"


def test_git_roles_come_from_every_ancestor_group_and_no_other(forge: Forge, git,
                                                               tmp_path: Path) -> None:
    for path in ("a", "a/b", "a/b/c", "a/bc", "a/b/cd"):
        forge.create_group(path)
    forge.create_project("a/b/c/deep", files={"f": "deep\n"})
    info = f"{forge.url}/a/b/c/deep.git/info/refs?service="
    for username, group, role in (("top", "a", "developer"), ("mid", "a/b", "reporter"),
                                  ("own", "a/b/c", "maintainer"), ("near", "a/bc", "owner"),
                                  ("next", "a/b/cd", "owner")):
        forge.create_user(username, password=f"{username}-pass-1")
        forge.add_member(username, role, group=group)
    for username, read, push in (("top", 200, 200), ("mid", 200, 403), ("own", 200, 200),
                                 ("near", 404, 404), ("next", 404, 404)):
        auth = (username, f"{username}-pass-1")
        assert requests.get(info + "git-upload-pack", auth=auth).status_code == read, username
        assert requests.get(info + "git-receive-pack", auth=auth).status_code == push, username
    result = git("clone", "-q", f"http://top:top-pass-1@{forge.url.split('//')[1]}/a/b/c/deep.git",
                 tmp_path / "deep")
    assert result.returncode == 0
    assert (tmp_path / "deep/f").read_text() == "deep\n"


def test_git_usernames_are_one_whatever_their_case(forge: Forge) -> None:
    forge.create_user("carla")
    with pytest.raises(Conflict, match="already exists"):
        forge.create_user("Carla")


def test_git_user_namespace_project_owner_can_push(forge: Forge, git, commit,
                                                   tmp_path: Path) -> None:
    dora = forge.create_user("dora")
    forge.create_project("dora/notes", files={"n": "1\n"}, protect_default_branch=False)
    url = forge.clone_url("dora/notes", user=dora)
    git("clone", "-q", url, tmp_path / "n")
    commit(tmp_path / "n", {"n": "2\n"})
    git("push", "-q", "origin", "main", cwd=tmp_path / "n")


def test_git_empty_project_clones_and_accepts_first_push(forge: Forge, git, commit,
                                                         tmp_path: Path) -> None:
    forge.create_group("acme")
    maintainer = forge.create_user("mia")
    forge.create_project("acme/empty", members={"mia": "maintainer"})
    url = forge.clone_url("acme/empty", user=maintainer)
    result = git("clone", url, tmp_path / "e")
    assert "empty repository" in result.stderr
    commit(tmp_path / "e", {"first": "1"})
    git("push", "-q", "origin", "main", cwd=tmp_path / "e")
    assert "refs/heads/main" in git("ls-remote", url).stdout


def test_git_missing_repository_on_disk_is_404(forge: Forge, setup: dict[str, object]) -> None:
    forge.state.backend.delete(setup["app"].id)  # type: ignore[attr-defined]
    bob = setup["bob"]
    response = requests.get(f"{forge.url}/acme/app.git/info/refs?service=git-upload-pack",
                            auth=("bob", bob.password))  # type: ignore[attr-defined]
    assert (response.status_code, response.text) == (
        404, "A repository for this project does not exist yet.")


def test_git_partial_clone_filter_is_not_offered_by_dulwich(
        forge: Forge, setup: dict[str, object], git, tmp_path: Path, use_engine) -> None:
    use_engine("dulwich")  # the git engine serves partial clones (tests/test_git_engine.py)
    result = git("clone", "--filter=blob:none", forge.clone_url(setup["public"]),  # type: ignore[arg-type]
                 tmp_path / "p")
    assert "filtering not recognized by server" in result.stderr
    assert (tmp_path / "p/src/app.py").exists()


def test_git_fetch_after_push_into_repository_with_bitmaps(
        forge: Forge, setup: dict[str, object], git, commit, tmp_path: Path) -> None:
    """A repository repacked by git (with a bitmap) that then receives a push stays fetchable."""
    repo = forge.state.backend.path_for(setup["app"].id)  # type: ignore[attr-defined]
    git("repack", "-a", "-d", "--write-bitmap-index", cwd=repo)
    assert list((repo / "objects/pack").glob("*.bitmap"))
    url = forge.clone_url("acme/app", user=setup["bob"])  # type: ignore[arg-type]
    git("clone", "-q", url, tmp_path / "pusher")
    git("clone", "-q", url, tmp_path / "fetcher")
    git("checkout", "-q", "-b", "more", cwd=tmp_path / "pusher")
    sha = commit(tmp_path / "pusher", {"more.txt": "more\n"})
    git("push", "-q", "origin", "more", cwd=tmp_path / "pusher")
    git("fetch", "-q", "origin", cwd=tmp_path / "fetcher")
    assert git("rev-parse", "origin/more", cwd=tmp_path / "fetcher").stdout.strip() == sha
