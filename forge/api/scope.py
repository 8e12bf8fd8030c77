"""The job token scope API: `/projects/:id/job_token_scope` and its allowlists.

Authenticated callers only (GitLab's `before { authenticate! }`), maintainer or higher.
As a forge extension (GitLab has no REST for it), adding an entry also takes
`default_permissions` and `job_token_policies`; the answer shows them only when the
request sent them, so GitLab's clients see GitLab's entity.
"""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify
from sqlalchemy import select

from forge import domain, inputs
from forge import permissions as perm
from forge.api import (
    ApiError,
    bp,
    by_id,
    created,
    current_user,
    fail,
    flag,
    integer,
    invalid,
    missing,
    no_content,
    now,
    paginate,
    params,
    project_ability,
    state,
)
from forge.api.projects import group_json, project_json
from forge.models import Group, Project, ScopeLink, db

PREFIX = "/projects/<project_id>/job_token_scope"
# forge's extension of the allowlist entry; echoed back only to a caller that sent them.
EXTENSION_FIELDS = frozenset({"default_permissions", "job_token_policies"})


def _links(project: Project, column: str) -> list[ScopeLink]:
    return [link for link in db.session.scalars(select(ScopeLink).where(
        ScopeLink.project_id == project.id, ScopeLink.direction == "inbound").order_by(ScopeLink.id))
        if getattr(link, column) is not None]


def _options(values: dict[str, Any]) -> dict[str, Any]:
    policies = values.get("job_token_policies") or []
    if isinstance(policies, str):
        policies = [p for p in policies.split(",") if p]
    if not isinstance(policies, list):
        raise ApiError(400, {"error": "job_token_policies is invalid"})
    return {"default_permissions": flag(values, "default_permissions", True),
            "job_token_policies": [str(p) for p in policies]}


def _bad_request(exc: domain.DomainError) -> ApiError:
    return ApiError(400, {"message": f"400 Bad request - {exc}"})


@bp.get(PREFIX)
def show_scope(project_id: str) -> Response:
    """`{"inbound_enabled": ..., "outbound_enabled": ...}`."""
    project, _ = project_ability(project_id, "read_job_token_scope")
    return jsonify(inbound_enabled=project.inbound_enabled,
                   outbound_enabled=project.outbound_enabled)


@bp.patch(PREFIX)
def update_scope(project_id: str) -> Response:
    """Turn the inbound allowlist on or off (`enabled`)."""
    project, _ = project_ability(project_id, "admin_job_token_scope")
    values = params()
    if "enabled" not in values or values["enabled"] in (None, ""):
        missing("enabled")
    domain.update_project(project, inbound_enabled=flag(values, "enabled"))
    db.session.commit()
    return no_content()


@bp.get(f"{PREFIX}/<any(allowlist, groups_allowlist):kind>")
def list_entries(project_id: str, kind: str) -> Response:
    """The projects on the allowlist (the project itself first), or the groups."""
    project, _ = project_ability(project_id, "read_job_token_scope")
    if kind == "allowlist":
        sources = [db.session.get(Project, link.source_project_id)
                   for link in _links(project, "source_project_id")]
        return paginate([project, *[p for p in sources if p is not None]], project_json)
    groups = [db.session.get(Group, link.source_group_id)
              for link in _links(project, "source_group_id")]
    return paginate([g for g in groups if g is not None], group_json)


@bp.post(f"{PREFIX}/allowlist")
def add_project(project_id: str) -> tuple[Response, int]:
    """Add `target_project_id` (the caller needs at least guest there)."""
    project, who = project_ability(project_id, "admin_job_token_scope")
    values = params()
    target_id = integer(values, "target_project_id")
    source = by_id(Project, target_id)
    facts = domain.project_facts(source, current_user(who)) if source is not None else None
    if not perm.authorize_api(who, "read_project", facts, now(), state().config.base_url).allowed:
        fail(404, "404 Project Not Found")
    assert source is not None
    return _add_entry(project, source, values)


def _add_entry(project: Project, source: Project | Group, values: dict[str, Any]
               ) -> tuple[Response, int]:
    """Put a project or group on `project`'s allowlist; answer as GitLab does."""
    try:
        if isinstance(source, Project):
            link = domain.allow_project(now(), project, source, **_options(values))
        else:
            link = domain.allow_group(now(), project, source, **_options(values))
    except domain.DomainError as exc:
        raise _bad_request(exc) from None
    db.session.commit()
    key = "target_project_id" if isinstance(source, Project) else "target_group_id"
    entity: dict[str, Any] = {"source_project_id": project.id, key: source.id}
    if EXTENSION_FIELDS & values.keys():  # GitLab's entity has the two ids only
        entity.update(default_permissions=link.default_permissions,
                      job_token_policies=link.job_token_policies)
    return created(entity)


@bp.delete(f"{PREFIX}/<any(allowlist, groups_allowlist):kind>/<entry_id>")
def remove_entry(project_id: str, kind: str, entry_id: str) -> Response:
    """Remove a project (`allowlist`) or group (`groups_allowlist`) entry."""
    project, _ = project_ability(project_id, "admin_job_token_scope")
    source: Project | Group | None = None
    if not inputs.digits(entry_id):  # declared `type: Integer`
        invalid("target_project_id" if kind == "allowlist" else "target_group_id")
    else:
        source = by_id(Project, entry_id) if kind == "allowlist" else by_id(Group, entry_id)
    if source is None:
        fail(404, "404 Project Not Found" if kind == "allowlist" else "404 Group Not Found")
    try:
        if isinstance(source, Project):
            domain.disallow(project, project=source)
        else:
            domain.disallow(project, group=source)
    except domain.NotFound:
        fail(404, "404 Not Found")
    db.session.commit()
    return no_content()


@bp.post(f"{PREFIX}/groups_allowlist")
def add_group(project_id: str) -> tuple[Response, int]:
    """Add `target_group_id`: every project below that group is admitted."""
    project, who = project_ability(project_id, "admin_job_token_scope")
    values = params()
    group_id = integer(values, "target_group_id")
    group = by_id(Group, group_id)
    if group is None or not perm.authorize_group(
            who, "read_group", group.visibility, domain.group_role(group, current_user(who)),
            now(), state().config.base_url).allowed:
        fail(404, "404 Group Not Found")
    return _add_entry(project, group, values)
