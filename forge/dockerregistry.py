"""Run a real Docker registry (CNCF distribution, Debian's `docker-registry`) that trusts a forge."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import requests

from forge.registry import registry_config
from forge.server import ForgeServer

BINARY = "docker-registry"


def find_binary() -> str | None:
    """Return the registry binary's path, or None when it is not installed."""
    return shutil.which(BINARY) or next(
        (p for p in ("/usr/bin/docker-registry", "/usr/sbin/docker-registry") if os.access(p, os.X_OK)),
        None)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RegistryServer:
    """A `docker-registry serve` process on 127.0.0.1 and a free port, with its own storage.

    Set the forge's `registry_url` to `address` for jobs to see CI_REGISTRY and friends
    (the `forge_registry` fixture does).
    """

    def __init__(self, forge: ForgeServer, workdir: Path) -> None:
        binary = find_binary()
        if binary is None:
            raise FileNotFoundError("docker-registry is not installed (Debian package docker-registry)")
        self.forge = forge
        self.workdir = workdir
        self.storage = workdir / "storage"
        self.storage.mkdir(parents=True, exist_ok=True)
        forge.state.signing_key()  # the certificate must exist before the registry reads it
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.address}"
        config = forge.state.config
        self.config_file = workdir / "config.yml"
        self.config_file.write_text(registry_config(
            forge_url=forge.url, cert_file=config.signing_cert_path.resolve(),
            storage=self.storage, addr=self.address, service=config.registry_service,
            issuer=config.registry_issuer))
        self.log = (workdir / "registry.log").open("wb")
        self.process = subprocess.Popen([binary, "serve", str(self.config_file)], stdout=self.log,
                                        stderr=subprocess.STDOUT)
        self._wait_ready()

    def _wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"docker-registry exited: {self.read_log()}")
            try:
                if requests.get(f"{self.url}/v2/", timeout=1).status_code == 401:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"docker-registry did not answer 401 on /v2/: {self.read_log()}")

    def read_log(self) -> str:
        """Return what the registry logged (for failure messages)."""
        if not self.log.closed:
            self.log.flush()
        return (self.workdir / "registry.log").read_text(errors="replace")[-4000:]

    def clear(self) -> None:
        """Delete every stored image (between tests)."""
        for child in self.storage.iterdir():
            shutil.rmtree(child, ignore_errors=True)

    def stop(self) -> None:
        """Stop the registry."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
