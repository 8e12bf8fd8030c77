"""One forge per data directory: the lock, `forge serve --fresh`, and private database files."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import requests
from serving import DEMO, FORGE, ROOT, Served

from forge.config import ForgeConfig
from forge.datadir import DataDirBusy, DataDirLock
from forge.server import ForgeServer
from forge.testing import Forge


def _config(data_dir: Path) -> ForgeConfig:
    return ForgeConfig(data_dir=data_dir, testing=True, password_hash_method="pbkdf2:sha256:1000")


def test_datadir_second_forge_in_process_fails_naming_the_holder(tmp_path: Path) -> None:
    first = ForgeServer(_config(tmp_path / "d")).start()
    try:
        with pytest.raises(DataDirBusy) as refused:
            ForgeServer(_config(tmp_path / "d"))
        assert str(refused.value) == (
            f"data directory {(tmp_path / 'd').resolve()} is in use by another forge "
            f"(pid {os.getpid()}); stop that forge first, or give this one another --data-dir")
    finally:
        first.stop()
    ForgeServer(_config(tmp_path / "d")).start().stop()  # stop() let go of the directory


def test_datadir_fixture_forge_holds_its_lock(forge: Forge) -> None:
    with pytest.raises(DataDirBusy, match=f"pid {os.getpid()}"):
        DataDirLock.acquire(forge.state.config.data_dir)


def test_datadir_database_files_are_private(tmp_path: Path) -> None:
    server = ForgeServer(_config(tmp_path / "data")).start()  # SQLite, whatever the run's database
    try:
        Forge(server).create_user("alice")  # writes: the WAL and shared-memory files exist
        modes = {name: oct((tmp_path / "data" / name).stat().st_mode & 0o777)
                 for name in ("forge.db", "forge.db-wal", "forge.db-shm", "forge.lock")}
    finally:
        server.stop()
    assert modes == dict.fromkeys(modes, "0o600")


def test_datadir_existing_database_is_narrowed_to_0600(tmp_path: Path) -> None:
    data_dir = tmp_path / "old"
    data_dir.mkdir()
    (data_dir / "forge.db").touch(mode=0o644)
    os.chmod(data_dir / "forge.db", 0o644)
    ForgeServer(_config(data_dir)).start().stop()
    assert oct((data_dir / "forge.db").stat().st_mode & 0o777) == "0o600"


def test_serve_second_forge_fails_at_once_and_leaves_the_first_intact(tmp_path: Path) -> None:
    data = tmp_path / "demo"
    first = Served(data, "--fresh", "--seed", str(DEMO))
    try:
        before = sorted(p.name for p in (data / "repositories").iterdir())
        second = subprocess.run([FORGE, "serve", "--fresh", "--port", "0", "--data-dir", str(data),
                                 "--seed", str(DEMO)], capture_output=True, text=True, timeout=30)
        assert second.returncode == 1
        assert second.stderr == (
            f"Error: data directory {data.resolve()} is in use by another forge "
            f"(pid {first.proc.pid}); stop that forge first, or give this one another --data-dir\n")
        assert sorted(p.name for p in (data / "repositories").iterdir()) == before
        assert (data / "root-token").read_text().strip() == first.root_token
        response = requests.get(f"{first.url}/-/forge/jobs/1",
                                headers={"PRIVATE-TOKEN": first.root_token})
        assert response.status_code == 200 and response.json()["project"] == "acme/app"
    finally:
        first.stop()


def test_serve_fresh_starts_the_demo_again_once_the_first_is_gone(tmp_path: Path) -> None:
    data = tmp_path / "demo"
    first = Served(data, "--fresh", "--seed", str(DEMO))
    certificate = requests.get(f"{first.url}/-/forge/registry/certificate",
                               headers={"PRIVATE-TOKEN": first.root_token})
    assert certificate.status_code == 200 and b"BEGIN CERTIFICATE" in certificate.content
    first.stop()
    second = Served(data, "--fresh", "--seed", str(DEMO))
    try:
        assert second.root_token != first.root_token  # a new data directory, a new token
        # but the same registry signing key: a registry set up to trust the forge still does
        assert requests.get(f"{second.url}/-/forge/registry/certificate",
                            headers={"PRIVATE-TOKEN": second.root_token}).content == certificate.content
        assert second.lines[-1].startswith("curl ")  # seeded again, not "already holds projects"
        response = requests.get(f"{second.url}/-/forge/jobs/1",
                                headers={"PRIVATE-TOKEN": second.root_token})
        assert response.status_code == 200
    finally:
        second.stop()


def test_make_serve_deletes_nothing_itself() -> None:
    dry = subprocess.run(["make", "-n", "serve", "PORT=0"], cwd=ROOT, capture_output=True,
                         text=True, check=True)
    serve_line = [line for line in dry.stdout.splitlines() if " serve " in line]
    assert "rm -rf" not in dry.stdout
    assert len(serve_line) == 1 and " --fresh " in serve_line[0]


def test_make_clean_refuses_while_a_forge_holds_a_data_dir(tmp_path: Path) -> None:
    (tmp_path / "Makefile").write_text((ROOT / "Makefile").read_text())
    data = tmp_path / ".forge-data" / "demo"
    clean = ["make", "clean", f"VENV={tmp_path / 'venv'}"]
    with DataDirLock.acquire(data):
        refused = subprocess.run(clean, cwd=tmp_path, capture_output=True, text=True)
        assert refused.returncode != 0
        assert refused.stderr.startswith(f".forge-data/demo is in use by a forge (pid {os.getpid()}); "
                                         "stop it first\n")
        assert (data / "forge.lock").exists()
    subprocess.run(clean, cwd=tmp_path, capture_output=True, text=True, check=True)
    assert not (tmp_path / ".forge-data").exists()


def test_datadir_fleets_share_the_lock_and_an_embedded_forge_is_refused(tmp_path: Path) -> None:
    first = DataDirLock.acquire(tmp_path, shared=True)
    assert first.alone  # found it free: may sweep, then lets others in
    first.share()
    second = DataDirLock.acquire(tmp_path, shared=True)
    assert not second.alone
    with pytest.raises(DataDirBusy, match=f"pid {os.getpid()}"):
        DataDirLock.acquire(tmp_path)
    with pytest.raises(DataDirBusy, match="cannot be emptied now"):
        second.empty()
    first.release()
    second.release()
    with DataDirLock.acquire(tmp_path) as embedded:
        assert embedded.alone
        with pytest.raises(DataDirBusy):
            DataDirLock.acquire(tmp_path, shared=True)
