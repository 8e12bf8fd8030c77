"""Groups, projects, members and protected branches."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote

from flask import Response, jsonify
from sqlalchemy import select

from forge import domain
from forge import permissions as perm
from forge import repository_ops as ops
from forge.api import (
    ApiError,
    bp,
    by_id,
    check,
    choice,
    created,
    current_user,
    fail,
    find_group,
    flag,
    group_ability,
    instance_ability,
    integer,
    iso,
    listing,
    no_content,
    not_a_value,
    now,
    paginate,
    params,
    principal,
    project_ability,
    state,
    text,
    too_long,
    web_url,
)
from forge.api.ci import package_json, packages_of
from forge.api.repository import branch_shas, writing
from forge.api.users import user_json
from forge.models import Group, Membership, Project, ProtectedBranch, User, db

LEVEL_NAMES = {0: "No one", 10: "Guest", 20: "Reporter", 30: "Developers + Maintainers",
               40: "Maintainers", 50: "Owner"}


def namespace_json(project: Project) -> dict[str, Any]:
    """The namespace block of a project."""
    if project.group is not None:
        group = project.group
        return {"id": group.id, "name": group.name, "path": group.path, "kind": "group",
                "full_path": group.full_path, "parent_id": group.parent_id,
                "web_url": web_url(f"groups/{group.full_path}")}
    owner = project.owner
    assert owner is not None
    return {"id": domain.user_namespace_id(owner), "name": owner.name, "path": owner.username, "kind": "user",
            "full_path": owner.username, "parent_id": None, "web_url": web_url(owner.username)}


def project_json(project: Project) -> dict[str, Any]:
    """A project as GitLab renders one (the fields python-gitlab and CI scripts use)."""
    base = state().config.base_url
    owner = user_json(project.owner) if project.owner is not None else None
    return {
        "id": project.id, "name": project.name, "path": project.path,
        "name_with_namespace": project.full_path.replace("/", " / "),
        "path_with_namespace": project.full_path, "description": project.description,
        "description_html": project.description, "tag_list": [], "topics": [],
        "readme_url": None, "forks_count": 0, "avatar_url": None, "star_count": 0,
        "last_activity_at": iso(project.created_at), "owner": owner,
        "container_registry_image_prefix": (f"{state().config.registry_url}/{project.full_path.lower()}"
                                            if state().config.registry_url else None),
        "_links": {"self": f"{base}/api/v4/projects/{project.id}"},
        "issues_enabled": False, "merge_requests_enabled": False, "wiki_enabled": False,
        "jobs_enabled": True, "snippets_enabled": False, "packages_enabled": True,
        "shared_runners_enabled": True, "creator_id": None, "forked_from_project": None,
        "open_issues_count": 0, "public_jobs": True, "shared_with_groups": [],
        "only_allow_merge_if_pipeline_succeeds": False,
        "remove_source_branch_after_merge": True, "request_access_enabled": False,
        "merge_method": "merge", "marked_for_deletion_on": None,
        "visibility": project.visibility, "default_branch": project.default_branch,
        "http_url_to_repo": f"{base}/{project.full_path}.git", "ssh_url_to_repo": None,
        "web_url": web_url(project.full_path), "namespace": namespace_json(project),
        "created_at": iso(project.created_at), "archived": False,
        "empty_repo": state().backend.is_empty(project.id),
        "lfs_enabled": project.lfs_enabled, "container_registry_enabled": True,
        "ci_push_repository_for_job_token_allowed": project.job_push_allowed,
        "ci_inbound_job_token_scope_enabled": project.inbound_enabled,
        "ci_job_token_scope_enabled": project.outbound_enabled,
        "job_token_policies_enabled": project.job_token_policies_enabled,
    }


def group_json(group: Group) -> dict[str, Any]:
    """A group as GitLab renders one."""
    return {"id": group.id, "name": group.name, "path": group.path, "full_path": group.full_path,
            "full_name": group.full_path.replace("/", " / "), "parent_id": group.parent_id,
            "visibility": group.visibility, "description": group.description or "",
            "web_url": web_url(f"groups/{group.full_path}"), "created_at": iso(group.created_at),
            "avatar_url": None, "share_with_group_lock": False,
            "require_two_factor_authentication": False, "two_factor_grace_period": 48,
            "project_creation_level": "developer", "auto_devops_enabled": None,
            "subgroup_creation_level": "maintainer", "emails_disabled": False,
            "emails_enabled": True, "mentions_disabled": None, "lfs_enabled": True,
            "default_branch": None, "request_access_enabled": True,
            "organization_id": 1, "ldap_cn": None, "ldap_access": None,
            "marked_for_deletion_on": None, "shared_with_groups": []}


def member_json(member: Membership) -> dict[str, Any]:
    """A membership as GitLab renders one."""
    return {**user_json(member.user), "access_level": member.access_level, "expires_at": None}


def protected_json(rule: ProtectedBranch) -> dict[str, Any]:
    """A protected branch rule as GitLab renders one."""
    def levels(level: int) -> list[dict[str, Any]]:
        return [{"id": rule.id, "access_level": level,
                 "access_level_description": LEVEL_NAMES.get(level, str(level)),
                 "user_id": None, "group_id": None}]
    merge = perm.MAINTAINER if rule.merge_access_level is None else rule.merge_access_level
    return {"id": rule.id, "name": rule.name, "push_access_levels": levels(rule.push_access_level),
            "merge_access_levels": levels(merge), "allow_force_push": rule.allow_force_push,
            "unprotect_access_levels": [], "code_owner_approval_required": False}


def _visible_projects(query: Any) -> list[Project]:
    who = principal()
    user = current_user(who)
    visible = []
    for project in db.session.scalars(query.order_by(Project.id)):
        facts = domain.project_facts(project, user)
        if perm.authorize_api(who, "read_project", facts, now(), state().config.base_url).allowed:
            visible.append(project)
    return visible


# -- groups -----------------------------------------------------------------------------

@bp.get("/groups")
def list_groups() -> Response:
    """Groups the caller can see, filtered and ordered as GitLab's (see forge.api.listing)."""
    who = principal()
    groups = []
    for group in db.session.scalars(select(Group).order_by(Group.id)):
        role = domain.group_role(group, current_user(who))
        if perm.authorize_group(who, "read_group", group.visibility, role, now(),
                                state().config.base_url).allowed:
            groups.append(group)
    return paginate(listing.groups(groups, params(), current_user(who)), group_json)


