"""Runners and their jobs (lib/api/ci/runner.rb, lib/api/user_runners.rb): who may run,
register, take and update a job, and download its artifacts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from forge.permissions.api import API_INSUFFICIENT_SCOPE, API_UNAUTHORIZED, _api_deny, authenticate_api
from forge.permissions.core import (
    DEVELOPER,
    MAINTAINER,
    OWNER,
    RUN_JOB_DENIED,
    Action,
    Decision,
    Job,
    Kind,
    Principal,
    Project,
    User,
    _allow,
    _deny,
    effective_role,
)
from forge.permissions.git import authorize


def may_run_job(user: User, project: Project) -> Decision:
    """Decide whether `user` may run a CI job in `project` (developer or higher)."""
    if user.state != "active":
        return _deny("user_blocked", 403, f"{user.username} is blocked and may not run CI jobs.")
    principal = Principal(Kind.PASSWORD, user=user)
    if effective_role(principal, project) < DEVELOPER:
        message = RUN_JOB_DENIED.format(user=user.username, project=project.full_path)
        return _deny("insufficient_role", 403, message)
    return _allow("can_run_job")


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
