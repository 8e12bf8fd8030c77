"""Decide whether a principal may do an action to a project, as GitLab would.

This module is pure: it takes plain facts and returns a `Decision`. It imports no
Flask, SQLAlchemy, dulwich, clock or I/O, so the whole permission matrix runs as fast
unit tests. Every allow/deny rule of the forge lives here; callers only gather facts.
"""

from __future__ import annotations

import enum
import fnmatch
import re
from dataclasses import dataclass, field, replace
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


def authorize(
    principal: Principal,
    action: Action,
    project: Project | None,
    now: datetime,
    base_url: str,
) -> Decision:
    """Decide whether `principal` may read or push the repository of `project`.

    `project` is None when no project has the requested path. Order follows GitLab:
    authentication (401), existence (404), token abilities, job token scope, visibility
    and role, then the ability for the command.
    """
    auth = authenticate(principal, now, base_url)
    if not auth.allowed:
        return auth
    denied = HTTP_BASIC_DENIED.format(base=base_url)
    kind, user = principal.kind, principal.user

    if kind is Kind.ANONYMOUS:
        if project is None:
            return _deny("project_not_found", 401, denied, True)
        if action is Action.PUSH:
            return _deny("anonymous_push", 401, denied, True)
        if project.visibility != PUBLIC:
            return _deny("login_required", 401, denied, True)
        return _repository(project) or _allow("public_project")

    if project is None:
        return _deny("project_not_found", 404, PROJECT_NOT_FOUND)

    if kind is Kind.PAT:
        needed = READ_SCOPES if action is Action.READ else WRITE_SCOPES
        if not principal.scopes & needed:
            message = AUTH_DOWNLOAD if action is Action.READ else AUTH_UPLOAD
            return _deny("insufficient_scope", 403, message)

    role = effective_role(principal, project)
    visibility = _sees_as(user, project)

    if kind is Kind.JOB:
        assert principal.job is not None
        decision = _authorize_job(principal.job, action, project, role, visibility)
        return (_repository(project) or decision) if decision.allowed else decision

    visible = visibility != PRIVATE or role >= GUEST
    if not visible:
        return _deny("project_not_visible", 404, PROJECT_NOT_FOUND)
    if action is Action.READ:
        if visibility == PRIVATE and role < REPORTER:
            return _deny("insufficient_role", 403, DOWNLOAD_DENIED)
        return _repository(project) or _allow("can_download")
    if role < DEVELOPER:
        return _deny("insufficient_role", 403, PUSH_DENIED)
    return _repository(project) or _allow("can_push")


def _authorize_job(job: Job, action: Action, project: Project, role: int, visibility: str) -> Decision:
    """Apply spec section 2.1 steps 3 to 5 to a running job's token (git and registry pulls).

    Whether a git repository exists is the caller's question, not the token's.
    """
    scope_failure = _job_scope(job, project)
    if scope_failure and visibility == PRIVATE:
        message = JOB_SCOPE_DENIED.format(source=job.project_path, target=project.id)
        return _deny(scope_failure, 403, message)
    if action is Action.PUSH:
        if job.project_id != project.id:
            return _deny("job_token_push_other_project", 403, PUSH_DENIED)
        if not project.job_push_allowed:
            return _deny("job_token_push_disabled", 403, PUSH_DENIED)
        if role < DEVELOPER:
            return _deny("insufficient_role", 403, PUSH_DENIED)
        return _allow("job_token_push_allowed")
    if visibility == PRIVATE and role < GUEST:
        return _deny("insufficient_permissions", 403, JOB_INSUFFICIENT.format(target=project.id))
    if visibility == PRIVATE and role < REPORTER:
        return _deny("insufficient_role", 403, DOWNLOAD_DENIED)
    if scope_failure:
        return _allow(f"{visibility}_project")
    return _allow("job_token_allowed")


def _repository(project: Project) -> Decision | None:
    if project.has_repository:
        return None
    return _deny("no_repository", 404, NO_REPOSITORY)


