"""Writers race, repositories age, clients misbehave: no push is lost and nothing leaks."""

from __future__ import annotations

import base64
import gzip
import http.client
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from forge import gitserve, housekeeping
from forge.config import ForgeConfig
from forge.housekeeping import Limits, pack_count
from forge.repos import RepositoryBusy, in_use
from forge.server import ForgeServer
from forge.testing import Forge, UserHandle


@pytest.fixture
def dev(forge: Forge) -> UserHandle:
    forge.create_group("acme")
    user = forge.create_user("dev")
    forge.create_project("acme/app", files={"README.md": "v1\n"}, members={"dev": "developer"},
                         visibility="public")
    return user


def user_session(user: UserHandle) -> requests.Session:
    session = requests.Session()
    session.headers["PRIVATE-TOKEN"] = user.token or ""
    return session


def write_file(forge: Forge, session: requests.Session, branch: str, name: str) -> requests.Response:
    return session.post(f"{forge.url}/api/v4/projects/acme%2Fapp/repository/files/{name}",
                        json={"branch": branch, "content": name, "commit_message": f"add {name}"},
                        timeout=60)


def test_push_racing_a_rest_write_is_not_lost(forge: Forge, dev: UserHandle, git, commit,
                                               tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "work"
    git("clone", "-q", forge.clone_url("acme/app", user=dev), work)
    git("push", "-q", "origin", "HEAD:feature", cwd=work)
    pushed = commit(work, {"pushed.txt": "1"})
    session = user_session(dev)
    rest: list[requests.Response] = []
    original = gitserve.GitApplication._ref_checker

    def racing_checker(self: Any, *args: Any) -> Any:
        check = original(self, *args)

        def check_then_race(*check_args: Any) -> Any:
            # The push has compared the ref; a REST write to the same branch now tries
            # to land before the push moves it.
            writer = threading.Thread(target=lambda: rest.append(
                write_file(forge, session, "feature", "rest.txt")))
            writer.start()
            writer.join(timeout=0.5)
            return check(*check_args)

        return check_then_race

    monkeypatch.setattr(gitserve.GitApplication, "_ref_checker", racing_checker)
    result = git("push", "origin", "HEAD:feature", cwd=work, check=False)
    deadline = time.monotonic() + 30
    while not rest and time.monotonic() < deadline:
        time.sleep(0.05)
    assert result.returncode == 0, result.stderr
    assert rest and rest[0].status_code == 201, rest and rest[0].text
    git("fetch", "-q", "origin", cwd=work)
    history = git("rev-list", "origin/feature", cwd=work).stdout.split()
    assert pushed in history  # the push reported ok, so its commit must be there
    files = git("ls-tree", "--name-only", "origin/feature", cwd=work).stdout.split()
    assert {"pushed.txt", "rest.txt"} <= set(files)


def test_parallel_rest_writes_to_one_branch_all_land(forge: Forge, dev: UserHandle, git,
                                                     tmp_path: Path) -> None:
    session = user_session(dev)
    assert session.post(f"{forge.url}/api/v4/projects/acme%2Fapp/repository/branches",
                        json={"branch": "feature", "ref": "main"}, timeout=60).status_code == 201
    names = [f"f{i}.txt" for i in range(24)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda n: write_file(forge, session, "feature", n), names))
    assert [a.status_code for a in answers] == [201] * len(names), [a.text for a in answers]
    work = tmp_path / "check"
    git("clone", "-q", "--branch", "feature", forge.clone_url("acme/app", user=dev), work)
    assert set(names) <= set(os.listdir(work))
    assert len(git("rev-list", "HEAD", cwd=work).stdout.split()) == len(names) + 1


def test_push_while_the_ref_lock_is_held_waits_then_lands(forge: Forge, dev: UserHandle, git,
                                                          commit, tmp_path: Path) -> None:
    from forge.repos import ref_lock
    work = tmp_path / "work"
    git("clone", "-q", forge.clone_url("acme/app", user=dev), work)
    sha = commit(work, {"x.txt": "1"})
    release = threading.Event()

    def hold() -> None:
        with ref_lock(forge.repository_path("acme/app")):
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    threading.Timer(0.5, release.set).start()
    result = git("push", "origin", "HEAD:feature", cwd=work, check=False)
    holder.join()
    assert result.returncode == 0, result.stderr
    assert sha in git("ls-remote", "origin", cwd=work).stdout


