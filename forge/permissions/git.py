"""Git over HTTP: who may fetch and push a project, and which ref updates a push may make
(spec sections 1 and 2).
"""

from __future__ import annotations

import re
from datetime import datetime

from forge.permissions.core import (
    AUTH_DOWNLOAD,
    AUTH_UPLOAD,
    CREATE_PROTECTED,
    DELETE_DEFAULT,
    DELETE_PROTECTED,
    DELETE_PROTECTED_ROLE,
    DEVELOPER,
    DOWNLOAD_DENIED,
    FORCE_PUSH_PROTECTED,
    GUEST,
    HTTP_BASIC_DENIED,
    JOB_INSUFFICIENT,
    JOB_SCOPE_DENIED,
    MAINTAINER,
    NO_ACCESS,
    NO_REPOSITORY,
    PRIVATE,
    PROJECT_NOT_FOUND,
    PUBLIC,
    PUSH_DENIED,
    PUSH_PROTECTED,
    READ_SCOPES,
    REPORTER,
    WRITE_SCOPES,
    ZERO_SHA,
    Action,
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
    web: bool = False,
) -> Decision:
    """Decide one ref update of a push the principal is already allowed to make, in the
    order of GitLab's `Gitlab::Checks::BranchCheck`.

    `fast_forward` is whether `old_sha` is an ancestor of `new_sha` (true for creations
    and deletions, where the question does not arise). `web`: the change comes from the
    REST API, not a git push (`updated_from_web?`): a maintainer may delete a protected
    branch there.
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
        if role < MAINTAINER:  # UserAccess#can_delete_branch?: push_to_delete_protected_branch
            return _deny("protected_branch_delete_role", 403, DELETE_PROTECTED_ROLE)
        if not web:
            return _deny("protected_branch_delete", 403, DELETE_PROTECTED)
        return _allow("protected_branch_web_delete")
    if not fast_forward and not any(rule.allow_force_push for rule in rules):
        return _deny("protected_branch_force_push", 403, FORCE_PUSH_PROTECTED)
    if not any(rule.push_access_level > NO_ACCESS and role >= rule.push_access_level for rule in rules):
        if old_sha == ZERO_SHA:
            return _deny("protected_branch_create", 403, CREATE_PROTECTED)
        return _deny("protected_branch", 403, PUSH_PROTECTED)
    return _allow("protected_branch_allowed")
