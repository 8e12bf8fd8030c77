"""Job tokens against a real Docker registry (distribution 2.8) with the real `skopeo` client."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest
import requests

from forge.dockerregistry import RegistryServer
from forge.plugin import ci_forbids_skips
from forge.testing import Forge, JobHandle

DENIED = "denied: requested access to the resource is denied"

if ci_forbids_skips() and shutil.which("skopeo") is None:  # pragma: no cover
    raise RuntimeError("CI is set but skopeo is not installed: run `make test`, which installs it")
pytestmark = pytest.mark.skipif(shutil.which("skopeo") is None,
                                reason="skopeo is not installed; `make test` installs it")


def make_image(root: Path, content: bytes = b"hello\n") -> Path:
    """Write a one-layer OCI image layout (tag `latest`) and return its directory."""
    blobs = root / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def blob(data: bytes) -> dict[str, Any]:
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return {"digest": f"sha256:{digest}", "size": len(data)}

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo("hello.txt")
        info.size = len(content)
        tar.addfile(info, io.BytesIO(content))
    layer = blob(gzip.compress(raw.getvalue(), mtime=0))
    config = blob(json.dumps({
        "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers",
                   "diff_ids": [f"sha256:{hashlib.sha256(raw.getvalue()).hexdigest()}"]},
    }).encode())
    manifest = blob(json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **layer}],
    }).encode())
    (root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", **manifest,
        "annotations": {"org.opencontainers.image.ref.name": "latest"}}]}))
    (root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    return root


def skopeo(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["skopeo", "--insecure-policy", *args], capture_output=True, text=True,
                          timeout=120, cwd=cwd)


def push(image: Path, registry: RegistryServer, path: str, creds: str) -> subprocess.CompletedProcess[str]:
    return skopeo("copy", "--dest-tls-verify=false", "--dest-creds", creds, f"oci:{image}:latest",
                  f"docker://{registry.address}/{path}")


def pull(registry: RegistryServer, path: str, creds: str, target: Path) -> subprocess.CompletedProcess[str]:
    return skopeo("copy", "--src-tls-verify=false", "--src-creds", creds,
                  f"docker://{registry.address}/{path}", f"dir:{target}")


def job_creds(job: JobHandle) -> str:
    return f"gitlab-ci-token:{job.token}"


@pytest.fixture
def world(forge: Forge, forge_registry: RegistryServer, tmp_path: Path) -> dict[str, Any]:
    forge.create_group("acme")
    forge.create_group("other")
    bob = forge.create_user("bob")
    forge.create_project("acme/app", members={"bob": "developer"})
    forge.create_project("acme/lib", members={"bob": "reporter"})
    forge.create_project("acme/site", visibility="public")
    forge.create_project("acme/wiki", visibility="internal")
    forge.create_project("other/secret", members={"bob": "developer"})
    forge.create_project("other/hidden")
    forge.allow("acme/lib", source_project="acme/app")
    forge.allow("other/hidden", source_group="acme")
    image = make_image(tmp_path / "image")
    root = f"root:{forge.root_token}"  # the admin may push anywhere
    for path in ("acme/lib/base:1", "acme/site/web:1", "acme/wiki/docs:1", "other/secret/s:1",
                 "other/hidden/h:1"):
        result = push(image, forge_registry, path, root)
        assert result.returncode == 0, result.stderr
    return {"bob": bob, "job": forge.start_job("acme/app", bob), "image": image}


def test_skopeo_job_pushes_to_own_project_and_pulls_it_back(
        forge: Forge, forge_registry: RegistryServer, world: dict[str, Any], tmp_path: Path) -> None:
    job: JobHandle = world["job"]
    variables = forge.job_variables(job)
    assert variables["CI_REGISTRY"] == forge_registry.address
    assert variables["CI_REGISTRY_IMAGE"] == f"{forge_registry.address}/acme/app"
    assert (variables["CI_REGISTRY_USER"], variables["CI_REGISTRY_PASSWORD"]) == (
        "gitlab-ci-token", job.token)
    creds = f"{variables['CI_REGISTRY_USER']}:{variables['CI_REGISTRY_PASSWORD']}"
    result = skopeo("copy", "--dest-tls-verify=false", "--dest-creds", creds,
                    f"oci:{world['image']}:latest",
                    f"docker://{variables['CI_REGISTRY_IMAGE']}/build:{job.id}")
    assert result.returncode == 0, result.stderr
    result = pull(forge_registry, f"acme/app/build:{job.id}", creds, tmp_path / "back")
    assert result.returncode == 0, result.stderr
    manifest = json.loads((tmp_path / "back" / "manifest.json").read_text())
    layer = manifest["layers"][0]["digest"].split(":")[1]
    with tarfile.open(tmp_path / "back" / layer) as tar:
        member = tar.extractfile("hello.txt")
        assert member is not None and member.read() == b"hello\n"


@pytest.mark.parametrize("path", ["acme/site/web:1", "acme/wiki/docs:1", "acme/lib/base:1",
                                  "other/hidden/h:1"])
def test_skopeo_job_pulls_public_internal_and_allowlisted_private(
        forge: Forge, forge_registry: RegistryServer, world: dict[str, Any], tmp_path: Path,
        path: str) -> None:
    if path.startswith("other/hidden"):
        forge.add_member("bob", "reporter", project="other/hidden")  # allowlisted via group acme
    result = pull(forge_registry, path, job_creds(world["job"]), tmp_path / "out")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("path,reason", [
    ("other/secret/s:1", "not_in_inbound_allowlist"),   # member, but not on the allowlist
    ("other/hidden/h:1", "insufficient_permissions"),   # allowlisted, but bob is no member
])
def test_skopeo_job_pull_refused(forge: Forge, forge_registry: RegistryServer,
                                 world: dict[str, Any], tmp_path: Path, path: str,
                                 reason: str) -> None:
    result = pull(forge_registry, path, job_creds(world["job"]), tmp_path / "out")
    assert result.returncode != 0
    assert DENIED in result.stderr
    assert forge.last_event(action="registry_pull", allowed=False)["reason"] == reason


@pytest.mark.parametrize("path", ["acme/lib/mine:1", "acme/site/mine:1", "other/secret/mine:1"])
def test_skopeo_job_push_to_other_project_refused(
        forge: Forge, forge_registry: RegistryServer, world: dict[str, Any], path: str) -> None:
    result = push(world["image"], forge_registry, path, job_creds(world["job"]))
    assert result.returncode != 0
    assert DENIED in result.stderr
    assert forge.last_event(action="registry_push")["reason"] == "job_token_push_other_project"


def test_skopeo_finished_job_token_refused_at_token_endpoint(
        forge: Forge, forge_registry: RegistryServer, world: dict[str, Any], tmp_path: Path) -> None:
    job: JobHandle = world["job"]
    assert push(world["image"], forge_registry, "acme/app/x:1", job_creds(job)).returncode == 0
    forge.finish_job(job)
    result = pull(forge_registry, "acme/app/x:1", job_creds(job), tmp_path / "out")
    assert result.returncode != 0
    response = requests.get(f"{forge.url}/jwt/auth", auth=("gitlab-ci-token", job.token),
                            params={"service": "container_registry",
                                    "scope": "repository:acme/app/x:pull"})
    assert response.status_code == 401
    assert forge.last_event()["reason"] == "job_not_running"


def test_skopeo_login_good_and_bad_credentials(forge: Forge, forge_registry: RegistryServer,
                                               world: dict[str, Any], tmp_path: Path) -> None:
    authfile = str(tmp_path / "auth.json")
    bob = world["bob"]
    for user, secret in (("bob", bob.password), ("oauth2", bob.token),
                         ("gitlab-ci-token", world["job"].token)):
        result = skopeo("login", "--authfile", authfile, "--tls-verify=false", "-u", user,
                        "-p", secret, forge_registry.address)
        assert (result.returncode, result.stdout) == (0, "Login Succeeded!\n"), result.stderr
    for user, secret in (("bob", "wrong"), ("gitlab-ci-token", "glcbt-64_notAToken")):
        result = skopeo("login", "--authfile", authfile, "--tls-verify=false", "-u", user,
                        "-p", secret, forge_registry.address)
        assert result.returncode != 0
        assert "invalid username/password" in result.stderr
    assert forge.last_event()["reason"] == "unknown_job_token"


def test_registry_config_command_writes_a_working_config(forge: Forge, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from forge.cli import main

    result = CliRunner().invoke(main, [
        "registry-config", "--url", forge.url, "--cert-file", str(tmp_path / "token.crt"),
        "--storage", str(tmp_path / "storage"), "--addr", "127.0.0.1:5999"])
    assert result.exit_code == 0, result.output
    assert f"realm: {forge.url}/jwt/auth" in result.output
    assert "service: container_registry" in result.output
    assert "issuer: omnibus-gitlab-issuer" in result.output
    assert (tmp_path / "token.crt").read_bytes() == forge.state.signing_key().certificate_pem


def test_shipped_demo_image_pushes_with_job_variables(forge: Forge, forge_registry: RegistryServer) -> None:
    """The README's example: the image under fixtures/ and a job's CI_REGISTRY_* variables."""
    forge.create_group("acme")
    forge.create_user("bob")
    forge.create_project("acme/app", members={"bob": "developer"})
    v = forge.start_job("acme/app", "bob").variables
    image = Path(__file__).resolve().parent.parent / "fixtures" / "images" / "hello"
    result = skopeo("copy", "--dest-tls-verify=false",
                    "--dest-creds", f"{v['CI_REGISTRY_USER']}:{v['CI_REGISTRY_PASSWORD']}",
                    f"oci:{image}:latest", f"docker://{v['CI_REGISTRY_IMAGE']}/app:1")
    assert result.returncode == 0, result.stderr