# GitLab refuses branches named like a commit id (BranchCheck#prohibited_branch_checks).
HEX_BRANCH = re.compile(r"\A[0-9a-fA-F]{40}(-/|/|\Z)")
HEX_BRANCH_NAME = "You cannot create a branch with a 40-character hexadecimal branch name."
# forge's own refusal: GitLab stores ref names as UTF-8 and breaks on others, and a name
# longer than a file (git writes `<part>.lock` first) or a path can hold cannot be written.
INVALID_REF_NAME = "You cannot push a ref whose name is not valid UTF-8 or is too long to store."
MAX_REF_PART_BYTES = 250
MAX_REF_BYTES = 1024


def storable_ref_name(ref: str) -> bool:
    """A ref name forge can keep: valid UTF-8 (no escaped bytes), storable as a file."""
    try:
        raw = ref.encode("utf-8")
    except UnicodeEncodeError:  # surrogate-escaped bytes: the name was not UTF-8
        return False
    return len(raw) <= MAX_REF_BYTES and all(
        len(part) <= MAX_REF_PART_BYTES for part in raw.split(b"/"))


def authorize_ref_update(
    principal: Principal,
    project: Project,
    ref: str,
    old_sha: str,
    new_sha: str,
    fast_forward: bool,
) -> Decision:
    """Decide one ref update of a push the principal is already allowed to make.

    `fast_forward` is whether `old_sha` is an ancestor of `new_sha` (true for creations
    and deletions, where the question does not arise).
    """
    deleting = new_sha == ZERO_SHA
    if not deleting and not storable_ref_name(ref):
        return _deny("invalid_ref_name", 403, INVALID_REF_NAME)
    if not ref.startswith("refs/heads/"):
        return _allow("not_a_branch")
    branch = ref[len("refs/heads/"):]
    role = effective_role(principal, project)
    if deleting and branch == project.default_branch:
        return _deny("default_branch_delete", 403, DELETE_DEFAULT)
    if not deleting and HEX_BRANCH.match(branch):
        return _deny("hex_branch_name", 403, HEX_BRANCH_NAME)
    rules = [rule for rule in project.protected_branches if rule.matches(branch)]
    if not rules:
        return _allow("unprotected_branch")
    if deleting:
        return _deny("protected_branch_delete", 403, DELETE_PROTECTED)
    if not fast_forward and not any(rule.allow_force_push for rule in rules):
        return _deny("protected_branch_force_push", 403, FORCE_PUSH_PROTECTED)
    if not any(rule.push_access_level > NO_ACCESS and role >= rule.push_access_level for rule in rules):
        if old_sha == ZERO_SHA:
            return _deny("protected_branch_create", 403, CREATE_PROTECTED)
        return _deny("protected_branch", 403, PUSH_PROTECTED)
    return _allow("protected_branch_allowed")


def may_run_job(user: User, project: Project) -> Decision:
    """Decide whether `user` may run a CI job in `project` (developer or higher)."""
    if user.state != "active":
        return _deny("user_blocked", 403, f"{user.username} is blocked and may not run CI jobs.")
    principal = Principal(Kind.PASSWORD, user=user)
    if effective_role(principal, project) < DEVELOPER:
        message = RUN_JOB_DENIED.format(user=user.username, project=project.full_path)
        return _deny("insufficient_role", 403, message)
    return _allow("can_run_job")


def authorize_admin(principal: Principal, now: datetime, base_url: str) -> Decision:
    """Decide whether the principal may use the forge's control API (an admin's `api` PAT)."""
    if principal.kind is Kind.ANONYMOUS:
        return _deny("login_required", 401, "401 Unauthorized")
    auth = authenticate(principal, now, base_url)
    if not auth.allowed:
        return Decision(False, auth.reason, 401, "401 Unauthorized")
    if principal.kind is not Kind.PAT or "api" not in principal.scopes:
        return _deny("insufficient_scope", 403, "403 Forbidden")
    if principal.user is None or not principal.user.admin:
        return _deny("not_admin", 403, "403 Forbidden")
    return _allow("admin")


# -- container registry (spec section 3) ------------------------------------------------

