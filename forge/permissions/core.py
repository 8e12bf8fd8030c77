"""Principals, roles and credentials: the facts every rule starts from, and the
checks they share (who a principal is, what role it has, a job token's scopes).
"""

from __future__ import annotations

import enum
import fnmatch
from dataclasses import dataclass, field
from datetime import datetime, timedelta

NO_ACCESS, MINIMAL, GUEST, REPORTER, DEVELOPER, MAINTAINER, OWNER = 0, 5, 10, 20, 30, 40, 50
ROLE_NAMES = {
    "no_access": NO_ACCESS,
    "minimal_access": MINIMAL,
    "guest": GUEST,
    "reporter": REPORTER,
    "developer": DEVELOPER,
    "maintainer": MAINTAINER,
    "owner": OWNER,
}
PRIVATE, INTERNAL, PUBLIC = "private", "internal", "public"
VISIBILITIES = (PRIVATE, INTERNAL, PUBLIC)
JOB_STATUSES = (
    "created", "pending", "running", "success", "failed", "canceled", "skipped", "manual",
)
ZERO_SHA = "0" * 40

READ_SCOPES = frozenset({"api", "read_api", "read_repository", "write_repository"})
WRITE_SCOPES = frozenset({"api", "write_repository"})
PAT_SCOPES = frozenset(
    {"api", "read_api", "read_user", "read_repository", "write_repository",
     "read_registry", "write_registry", "sudo", "admin_mode", "create_runner", "k8s_proxy",
     "ai_features", "manage_runner", "self_rotate"}
)

HTTP_BASIC_DENIED = (
    "HTTP Basic: Access denied. If a password was provided for Git authentication, the password "
    "was incorrect or you're required to use a token instead of a password. If a token was "
    "provided, it was either incorrect, expired, or improperly scoped. See "
    "{base}/help/topics/git/troubleshooting_git.md#error-on-git-fetch-http-basic-access-denied"
)
PROJECT_NOT_FOUND = (
    "The project you were looking for could not be found or you don't have permission to view it."
)
DOWNLOAD_DENIED = "You are not allowed to download code from this project."
PUSH_DENIED = "You are not allowed to push code to this project."
AUTH_DOWNLOAD = "You are not allowed to download code."
AUTH_UPLOAD = "You are not allowed to upload code."
NO_REPOSITORY = "A repository for this project does not exist yet."
JOB_SCOPE_DENIED = "Authentication by CI/CD job token not allowed from {source} to project #{target}."
JOB_INSUFFICIENT = "Insufficient permissions to pull from the repository of project #{target}."
PUSH_PROTECTED = "You are not allowed to push code to protected branches on this project."
CREATE_PROTECTED = "You are not allowed to create protected branches on this project."
FORCE_PUSH_PROTECTED = "You are not allowed to force push code to a protected branch on this project."
DELETE_PROTECTED = "You can only delete protected branches using the web interface."
DELETE_PROTECTED_ROLE = ("You are not allowed to delete protected branches from this project. "
                         "Only a project maintainer or owner can delete a protected branch.")
DELETE_DEFAULT = "The default branch of a project cannot be deleted."
RUN_JOB_DENIED = "{user} may not run CI jobs in {project}: the developer role or higher is needed."


class Action(enum.StrEnum):
    """What the principal wants to do to the project."""

    READ = "read_code"
    PUSH = "push_code"


class Kind(enum.StrEnum):
    """How the principal authenticated."""

    ANONYMOUS = "anonymous"
    PASSWORD = "password"
    PAT = "personal_access_token"
    JOB = "job_token"
    RUNNER = "runner_token"
    INVALID = "invalid"


@dataclass(frozen=True)
class User:
    """A user as the permission rules see them."""

    id: int
    username: str
    admin: bool = False
    external: bool = False
    state: str = "active"


@dataclass(frozen=True)
class Job:
    """A CI job whose token is being used."""

    id: int
    project_id: int
    project_path: str
    project_group_ids: frozenset[int]
    status: str
    started_at: datetime | None
    timeout: int
    outbound_enabled: bool = False
    outbound_project_ids: frozenset[int] = frozenset()


@dataclass(frozen=True)
class Principal:
    """Who is asking: the credential kind and what stands behind it.

    `INVALID` stands for credentials that matched nothing (unknown token, wrong
    password); `failure` then names why, for the decision log.
    """

    kind: Kind
    user: User | None = None
    scopes: frozenset[str] = frozenset()
    expires_at: datetime | None = None
    revoked: bool = False
    job: Job | None = None
    failure: str = ""