@bp.get("/groups/<group_id>")
def show_group(group_id: str) -> Response:
    """One group."""
    group = find_group(group_id)
    group_ability(group, "read_group")
    return jsonify(group_json(group))


@bp.get("/groups/<group_id>/<any(subgroups, descendant_groups):kind>")
def list_subgroups(group_id: str, kind: str) -> Response:
    """A group's direct subgroups, or all groups below it (`descendant_groups`) the caller sees."""
    group = find_group(group_id)
    who = group_ability(group, "read_group")
    found = domain.descendants(group)[1:] if kind == "descendant_groups" else list(
        db.session.scalars(select(Group).where(Group.parent_id == group.id).order_by(Group.id)))
    user = current_user(who)
    visible = [g for g in found if perm.authorize_group(
        who, "read_group", g.visibility, domain.group_role(g, user), now(),
        state().config.base_url).allowed]
    return paginate(listing.groups(visible, params(), user), group_json)


@bp.put("/groups/<group_id>")
def update_group(group_id: str) -> Response:
    """Change a group's name, description or visibility (owner)."""
    group = find_group(group_id)
    group_ability(group, "admin_group")
    values = params()
    choice(values, "visibility", perm.VISIBILITIES)
    changes = {key: text(values, key) for key in ("name", "description", "visibility")
               if values.get(key) is not None}
    domain.update_group(group, **changes)
    db.session.commit()
    return jsonify(group_json(group))


@bp.get("/groups/<group_id>/projects")
def list_group_projects(group_id: str) -> Response:
    """The projects in a group (and its subgroups with `include_subgroups`) the caller can see."""
    group = find_group(group_id)
    who = group_ability(group, "read_group")
    ids = [g.id for g in domain.descendants(group)] if flag(params(), "include_subgroups") else [group.id]
    found = _visible_projects(select(Project).where(Project.group_id.in_(ids)))
    return paginate(listing.projects(found, params(), current_user(who)), project_json)


