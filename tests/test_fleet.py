"""`forge serve --workers 4` on PostgreSQL: every process sees every change at once, and
concurrent pushes, clones and a worker killed mid-push lose nothing.

Which process answered is in each answer's `X-Forge-Worker` header; a change is "seen by
every process" when, after it, requests on fresh connections have reached every worker
and each gave the new answer (and each gave the old answer before it).
"""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from serving import DEMO, FORGE, Served

from forge.repos import in_use

pytestmark = pytest.mark.fleet

WORKERS = 4
SCENARIO = {
    "users": [
        {"username": "alice", "password": "alice-pass-1",
         "tokens": [{"name": "t", "scopes": ["api"], "token": "glpat-alice-fleet-000001"}]},
        {"username": "bob", "password": "bob-pass-1",
         "tokens": [{"name": "t", "scopes": ["api"], "token": "glpat-bob-fleet-00000001"}]},
    ],
    "groups": [{"path": "acme", "members": {"alice": "maintainer"}}],
    "projects": [
        {"path": "acme/app", "files": {"README.md": "app\n"}, "members": {"bob": "developer"}},
        {"path": "acme/lib", "files": {"lib.py": "x = 1\n"}, "members": {"bob": "reporter"}},
        {"path": "acme/busy", "files": {"README.md": "busy\n"}},
    ],
    "jobs": [{"project": "acme/app", "user": "bob", "status": "running",
              "token": "glcbt-64_fleetJobToken000000001"}],
}


