"""Bad input gets a clear answer and loses nothing: no 500, no corrupt repository, no leaked secret."""

from __future__ import annotations

import base64
import http.client
import logging
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from forge.testing import Forge, UserHandle

ZERO = "0" * 40


def pkt(line: bytes) -> bytes:
    return f"{len(line) + 4:04x}".encode() + line


def raw_request(forge: Forge, method: str, path: str, body: bytes = b"",
                headers: dict[str, str] | None = None) -> tuple[int, str, dict[str, str]]:
    """Send exactly `path` (no client-side normalisation of `..`)."""
    url = urlsplit(forge.url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    conn.putrequest(method, path, skip_accept_encoding=True)
    for key, value in (headers or {}).items():
        conn.putheader(key, value)
    if body or method == "POST":
        conn.putheader("Content-Length", str(len(body)))
    conn.endheaders(body or None)
    response = conn.getresponse()
    data = response.read().decode(errors="replace")
    conn.close()
    return response.status, data, dict(response.getheaders())


def basic(user: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()


@pytest.fixture
def dev(forge: Forge) -> UserHandle:
    forge.create_group("acme")
    user = forge.create_user("dev")
    forge.create_project("acme/app", files={"README.md": "v1\n"}, members={"dev": "developer"})
    return user


def refs_of(forge: Forge, git) -> str:
    return git("ls-remote", forge.clone_url("acme/app", token=forge.root_token)).stdout


@pytest.mark.parametrize("header", [
    "Basic !!!not-base64!!!",
    "Basic " + base64.b64encode(b"no-colon-here").decode(),
    "Basic " + base64.b64encode(b"\xff\xfe:\xff").decode(),
    "Bearer something",
    "Basic",
    "Digest username=x",
    "Basic " + base64.b64encode(b"dev:").decode(),
])
def test_malformed_authorization_gets_401(forge: Forge, dev: UserHandle, header: str,
                                          denied_401: str) -> None:
    status, body, headers = raw_request(
        forge, "GET", "/acme/app.git/info/refs?service=git-upload-pack", headers={"Authorization": header})
    assert status == 401
    assert body == denied_401
    assert headers["WWW-Authenticate"] == 'Basic realm="GitLab"'


@pytest.mark.parametrize("path", [
    "/../../etc/passwd.git/info/refs?service=git-upload-pack",
    "/%2e%2e/%2e%2e/etc.git/info/refs?service=git-upload-pack",
    "/acme/%2e%2e/acme/app.git/info/refs?service=git-upload-pack",
    "//etc/passwd.git/info/refs?service=git-upload-pack",
    "/acme/../../../tmp/x.git/git-upload-pack",
    "/acme/app.git/../../x.git/info/refs?service=git-upload-pack",
    "/1.git/info/refs?service=git-upload-pack",
    "/repositories/1.git/info/refs?service=git-upload-pack",
    "/acme/a%00pp.git/info/refs?service=git-upload-pack",
])
def test_traversal_and_unknown_paths_never_reach_a_repository(
        forge: Forge, dev: UserHandle, path: str, denied_401: str) -> None:
    """No such project, as GitLab says for any unknown path: 404 to a user, 401 to anonymous."""
    method = "GET" if "info/refs" in path else "POST"
    status, body, headers = raw_request(forge, method, path,
                                        headers={"Authorization": basic("dev", dev.password or "")})
    assert (status, body) == (404, "The project you were looking for could not be found or you "
                                   "don't have permission to view it.")
    assert headers["Content-Type"] == "text/plain; charset=utf-8"
    status, body, headers = raw_request(forge, method, path)
    assert (status, body) == (401, denied_401)
    assert headers["WWW-Authenticate"] == 'Basic realm="GitLab"'
    assert not forge.state.take_errors()


def test_backend_refuses_keys_outside_its_root(forge: Forge) -> None:
    backend = forge.state.backend
    for key in ("../x", "/etc", "1/../../2", "-1", "1.git", "", "\u00b2"):
        with pytest.raises(Exception, match="no repository"):
            backend.path_for(key)


def receive_pack(forge: Forge, user: UserHandle, body: bytes,
                 extra: dict[str, str] | None = None) -> tuple[int, str]:
    headers = {"Authorization": basic(user.username, user.password or ""),
               "Content-Type": "application/x-git-receive-pack-request", **(extra or {})}
    status, text, _ = raw_request(forge, "POST", "/acme/app.git/git-receive-pack", body, headers)
    return status, text


@pytest.mark.parametrize("body", [
    b"garbage that is not a pkt-line",
    pkt(b"zzzz not a ref update\n") + b"0000",
    pkt(f"{ZERO} {'1' * 40} refs/heads/x\x00report-status\n".encode()) + b"0000PACK\x00\x00\x00\x02",
    pkt(f"{ZERO} {'1' * 40} refs/heads/x\x00report-status\n".encode()) + b"0000" + b"\x00" * 64,
    b"",
])
def test_garbage_push_bodies_change_nothing(forge: Forge, dev: UserHandle, git,
                                            body: bytes) -> None:
    before = refs_of(forge, git)
    status, text = receive_pack(forge, dev, body)
    assert status in (200, 400)
    if status == 200:
        assert "unpack ok" not in text or "ng refs/heads/x" in text
    assert refs_of(forge, git) == before
    git("fsck", "--full", cwd=forge.repository_path("acme/app"))
    assert not list((forge.repository_path("acme/app") / "objects").glob("tmp_pack_*"))
    assert not forge.state.take_errors()


def test_garbage_fetch_bodies_get_400(forge: Forge, dev: UserHandle, engine: str) -> None:
    headers = {"Authorization": basic("dev", dev.password or ""),
               "Content-Type": "application/x-git-upload-pack-request"}
    status, text, _ = raw_request(forge, "POST", "/acme/app.git/git-upload-pack", b"nonsense", headers)
    assert status == 400, text
    unknown = pkt(b"want " + b"f" * 40 + b"\n") + b"0000" + pkt(b"done\n")
    status, text, _ = raw_request(forge, "POST", "/acme/app.git/git-upload-pack", unknown, headers)
    if engine == "git":  # as git http-backend (and so GitLab) answers: an ERR packet
        assert (status, text) == (200, "0049ERR upload-pack: not our ref " + "f" * 40)
    else:
        assert (status, text) == (400, "Bad request: GitProtocolError")
    status, text, _ = raw_request(forge, "POST", "/acme/app.git/git-upload-pack", b"0000",
                                  {**headers, "Content-Type": "text/plain"})
    assert status == 415
    assert not forge.state.take_errors()


def make_pack(git, work: Path, revs: str) -> bytes:
    result = subprocess.run(["git", "pack-objects", "--revs", "--stdout"], cwd=work,
                            input=revs.encode(), capture_output=True, check=True)
    return result.stdout


def test_truncated_pack_is_refused_and_leaves_repository_intact(
        forge: Forge, dev: UserHandle, git, commit, tmp_path: Path) -> None:
    work = tmp_path / "w"
    git("clone", "-q", forge.clone_url("acme/app", user=dev), work)
    base = git("rev-parse", "HEAD", cwd=work).stdout.strip()
    new = commit(work, {"big.txt": "x" * 100_000, "more.txt": "y\n"})
    pack = make_pack(git, work, f"{new}\n^{base}\n")
    command = pkt(f"{ZERO} {new} refs/heads/truncated\x00report-status\n".encode()) + b"0000"
    before = refs_of(forge, git)
    status, text = receive_pack(forge, dev, command + pack[: len(pack) // 2])
    assert status == 200 and "unpack ok" not in text
    assert refs_of(forge, git) == before
    git("fsck", "--full", cwd=forge.repository_path("acme/app"))
    assert not list((forge.repository_path("acme/app") / "objects").glob("tmp_pack_*"))


@pytest.mark.parametrize("with_git", [True, False], ids=["git", "no-git"])
def test_pack_with_missing_objects_is_refused(forge: Forge, dev: UserHandle, git, commit,
                                              tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              with_git: bool) -> None:
    from forge import receivepack
    if not with_git:  # no git to fsck the pack: forge's own connectivity check refuses it
        monkeypatch.setattr(receivepack, "find_git", lambda: None)
    work = tmp_path / "w"
    git("clone", "-q", forge.clone_url("acme/app", user=dev), work)
    parent = commit(work, {"p.txt": "parent only\n"})
    child = commit(work, {"c.txt": "child\n"})
    pack = make_pack(git, work, f"{child}\n^{parent}\n")  # leaves out the parent commit
    command = pkt(f"{ZERO} {child} refs/heads/broken\x00report-status\n".encode()) + b"0000"
    status, text = receive_pack(forge, dev, command + pack)
    assert status == 200
    # Gitaly's receive-pack checks the pack (receive.fsckObjects): its links are broken
    if with_git:
        assert "unpack index-pack abnormal exit" in text
        assert "ng refs/heads/broken unpacker error" in text
    else:
        assert "ng refs/heads/broken missing necessary objects" in text
    assert "refs/heads/broken" not in refs_of(forge, git)
    # and a ref to an object that is not there at all
    command = pkt(f"{ZERO} {'a' * 40} refs/heads/ghost\x00report-status\n".encode()) + b"0000"
    status, text = receive_pack(forge, dev, command + make_pack(git, work, f"{parent}\n^{parent}\n"))
    assert "ng refs/heads/ghost missing necessary objects" in text
    git("fsck", "--full", "--strict", cwd=forge.repository_path("acme/app"))


def test_oversized_body_is_refused_before_reading(forge: Forge, dev: UserHandle) -> None:
    limit = forge.state.config.max_body_bytes
    url = urlsplit(forge.url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    conn.putrequest("POST", "/acme/app.git/git-receive-pack")
    conn.putheader("Authorization", basic("dev", dev.password or ""))
    conn.putheader("Content-Type", "application/x-git-receive-pack-request")
    conn.putheader("Content-Length", str(limit + 1))
    conn.endheaders()
    response = conn.getresponse()
    assert response.status == 413
    assert response.read() == b"Request body too large."
    conn.close()


def test_chunked_push_past_the_limit_gets_413(forge: Forge, dev: UserHandle, git, commit,
                                              tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """git sends a large push chunked: past the limit it is 413, as with a Content-Length."""
    import os
    work = tmp_path / "w"
    git("clone", "-q", forge.clone_url("acme/app", user=dev), work)
    commit(work, {"big.bin": os.urandom(60_000).hex()})
    monkeypatch.setattr(forge.state, "config", forge.state.config.replace(max_body_bytes=20_000))
    pushed = git("-c", "http.postBuffer=4096", "push", "origin", "HEAD:refs/heads/big", cwd=work,
                 check=False)
    assert pushed.returncode != 0
    assert "HTTP 413" in pushed.stderr, pushed.stderr
    assert "refs/heads/big" not in refs_of(forge, git)


def test_secrets_never_reach_database_or_logs(forge: Forge, dev: UserHandle, git, tmp_path: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    job = forge.start_job("acme/app", dev)
    git("clone", "-q", forge.clone_url("acme/app", job=job), tmp_path / "j")
    git("clone", "-q", forge.clone_url("acme/app", user=dev), tmp_path / "p")
    git("clone", "-q", forge.clone_url("acme/app", user=dev, password=True), tmp_path / "pw")
    raw_request(forge, "GET", f"/acme/app.git/info/refs?service=git-upload-pack&job_token={job.token}")
    raw_request(forge, "GET", f"/-/forge/events?private_token={forge.root_token}")
    git("clone", f"http://{dev.token}@{urlsplit(forge.url).netloc}/acme/app.git", tmp_path / "u",
        check=False)  # a PAT pasted as the username
    secrets = [job.token, dev.token, dev.password, forge.root_token]
    data_dir = forge.state.config.data_dir
    for path in data_dir.rglob("*"):
        if path.is_file() and path.suffix not in (".pack", ".idx"):
            content = path.read_bytes()
            for secret in secrets:
                assert secret is not None and secret.encode() not in content, path
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "job_token=[FILTERED]" in logged
    for secret in secrets:
        assert secret not in logged
    events = str(forge.events())
    for secret in secrets:
        assert secret not in events
