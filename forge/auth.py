"""Turn a request's credentials into a principal, ask the permission rules, record the answer.

This is the only glue between HTTP and `forge.permissions`: git (and later LFS, the
registry and the REST API) call `authorize_request`; none of them compares roles.
"""

from __future__ import annotations

import base64
import binascii
import secrets
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime

from flask import current_app
from sqlalchemy import bindparam, insert, select
from sqlalchemy.orm import joinedload
from werkzeug.datastructures import Headers
from werkzeug.security import check_password_hash, generate_password_hash

from forge import domain, inputs, jobs
from forge import permissions as perm
from forge.models import Event, PersonalAccessToken, Project, User, db
from forge.repos import RepositoryBackend
from forge.state import state_of

JOB_TOKEN_USER = "gitlab-ci-token"
_dummy_hashes: dict[str, str] = {}
_dummy_lock = threading.Lock()


def dummy_hash(method: str) -> str:
    """A hash of a random password made with `method`, computed once per method.

    A login attempt for an unknown user (or one without a password) is checked against
    it, so a wrong password costs the same time whether or not the username exists.
    """
    with _dummy_lock:
        if method not in _dummy_hashes:
            _dummy_hashes[method] = generate_password_hash(secrets.token_urlsafe(24), method=method)
        return _dummy_hashes[method]


def password_matches(user: User | None, secret: str) -> bool:
    """Check `secret` against the user's hash, or the dummy hash: one hash check either way."""
    stored = user.password_hash if user is not None and user.password_hash else ""
    method = state_of(current_app).config.password_hash_method
    matched = check_password_hash(stored or dummy_hash(method), secret)
    return matched and bool(stored)


@dataclass(frozen=True)
class Credentials:
    """A username and secret from an HTTP Basic header; `malformed` when it could not be read."""

    username: str = ""
    secret: str = ""
    malformed: bool = False


def parse_basic(header: str | None) -> Credentials | None:
    """Read an `Authorization: Basic ...` header; None when there is no Basic header."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return Credentials(malformed=True)
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return Credentials(malformed=True)
    username, sep, secret = decoded.partition(":")
    if not sep:
        return Credentials(malformed=True)
    return Credentials(username, secret)


# Built once (see domain.project_facts); the owner comes in the same statement.
_PAT_BY_DIGEST = select(PersonalAccessToken).options(joinedload(PersonalAccessToken.user)).where(
    PersonalAccessToken.token_digest == bindparam("digest"))


def principal_for(credentials: Credentials | None) -> perm.Principal:
    """Look the credentials up (job token, PAT, then password) and describe who they are.

    Matching follows GitLab's table: username `gitlab-ci-token` takes a job token;
    any username takes a PAT; a username or e-mail takes the user's password.
    """
    if credentials is None:
        return perm.ANONYMOUS
    if credentials.malformed:
        return perm.Principal(perm.Kind.INVALID, failure="malformed_credentials")
    username, secret = credentials.username, credentials.secret
    if not secret:
        return perm.Principal(perm.Kind.INVALID, failure="missing_secret")
    token_digest = domain.digest(secret)
    if username == JOB_TOKEN_USER:
        found = jobs.job_principal(token_digest)
        if found is not None and domain.same_digest(found[0], secret):
            return perm.Principal(perm.Kind.JOB, user=found[1], job=found[2])
    pat = db.session.scalar(_PAT_BY_DIGEST, {"digest": token_digest})
    if pat is not None and domain.same_digest(pat.token_digest, secret):
        return perm.Principal(perm.Kind.PAT, user=domain.user_facts(pat.user),
                              scopes=frozenset(pat.scopes), expires_at=pat.expires_at,
                              revoked=pat.revoked)
    if username == JOB_TOKEN_USER:
        return perm.Principal(perm.Kind.INVALID, failure="unknown_job_token")
    user = domain.user_by_login(username)
    if not password_matches(user, secret):
        failure = "unknown_user" if user is None else "invalid_password"
        return perm.Principal(perm.Kind.INVALID, failure=failure)
    assert user is not None
    return perm.Principal(perm.Kind.PASSWORD, user=domain.user_facts(user))


def api_principal(headers: Mapping[str, str] | Headers, args: Mapping[str, str], *,
                  job_token_endpoint: bool = False, basic: bool = False) -> perm.Principal:
    """Read REST API credentials as GitLab does.

    PATs come as `PRIVATE-TOKEN`, `private_token` or `Authorization: Bearer`. Job tokens
    (`JOB-TOKEN`, `job_token`, Bearer) count only on job-token endpoints; elsewhere the
    call is anonymous. `basic` also accepts `gitlab-ci-token:<token>` (package endpoints).
    """
    pat = headers.get("PRIVATE-TOKEN") or args.get("private_token")
    authorization = headers.get("Authorization", "")
    bearer = authorization[7:].strip() if authorization.lower().startswith("bearer ") else ""
    job_token = headers.get("JOB-TOKEN") or args.get("job_token") or (
        bearer if bearer.startswith("glcbt-") else None)
    if basic and not pat and not job_token:
        credentials = parse_basic(authorization)
        if credentials and not credentials.malformed:
            if credentials.username == JOB_TOKEN_USER:
                job_token = credentials.secret
            else:
                pat = credentials.secret
    # GitLab's find_user_from_sources: the access token before the job token.
    pat = pat or (bearer if bearer and not bearer.startswith("glcbt-") else None)
    if pat:
        found = principal_for(Credentials("", pat))
        return found if found.kind is perm.Kind.PAT else perm.Principal(
            perm.Kind.INVALID, failure="unknown_token")
    if job_token:
        if not job_token_endpoint:
            return perm.ANONYMOUS
        found = principal_for(Credentials(JOB_TOKEN_USER, job_token))
        return found if found.kind is perm.Kind.JOB else perm.Principal(
            perm.Kind.INVALID, failure="unknown_job_token")
    return perm.ANONYMOUS


def find_user(ref: str) -> User | None:
    """A user by id or username (how `Sudo` names one)."""
    if inputs.digits(ref):
        return domain.by_id(User, ref)
    return domain.user_by_username(ref)


def acting_as(principal: perm.Principal, user: User) -> perm.Principal:
    """The principal of an admin's token acting as `user` (sudo): same token, that user."""
    return replace(principal, user=domain.user_facts(user))