REGISTRY_ACTIONS = ("pull", "push", "delete", "*")
REGISTRY_SCOPES = {
    "pull": frozenset({"api", "read_api", "read_registry", "write_registry"}),
    "push": frozenset({"api", "write_registry"}),
    "delete": frozenset({"api", "write_registry"}),
    "*": frozenset({"api"}),
}
REGISTRY_DENIED = "requested access to the resource is denied"
REGISTRY_ROLE = {"push": DEVELOPER, "delete": DEVELOPER, "*": MAINTAINER}


def authorize_registry(principal: Principal, action: str, project: Project | None, now: datetime,
                       base_url: str) -> Decision:
    """Decide one action (`pull`, `push`, `delete`, `*`) of a registry scope on `project`.

    A refused action is dropped from the token, so the status and message only explain
    the refusal in the decision log. Job tokens pull wherever they may clone, push and
    delete only in their own project, and never get `*`.
    """
    auth = authenticate(principal, now, base_url)
    if not auth.allowed:
        return auth
    if action not in REGISTRY_ACTIONS:
        return _deny("unknown_action", 403, REGISTRY_DENIED)
    if project is None:
        return _deny("project_not_found", 404, REGISTRY_DENIED)
    kind = principal.kind
    if kind is Kind.PAT and not principal.scopes & REGISTRY_SCOPES[action]:
        return _deny("insufficient_scope", 403, REGISTRY_DENIED)
    role = effective_role(principal, project)
    visibility = _sees_as(principal.user, project)
    if kind is Kind.JOB:
        assert principal.job is not None
        job = principal.job
        if action == "pull":
            decision = _authorize_job(job, Action.READ, project, role, visibility)
            return decision if decision.allowed else replace(decision, message=REGISTRY_DENIED)
        if action == "*":
            return _deny("job_token_admin", 403, REGISTRY_DENIED)
        if job.project_id != project.id:
            return _deny("job_token_push_other_project", 403, REGISTRY_DENIED)
        if role < DEVELOPER:
            return _deny("insufficient_role", 403, REGISTRY_DENIED)
        return _allow("job_token_own_project")
    if action == "pull":
        if visibility == PUBLIC:
            return _allow("public_project")
        if kind is Kind.ANONYMOUS:
            return _deny("login_required", 403, REGISTRY_DENIED)
        if visibility == PRIVATE and role < REPORTER:
            return _deny("insufficient_role", 403, REGISTRY_DENIED)
        return _allow("can_pull")
    if kind is Kind.ANONYMOUS:
        return _deny("login_required", 403, REGISTRY_DENIED)
    if role < REGISTRY_ROLE[action]:
        return _deny("insufficient_role", 403, REGISTRY_DENIED)
    return _allow(f"can_{'admin' if action == '*' else action}")


def authorize_catalog(principal: Principal, now: datetime, base_url: str) -> Decision:
    """Decide `registry:catalog:*`: administrators only, and never through a job token."""
    auth = authenticate(principal, now, base_url)
    if not auth.allowed:
        return auth
    user = principal.user
    if principal.kind is Kind.JOB or user is None or not user.admin:
        return _deny("not_admin", 403, REGISTRY_DENIED)
    return _allow("admin")


# -- Git LFS (spec section 4) -----------------------------------------------------------

LFS_FORBIDDEN = "Access forbidden. Check your access level."
LFS_NOT_FOUND = "Not found."


def authorize_lfs(principal: Principal, operation: str, project: Project | None, now: datetime,
                  base_url: str, lfs_enabled: bool = True) -> Decision:
    """Decide an LFS `download` or `upload` (batch, object transfer, locks).

    Download follows clone rights and upload push rights, except that a job token never
    uploads. Refusals are 401 as for git, else 403 when the caller may download and
    404 otherwise, with GitLab's LFS messages.
    """
    read = authorize(principal, Action.READ, project, now, base_url)
    if read.status == 401:
        return read
    if project is None or not lfs_enabled:
        return _deny("lfs_disabled" if project else read.reason, 404, LFS_NOT_FOUND)
    if operation == "download":
        return read if read.allowed else _deny(read.reason, 404, LFS_NOT_FOUND)
    push = authorize(principal, Action.PUSH, project, now, base_url)
    if push.status == 401:
        return push
    if principal.kind is Kind.JOB and read.allowed:
        push = _deny("job_token_lfs_upload", 403, LFS_FORBIDDEN)
    if push.allowed:
        return push
    if read.allowed:
        return _deny(push.reason, 403, LFS_FORBIDDEN)
    return _deny(read.reason, 404, LFS_NOT_FOUND)