ANONYMOUS = Principal(Kind.ANONYMOUS)


@dataclass(frozen=True)
class ProtectedBranch:
    """A protected branch rule: a name or wildcard pattern and who may push."""

    name: str
    push_access_level: int = MAINTAINER
    allow_force_push: bool = False

    def matches(self, branch: str) -> bool:
        """Tell whether this rule covers `branch` (GitLab wildcards use `*`)."""
        if "*" in self.name:
            return fnmatch.fnmatchcase(branch, self.name.replace("[", "[[]"))
        return branch == self.name


@dataclass(frozen=True)
class Project:
    """The target project and the principal's standing in it."""

    id: int
    path: str
    full_path: str
    visibility: str
    default_branch: str = "main"
    has_repository: bool = True
    role: int = NO_ACCESS  # highest of direct and ancestor-group memberships
    personal_owner: bool = False  # the project sits in the principal's own namespace
    inbound_enabled: bool = True
    allowlist_project_ids: frozenset[int] = frozenset()
    allowlist_group_ids: frozenset[int] = frozenset()
    job_push_allowed: bool = False
    protected_branches: tuple[ProtectedBranch, ...] = field(default_factory=tuple)
    fine_grained: bool = False  # forge extension: job token policies are enforced
    # (source project id or None, source group id or None, default_permissions, policies)
    allowlist_entries: tuple[tuple[int | None, int | None, bool, frozenset[str]], ...] = ()


@dataclass(frozen=True)
class Decision:
    """The answer: allowed or not, why (a stable code), and what GitLab would say."""

    allowed: bool
    reason: str
    status: int = 200
    message: str = ""
    challenge: bool = False  # a 401 that carries `WWW-Authenticate: Basic realm="GitLab"`


def _allow(reason: str) -> Decision:
    return Decision(True, reason)


def _deny(reason: str, status: int, message: str, challenge: bool = False) -> Decision:
    return Decision(False, reason, status, message, challenge)


def authenticate(principal: Principal, now: datetime, base_url: str) -> Decision:
    """Decide whether the credentials themselves are good at `now`."""
    denied = HTTP_BASIC_DENIED.format(base=base_url)
    kind = principal.kind
    if kind is Kind.ANONYMOUS:
        return _allow("anonymous")
    if kind is Kind.INVALID:
        return _deny(principal.failure or "invalid_credentials", 401, denied, True)
    user = principal.user
    if user is None:
        return _deny("invalid_credentials", 401, denied, True)
    if user.state != "active":
        return _deny("user_blocked", 401, denied, True)
    if kind is Kind.PAT:
        if principal.revoked:
            return _deny("token_revoked", 401, denied, True)
        if principal.expires_at is not None and now >= principal.expires_at:
            return _deny("token_expired", 401, denied, True)
    if kind is Kind.JOB:
        job = principal.job
        if job is None:
            return _deny("invalid_credentials", 401, denied, True)
        if job.status != "running":
            return _deny("job_not_running", 401, denied, True)
        if job.started_at is not None and now >= job.started_at + timedelta(seconds=job.timeout):
            return _deny("job_timed_out", 401, denied, True)
    return _allow("authenticated")


def _sees_as(user: User | None, project: Project) -> str:
    """The visibility that applies to `user`: external users treat internal as private."""
    if project.visibility == INTERNAL and (user is None or user.external):
        return PRIVATE
    return project.visibility


def effective_role(principal: Principal, project: Project) -> int:
    """The role the principal acts with: membership, plus admin and namespace-owner rights.

    A job token never gets admin rights: GitLab excludes job abilities from
    admin-without-membership.
    """
    role = project.role
    if project.personal_owner:
        role = max(role, OWNER)
    user = principal.user
    if user is not None and user.admin and principal.kind is not Kind.JOB:
        role = max(role, OWNER)
    return role


def _job_scope(job: Job, project: Project) -> str:
    """Check the job token scopes; return a failure reason, or "" when they pass."""
    if job.project_id == project.id:
        return ""
    if job.outbound_enabled and project.visibility == PRIVATE:
        if project.id not in job.outbound_project_ids:
            return "not_in_outbound_scope"
    if project.inbound_enabled:
        listed = job.project_id in project.allowlist_project_ids
        by_group = bool(job.project_group_ids & project.allowlist_group_ids)
        if not (listed or by_group):
            return "not_in_inbound_allowlist"
    return ""
