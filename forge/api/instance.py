"""Instance-wide reads: `/version`, `/metadata`, `/namespaces`, and `/user/status`."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from urllib.parse import unquote

from flask import Response, jsonify
from sqlalchemy import select

from forge import GITLAB_REVISION, GITLAB_VERSION, domain, inputs
from forge import permissions as perm
from forge.api import (
    bp,
    by_id,
    choice,
    current_user,
    fail,
    flag,
    instance_ability,
    integer,
    invalid,
    iso,
    missing,
    now,
    paginate,
    params,
    state,
    text,
    web_url,
)
from forge.models import Group, Project, User, db


def metadata_json() -> dict[str, Any]:
    """GitLab's Metadata entity for a Community Edition without a KAS."""
    return {"version": GITLAB_VERSION, "revision": GITLAB_REVISION,
            "kas": {"enabled": False, "externalUrl": None, "externalK8sProxyUrl": None,
                    "version": None},
            "enterprise": False}


@bp.get("/version")
@bp.get("/metadata")
def version() -> Response:
    """The emulated GitLab version (authenticated callers, as GitLab)."""
    instance_ability("read_user")
    return jsonify(metadata_json())


# -- namespaces -------------------------------------------------------------------------

def group_namespace_json(group: Group) -> dict[str, Any]:
    """A group as GitLab's Namespace entity."""
    projects = db.session.scalar(select(db.func.count(Project.id)).where(Project.group_id == group.id))
    return {"id": group.id, "name": group.name, "path": group.path, "kind": "group",
            "full_path": group.full_path, "parent_id": group.parent_id, "avatar_url": None,
            "web_url": web_url(f"groups/{group.full_path}"),
            "members_count_with_descendants": None, "root_repository_size": None,
            "projects_count": projects}


def user_namespace_json(user: User) -> dict[str, Any]:
    """A user's personal namespace as GitLab's Namespace entity (forge gives it the user's id)."""
    return {"id": domain.user_namespace_id(user), "name": user.name, "path": user.username, "kind": "user",
            "full_path": user.username, "parent_id": None, "avatar_url": None,
            "web_url": web_url(user.username), "billable_members_count": None,
            "projects_count": db.session.scalar(select(db.func.count(Project.id)).where(
                Project.owner_id == user.id))}


def _visible_namespaces(who: perm.Principal) -> list[Group | User]:
    """The caller's own namespace and the groups it may see (admins: everything)."""
    user = current_user(who)
    found: list[Group | User] = []
    users = db.session.scalars(select(User).order_by(User.id)) if perm.acts_as_admin(who) else [user]
    found.extend(u for u in users if u is not None)
    for group in db.session.scalars(select(Group).order_by(Group.id)):
        if perm.authorize_group(who, "read_namespace", group.visibility, domain.group_role(group, user),
                                now(), state().config.base_url).allowed:
            found.append(group)
    return found


def namespace_json(item: Group | User) -> dict[str, Any]:
    """Render a namespace of either kind."""
    return group_namespace_json(item) if isinstance(item, Group) else user_namespace_json(item)


@bp.get("/namespaces")
def list_namespaces() -> Response:
    """Namespaces of the caller (`search` by path, `owned_only`, `top_level_only`)."""
    who = instance_ability("read_user")
    values = params()
    search = text(values, "search")
    owned_only, top_level_only = flag(values, "owned_only"), flag(values, "top_level_only")
    flag(values, "full_path_search")
    user = current_user(who)
    items = _visible_namespaces(who)
    if search:
        items = [i for i in items if search.lower() in namespace_json(i)["full_path"].lower()]
    if owned_only:  # one's own namespace and the groups one owns
        items = [i for i in items if (i is user if isinstance(i, User)
                                      else perm.owns_namespace(domain.group_role(i, user)))]
    if top_level_only:
        items = [i for i in items if isinstance(i, User) or i.parent_id is None]
    return paginate(items, namespace_json)


@bp.get("/namespaces/<path:ref>")
def show_namespace(ref: str) -> Response:
    """One namespace by id or URL-encoded full path (a group's, or a user's own)."""
    who = instance_ability("read_user")
    ref = unquote(ref)
    found: Group | User | None = None
    if inputs.digits(ref):
        found = domain.namespace_by_id(ref)
    else:
        found = db.session.scalar(select(Group).where(Group.full_path == ref)) or db.session.scalar(
            select(User).where(User.username == ref))
    if found is None or not any(_same(found, item) for item in _visible_namespaces(who)):
        fail(404, "404 Namespace Not Found")
    return jsonify(namespace_json(found))


