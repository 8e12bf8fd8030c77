"""GitLab's container registry token endpoint, `GET /jwt/auth`, trusted by a real registry.

The registry (CNCF distribution) sends clients here with a Bearer challenge; forge
answers with an RS256 JWT whose `access` claim lists what the permission rules grant.
The signing key and a self-signed certificate for it live in the data directory.
"""

from __future__ import annotations

import re
from datetime import UTC
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from flask import Blueprint, Flask, Response, current_app, jsonify, request

from forge import auth, domain
from forge import permissions as perm
from forge.models import Project, db
from forge.state import ForgeState, state_of

SERVICE = "container_registry"
# A registry repository name: lower-case components separated by `/` (distribution's grammar).
NAME = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")
MAX_EXTRA_SEGMENTS = 2

bp = Blueprint("registry", __name__)


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
    from forge.signing import TOKEN_TTL, issue_token  # cryptography: imported on first use
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