def authorize_unlock(principal: Principal, project: Project, owner_id: int, path: str,
                     force: bool) -> Decision:
    """Decide removing an LFS lock, for a principal already allowed to upload."""
    user = principal.user
    if user is not None and user.id == owner_id:
        return _allow("own_lock")
    if not force:
        return _deny("locked_by_other", 403, f"{path} is locked by GitLab User {owner_id}")
    if effective_role(principal, project) < MAINTAINER:
        return _deny("insufficient_role", 403,
                     "You must have maintainer access to force delete a lock")
    return _allow("force_unlock")


# -- REST API (spec section 5) ----------------------------------------------------------

API_UNAUTHORIZED = "401 Unauthorized"
# lib/api/api_guard.rb: an expired or revoked access token is Rack::OAuth2's invalid_token
API_TOKEN_EXPIRED = "Token is expired. You can either do re-authorization or token refresh."
API_TOKEN_REVOKED = "Token was revoked. You have to re-authorize from the user."
API_FORBIDDEN = "403 Forbidden"
API_PROJECT_NOT_FOUND = "404 Project Not Found"
API_SCOPE_DENIED = "403 Forbidden - Authentication by CI/CD job token not allowed from {source} to {target}."
API_POLICY_DENIED = ("403 Forbidden - Insufficient permissions to access this resource in project "
                     "{project}. The following token permission is required: {policy}.")
API_INSUFFICIENT_SCOPE = "insufficient_scope"
POLICIES = frozenset({
    "read_deployments", "admin_deployments", "read_environments", "admin_environments",
    "read_jobs", "admin_jobs", "read_merge_requests", "read_packages", "admin_packages",
    "read_pipelines", "admin_pipelines", "read_releases", "admin_releases", "read_repositories",
    "read_secure_files", "admin_secure_files", "read_terraform_state", "admin_terraform_state",
    "read_work_items",
})


@dataclass(frozen=True)
class Ability:
    """What an API endpoint needs: a minimum role in private projects, whether it writes,
    and the fine-grained job token policy that covers it (if any)."""

    name: str
    role: int
    writes: bool = False
    policy: str | None = None
    public_read: bool = True  # readable by anyone who sees a public/internal project
    login_first: bool = False  # the endpoint authenticates before it looks for the project


ABILITIES = {a.name: a for a in (
    Ability("read_project", GUEST),
    Ability("read_repository", REPORTER, policy="read_repositories"),
    Ability("push_code", DEVELOPER, writes=True),
    Ability("read_packages", REPORTER, policy="read_packages"),
    Ability("create_package", DEVELOPER, writes=True, policy="admin_packages"),
    Ability("read_release", GUEST, policy="read_releases"),  # guests see releases, not their code
    Ability("read_release_code", REPORTER, policy="read_releases"),  # a release's tag and commit
    Ability("create_release", DEVELOPER, writes=True, policy="admin_releases"),
    Ability("read_members", GUEST),
    Ability("read_build", REPORTER, policy="read_jobs"),
    Ability("admin_project", MAINTAINER, writes=True, public_read=False),
    Ability("admin_members", MAINTAINER, writes=True, public_read=False),
    Ability("admin_job_token_scope", MAINTAINER, writes=True, public_read=False, login_first=True),
    Ability("read_job_token_scope", MAINTAINER, public_read=False, login_first=True),
    Ability("delete_project", OWNER, writes=True, public_read=False),
)}


def _api_deny(reason: str, status: int, message: str) -> Decision:
    return Decision(False, reason, status, message)


def authenticate_api(principal: Principal, now: datetime, base_url: str) -> Decision:
    """Check API credentials: anything but valid credentials is `401 Unauthorized`."""
    auth = authenticate(principal, now, base_url)
    if not auth.allowed:
        message = {"token_expired": API_TOKEN_EXPIRED, "token_revoked": API_TOKEN_REVOKED}.get(
            auth.reason, API_UNAUTHORIZED)
        return _api_deny(auth.reason, 401, message)
    return auth


