"""The container registry's token endpoint (spec section 3).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from forge.permissions.core import (
    DEVELOPER,
    MAINTAINER,
    PRIVATE,
    PUBLIC,
    REPORTER,
    Action,
    Decision,
    Kind,
    Principal,
    Project,
    _allow,
    _deny,
    _sees_as,
    authenticate,
    effective_role,
)
from forge.permissions.git import _authorize_job

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