@bp.post("/groups")
def create_group() -> tuple[Response, int]:
    """Create a group, or a subgroup with `parent_id` (maintainer of the parent)."""
    values = params()
    name, path = text(values, "name", required=True), text(values, "path", required=True)
    visibility = choice(values, "visibility", perm.VISIBILITIES) or "private"
    parent_id = integer(values, "parent_id", required=False)
    if parent_id is not None:
        parent = find_group(str(parent_id))
        who = group_ability(parent, "create_subgroup")
        full_path = f"{parent.full_path}/{path}"
    else:
        who = instance_ability("create_group")
        full_path = str(path)
    long: dict[str, list[str]] = {}
    too_long(long, {"name": name, "path": path})
    if long:  # as Ruby's Hash#inspect writes group.errors.messages
        fail(400, "Failed to save group {" + ", ".join(
            f":{field}=>{json.dumps(errors)}" for field, errors in long.items()) + "}")
    try:  # groups.rb: render_api_error!("Failed to save group #{group.errors.messages}", 400)
        group = domain.create_group(now(), full_path, name=name, visibility=visibility)
    except domain.Conflict:
        fail(400, 'Failed to save group {:path=>["has already been taken"]}')
    if text(values, "description") is not None:
        domain.update_group(group, description=text(values, "description"))
    user = current_user(who)
    if user is not None:
        domain.set_member(user, group, perm.OWNER)
    db.session.commit()
    return created(group_json(group))


@bp.delete("/groups/<group_id>")
def delete_group(group_id: str) -> tuple[Response, int]:
    """Delete a group with its projects (owner)."""
    group = find_group(group_id)
    group_ability(group, "admin_members")
    for project in db.session.scalars(select(Project).where(Project.group_id == group.id)):
        domain.delete_project(state().backend, project)
    db.session.delete(group)
    db.session.commit()
    return jsonify(message="202 Accepted"), 202


# -- projects ---------------------------------------------------------------------------

@bp.get("/projects")
def list_projects() -> Response:
    """Projects the caller can see, filtered and ordered as GitLab's (see forge.api.listing)."""
    values = params()
    found = listing.projects(_visible_projects(select(Project)), values, current_user(principal()))
    return paginate(found, project_json)


@bp.get("/users/<user_id>/projects")
def list_user_projects(user_id: str) -> Response:
    """The projects in a user's namespace that the caller can see."""
    owner = by_id(User, user_id) or db.session.scalar(select(User).where(User.username == user_id))
    if owner is None:
        fail(404, "404 User Not Found")
    found = _visible_projects(select(Project).where(Project.owner_id == owner.id))
    return paginate(listing.projects(found, params(), current_user(principal())), project_json)


@bp.get("/projects/<project_id>")
def show_project(project_id: str) -> Response:
    """One project, by id or URL-encoded path."""
    project, _ = project_ability(project_id, "read_project")
    return jsonify(project_json(project))


@bp.post("/projects")
def create_project() -> tuple[Response, int]:
    """Create a project in a group (`namespace_id`) or in the caller's namespace."""
    values = params()
    name, given_path = text(values, "name"), text(values, "path")
    visibility = choice(values, "visibility", perm.VISIBILITIES)
    default_branch = text(values, "default_branch")
    readme = flag(values, "initialize_with_readme")
    if not name and not given_path:
        raise ApiError(400, {"error": "name, path are missing, at least one parameter must be provided"})
    path = str(given_path or name).strip().replace(" ", "-").lower()
    namespace_id = integer(values, "namespace_id", required=False)
    owner = domain.namespace_by_id(namespace_id) if namespace_id is not None else None
    who = principal()
    facts: dict[str, Any] = {"found": namespace_id is None or owner is not None}
    if isinstance(owner, User):  # a personal namespace: one's own, or anyone's for an admin
        facts["owner_user_id"] = owner.id
    elif isinstance(owner, Group):
        facts.update(group_visibility=owner.visibility,
                     group_role=domain.group_role(owner, current_user(who)))
    check(who, "api_create_project", perm.authorize_new_project(
        who, now(), state().config.base_url, **facts))
    if isinstance(owner, (User, Group)):
        namespace = owner.username if isinstance(owner, User) else owner.full_path
    else:
        user = current_user(who)
        assert user is not None
        namespace = user.username
    long: dict[str, list[str]] = {}
    too_long(long, {"name": name, "path": path})
    if long:
        raise ApiError(400, {"message": long})
    _refuse_taken(namespace, name or path, path)
    files = {"README.md": f"# {name or path}\n"} if readme else None
    project = domain.create_project(
        now(), state().backend, f"{namespace}/{path}", name=name or path,
        visibility=visibility or "private", default_branch=default_branch or "main", files=files)
    if text(values, "description") is not None:
        domain.update_project(project, description=text(values, "description"))
    db.session.commit()
    return created(project_json(project))