def authenticate_user(principal: Principal, now: datetime, base_url: str) -> Decision:
    """Check API credentials that name a user (not anonymous): otherwise `401 Unauthorized`."""
    auth = authenticate_api(principal, now, base_url)
    if auth.allowed and (principal.kind is Kind.ANONYMOUS or principal.user is None):
        return _api_deny("login_required", 401, API_UNAUTHORIZED)
    return auth


def _policy_granted(needed: str, granted: frozenset[str]) -> bool:
    return needed in granted or (needed.startswith("read_") and
                                 "admin_" + needed[len("read_"):] in granted)


def _entries_for(job: Job, project: Project) -> list[tuple[bool, frozenset[str]]]:
    return [(default, policies) for source_project, source_group, default, policies
            in project.allowlist_entries
            if source_project == job.project_id or source_group in job.project_group_ids]


def authorize_api(principal: Principal, ability: str, project: Project | None, now: datetime,
                  base_url: str) -> Decision:
    """Decide a REST call needing `ability` on `project` (None: no such project).

    Job tokens reach here only on job-token endpoints; elsewhere the glue treats them
    as no credential. For a job token: the allowlist, then the user's role, then (when
    the project enforces fine-grained permissions and the matching entries all have
    `default_permissions: false`) the entries' policies. The job's own project is never
    restricted by policies.
    """
    auth = authenticate_api(principal, now, base_url)
    if not auth.allowed:
        return auth
    need = ABILITIES[ability]
    if need.login_first and principal.kind is Kind.ANONYMOUS:
        return _api_deny("login_required", 401, API_UNAUTHORIZED)
    if project is None:
        return _api_deny("project_not_found", 404, API_PROJECT_NOT_FOUND)
    if principal.kind is Kind.PAT:
        if not ({"api"} if need.writes else {"api", "read_api"}) & principal.scopes:
            return _api_deny("insufficient_scope", 403, API_INSUFFICIENT_SCOPE)
    role = effective_role(principal, project)
    visibility = _sees_as(principal.user, project)
    job = principal.job if principal.kind is Kind.JOB else None
    if job is not None and job.project_id != project.id:
        if _job_scope(job, project):
            return _api_deny("not_in_inbound_allowlist", 403, API_SCOPE_DENIED.format(
                source=job.project_path, target=project.path))
    if visibility == PRIVATE and role < GUEST:
        return _api_deny("project_not_visible", 404, API_PROJECT_NOT_FOUND)
    readable = need.public_read and not need.writes and visibility != PRIVATE
    if not readable and role < need.role:
        return _api_deny("insufficient_role", 403, API_FORBIDDEN)
    if job is not None and job.project_id != project.id and project.fine_grained and need.policy:
        entries = _entries_for(job, project)
        if entries and not any(default for default, _ in entries):
            granted = frozenset().union(*(policies for _, policies in entries))
            if not _policy_granted(need.policy, granted):
                return _api_deny("missing_job_token_policy", 403, API_POLICY_DENIED.format(
                    project=project.path, policy=need.policy))
    return _allow(f"can_{ability}")


PUSH_INTO_BRANCH = "You are not allowed to push into this branch"


def can_push_to_branch(principal: Principal, project: Project, branch: str) -> bool:
    """Gitlab::UserAccess#can_push_to_branch?: a protected branch needs its push level
    (the merge level does not count), any other branch the developer role."""
    role = effective_role(principal, project)
    rules = [rule for rule in project.protected_branches if rule.matches(branch)]
    if not rules:
        return role >= DEVELOPER
    return any(rule.push_access_level > NO_ACCESS and role >= rule.push_access_level for rule in rules)


def authorize_branch_commit(principal: Principal, project: Project, branch: str) -> Decision:
    """Decide a commit the REST API writes on `branch` (Commits::CreateService#validate_permissions!).

    The files, commits, cherry-pick and revert services all start with this check; the
    refusal is the service's error, which the files API renders as a bare 400.
    """
    if can_push_to_branch(principal, project, branch):
        return _allow("can_push_to_branch")
    return _api_deny("branch_push_denied", 400, PUSH_INTO_BRANCH)


