"""The REST API (spec section 5): abilities, job-token policies, branch commits, groups,
the instance, sudo, and the forge's control API.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from forge.permissions.core import (
    DEVELOPER,
    GUEST,
    INTERNAL,
    MAINTAINER,
    NO_ACCESS,
    OWNER,
    PRIVATE,
    REPORTER,
    Decision,
    Job,
    Kind,
    Principal,
    Project,
    _allow,
    _deny,
    _job_scope,
    _sees_as,
    authenticate,
    effective_role,
)

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


NAMESPACE_NOT_VALID = "is not valid"  # the API answers {"message": {"namespace": [this]}}


def authorize_new_project(principal: Principal, now: datetime, base_url: str, *,
                          found: bool = True, owner_user_id: int | None = None,
                          group_visibility: str | None = None, group_role: int = NO_ACCESS
                          ) -> Decision:
    """Decide POST /projects: credentials and scope as for any write, then
    Projects::CreateService#allowed_namespace?: one's own namespace, any user's as admin, or
    a group where one may create projects. Any other namespace, or one that does not exist
    (`found`), is a validation error: 400, `namespace` "is not valid"."""
    auth = authorize_instance(principal, "create_group", now, base_url)  # any api-scoped user
    if not auth.allowed:
        return auth
    if not found:
        return _api_deny("namespace_not_valid", 400, NAMESPACE_NOT_VALID)
    if group_visibility is not None:
        decision = authorize_group(principal, "create_project", group_visibility, group_role,
                                   now, base_url)
    elif owner_user_id is not None:
        decision = authorize_instance(principal, "create_user_project", now, base_url,
                                      owner_user_id)
    else:
        return _allow("own_namespace")
    return decision if decision.allowed else _api_deny("namespace_not_valid", 400, NAMESPACE_NOT_VALID)


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