class Fleet:
    """A running `forge serve --workers N` and helpers to reach all of its processes."""

    def __init__(self, served: Served, data_dir: Path) -> None:
        self.served = served
        self.url = served.url
        self.port = int(self.url.rsplit(":", 1)[1])
        self.data_dir = data_dir
        self.root = {"PRIVATE-TOKEN": served.root_token}

    def workers(self) -> set[int]:
        """The live worker pids (the master's children, but a dead one it has not reaped yet)."""
        pid = self.served.proc.pid
        live = set()
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            try:
                state = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except FileNotFoundError:
                continue
            if state not in ("Z", "X"):
                live.add(int(child))
        return live

    def wait_for_workers(self, count: int = WORKERS, timeout: float = 120) -> set[int]:
        """Wait until `count` workers run and each answers."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.workers()) == count:
                try:  # a new worker answers once it has built its app
                    seen = self.everywhere(lambda: requests.get(f"{self.url}/-/health", timeout=30),
                                           lambda r: r.status_code == 200, rounds=10)
                except AssertionError:
                    continue
                if seen == self.workers():
                    return seen
            time.sleep(0.2)
        raise AssertionError(f"the fleet did not get {count} serving workers")

    def everywhere(self, call: Callable[[], requests.Response],
                   expect: Callable[[requests.Response], bool], rounds: int = 60) -> set[int]:
        """Call until every worker has answered; every answer must meet `expect`."""
        want, seen = self.workers(), set()
        with ThreadPoolExecutor(8) as pool:
            for _ in range(rounds):
                for response in pool.map(lambda _: call(), range(8)):
                    assert expect(response), (response.status_code, response.text[:300])
                    seen.add(int(response.headers["X-Forge-Worker"]))
                if want <= seen:
                    return seen
        raise AssertionError(f"workers {sorted(want - seen)} never answered")


@pytest.fixture(scope="module")
def fleet(forge_postgres: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """A fleet of 4 workers on a new PostgreSQL database, seeded with SCENARIO."""
    from forge.pgcluster import create_database, drop_database

    url = create_database(forge_postgres)
    data_dir = tmp_path_factory.mktemp("fleet") / "data"
    served = Served(data_dir, "--workers", str(WORKERS), "--database-url", url)
    try:
        assert served.proc.stdout is not None  # the same lines as one process prints
        assert served.proc.stdout.readline().startswith("runner registration token: GR1348941")
        running = Fleet(served, data_dir)
        running.wait_for_workers()
        answer = requests.post(f"{running.url}/-/forge/seed", json=SCENARIO, headers=running.root,
                               timeout=60)
        assert answer.status_code == 201, answer.text
        yield running
    finally:
        served.stop()
        drop_database(forge_postgres, url)
    assert "Traceback" not in served.log.read_text(), served.log.read_text()


def _basic(user: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode(),
            "Connection": "close"}


def _refs(fleet: Fleet, project: str, user: str, secret: str) -> Callable[[], requests.Response]:
    """What `git clone` asks first: the ref advertisement, on a fresh connection."""
    return lambda: requests.get(f"{fleet.url}/{project}.git/info/refs?service=git-upload-pack",
                                headers=_basic(user, secret), timeout=60)


def _status(code: int) -> Callable[[requests.Response], bool]:
    return lambda response: response.status_code == code


def test_fleet_finished_job_token_is_refused_by_every_process(fleet: Fleet, git: Any,
                                                              tmp_path: Path) -> None:
    token = "glcbt-64_fleetJobToken000000001"
    fleet.everywhere(_refs(fleet, "acme/app", "gitlab-ci-token", token), _status(200))
    job = requests.get(f"{fleet.url}/-/forge/jobs/1", headers=fleet.root, timeout=30)
    assert job.json()["status"] == "running"
    finished = requests.patch(f"{fleet.url}/-/forge/jobs/1", json={"status": "success"},
                              headers=fleet.root, timeout=30)
    assert finished.status_code == 200 and "X-Forge-Worker" in finished.headers
    fleet.everywhere(_refs(fleet, "acme/app", "gitlab-ci-token", token), _status(401))
    refused = git("clone", f"http://gitlab-ci-token:{token}@127.0.0.1:{fleet.port}/acme/app.git",
                  tmp_path / "app", check=False)
    assert "HTTP Basic: Access denied" in refused.stderr


def test_fleet_role_allowlist_and_block_are_seen_by_every_process_at_once(fleet: Fleet) -> None:
    job = requests.post(f"{fleet.url}/-/forge/jobs", json={"project": "acme/app", "user": "bob"},
                        headers=fleet.root, timeout=30).json()
    bob_pat = "glpat-bob-fleet-00000001"

    # A role change: bob (reporter of acme/lib) is removed; his PAT loses the clone at once.
    fleet.everywhere(_refs(fleet, "acme/lib", "bob", bob_pat), _status(200))
    changed = requests.put(f"{fleet.url}/-/forge/members", headers=fleet.root, timeout=30,
                           json={"user": "bob", "project": "acme/lib", "role": "none"})
    assert changed.status_code == 200, changed.text
    fleet.everywhere(_refs(fleet, "acme/lib", "bob", bob_pat), _status(404))
    requests.put(f"{fleet.url}/-/forge/members", headers=fleet.root, timeout=30,
                 json={"user": "bob", "project": "acme/lib", "role": "reporter"})
    fleet.everywhere(_refs(fleet, "acme/lib", "bob", bob_pat), _status(200))

    # An allowlist change: the job of acme/app is refused by acme/lib until it is allowlisted.
    fleet.everywhere(_refs(fleet, "acme/lib", "gitlab-ci-token", job["token"]), _status(403))
    allowed = requests.post(f"{fleet.url}/-/forge/allowlist", headers=fleet.root, timeout=30,
                            json={"project": "acme/lib", "source_project": "acme/app"})
    assert allowed.status_code in (200, 201), allowed.text
    fleet.everywhere(_refs(fleet, "acme/lib", "gitlab-ci-token", job["token"]), _status(200))

    # A blocked user: his PAT, his password and his job's token all stop at once.
    blocked = requests.post(f"{fleet.url}/api/v4/users/3/block", headers=fleet.root, timeout=30)
    assert blocked.status_code == 201, blocked.text
    for secret_user, secret in (("bob", bob_pat), ("bob", "bob-pass-1"),
                                ("gitlab-ci-token", job["token"])):
        fleet.everywhere(_refs(fleet, "acme/app", secret_user, secret), _status(401))
    requests.post(f"{fleet.url}/api/v4/users/3/unblock", headers=fleet.root, timeout=30)


def _work_tree(git: Any, fleet: Fleet, tmp_path: Path, name: str) -> Path:
    work = tmp_path / name
    git("clone", "-q", f"http://oauth2:glpat-alice-fleet-000001@127.0.0.1:{fleet.port}/acme/busy.git",
        work)
    return work


def test_fleet_sixteen_concurrent_pushes_lose_nothing(fleet: Fleet, git: Any, commit: Any,
                                                      tmp_path: Path) -> None:
    trees = [_work_tree(git, fleet, tmp_path, f"w{n}") for n in range(16)]
    shas = [commit(work, {f"file{n}.txt": f"push {n}\n" * 1000}, f"push {n}")
            for n, work in enumerate(trees)]

    def push(n: int) -> Any:
        return git("push", "-q", "origin", f"HEAD:refs/heads/branch-{n}", cwd=trees[n], check=False)

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(push, range(16)))
    assert [r.returncode for r in results] == [0] * 16, [r.stderr for r in results]
    listed = git("ls-remote", f"http://oauth2:glpat-alice-fleet-000001@127.0.0.1:{fleet.port}/acme/busy.git",
                 cwd=tmp_path).stdout
    refs = dict(reversed(line.split("\t")) for line in listed.splitlines())
    assert [refs.get(f"refs/heads/branch-{n}") for n in range(16)] == shas
    repo = _repository(fleet, "acme/busy")
    fsck = _fsck(git, repo, tmp_path)
    assert fsck.returncode == 0 and "error" not in fsck.stderr
    pushed = {e["ref"] for e in _events(fleet, action="push_ref") if e["allowed"]}
    assert {f"refs/heads/branch-{n}" for n in range(16)} <= pushed


def test_fleet_sixteen_concurrent_clones_all_succeed(fleet: Fleet, git: Any, tmp_path: Path) -> None:
    url = f"http://oauth2:glpat-alice-fleet-000001@127.0.0.1:{fleet.port}/acme/app.git"

    def clone(n: int) -> Any:
        return git("clone", "-q", url, tmp_path / f"c{n}", check=False)

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(clone, range(16)))
    assert [r.returncode for r in results] == [0] * 16, [r.stderr for r in results]
    assert {(tmp_path / f"c{n}" / "README.md").read_text() for n in range(16)} == {"app\n"}


def _repository(fleet: Fleet, path: str) -> Path:
    project = requests.get(f"{fleet.url}/api/v4/projects/{path.replace('/', '%2F')}",
                           headers=fleet.root, timeout=30).json()
    return fleet.data_dir / "repositories" / f"{project['id']}.git"


def _fsck(git: Callable[..., Any], repo: Path, cwd: Path) -> Any:
    """`git fsck` as a forge reader: a worker's housekeeping (a repack after the pushes)
    waits for the repository's shared lock to be given back."""
    with in_use(repo):
        return git("--git-dir", repo, "fsck", "--strict", "--no-dangling", cwd=cwd)