def authorize_api_commit(principal: Principal, project: Project | None, branch: str, now: datetime,
                         base_url: str) -> Decision:
    """Decide `POST /repository/commits` and cherry-pick or revert onto `branch` (lib/api/commits.rb).

    Reading the code comes first (404 or 403 as for any read), then `authenticate!` (401
    for an anonymous caller of a public project), the token's scope, and then
    `authorize_push_to_branch!`: `403 Forbidden - You are not allowed to push into this branch`.
    """
    read = authorize_api(principal, "read_repository", project, now, base_url)
    if not read.allowed:
        return read
    if principal.kind is Kind.ANONYMOUS:
        return _api_deny("login_required", 401, API_UNAUTHORIZED)
    if principal.kind is Kind.PAT and "api" not in principal.scopes:
        return _api_deny("insufficient_scope", 403, API_INSUFFICIENT_SCOPE)
    assert project is not None
    if not can_push_to_branch(principal, project, branch):
        return _api_deny("branch_push_denied", 403, f"{API_FORBIDDEN} - {PUSH_INTO_BRANCH}")
    return _allow("can_push_to_branch")


def authorize_instance(principal: Principal, ability: str, now: datetime, base_url: str,
                       target_user_id: int | None = None) -> Decision:
    """Decide instance-level calls: `admin` (manage users and tokens), `read_user`
    (see oneself), `create_group`, `update_own_status`, `revoke_token` (one's own, or any
    as admin), `block_user` (admin, never oneself), `create_user_project` (in one's own
    namespace, or any user's as admin)."""
    auth = authenticate_user(principal, now, base_url)
    if not auth.allowed:
        return auth
    user = principal.user
    assert user is not None
    if principal.kind is Kind.PAT and not ({"api", "read_api", "read_user"} & principal.scopes if
                                           ability == "read_user" else {"api"} & principal.scopes):
        return _api_deny("insufficient_scope", 403, API_INSUFFICIENT_SCOPE)
    if ability == "read_user":
        return _allow("authenticated")
    if ability in ("create_group", "update_own_status"):
        return _allow(f"can_{ability}")
    if ability == "revoke_token" and target_user_id == user.id:
        return _allow("own_token")
    if ability == "create_user_project" and target_user_id == user.id:
        return _allow("own_namespace")
    if ability == "block_user" and target_user_id == user.id and user.admin:
        return _api_deny("block_self", 403,
                         "403 Forbidden - The API you are trying to access is not allowed for you")
    if not user.admin:
        return _api_deny("not_admin", 403, API_FORBIDDEN)
    return _allow("admin")


def authorize_group(principal: Principal, ability: str, visibility: str, role: int,
                    now: datetime, base_url: str) -> Decision:
    """Decide a group call: `read_group`, `read_namespace` (members and admins);
    `create_subgroup`, `create_project` (maintainer);
    `admin_members`, `admin_group` (owner); `role` is the principal's role there, ancestors
    included."""
    auth = authenticate_api(principal, now, base_url)
    if not auth.allowed:
        return auth
    user = principal.user
    if ability != "read_group" and principal.kind is Kind.ANONYMOUS:
        return _api_deny("login_required", 401, API_UNAUTHORIZED)  # authenticate_non_get!
    admin = user is not None and user.admin and principal.kind is not Kind.JOB
    seen = visibility if not (visibility == INTERNAL and (user is None or user.external)) else PRIVATE
    if seen == PRIVATE and role < GUEST and not admin:
        return _api_deny("group_not_visible", 404, "404 Group Not Found")
    if ability == "read_namespace":  # /namespaces: members only, whatever the visibility
        if role < GUEST and not admin:
            return _api_deny("not_a_member", 404, "404 Namespace Not Found")
        return _allow("can_read_namespace")
    if ability == "read_group":
        return _allow("can_read_group")
    if principal.kind is Kind.PAT and "api" not in principal.scopes:
        return _api_deny("insufficient_scope", 403, API_INSUFFICIENT_SCOPE)
    needed = OWNER if ability in ("admin_members", "admin_group") else MAINTAINER
    if not admin and role < needed:
        return _api_deny("insufficient_role", 403, API_FORBIDDEN)
    return _allow(f"can_{ability}")


