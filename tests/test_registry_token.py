"""The registry token endpoint with a plain HTTP client: statuses, bodies, the JWT itself."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import jwt
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from forge.signing import libtrust_kid
from forge.testing import Forge, JobHandle, UserHandle

SERVICE = "container_registry"


@pytest.fixture
def world(forge: Forge) -> dict[str, Any]:
    forge.create_group("acme")
    forge.create_group("other")
    bob = forge.create_user("bob")
    admin = forge.create_user("ada", admin=True)
    forge.create_project("acme/app", members={"bob": "developer"})
    forge.create_project("acme/lib", members={"bob": "reporter"})
    forge.create_project("acme/site", visibility="public")
    forge.create_project("acme/wiki", visibility="internal")
    forge.create_project("other/secret", members={"bob": "maintainer"})
    forge.allow("acme/lib", source_project="acme/app")
    job = forge.start_job("acme/app", bob)
    return {"bob": bob, "admin": admin, "job": job}


def get_token(forge: Forge, *scopes: str, auth: tuple[str, str] | None = None,
              service: str = SERVICE) -> requests.Response:
    params = [("service", service), *[("scope", s) for s in scopes]]
    return requests.get(f"{forge.url}/jwt/auth", params=params, auth=auth)


def decode(forge: Forge, response: requests.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    token = response.json()["token"]
    cert = x509.load_pem_x509_certificate(
        requests.get(f"{forge.url}/-/forge/registry/certificate").content)
    claims: dict[str, Any] = jwt.decode(token, cert.public_key(), algorithms=["RS256"],  # type: ignore[arg-type]
                                        audience=SERVICE)
    return claims


def access(forge: Forge, *scopes: str, auth: tuple[str, str] | None = None) -> list[dict[str, Any]]:
    return list(decode(forge, get_token(forge, *scopes, auth=auth))["access"])


def job_auth(job: JobHandle) -> tuple[str, str]:
    return ("gitlab-ci-token", job.token)


def test_token_unknown_service_is_404_with_empty_body(forge: Forge, world: dict[str, Any]) -> None:
    response = get_token(forge, "repository:acme/site:pull", service="dependency_thing")
    assert (response.status_code, response.content) == (404, b"")


@pytest.mark.parametrize("auth", [("bob", "wrong"), ("gitlab-ci-token", "glcbt-64_nope"),
                                  ("x", "glpat-nonexistent0000000")])
def test_token_bad_credentials_are_401_with_docker_errors(forge: Forge, world: dict[str, Any],
                                                           auth: tuple[str, str], denied_401: str) -> None:
    response = get_token(forge, "repository:acme/app:pull", auth=auth)
    assert response.status_code == 401
    assert response.json() == {"errors": [{"code": "UNAUTHORIZED", "message": denied_401}]}


def test_token_finished_job_is_401(forge: Forge, world: dict[str, Any]) -> None:
    forge.finish_job(world["job"])
    response = get_token(forge, "repository:acme/app:pull", auth=job_auth(world["job"]))
    assert response.status_code == 401
    assert response.json()["errors"][0]["code"] == "UNAUTHORIZED"
    assert forge.last_event()["reason"] == "job_not_running"


def test_token_anonymous_with_nothing_granted_is_403(forge: Forge, world: dict[str, Any]) -> None:
    for scopes in (["repository:acme/app:pull"], []):
        response = get_token(forge, *scopes)
        assert response.status_code == 403
        assert response.json() == {"errors": [{"code": "DENIED", "message": "access forbidden"}],
                                   "http_status": 403}


def test_token_anonymous_pulls_public_images_only(forge: Forge, world: dict[str, Any]) -> None:
    assert access(forge, "repository:acme/site:pull,push", "repository:acme/wiki:pull") == [
        {"type": "repository", "name": "acme/site", "actions": ["pull"]}]


def test_token_login_without_scope_gets_empty_access(forge: Forge, world: dict[str, Any]) -> None:
    bob: UserHandle = world["bob"]
    claims = decode(forge, get_token(forge, auth=("bob", bob.password or "")))
    assert claims["access"] == [] and claims["sub"] == "bob"
    body = get_token(forge, auth=("bob", bob.password or "")).json()
    assert body["access_token"] == body["token"] and body["expires_in"] == 300
    assert body["issued_at"].endswith("Z")


def test_token_jwt_header_and_claims(forge: Forge, world: dict[str, Any]) -> None:
    response = get_token(forge, "repository:acme/app:pull,push", auth=job_auth(world["job"]))
    header = jwt.get_unverified_header(response.json()["token"])
    cert = x509.load_pem_x509_certificate(
        requests.get(f"{forge.url}/-/forge/registry/certificate").content)
    assert header == {"alg": "RS256", "typ": "JWT", "kid": libtrust_kid(cert.public_key())}
    assert len(header["kid"]) == 59 and header["kid"].count(":") == 11
    claims = decode(forge, response)
    assert claims["iss"] == "omnibus-gitlab-issuer"
    assert claims["aud"] == SERVICE  # a single string: a list breaks the registry
    assert claims["sub"] == "bob" and claims["auth_type"] == "build"
    assert claims["nbf"] == claims["iat"] - 5 and claims["exp"] == claims["iat"] + 300
    assert claims["jti"]
    assert claims["access"] == [{"type": "repository", "name": "acme/app", "actions": ["pull", "push"]}]


def test_libtrust_kid_matches_the_reference_algorithm(forge: Forge) -> None:
    cert = x509.load_pem_x509_certificate(
        requests.get(f"{forge.url}/-/forge/registry/certificate").content)
    der = cert.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)
    b32 = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode()
    assert libtrust_kid(cert.public_key()) == ":".join(b32[i:i + 4] for i in range(0, 48, 4))


def test_token_job_scopes_are_subset_and_repeated_scopes_honoured(
        forge: Forge, world: dict[str, Any]) -> None:
    granted = access(forge,
                     "repository:acme/app:pull,push,delete,*",
                     "repository:acme/app/sub/image:pull,push",
                     "repository:acme/lib:pull,push",
                     "repository:acme/site:pull,push",
                     "repository:acme/wiki:pull",
                     "repository:other/secret:pull,push",
                     "repository:acme/missing:pull",
                     auth=job_auth(world["job"]))
    assert granted == [
        {"type": "repository", "name": "acme/app", "actions": ["pull", "push", "delete"]},
        {"type": "repository", "name": "acme/app/sub/image", "actions": ["pull", "push"]},
        {"type": "repository", "name": "acme/lib", "actions": ["pull"]},
        {"type": "repository", "name": "acme/site", "actions": ["pull"]},
        {"type": "repository", "name": "acme/wiki", "actions": ["pull"]},
    ]
    refused = {(e["ref"], e["action"]): e["reason"] for e in forge.denials()}
    assert refused == {
        ("acme/app", "registry_*"): "job_token_admin",
        ("acme/lib", "registry_push"): "job_token_push_other_project",
        ("acme/site", "registry_push"): "job_token_push_other_project",
        ("other/secret", "registry_pull"): "not_in_inbound_allowlist",
        ("other/secret", "registry_push"): "job_token_push_other_project",
        ("acme/missing", "registry_pull"): "project_not_found",
    }


def test_token_job_pull_follows_the_users_role_and_the_allowlist(
        forge: Forge, world: dict[str, Any]) -> None:
    job = world["job"]
    forge.remove_member("bob", project="acme/lib")
    assert access(forge, "repository:acme/lib:pull", auth=job_auth(job)) == []
    assert forge.last_event()["reason"] == "insufficient_permissions"
    forge.add_member("bob", "developer", project="other/secret")
    forge.allow("other/secret", source_group="acme")
    assert access(forge, "repository:other/secret:pull", auth=job_auth(job)) == [
        {"type": "repository", "name": "other/secret", "actions": ["pull"]}]
    eve = forge.create_user("eve", external=True)
    forge.add_member(eve, "developer", project="acme/app")
    eve_job = forge.start_job("acme/app", eve)
    assert access(forge, "repository:acme/wiki:pull", auth=job_auth(eve_job)) == []


def test_token_paths_allow_two_extra_segments_in_lower_case(forge: Forge,
                                                            world: dict[str, Any]) -> None:
    auth = job_auth(world["job"])
    assert access(forge, "repository:acme/app/a/b:pull", auth=auth) == [
        {"type": "repository", "name": "acme/app/a/b", "actions": ["pull"]}]
    assert access(forge, "repository:acme/app/a/b/c:pull", "repository:Acme/App:pull",
                  "repository:acme/app:", "nonsense", "repository::pull", auth=auth) == []


def test_token_user_credentials(forge: Forge, world: dict[str, Any]) -> None:
    bob: UserHandle = world["bob"]
    password = ("bob", bob.password or "")
    assert access(forge, "repository:acme/lib:pull,push", "repository:other/secret:pull,push,*",
                  auth=password) == [
        {"type": "repository", "name": "acme/lib", "actions": ["pull"]},
        {"type": "repository", "name": "other/secret", "actions": ["pull", "push", "*"]}]
    read_only = forge.create_token("bob", ("read_registry",))
    assert access(forge, "repository:acme/app:pull,push", auth=("any", read_only)) == [
        {"type": "repository", "name": "acme/app", "actions": ["pull"]}]
    repo_only = forge.create_token("bob", ("read_repository",))
    assert access(forge, "repository:acme/app:pull", auth=("any", repo_only)) == []
    assert forge.last_event()["reason"] == "insufficient_scope"
    claims = decode(forge, get_token(forge, auth=("any", read_only)))
    assert claims["auth_type"] == "personal_access_token"


def test_token_catalog_only_for_admins(forge: Forge, world: dict[str, Any]) -> None:
    admin: UserHandle = world["admin"]
    assert access(forge, "registry:catalog:*", auth=("ada", admin.password or "")) == [
        {"type": "registry", "name": "catalog", "actions": ["*"]}]
    bob: UserHandle = world["bob"]
    assert access(forge, "registry:catalog:*", auth=("bob", bob.password or "")) == []
    admin_job = forge.start_job("acme/site", "ada")
    assert access(forge, "registry:catalog:*", auth=job_auth(admin_job)) == []
    assert forge.last_event()["reason"] == "not_admin"


def test_signing_key_survives_restart(forge_factory) -> None:  # type: ignore[no-untyped-def]
    from forge.server import ForgeServer

    first = forge_factory()
    kid = first.state.signing_key().kid
    config = first.state.config
    first.server.stop()  # a data directory has one live forge at a time (forge.datadir)
    second = ForgeServer(config.replace(base_url="http://127.0.0.1"))
    try:
        assert second.state.signing_key().kid == kid
        assert config.signing_key_path.stat().st_mode & 0o777 == 0o600
    finally:
        second.stop()  # its housekeeping too: the first's database goes at session end