def user_of(principal: perm.Principal) -> User | None:
    """Load the ORM user behind a principal, if any."""
    if principal.user is None:
        return None
    return db.session.get(User, principal.user.id)


def record(
    now: datetime,
    method: str,
    path: str,
    principal: perm.Principal,
    action: str,
    decision: perm.Decision,
    project: Project | None = None,
    ref: str | None = None,
    attempted_username: str | None = None,
    push_options: list[str] | None = None,
) -> None:
    """Add one decision to the log. Secrets never reach it: only kinds, names and ids.

    An INSERT in the request's transaction, without the ORM's unit of work: every git
    request writes one.
    """
    user = principal.user
    db.session.connection().execute(_RECORD, dict(
        at=now, method=method, path=path[:2048], credential=principal.kind.value,
        username=user.username if user else attempted_username,
        user_id=user.id if user else None,
        job_id=principal.job.id if principal.job else None,
        project=project.full_path if project else None,
        project_id=project.id if project else None,
        action=action, ref=ref, allowed=decision.allowed, reason=decision.reason,
        status=decision.status, message=decision.message[:2048], push_options=push_options))


_RECORD = insert(Event.__table__)


@dataclass(frozen=True)
class Outcome:
    """What `authorize_request` found: the principal, the project and the decision."""

    principal: perm.Principal
    project: Project | None
    facts: perm.Project | None
    decision: perm.Decision


Decide = Callable[[perm.Principal, perm.Project | None, Project | None], perm.Decision]


def authorize_request(
    *,
    now: datetime,
    backend: RepositoryBackend,
    method: str,
    path: str,
    authorization: str | None,
    project_path: str | None,
    action: str,
    decide: Decide,
) -> Outcome:
    """Authenticate the request, load the project, `decide`, and record the decision.

    `decide` is a call into `forge.permissions` given the principal, the project's
    facts and the project row (None when no project has that path).
    """
    credentials = parse_basic(authorization)
    principal = principal_for(credentials)
    project = _lookup(project_path)
    facts = domain.project_facts(project, principal.user, backend) if project else None
    decision = decide(principal, facts, project)
    record(now, method, path, principal, action, decision, project,
           attempted_username=_loggable_username(credentials, principal))
    return Outcome(principal, project, facts, decision)


def _loggable_username(credentials: Credentials | None, principal: perm.Principal) -> str | None:
    """Return the username tried, unless it is unknown (it might be a pasted secret)."""
    if credentials is None or credentials.malformed or not credentials.username:
        return None
    name = credentials.username
    if name == JOB_TOKEN_USER or (principal.user is not None and principal.user.username == name):
        return name
    if domain.user_by_login(name) is not None:
        return name
    return None


def _lookup(project_path: str | None) -> Project | None:
    if not project_path:
        return None
    try:
        domain.check_path(project_path)
    except domain.DomainError:
        return None
    return domain.find_project(project_path)