# Gitlab::Access.all_values, what a list's `min_access_level` may name (15: planner)
ACCESS_LEVELS = (GUEST, 15, REPORTER, DEVELOPER, MAINTAINER, OWNER)


def listed_by_role(role: int, min_access_level: int | None = None, membership: bool = False,
                   owned: bool = False) -> bool:
    """Decide whether a list's role filters keep an item where the caller has `role`:
    `membership` needs any membership (guest up), `min_access_level` at least that role,
    and a group list's `owned` without a level means the owner role (lib/api/groups.rb)."""
    if owned and min_access_level is None:
        min_access_level = OWNER
    if membership and role < GUEST:
        return False
    return min_access_level is None or role >= min_access_level


def owns_namespace(role: int) -> bool:
    """Decide whether `role` in a group makes it one of the caller's own namespaces
    (`/namespaces?owned_only=true`: the groups one owns)."""
    return role >= OWNER


def authorize_current_job(principal: Principal, now: datetime, base_url: str) -> Decision:
    """Decide `GET /job`: a running job's token sees its job; other credentials find none."""
    auth = authenticate_api(principal, now, base_url)
    if not auth.allowed:
        return auth
    if principal.kind is Kind.ANONYMOUS:
        return _api_deny("login_required", 401, API_UNAUTHORIZED)
    if principal.kind is not Kind.JOB:
        return _api_deny("not_a_job_token", 404, "404 Job Not Found")
    return _allow("job_token")


def authorize_sudo(principal: Principal, now: datetime, base_url: str) -> Decision:
    """Decide a `Sudo` header (act as another user): an admin's PAT with the `sudo` scope
    (lib/api/helpers.rb `sudo!`)."""
    auth = authenticate_user(principal, now, base_url)
    if not auth.allowed:
        return auth
    user = principal.user
    assert user is not None
    if not user.admin or principal.kind is Kind.JOB:
        return _api_deny("not_admin", 403, "403 Forbidden - Must be admin to use sudo")
    if principal.kind is not Kind.PAT:
        return _api_deny("sudo_needs_token", 403, "403 Forbidden - Must be authenticated using an "
                         "OAuth or Personal Access Token to use sudo")
    if "sudo" not in principal.scopes:
        return _api_deny("insufficient_sudo_scope", 403, API_INSUFFICIENT_SCOPE)
    return _allow("sudo")


def acts_as_admin(principal: Principal) -> bool:
    """Whether the principal has administrator rights (never through a job token)."""
    user = principal.user
    return user is not None and user.admin and user.state == "active" and (
        principal.kind in (Kind.PAT, Kind.PASSWORD))


# -- runners (lib/api/ci/runner.rb, lib/api/user_runners.rb) -----------------------------

RUNNER_TYPES = ("instance_type", "group_type", "project_type")
RUNNER_ACCESS_LEVELS = ("not_protected", "ref_protected")
RUNNER_FORBIDDEN = "403 Forbidden"
JOB_NOT_RUNNING = "403 Forbidden - Job is not running"
INSUFFICIENT_PERMISSIONS = "403 Forbidden - Insufficient permissions"


@dataclass(frozen=True)
class Runner:
    """A registered runner as the rules see it."""

    id: int
    runner_type: str
    group_id: int | None = None
    project_id: int | None = None
    tags: frozenset[str] = frozenset()
    run_untagged: bool = True
    paused: bool = False
    ref_protected_only: bool = False


@dataclass(frozen=True)
class QueuedJob:
    """A job waiting for a runner."""

    id: int
    project_id: int
    project_group_ids: frozenset[int]
    status: str
    tags: frozenset[str] = frozenset()
    protected_ref: bool = False
    user_state: str = "active"  # the triggering user's


def authorize_registration(token_matches: bool) -> Decision:
    """Decide `POST /runners` with a registration token: it must be the instance's."""
    if not token_matches:
        return _deny("invalid_registration_token", 403, RUNNER_FORBIDDEN)
    return _allow("registration_token")


def authorize_runner(found: bool) -> Decision:
    """Decide a request that carries a runner's authentication token."""
    if not found:
        return _deny("unknown_runner_token", 403, RUNNER_FORBIDDEN)
    return _allow("runner_token")