TAKEN = ["has already been taken"]


def _refuse_taken(namespace: str, name: str, path: str) -> None:
    """Project's uniqueness validations in its namespace: render_validation_error!'s 400."""
    siblings = [p for p in db.session.scalars(select(Project).where(
        Project.full_path.startswith(f"{namespace}/", autoescape=True)))
                if p.full_path.count("/") == namespace.count("/") + 1]
    errors: dict[str, list[str]] = {}
    if any(p.name.lower() == name.lower() for p in siblings):
        errors.update({"project_namespace.name": TAKEN, "name": TAKEN})
    if any(p.path.lower() == path.lower() for p in siblings):
        errors["path"] = TAKEN
    if errors:
        raise ApiError(400, {"message": errors})


PROJECT_SETTINGS = {"visibility": "visibility", "default_branch": "default_branch",
                    "name": "name", "lfs_enabled": "lfs_enabled", "description": "description",
                    "ci_push_repository_for_job_token_allowed": "job_push_allowed",
                    "ci_job_token_scope_enabled": "outbound_enabled",
                    "job_token_policies_enabled": "job_token_policies_enabled"}


@bp.put("/projects/<project_id>")
def update_project(project_id: str) -> Response:
    """Change settings (maintainer): visibility, ci_push_repository_for_job_token_allowed, ..."""
    project, _ = project_ability(project_id, "admin_project")
    values = params()
    choice(values, "visibility", perm.VISIBILITIES)
    changes: dict[str, Any] = {}
    for key, attr in PROJECT_SETTINGS.items():
        if values.get(key) is not None:
            changes[attr] = (flag(values, key) if isinstance(getattr(project, attr), bool)
                             else text(values, key))
    previous = project.default_branch
    domain.update_project(project, **changes)
    if changes.get("default_branch") not in (None, previous):
        _change_head(project, changes["default_branch"])
    db.session.commit()
    return jsonify(project_json(project))


def _change_head(project: Project, branch: str) -> None:
    """Project#change_head: HEAD moves to an existing branch; an unknown one is the model's 400.

    An empty repository has no branches yet: its first commit creates the new default.
    """
    with writing(project) as repo:
        heads = branch_shas(repo)
        if heads and branch not in heads:
            refusal = f"Could not change HEAD: branch '{branch}' does not exist"
            raise ApiError(400, {"message": {"base": [refusal]}})
        ops.set_head(repo, branch)


@bp.delete("/projects/<project_id>")
def delete_project(project_id: str) -> tuple[Response, int]:
    """Delete a project (owner)."""
    project, _ = project_ability(project_id, "delete_project")
    domain.delete_project(state().backend, project)
    db.session.commit()
    return jsonify(message="202 Accepted"), 202


# -- members ----------------------------------------------------------------------------

def _members(target: Project | Group, inherited: bool) -> list[Membership]:
    condition: Any
    if isinstance(target, Project):
        group_ids = domain.ancestor_ids(target.group) if inherited else []
        condition = (Membership.project_id == target.id) | Membership.group_id.in_(group_ids)
    else:
        ids = domain.ancestor_ids(target) if inherited else [target.id]
        condition = Membership.group_id.in_(ids)
    best: dict[int, Membership] = {}
    for member in db.session.scalars(select(Membership).where(condition).order_by(Membership.id)):
        if member.user_id not in best or member.access_level > best[member.user_id].access_level:
            best[member.user_id] = member
    return list(best.values())


