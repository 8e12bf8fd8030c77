"""GitLab's container registry token endpoint, `GET /jwt/auth`, trusted by a real registry.

The registry (CNCF distribution) sends clients here with a Bearer challenge; forge
answers with an RS256 JWT whose `access` claim lists what the permission rules grant.
The signing key and a self-signed certificate for it live in the data directory.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from flask import Blueprint, Flask, Response, current_app, jsonify, request

from forge import auth, domain
from forge import permissions as perm
from forge.app import ForgeState, state_of
from forge.models import Project, db

SERVICE = "container_registry"
TOKEN_TTL = 300
# A registry repository name: lower-case components separated by `/` (distribution's grammar).
NAME = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")
MAX_EXTRA_SEGMENTS = 2

bp = Blueprint("registry", __name__)


@dataclass(frozen=True)
class SigningKey:
    """The token signing key, its certificate (PEM) and its libtrust key id."""

    private_key: rsa.RSAPrivateKey
    certificate_pem: bytes
    kid: str


def libtrust_kid(public_key: Any) -> str:
    """Return the libtrust key id: SHA-256 of the DER SubjectPublicKeyInfo, 30 bytes, base32."""
    der = public_key.public_bytes(serialization.Encoding.DER,
                                  serialization.PublicFormat.SubjectPublicKeyInfo)
    encoded = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode().rstrip("=")
    return ":".join(encoded[i:i + 4] for i in range(0, 48, 4))


def load_or_create_key(key_file: Path, cert_file: Path, now: datetime) -> SigningKey:
    """Load the signing key and certificate, creating both on first start."""
    if not key_file.exists():
        key_file.parent.mkdir(parents=True, exist_ok=True)
        private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = private_key.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
    loaded = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    if not isinstance(loaded, rsa.RSAPrivateKey):
        raise ValueError(f"{key_file} does not hold an RSA private key")
    cert = None
    if cert_file.exists():
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
        public = cert.public_key()
        if not isinstance(public, rsa.RSAPublicKey) or (
                public.public_numbers() != loaded.public_key().public_numbers()):
            cert = None  # belongs to another key: make a new one
    if cert is None:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "forge registry token signer")])
        start = now.replace(tzinfo=UTC) - timedelta(days=1)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(loaded.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(start).not_valid_after(start + timedelta(days=3650))
                .sign(loaded, hashes.SHA256()))
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return SigningKey(loaded, cert.public_bytes(serialization.Encoding.PEM),
                      libtrust_kid(loaded.public_key()))


def issue_token(key: SigningKey, *, issuer: str, service: str, subject: str | None,
                access: list[dict[str, Any]], auth_type: str, now: datetime) -> str:
    """Sign a registry token with the claims GitLab puts in it."""
    iat = int(now.replace(tzinfo=UTC).timestamp())
    claims = {"iss": issuer, "aud": service, "sub": subject or "", "iat": iat, "nbf": iat - 5,
              "exp": iat + TOKEN_TTL, "jti": str(uuid.uuid4()), "auth_type": auth_type,
              "access": access}
    return jwt.encode(claims, key.private_key, algorithm="RS256",
                      headers={"kid": key.kid, "typ": "JWT"})


def split_scope(scope: str) -> tuple[str, str, list[str]] | None:
    """Split `type:name:actions`; the name may itself hold a `:port`-free path."""
    parts = scope.split(":")
    if len(parts) < 3:
        return None
    kind, actions = parts[0], parts[-1]
    name = ":".join(parts[1:-1])
    return kind, name, [a for a in actions.split(",") if a]


def project_for(name: str) -> Project | None:
    """Find the project a registry path belongs to (its path plus up to two more segments)."""
    if not NAME.match(name) or len(name) > 255:
        return None
    segments = name.split("/")
    for extra in range(0, MAX_EXTRA_SEGMENTS + 1):
        if len(segments) - extra < 2:
            break
        project = domain.find_project("/".join(segments[:len(segments) - extra]))
        if project is not None:
            return project
    return None


def _auth_type(principal: perm.Principal) -> str:
    return {perm.Kind.JOB: "build", perm.Kind.PAT: "personal_access_token",
            perm.Kind.PASSWORD: "gitlab_or_ldap"}.get(principal.kind, "none")


def _errors(status: int, code: str, message: str, with_status: bool = False) -> Response:
    body: dict[str, Any] = {"errors": [{"code": code, "message": message}]}
    if with_status:
        body["http_status"] = status
    response = jsonify(body)
    response.status_code = status
    return response


@bp.get("/jwt/auth")
def token() -> Response:
    """Issue a registry token for the scopes the principal may have (spec section 3)."""
    state: ForgeState = state_of(current_app)
    now, base = state.now(), state.config.base_url
    # Like GitLab, credentials are checked before the service is.
    principal = auth.principal_for(auth.parse_basic(request.headers.get("Authorization")))
    login = perm.authenticate(principal, now, base)
    if not login.allowed:
        auth.record(now, "GET", request.path, principal, "registry_login", login)
        db.session.commit()
        return _errors(401, "UNAUTHORIZED", login.message)
    if request.args.get("service") != state.config.registry_service:
        return Response(status=404)
    user = auth.user_of(principal)
    access: list[dict[str, Any]] = []
    scopes = parse_qs(request.query_string.decode(errors="replace")).get("scope", [])
    for scope in scopes:
        parsed = split_scope(scope)
        if parsed is None:
            continue
        kind, name, actions = parsed
        if kind == "registry" and name == "catalog":
            decision = perm.authorize_catalog(principal, now, base)
            auth.record(now, "GET", request.path, principal, "registry_catalog", decision,
                        ref=scope)
            if decision.allowed:
                access.append({"type": "registry", "name": "catalog", "actions": ["*"]})
            continue
        if kind != "repository":
            continue
        project = project_for(name)
        facts = domain.project_facts(project, user) if project is not None else None
        granted = []
        for action in dict.fromkeys(actions):
            decision = perm.authorize_registry(principal, action, facts, now, base)
            auth.record(now, "GET", request.path, principal, f"registry_{action}", decision,
                        project, ref=name)
            if decision.allowed:
                granted.append(action)
        if granted:
            access.append({"type": "repository", "name": name, "actions": granted})
    db.session.commit()
    if principal.kind is perm.Kind.ANONYMOUS and not access:
        return _errors(403, "DENIED", "access forbidden", with_status=True)
    signed = issue_token(
        state.signing_key(), issuer=state.config.registry_issuer,
        service=state.config.registry_service,
        subject=principal.user.username if principal.user else None,
        access=access, auth_type=_auth_type(principal), now=now)
    return jsonify(token=signed, access_token=signed, expires_in=TOKEN_TTL,
                   issued_at=now.replace(tzinfo=UTC).isoformat().replace("+00:00", "Z"))


@bp.get("/-/forge/registry/certificate")
def certificate() -> Response:
    """Download the certificate a registry needs to verify forge's tokens (`rootcertbundle`)."""
    state: ForgeState = state_of(current_app)
    return Response(state.signing_key().certificate_pem, mimetype="application/x-pem-file")


def registry_config(*, forge_url: str, cert_file: Path, storage: Path, addr: str,
                    service: str = SERVICE, issuer: str = "omnibus-gitlab-issuer") -> str:
    """Return a distribution (docker-registry 2.x) `config.yml` that trusts this forge."""
    return f"""version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
http:
  addr: {addr}
  headers:
    X-Content-Type-Options: [nosniff]
auth:
  token:
    realm: {forge_url}/jwt/auth
    service: {service}
    issuer: {issuer}
    rootcertbundle: {cert_file}
"""


def init_app(app: Flask) -> None:
    """Register the token endpoint and the certificate download."""
    app.register_blueprint(bp)