def authorize_create_runner(principal: Principal, runner_type: str, role: int, now: datetime,
                            base_url: str) -> Decision:
    """Decide `POST /user/runners`: instance runners need an admin, group runners the
    group's owner, project runners a maintainer of the project (`role` is the user's role
    in the group or project); a PAT needs the `create_runner` or `api` scope."""
    auth = authenticate_api(principal, now, base_url)
    if not auth.allowed:
        return auth
    user = principal.user
    if principal.kind not in (Kind.PAT, Kind.PASSWORD) or user is None:
        return _api_deny("login_required", 401, API_UNAUTHORIZED)
    if principal.kind is Kind.PAT and not {"api", "create_runner"} & principal.scopes:
        return _api_deny("insufficient_scope", 403, API_INSUFFICIENT_SCOPE)
    if user.admin:
        return _allow("admin")
    needed = {"group_type": OWNER, "project_type": MAINTAINER}.get(runner_type)
    if needed is None or role < needed:
        return _api_deny("insufficient_role", 403, INSUFFICIENT_PERMISSIONS)
    return _allow(f"can_create_{runner_type}")


def runner_may_take(runner: Runner, job: QueuedJob) -> Decision:
    """Decide whether `runner` may take the queued `job`, as GitLab's queue matches them:
    the runner's scope (instance, the project's group or an ancestor, the project), its
    tags (a tagged job needs all its tags on the runner, an untagged one `run_untagged`),
    `ref_protected` runners only for protected refs, and paused runners never. A runner that
    could take it refuses the job of a blocked user as `user_blocked` (GitLab's pre-assign
    check: the job is then dropped, not handed out)."""
    if runner.paused:
        return _deny("runner_paused", 403, RUNNER_FORBIDDEN)
    if job.status != "pending":
        return _deny("job_not_pending", 409, "409 Conflict")
    if runner.runner_type == "group_type" and runner.group_id not in job.project_group_ids:
        return _deny("runner_not_in_scope", 403, RUNNER_FORBIDDEN)
    if runner.runner_type == "project_type" and runner.project_id != job.project_id:
        return _deny("runner_not_in_scope", 403, RUNNER_FORBIDDEN)
    if runner.ref_protected_only and not job.protected_ref:
        return _deny("runner_ref_protected", 403, RUNNER_FORBIDDEN)
    if job.tags and not job.tags <= runner.tags:
        return _deny("runner_missing_tags", 403, RUNNER_FORBIDDEN)
    if not job.tags and not runner.run_untagged:
        return _deny("runner_no_untagged", 403, RUNNER_FORBIDDEN)
    if job.user_state == "blocked":
        return _deny("user_blocked", 403, RUNNER_FORBIDDEN)
    return _allow("runner_matches")


def authorize_job_update(job: Job | None, token_matches: bool, now: datetime) -> Decision:
    """Decide a runner's request for its job (`PUT /jobs/:id`, the trace, artifacts upload)
    with the job's token: 403 for an unknown job or wrong token, and `Job is not running`
    for a job that is not running or is past its timeout (the runner then stops it)."""
    if job is None or not token_matches:
        return _deny("unknown_job_token", 403, RUNNER_FORBIDDEN)
    if job.status != "running":
        return _deny("job_not_running", 403, JOB_NOT_RUNNING)
    if job.started_at is not None and now >= job.started_at + timedelta(seconds=job.timeout):
        return _deny("job_timed_out", 403, JOB_NOT_RUNNING)
    return _allow("job_token")


def authorize_artifacts_download(own_token: bool, principal: Principal, project: Project | None,
                                 now: datetime, base_url: str) -> Decision:
    """Decide `GET /jobs/:id/artifacts`: the job's own token (running or not), or the token
    of a running job that may read the job's project (a job that needs it); else 403."""
    if own_token:
        return _allow("own_job_token")
    if principal.kind is not Kind.JOB or project is None:
        return _deny(principal.failure or "unknown_job_token", 403, RUNNER_FORBIDDEN)
    decision = authorize(principal, Action.READ, project, now, base_url)
    return decision if decision.allowed else _deny(decision.reason, 403, RUNNER_FORBIDDEN)