def _target(kind: str, ref: str, ability: str) -> Project | Group:
    if kind == "projects":
        project, _ = project_ability(ref, ability)
        return project
    group = find_group(ref)
    group_ability(group, "read_group" if ability == "read_members" else "admin_members")
    return group


def _member_user(values: dict[str, Any]) -> User:
    """`user_id` or `username` (lib/api/members.rb: mutually exclusive, at least one of them)."""
    given = [name for name in ("user_id", "username") if values.get(name) not in (None, "")]
    if len(given) == 2:
        raise ApiError(400, {"error": "user_id, username are mutually exclusive"})
    if not given:
        raise ApiError(400, {"error": "user_id, username are missing, at least one parameter must be "
                                      "provided"})
    user: User | None
    if given == ["username"]:
        user = db.session.scalar(select(User).where(User.username == text(values, "username")))
    else:
        user = by_id(User, integer(values, "user_id"))
    if user is None:
        fail(404, "404 User Not Found")
    return user


def _member_level(values: dict[str, Any]) -> int:
    """`access_level`: an Integer among Gitlab::Access.all_values (minimal access too)."""
    level = integer(values, "access_level")
    if level not in (perm.MINIMAL, perm.GUEST, perm.REPORTER, perm.DEVELOPER, perm.MAINTAINER,
                     perm.OWNER):
        not_a_value("access_level")
    return level


@bp.get("/<any(projects, groups):kind>/<ref>/members")
@bp.get("/<any(projects, groups):kind>/<ref>/members/all")
def list_members(kind: str, ref: str) -> Response:
    """Direct members (`/members`) or all, inherited included (`/members/all`)."""
    from flask import request
    target = _target(kind, ref, "read_members")
    return paginate(_members(target, request.path.endswith("/all")), member_json)


@bp.get("/<any(projects, groups):kind>/<ref>/members/<int:user_id>")
def show_member(kind: str, ref: str, user_id: int) -> Response:
    """One direct member."""
    target = _target(kind, ref, "read_members")
    for member in _members(target, False):
        if member.user_id == user_id:
            return jsonify(member_json(member))
    fail(404, "404 Member Not Found")


@bp.post("/<any(projects, groups):kind>/<ref>/members")
def add_member(kind: str, ref: str) -> tuple[Response, int]:
    """Add a member with an `access_level`."""
    target = _target(kind, ref, "admin_members")
    values = params()
    user = _member_user(values)
    level = _member_level(values)
    try:
        member = domain.add_member(user, target, int(level or 0))
    except domain.Conflict as exc:
        fail(409, str(exc))
    db.session.commit()
    return created(member_json(member))


@bp.put("/<any(projects, groups):kind>/<ref>/members/<int:user_id>")
def update_member(kind: str, ref: str, user_id: int) -> Response:
    """Change a member's access level."""
    target = _target(kind, ref, "admin_members")
    level = _member_level(params())
    if not any(m.user_id == user_id for m in _members(target, False)):
        fail(404, "404 Member Not Found")
    user = by_id(User, user_id)
    assert user is not None
    member = domain.set_member(user, target, int(level or 0))
    db.session.commit()
    return jsonify(member_json(member))


@bp.delete("/<any(projects, groups):kind>/<ref>/members/<int:user_id>")
def remove_member(kind: str, ref: str, user_id: int) -> Response:
    """Remove a direct member."""
    target = _target(kind, ref, "admin_members")
    user = by_id(User, user_id)
    if user is None or not any(m.user_id == user_id for m in _members(target, False)):
        fail(404, "404 Member Not Found")
    domain.remove_member(user, target)
    db.session.commit()
    return no_content()


# -- protected branches -----------------------------------------------------------------

def _rules(project: Project) -> list[ProtectedBranch]:
    return list(db.session.scalars(select(ProtectedBranch).where(
        ProtectedBranch.project_id == project.id).order_by(ProtectedBranch.id)))