def _same(a: Group | User, b: Group | User) -> bool:
    return type(a) is type(b) and a.id == b.id


@bp.get("/namespaces/<path:ref>/exists")
def namespace_exists(ref: str) -> Response:
    """Whether a top-level path is taken (by a group or user), as GitLab's `exists`."""
    instance_ability("read_user")
    path = unquote(ref)
    parent_id = integer(params(), "parent_id", required=False)
    parent_group = by_id(Group, parent_id) if parent_id is not None else None  # huge ids: none
    parent = Group.parent_id.is_(None) if parent_id is None else Group.parent_id == (
        parent_group.id if parent_group is not None else -1)
    taken = db.session.scalar(select(Group.id).where(Group.path == path, parent)) is not None
    if parent_id is None:
        taken = taken or db.session.scalar(select(User.id).where(User.username == path)) is not None
    return jsonify(exists=taken, suggests=[f"{path}1"] if taken else [])


# -- user status ------------------------------------------------------------------------

STATUS_KEYS = ("emoji", "message", "availability")
# UserStatus::CLEAR_STATUS_QUICK_OPTIONS
CLEAR_AFTER = {"30_minutes": timedelta(minutes=30), "3_hours": timedelta(hours=3),
               "8_hours": timedelta(hours=8), "1_day": timedelta(days=1),
               "3_days": timedelta(days=3), "7_days": timedelta(days=7),
               "30_days": timedelta(days=30)}


def status_json(user: User) -> dict[str, Any]:
    """GitLab's UserStatus entity."""
    stored = user.status or {}
    clear_at = stored.get("clear_status_at")
    if clear_at and datetime.fromisoformat(clear_at) <= now():  # cleared when its time came
        stored = {}
    message = stored.get("message")
    return {"emoji": stored.get("emoji"), "availability": stored.get("availability") or "not_set",
            "message": message, "message_html": message,
            "clear_status_at": iso(datetime.fromisoformat(clear_at)) if stored and clear_at else None}


@bp.get("/user/status")
def my_status() -> Response:
    """The caller's status."""
    who = instance_ability("read_user")
    user = current_user(who)
    assert user is not None
    return jsonify(status_json(user))


@bp.put("/user/status")
@bp.patch("/user/status")
def set_my_status() -> Response:
    """Set (PUT: replace, PATCH: merge) the caller's status message and emoji."""
    from flask import request
    who = instance_ability("update_own_status")
    user = current_user(who)
    assert user is not None
    values = params()
    stored = dict(user.status or {}) if request.method == "PATCH" else {}
    for key in STATUS_KEYS:
        if key in values:
            stored[key] = text(values, key)
    after = choice(values, "clear_status_after", CLEAR_AFTER)
    if after is not None:
        stored["clear_status_at"] = (now() + CLEAR_AFTER[after]).isoformat()
    shown = stored.get("emoji") or stored.get("message")
    if not shown and stored.get("availability") in (None, "", "not_set"):
        stored = {}  # Users::SetStatusService: nothing to show clears the status
    elif not stored.get("emoji"):
        stored["emoji"] = "speech_balloon"  # UserStatus::DEFAULT_EMOJI
    user.status = stored or None
    db.session.commit()
    return jsonify(status_json(user))



# -- feature flags ----------------------------------------------------------------------

@bp.get("/features")
def list_features() -> Response:
    """GitLab's development feature flags (admin): forge has none."""
    instance_ability("admin")
    return jsonify([])


@bp.post("/features/<name>")
def set_feature(name: str) -> tuple[Response, int]:
    """Set a feature flag (admin): accepted and answered as GitLab's Feature entity, but forge
    has no feature flags, so it changes nothing (scripts that switch one on still run)."""
    instance_ability("admin")
    values = params()
    raw = values.get("value")
    if raw is None or raw == "":
        missing("value")
    on = str(raw).lower() in ("true", "1") or (inputs.digits(str(raw)) and int(str(raw)) > 0)
    if not on and str(raw).lower() not in ("false", "0"):
        invalid("value")
    return jsonify(name=name, state="on" if on else "off",
                   gates=[{"key": "boolean", "value": on}], definition=None), 201