def _open_files_under(path: Path) -> list[str]:
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(path)) and not target.endswith(".lock"):
            found.append(target)
    return found


def test_many_pushes_are_repacked_and_clones_close_their_packs(
        forge: Forge, dev: UserHandle, git, commit, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(forge.state.housekeeper, "limits", Limits(packs=4, loose_objects=1000))
    work = tmp_path / "work"
    git("clone", "-q", forge.clone_url("acme/app", user=dev), work)
    git("checkout", "-q", "-b", "feature", cwd=work)
    shas = []
    for i in range(16):
        shas.append(commit(work, {f"n{i}.txt": str(i)}))
        git("push", "-q", "origin", "feature", cwd=work)
    assert forge.state.housekeeper.wait_idle(60)
    repo = forge.repository_path("acme/app")
    assert pack_count(repo) <= 4
    clone = tmp_path / "clone"
    git("clone", "-q", "--branch", "feature", forge.clone_url("acme/app", user=dev), clone)
    assert git("rev-parse", "HEAD", cwd=clone).stdout.strip() == shas[-1]
    assert git("fsck", "--full", cwd=repo).returncode == 0
    # Every pack file a request opened was closed when it ended.
    assert _open_files_under(repo) == []


def test_many_refs_are_packed_and_stay_what_git_says(
        forge: Forge, dev: UserHandle, git, commit, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(forge.state.housekeeper, "limits", Limits(loose_refs=20))
    work = tmp_path / "work"
    url = forge.clone_url("acme/app", user=dev)
    git("clone", "-q", url, work)
    git("checkout", "-q", "-b", "feature", cwd=work)
    for i in range(30):
        commit(work, {"n.txt": str(i)})
        git("tag", f"light-{i}", cwd=work)
        git("tag", "-a", "-m", f"release {i}", f"v1.{i}", cwd=work)
    git("push", "-q", "origin", "feature", "--tags", cwd=work)
    assert forge.state.housekeeper.wait_idle(60)
    repo = forge.repository_path("acme/app")
    assert housekeeping.loose_ref_count(repo) == 0
    # What forge advertises is what git reads from the repository itself, peeled tags too.
    served = git("ls-remote", url).stdout
    assert served == git("ls-remote", repo).stdout
    assert "refs/tags/v1.29^{}" in served
    # Packed refs still move and go.
    commit(work, {"n.txt": "after"})
    git("push", "-q", "origin", "feature", ":refs/tags/v1.3", ":refs/tags/light-4", cwd=work)
    served = git("ls-remote", url).stdout
    assert "refs/tags/v1.3\n" not in served and "refs/tags/v1.3^{}" not in served
    assert "refs/tags/light-4\n" not in served
    assert served == git("ls-remote", repo).stdout
    assert git("ls-remote", url, "refs/heads/feature").stdout.split()[0] == git(
        "rev-parse", "HEAD", cwd=work).stdout.strip()
    clone = tmp_path / "clone"
    git("clone", "-q", "--branch", "v1.29", url, clone)
    assert (clone / "n.txt").read_text() == "29"
    assert git("fsck", "--strict", cwd=repo).returncode == 0


def test_refused_push_leaves_no_pack_behind(forge: Forge, dev: UserHandle, git, commit,
                                            tmp_path: Path) -> None:
    work = tmp_path / "work"
    git("clone", "-q", forge.clone_url("acme/app", user=dev), work)
    repo = forge.repository_path("acme/app")
    assert forge.state.housekeeper.wait_idle(30)
    before = sorted(p.name for p in (repo / "objects" / "pack").iterdir())
    commit(work, {"big.bin": os.urandom(200_000).hex()})
    result = git("push", "origin", "HEAD:main", cwd=work, check=False)  # main is protected
    assert "(pre-receive hook declined)" in result.stderr
    assert forge.state.housekeeper.wait_idle(30)
    assert sorted(p.name for p in (repo / "objects" / "pack").iterdir()) == before
    assert not list((repo / "objects").glob("tmp_pack_*"))


def test_housekeeping_sweeps_crash_leftovers(forge: Forge, dev: UserHandle, git,
                                             tmp_path: Path) -> None:
    repo = forge.repository_path("acme/app")
    (repo / "objects" / "tmp_pack_killed").write_bytes(b"PACK" + b"\0" * 1000)
    (repo / "objects" / "pack" / "tmp_idx_killed").write_bytes(b"x")
    (repo / "refs" / "heads" / "main.lock").write_text("0" * 40 + "\n")
    orphan = forge.state.backend.root / "9999.git"
    orphan.mkdir()
    os.utime(orphan, (time.time() - 3600, time.time() - 3600))
    with forge.app.app_context():
        from forge import domain
        key = domain.get_project("acme/app").id
    report = forge.state.housekeeper.maintain(key)
    assert sorted(report["swept"]) == sorted(  # type: ignore[arg-type]
        ["objects/tmp_pack_killed", "objects/pack/tmp_idx_killed", "refs/heads/main.lock"])
    assert housekeeping.sweep_orphans(forge.state.backend, [key]) == ["9999.git"]
    assert not orphan.exists()
    # The stale lock no longer blocks the branch.
    result = git("ls-remote", forge.clone_url("acme/app", user=dev))
    assert "refs/heads/main" in result.stdout


def test_reset_moves_repositories_aside_at_once_and_deletes_them_behind(forge: Forge, dev: UserHandle,
                                                                        tmp_path: Path) -> None:
    backend = forge.state.backend
    forge.reset()
    assert not list(backend.root.iterdir())  # the fixture's next test starts from nothing
    deadline = time.monotonic() + 30
    while list(backend.root.parent.glob("repositories.deleted-*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not list(backend.root.parent.glob("repositories.deleted-*"))
    # What a reset moved aside and a crash kept from deleting goes at the next start.
    left = backend.root.parent / "repositories.deleted-crash" / "1.git"
    left.mkdir(parents=True)
    assert backend.sweep_trash() == [left.parent]
    assert not left.parent.exists()


def test_gzip_body_that_inflates_past_the_limit_gets_413(forge: Forge, dev: UserHandle, engine: str,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(forge.state, "config",
                        forge.state.config.replace(max_inflated_body_bytes=1024 * 1024))
    with forge.app.app_context():
        from forge import domain
        head = forge.state.backend.resolve(domain.get_project("acme/app").id, "main").encode()
    want = b"want " + head + b" side-band-64k ofs-delta thin-pack\n"
    have = b"0032have " + b"1" * 40 + b"\n"
    bomb = gzip.compress(f"{len(want) + 4:04x}".encode() + want + b"0000" + have * 200_000)  # 10 MB
    assert len(bomb) < 40_000
    answer = requests.post(f"{forge.url}/acme/app.git/git-upload-pack", data=bomb, timeout=60,
                           headers={"Content-Type": "application/x-git-upload-pack-request",
                                    "Content-Encoding": "gzip"})
    assert (answer.status_code, answer.text) == (413, "Request body too large.")
    assert requests.get(f"{forge.url}/-/health", timeout=10).status_code == 200


@pytest.mark.parametrize("service", ["git-upload-pack", "git-receive-pack"])
@pytest.mark.parametrize("body", [b"0032want " + b"1" * 40 + b"\n0000", gzip.compress(b"x" * 5000)[:30]],
                         ids=["not-gzip", "cut-short"])
def test_gzip_body_that_is_not_gzip_gets_400(forge: Forge, dev: UserHandle, engine: str,
                                            service: str, body: bytes) -> None:
    answer = requests.post(f"{forge.url}/acme/app.git/{service}", data=body, timeout=60,
                           auth=(dev.username, dev.token or ""),
                           headers={"Content-Type": f"application/x-{service}-request",
                                    "Content-Encoding": "gzip"})
    assert answer.status_code == 400
    assert answer.text.startswith("Bad request: ")
    assert requests.get(f"{forge.url}/-/health", timeout=10).status_code == 200


@pytest.mark.parametrize("request_tail", [
    b"Transfer-Encoding: chunked\r\n\r\nzz\r\n\r\n",  # a chunk size that is no number
    b"Content-Length: 1000\r\n\r\n0032want ",  # and then the client stops sending
], ids=["bad-chunk", "cut-short"])
def test_fetch_body_that_cannot_be_read_gets_400(forge: Forge, dev: UserHandle, engine: str,
                                                 request_tail: bytes) -> None:
    url = urlsplit(forge.url)
    with socket.create_connection((url.hostname or "", url.port or 80), timeout=30) as sock:
        sock.sendall(b"POST /acme/app.git/git-upload-pack HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: application/x-git-upload-pack-request\r\n" + request_tail)
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
    assert requests.get(f"{forge.url}/-/health", timeout=10).status_code == 200


def test_gzip_body_within_the_limit_is_served(forge: Forge, dev: UserHandle, engine: str, git,
                                              tmp_path: Path) -> None:
    # git gzips every upload-pack request; a normal clone is well inside the limit.
    git("-c", "protocol.version=0", "clone", "-q", f"{forge.url}/acme/app.git", tmp_path / "c")
    assert (tmp_path / "c" / "README.md").read_text() == "v1\n"


def test_branch_with_non_utf8_name_is_refused_and_listing_works(
        forge: Forge, dev: UserHandle, git, commit, tmp_path: Path) -> None:
    work = tmp_path / "work"
    git("clone", "-q", forge.clone_url("acme/app", user=dev), work)
    result = git("push", "origin", "HEAD:refs/heads/caf\xe9-latin1", cwd=work, check=False)
    assert result.returncode == 0  # valid UTF-8 goes through
    import subprocess
    raw = subprocess.run(["git", "push", "origin", b"HEAD:refs/heads/bad\xff\xfename"],
                         cwd=work, capture_output=True, env={**os.environ, "GIT_TERMINAL_PROMPT": "0"})
    stderr = raw.stderr.decode(errors="replace")
    assert raw.returncode != 0
    assert ("remote: GitLab: You cannot push a ref whose name is not valid UTF-8 "
            "or is too long to store.") in stderr
    assert "(pre-receive hook declined)" in stderr
    answer = user_session(dev).get(f"{forge.url}/api/v4/projects/acme%2Fapp/repository/branches",
                                 timeout=30)
    assert answer.status_code == 200
    assert sorted(b["name"] for b in answer.json()) == ["caf\xe9-latin1", "main"]
    assert forge.last_event(action="push_ref", allowed=False)["reason"] == "invalid_ref_name"


@pytest.mark.parametrize("branch", ["a" * 251, "/".join(["b" * 200] * 6),
                                    "0123456789abcdef0123456789abcdef01234567"])
def test_push_of_branch_gitlab_refuses(forge: Forge, dev: UserHandle, git, tmp_path: Path,
                                       branch: str) -> None:
    work = tmp_path / "work"
    git("clone", "-q", forge.clone_url("acme/app", user=dev), work)
    result = git("push", "origin", f"HEAD:refs/heads/{branch}", cwd=work, check=False)
    assert result.returncode != 0
    message = ("You cannot create a branch with a 40-character hexadecimal branch name."
               if len(branch) == 40 else
               "You cannot push a ref whose name is not valid UTF-8 or is too long to store.")
    assert f"remote: GitLab: {message}" in result.stderr
    assert branch not in git("ls-remote", "origin", cwd=work).stdout


def test_git_route_500_is_logged_with_its_traceback(forge: Forge, dev: UserHandle,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    def broken(*args: Any) -> Any:
        raise RuntimeError("a bug in forge")

    monkeypatch.setattr(gitserve.GitApplication, "_serve", broken)
    with caplog.at_level(logging.ERROR, logger="forge.gitserve"):
        answer = requests.get(f"{forge.url}/acme/app.git/info/refs?service=git-upload-pack",
                              timeout=30)
    assert (answer.status_code, answer.text) == (500, "Internal server error")
    assert any("RuntimeError: a bug in forge" in r.getMessage() for r in caplog.records)
    assert any("RuntimeError: a bug in forge" in e for e in forge.state.take_errors())


def test_idle_connection_is_closed_after_the_request_timeout(tmp_path: Path) -> None:
    config = ForgeConfig(data_dir=tmp_path / "data", testing=True, request_timeout=1)
    server = ForgeServer(config).start()
    try:
        url = urlsplit(server.url)
        idle = socket.create_connection((url.hostname, url.port), timeout=30)
        assert idle.recv(1) == b""  # closed by the server (our own timeout would raise)
        idle.close()
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
        conn.request("GET", "/-/health")
        assert conn.getresponse().status == 200
    finally:
        server.stop()




def _pkt(line: bytes) -> bytes:
    return f"{len(line) + 4:04x}".encode() + line


def _receive_pack(forge: Forge, user: UserHandle, body: bytes) -> tuple[int, bytes]:
    answer = requests.post(f"{forge.url}/acme/app.git/git-receive-pack", data=body, timeout=60,
                           auth=(user.username, user.password or ""),
                           headers={"Content-Type": "application/x-git-receive-pack-request"})
    return answer.status_code, answer.content


EMPTY_PACK = b"PACK\x00\x00\x00\x02\x00\x00\x00\x00" + bytes.fromhex(
    "029d08823bd8a8eab510ad6ac75c823cfd3ed31e")
ZERO = "0" * 40


@pytest.mark.parametrize(("ref", "status_line"), [
    ("refs/heads", b"ng refs/heads funny refname"),
    ("refs/foo", b"ng refs/foo funny refname"),
    ("refs/heads/", b"ng refs/heads/ funny refname"),
])
def test_push_of_ref_names_git_cannot_store_is_refused_per_ref(
        forge: Forge, dev: UserHandle, ref: str, status_line: bytes) -> None:
    with forge.app.app_context():
        from forge import domain
        head = forge.state.backend.resolve(domain.get_project("acme/app").id, "main")
    body = _pkt(f"{ZERO} {head} {ref}\0report-status\n".encode()) + b"0000" + EMPTY_PACK
    status, text = _receive_pack(forge, dev, body)
    assert status == 200
    assert b"unpack ok" in text and status_line in text
    assert not forge.state.take_errors()


def test_pack_header_claiming_more_objects_than_sent_gets_400(forge: Forge, dev: UserHandle,
                                                              git) -> None:
    body = (_pkt(f"{ZERO} {'1' * 40} refs/heads/x\0report-status\n".encode()) + b"0000"
            + b"PACK\x00\x00\x00\x02\xff\xff\xff\xff")
    status, _ = _receive_pack(forge, dev, body)
    assert status == 400
    assert not forge.state.take_errors()
    assert git("fsck", "--full", cwd=forge.repository_path("acme/app")).returncode == 0


def _serve(data_dir: Path, token: str, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    out = log.with_suffix(".out")
    with log.open("a") as err, out.open("w") as stdout:
        proc = subprocess.Popen(
            [sys.executable, "-m", "forge.cli", "serve", "--port", "0", "--data-dir", str(data_dir),
             "--root-token", token, "--quiet"], stdout=stdout, stderr=err)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        first = out.read_text().split("\n", 1)
        if len(first) > 1:
            assert first[0].startswith("forge listening on "), first[0]
            return proc, first[0].split()[-1]
        time.sleep(0.02)
    raise AssertionError(f"forge serve did not start: {log.read_text()}")


def test_kill_9_mid_push_loses_nothing_accepted_and_leaves_nothing_behind(
        tmp_path: Path, git, commit) -> None:
    token, data = "glpat-kill9-token-0000001", tmp_path / "data"
    proc, url = _serve(data, token, tmp_path / "server.log")
    try:
        headers = {"PRIVATE-TOKEN": token}
        group = requests.post(f"{url}/api/v4/groups", headers=headers, timeout=30,
                              json={"name": "acme", "path": "acme"}).json()
        project = requests.post(f"{url}/api/v4/projects", headers=headers, timeout=30, json={
            "name": "app", "namespace_id": group["id"], "initialize_with_readme": True}).json()
        remote = url.replace("http://", f"http://root:{token}@") + "/acme/app.git"
        work = tmp_path / "work"
        git("clone", "-q", remote, work)
        landed = commit(work, {"small.txt": "1"})
        git("push", "-q", "origin", "HEAD:main", cwd=work)
        new = commit(work, {"big.bin": os.urandom(2 * 1024 * 1024).hex()})
        pack = subprocess.run(["git", "pack-objects", "--revs", "--stdout"], cwd=work,
                              input=f"{new}\n^{landed}\n".encode(), capture_output=True,
                              check=True).stdout
        command = f"{landed} {new} refs/heads/main\0report-status\n".encode()
        body = f"{len(command) + 4:04x}".encode() + command + b"0000" + pack
        # Half the push is sent, then the client stalls: the server is mid-push for sure.
        address = urlsplit(url)
        pusher = socket.create_connection((address.hostname, address.port))
        pusher.sendall(b"POST /acme/app.git/git-receive-pack HTTP/1.1\r\nHost: x\r\n"
                       b"Authorization: Basic " + base64.b64encode(f"root:{token}".encode())
                       + b"\r\nContent-Type: application/x-git-receive-pack-request\r\n"
                       + f"Content-Length: {len(body)}\r\n\r\n".encode() + body[: len(body) // 2])
        repo = data / "repositories" / f"{project['id']}.git"
        deadline = time.monotonic() + 60
        while not list((repo / "objects").glob("tmp_pack_*")) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert list((repo / "objects").glob("tmp_pack_*"))  # the half-written pack
        proc.kill()  # kill -9 mid-push
        proc.wait()
        pusher.close()
    finally:
        proc.kill()
        proc.wait()

    proc, url = _serve(data, token, tmp_path / "server.log")
    try:
        deadline = time.monotonic() + 30  # start-up housekeeping sweeps, off the request path
        while list((repo / "objects").glob("tmp_pack_*")) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not list((repo / "objects").glob("tmp_pack_*"))
        with in_use(repo):  # as a reader of the server's: its housekeeping waits
            assert git("fsck", "--full", "--strict", cwd=repo).returncode == 0
        remote = url.replace("http://", f"http://root:{token}@") + "/acme/app.git"
        git("remote", "set-url", "origin", remote, cwd=work)
        assert git("ls-remote", "origin", "main", cwd=work).stdout.split()[0] == landed
        git("push", "-q", "origin", "HEAD:main", cwd=work)  # the interrupted push, again
        assert git("ls-remote", "origin", "main", cwd=work).stdout.split()[0] == git(
            "rev-parse", "HEAD", cwd=work).stdout.strip()
    finally:
        proc.terminate()
        proc.wait()


def test_a_server_that_never_served_stops_at_once(tmp_path: Path) -> None:
    server = ForgeServer(ForgeConfig(data_dir=tmp_path / "data", testing=True))
    stopper = threading.Thread(target=server.stop)
    stopper.start()
    stopper.join(timeout=10)
    assert not stopper.is_alive()
    ForgeServer(ForgeConfig(data_dir=tmp_path / "data", testing=True)).start().stop()  # lock freed


def test_start_up_removes_repositories_no_project_owns(tmp_path: Path) -> None:
    data = tmp_path / "data"
    ForgeServer(ForgeConfig(data_dir=data, testing=True)).start().stop()
    orphan = data / "repositories" / "77.git"  # what a seed killed half-way leaves
    (orphan / "objects").mkdir(parents=True)
    server = ForgeServer(ForgeConfig(data_dir=data, testing=True)).start()
    try:
        assert not orphan.exists()
    finally:
        server.stop()


def test_housekeeping_git_holds_the_maintenance_lock_after_forge_dies(forge: Forge, dev: UserHandle,
                                                                      tmp_path: Path) -> None:
    """A repack outliving a `kill -9`'d forge keeps readers and housekeeping out until it ends:
    the lock is passed on to git (here a stand-in that sleeps)."""
    repo = forge.repository_path("acme/app")
    script = (
        "import os, subprocess, sys\n"
        "from pathlib import Path\n"
        "from forge.repos import maintenance\n"
        f"with maintenance(Path({str(repo)!r})) as alone:\n"
        "    assert alone\n"
        "    child = subprocess.Popen(['sleep', '10'], pass_fds=alone.fds,\n"
        "                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
        "    print(child.pid, flush=True)\n"
        "    os._exit(9)  # as kill -9: no unlock, no cleanup\n")
    dying = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    assert dying.returncode == 9, dying.stderr
    orphan = int(dying.stdout.split()[0])
    try:
        with pytest.raises(RepositoryBusy), in_use(repo, wait=0.2):
            pass
    finally:
        os.kill(orphan, 9)
    time.sleep(0.2)
    with in_use(repo, wait=5):  # the lock went with the orphan
        pass


def test_housekeeping_passes_its_lock_to_every_git_it_runs(forge: Forge, dev: UserHandle,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[int, ...]] = []
    real = subprocess.run

    def spy(command: list[str], **kwargs: Any) -> Any:
        if command[1] in ("repack", "prune-packed", "pack-refs"):
            seen.append(tuple(kwargs.get("pass_fds", ())))
        return real(command, **kwargs)

    monkeypatch.setattr(housekeeping.subprocess, "run", spy)
    monkeypatch.setattr(forge.state.housekeeper, "limits", Limits(packs=0, loose_objects=0, loose_refs=0))
    key = forge.repository_path("acme/app").name.removesuffix(".git")
    forge.state.housekeeper.maintain(int(key))
    assert len(seen) == 3 and all(len(fds) == 1 for fds in seen)