@bp.get("/projects/<project_id>/protected_branches")
def list_protected(project_id: str) -> Response:
    """Protected branch rules."""
    project, _ = project_ability(project_id, "read_project")
    return paginate(_rules(project), protected_json)


@bp.get("/projects/<project_id>/protected_branches/<path:name>")
def show_protected(project_id: str, name: str) -> Response:
    """One rule."""
    project, _ = project_ability(project_id, "read_project")
    for rule in _rules(project):
        if rule.name == unquote(name):
            return jsonify(protected_json(rule))
    fail(404, "404 Not found")


@bp.post("/projects/<project_id>/protected_branches")
def protect(project_id: str) -> tuple[Response, int]:
    """Protect a branch or wildcard (maintainer)."""
    project, _ = project_ability(project_id, "admin_project")
    values = params()
    name = text(values, "name", required=True)
    assert name is not None
    level = integer(values, "push_access_level", required=False)
    merge = integer(values, "merge_access_level", required=False)
    _check_levels(level, merge)
    try:
        rule = domain.protect_branch(project, name, perm.MAINTAINER if level is None else level,
                                     flag(values, "allow_force_push"), replace=False,
                                     merge_access_level=merge)
    except domain.Conflict as exc:
        fail(409, str(exc))
    db.session.commit()
    return created(protected_json(rule))


PROTECTION_LEVELS = (perm.NO_ACCESS, perm.DEVELOPER, perm.MAINTAINER, 60)  # 60: admin


def _check_levels(*levels: int | None) -> None:
    """Access levels a protection takes (Grape `values:` of lib/api/protected_branches.rb)."""
    for name, level in zip(("push_access_level", "merge_access_level"), levels, strict=False):
        if level is not None and level not in PROTECTION_LEVELS:
            not_a_value(name)


@bp.patch("/projects/<project_id>/protected_branches/<path:name>")
def update_protected(project_id: str, name: str) -> Response:
    """Change a rule: `allow_force_push` (and forge also takes the two access levels)."""
    project, _ = project_ability(project_id, "admin_project")
    rule = next((r for r in _rules(project) if r.name == unquote(name)), None)
    if rule is None:
        fail(404, "404 Not found")
    values = params()
    level = integer(values, "push_access_level", required=False)
    merge = integer(values, "merge_access_level", required=False)
    _check_levels(level, merge)
    rule = domain.protect_branch(
        project, rule.name, rule.push_access_level if level is None else level,
        flag(values, "allow_force_push", rule.allow_force_push),
        merge_access_level=rule.merge_access_level if merge is None else merge)
    db.session.commit()
    return jsonify(protected_json(rule))


@bp.delete("/projects/<project_id>/protected_branches/<path:name>")
def unprotect(project_id: str, name: str) -> Response:
    """Unprotect a branch (maintainer)."""
    project, _ = project_ability(project_id, "admin_project")
    try:
        domain.unprotect_branch(project, unquote(name))
    except domain.NotFound:
        fail(404, "404 Not found")
    db.session.commit()
    return no_content()



@bp.get("/groups/<group_id>/packages")
def list_group_packages(group_id: str) -> Response:
    """The packages of the projects below a group that the caller may read packages of."""
    group = find_group(group_id)
    who = group_ability(group, "read_group")
    user = current_user(who)
    ids = [g.id for g in domain.descendants(group)]
    projects = [p for p in db.session.scalars(select(Project).where(Project.group_id.in_(ids))
                                              .order_by(Project.id))
                if perm.authorize_api(who, "read_packages", domain.project_facts(p, user), now(),
                                      state().config.base_url).allowed]
    return paginate(packages_of(projects), lambda item: package_json(*item))


@bp.get("/projects/<project_id>/groups")
def list_project_groups(project_id: str) -> Response:
    """The project's group and its ancestors (the groups whose members reach the project)."""
    project, _ = project_ability(project_id, "read_project")
    groups = []
    group = project.group
    while group is not None:
        groups.append(group)
        group = group.parent
    search = text(params(), "search")
    return paginate([g for g in reversed(groups) if not search or search in g.full_path], group_json)