def _events(fleet: Fleet, **filters: Any) -> list[dict[str, Any]]:
    answer = requests.get(f"{fleet.url}/-/forge/events", params={"limit": 10000, **filters},
                          headers=fleet.root, timeout=30)
    return list(answer.json()["events"] if isinstance(answer.json(), dict) else answer.json())


def _holder_of_connection(fleet: Fleet, client: socket.socket) -> int:
    """The worker whose descriptors include the server end of `client`'s connection."""
    client_port = client.getsockname()[1]
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = fields[1], fields[2]
        if int(local.split(":")[1], 16) == fleet.port and int(remote.split(":")[1], 16) == client_port:
            inodes.add(fields[9])
    for pid in fleet.workers():
        try:
            links = {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
        except FileNotFoundError:
            continue
        if any(f"socket:[{inode}]" in links for inode in inodes):
            return pid
    raise AssertionError("no worker holds the connection")


def test_fleet_worker_killed_mid_push_leaves_repository_and_database_consistent(
        fleet: Fleet, git: Any, commit: Any, tmp_path: Path) -> None:
    work = _work_tree(git, fleet, tmp_path, "k")
    old = git("rev-parse", "HEAD", cwd=work).stdout.strip()
    new = commit(work, {"big.bin": os.urandom(4 * 1024 * 1024)}, "big")
    pack = subprocess.run(["git", "pack-objects", "--stdout", "--revs", "-q"], cwd=work, check=True,
                          input=f"{new}\n^{old}\n".encode(), capture_output=True).stdout
    command = f"{'0' * 40} {new} refs/heads/killed\0 report-status side-band-64k agent=test\n".encode()
    body = b"%04x" % (len(command) + 4) + command + b"0000" + pack
    auth = base64.b64encode(b"oauth2:glpat-alice-fleet-000001").decode()
    head = (f"POST /acme/busy.git/git-receive-pack HTTP/1.1\r\nHost: 127.0.0.1:{fleet.port}\r\n"
            f"Authorization: Basic {auth}\r\nContent-Type: application/x-git-receive-pack-request\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    before = fleet.workers()
    with socket.create_connection(("127.0.0.1", fleet.port)) as client:
        client.sendall(head + body[:len(body) // 2])  # half the pack: the worker waits for more
        time.sleep(1.0)
        victim = _holder_of_connection(fleet, client)
        os.kill(victim, signal.SIGKILL)
        client.settimeout(30)
        assert client.recv(4096) == b""  # the connection dies with the worker, unanswered
    survivors = before - {victim}
    # The others serve on; the master replaces the dead worker.
    seen = fleet.wait_for_workers()
    assert survivors <= seen and victim not in seen
    url = f"http://oauth2:glpat-alice-fleet-000001@127.0.0.1:{fleet.port}/acme/busy.git"
    assert "refs/heads/killed" not in git("ls-remote", url, cwd=tmp_path).stdout
    repo = _repository(fleet, "acme/busy")
    assert _fsck(git, repo, tmp_path).returncode == 0
    assert not [e for e in _events(fleet, action="push_ref") if e["ref"] == "refs/heads/killed"]
    # The same push again lands whole: no lock, half pack or row was left behind.
    git("push", "-q", "origin", "HEAD:refs/heads/killed", cwd=work)
    assert f"{new}\trefs/heads/killed" in git("ls-remote", url, cwd=tmp_path).stdout
    assert _fsck(git, repo, tmp_path).returncode == 0
    clone = git("clone", "-q", "--branch", "killed", url, tmp_path / "again", check=False)
    assert clone.returncode == 0, clone.stderr


def test_fleet_clock_moved_through_one_process_moves_every_process(fleet: Fleet) -> None:
    job = requests.post(f"{fleet.url}/-/forge/jobs", headers=fleet.root, timeout=30,
                        json={"project": "acme/app", "user": "alice", "timeout": 600}).json()
    fleet.everywhere(_refs(fleet, "acme/app", "gitlab-ci-token", job["token"]), _status(200))
    moved = requests.post(f"{fleet.url}/-/forge/clock", json={"advance": 3600}, headers=fleet.root,
                          timeout=30)
    assert moved.status_code == 200 and moved.json()["offset"] == 3600
    try:
        fleet.everywhere(_refs(fleet, "acme/app", "gitlab-ci-token", job["token"]), _status(401))
        assert _events(fleet, job_id=job["id"])[-1]["reason"] == "job_timed_out"
    finally:
        requests.post(f"{fleet.url}/-/forge/clock", json={"offset": 0}, headers=fleet.root, timeout=30)
    fleet.everywhere(_refs(fleet, "acme/app", "gitlab-ci-token", job["token"]), _status(200))


def test_fleet_master_alone_holds_the_data_directory_lock(fleet: Fleet, tmp_path: Path) -> None:

    master = fleet.served.proc.pid
    assert (fleet.data_dir / "forge.lock").read_text() == f"{master}\n"
    second = subprocess.run([FORGE, "serve", "--port", "0", "--data-dir", str(fleet.data_dir)],
                            capture_output=True, text=True, timeout=60)
    assert second.returncode == 1
    assert f"is in use by another forge (pid {master})" in second.stderr
    for how in (signal.SIGTERM, signal.SIGKILL):  # a worker leaving, however, keeps the lock
        victim = min(fleet.workers())
        os.kill(victim, how)
        deadline = time.monotonic() + 30
        while victim in fleet.workers() and time.monotonic() < deadline:
            time.sleep(0.1)
        fleet.wait_for_workers()
        assert (fleet.data_dir / "forge.lock").read_text() == f"{master}\n"
    with open(fleet.data_dir / "forge.lock", "rb") as handle:
        import fcntl
        with pytest.raises(BlockingIOError):
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_fleet_two_fleets_share_one_data_directory_and_database(
        forge_postgres: str, tmp_path: Path, git: Any, commit: Any) -> None:
    """As on two hosts mounting one data directory: both serve, each sees what the other did."""
    from forge.pgcluster import create_database, drop_database

    url = create_database(forge_postgres)
    data_dir = tmp_path / "shared"
    token = "glpat-shared-root-token-01"
    first = Served(data_dir, "--workers", "2", "--database-url", url, "--root-token", token)
    second = None
    try:
        second = Served(data_dir, "--workers", "2", "--database-url", url, "--root-token", token)
        root = {"PRIVATE-TOKEN": token}
        seeded = requests.post(f"{first.url}/-/forge/seed", json=SCENARIO, headers=root, timeout=60)
        assert seeded.status_code == 201, seeded.text
        alone = subprocess.run([FORGE, "serve", "--port", "0", "--data-dir", str(data_dir)],
                               capture_output=True, text=True, timeout=60)
        assert alone.returncode == 1 and "is in use by another forge" in alone.stderr
        fresh = subprocess.run([FORGE, "serve", "--port", "0", "--data-dir", str(data_dir),
                                "--workers", "2", "--fresh", "--database-url", url],
                               capture_output=True, text=True, timeout=60)
        assert fresh.returncode == 1 and "cannot be emptied now" in fresh.stderr

        work = tmp_path / "work"
        git("clone", "-q", f"http://oauth2:glpat-alice-fleet-000001@{first.url[7:]}/acme/busy.git", work)
        sha = commit(work, {"shared.txt": "both\n"}, "through the first fleet")
        git("push", "-q", "origin", "HEAD:refs/heads/shared", cwd=work)
        listed = git("ls-remote", f"http://oauth2:glpat-alice-fleet-000001@{second.url[7:]}/acme/busy.git",
                     cwd=tmp_path).stdout
        assert f"{sha}\trefs/heads/shared" in listed
        job = "glcbt-64_fleetJobToken000000001"
        assert _refs_status(second.url, job) == 200
        requests.patch(f"{first.url}/-/forge/jobs/1", json={"status": "success"}, headers=root, timeout=30)
        assert _refs_status(second.url, job) == 401
    finally:
        if second is not None:
            second.stop()
        first.stop()
        drop_database(forge_postgres, url)


def _refs_status(url: str, job_token: str) -> int:
    return requests.get(f"{url}/acme/app.git/info/refs?service=git-upload-pack",
                        headers=_basic("gitlab-ci-token", job_token), timeout=30).status_code


def test_fleet_fresh_empties_its_database_too(forge_postgres: str, tmp_path: Path) -> None:
    """`make serve WORKERS=4 DATABASE_URL=...` twice: the second fleet seeds a new forge
    again, instead of serving projects whose repositories went with the data directory."""
    from forge.pgcluster import create_database, drop_database

    url = create_database(forge_postgres)
    args = ("--workers", "2", "--fresh", "--database-url", url, "--seed", str(DEMO))
    try:
        first = Served(tmp_path / "data", *args)
        old_token = first.root_token
        first.stop()
        second = Served(tmp_path / "data", *args)
        try:
            assert second.lines[-1].startswith("curl ")  # seeded again
            refs = requests.get(f"{second.url}/acme/website.git/info/refs?service=git-upload-pack",
                                timeout=30)
            assert refs.status_code == 200
            stale = requests.get(f"{second.url}/api/v4/user", headers={"PRIVATE-TOKEN": old_token},
                                 timeout=30)
            assert stale.status_code == 401
        finally:
            second.stop()
    finally:
        drop_database(forge_postgres, url)
