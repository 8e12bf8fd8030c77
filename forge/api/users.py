"""Users and personal access tokens: `/user`, `/users`, `/personal_access_tokens`."""

from __future__ import annotations

import re
from datetime import date, datetime, time
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
    instance_ability,
    integer,
    invalid,
    iso,
    missing,
    no_content,
    now,
    paginate,
    params,
    state,
    text,
    too_long,
    web_url,
)
from forge.models import PersonalAccessToken, User, db


def user_json(user: User, full: bool = False) -> dict[str, Any]:
    """A user as GitLab renders one."""
    data: dict[str, Any] = {
        "id": user.id, "username": user.username, "name": user.name, "state": user.state,
        "locked": user.state == "blocked", "avatar_url": None, "web_url": web_url(user.username),
        "public_email": None,
    }
    if full:  # GitLab's UserPublic and UserWithAdmin keys; null where forge has no such thing
        data.update(
            email=user.email, is_admin=user.admin, external=user.external,
            created_at=iso(user.created_at), bot=False, bio="", location="", skype="",
            linkedin="", twitter="", discord="", website_url="", organization="", job_title="",
            pronouns=None, work_information=None, followers=0, following=0, is_followed=False,
            local_time=None, last_sign_in_at=None, confirmed_at=iso(user.created_at),
            last_activity_on=None, theme_id=1, color_scheme_id=1, projects_limit=100000,
            current_sign_in_at=None, identities=[], can_create_group=True,
            can_create_project=True, two_factor_enabled=False, private_profile=False,
            commit_email=user.email, note=None, namespace_id=domain.user_namespace_id(user), created_by=None,
            is_auditor=False, using_license_seat=False, highest_role=0, current_sign_in_ip=None,
            last_sign_in_ip=None, sign_in_count=0)
    return data


def token_json(token: PersonalAccessToken, secret: str | None = None) -> dict[str, Any]:
    """A PAT as GitLab renders one; the secret only when just created."""
    data: dict[str, Any] = {
        "id": token.id, "name": token.name, "revoked": token.revoked,
        "created_at": iso(token.created_at), "scopes": token.scopes, "user_id": token.user_id,
        "active": not token.revoked and (token.expires_at is None or token.expires_at > now()),
        "expires_at": token.expires_at.date().isoformat() if token.expires_at else None,
    }
    if secret is not None:
        data["token"] = secret
    return data


def _user(user_id: str) -> User:
    if not inputs.digits(user_id):  # the routes require a numeric id: Grape's catch-all answers
        raise ApiError(404, {"error": "404 Not Found"})
    found = by_id(User, user_id)
    if found is None:
        fail(404, "404 User Not Found")
    return found


EMAIL = re.compile(r"[^@\s]+@[^@\s]+")  # Devise.email_regexp
NAMESPACE_FORMAT = ("can contain only letters, digits, '_', '-' and '.'. "  # Gitlab::PathRegex
                    "Cannot start with '-' or end in '.', '.git' or '.atom'.")


def _valid_path(segment: str) -> bool:
    try:
        domain.check_path(segment)
    except domain.DomainError:
        return False
    return True


@bp.get("/user")
def me() -> Response:
    """The authenticated user."""
    who = instance_ability("read_user")
    user = current_user(who)
    assert user is not None
    return jsonify(user_json(user, full=True))


@bp.get("/users")
def list_users() -> Response:
    """Users, filtered by `username` or `search`; full details for admins."""
    who = instance_ability("read_user")
    admin = perm.acts_as_admin(who)
    values = params()
    query = select(User).order_by(User.id)
    username, search = text(values, "username"), text(values, "search")
    if username:
        query = query.where(User.username == username)
    if search:
        query = query.where(User.username.contains(search) | User.email.contains(search)
                            | User.name.contains(search))
    if flag(values, "blocked"):
        query = query.where(User.state == "blocked")
    if flag(values, "active"):
        query = query.where(User.state == "active")
    users = list(db.session.scalars(query))
    return paginate(users, lambda u: user_json(u, full=admin))


@bp.get("/users/<user_id>")
def show_user(user_id: str) -> Response:
    """One user."""
    who = instance_ability("read_user")
    return jsonify(user_json(_user(user_id), full=perm.acts_as_admin(who)))


@bp.post("/users")
def create_user() -> tuple[Response, int]:
    """Create a user (admin)."""
    instance_ability("admin")
    values = params()
    username = text(values, "username", required=True)
    email, name = text(values, "email", required=True), text(values, "name", required=True)
    password = text(values, "password")
    reset, random = flag(values, "reset_password"), flag(values, "force_random_password")
    admin, external = flag(values, "admin"), flag(values, "external")
    assert email is not None and name is not None and username is not None
    if not password and not reset and not random:
        fail(400, "400 Bad request - password, reset_password, force_random_password are missing, "
                  "exactly one parameter must be provided")
    errors: dict[str, list[str]] = {}  # User's validations, as render_validation_error! shows them
    too_long(errors, {"name": name, "username": username})
    if "/" in username or not _valid_path(username):
        errors.setdefault("username", []).append(NAMESPACE_FORMAT)
    if not EMAIL.fullmatch(email):
        errors["email"] = ["is invalid"]
    if password and not 8 <= len(password) <= 128:  # Devise's password_length
        errors["password"] = ["is too short (minimum is 8 characters)" if len(password) < 8
                              else "is too long (maximum is 128 characters)"]
    if errors:
        raise ApiError(400, {"message": errors})
    try:
        user = domain.create_user(
            now(), username, email=email, name=name, password=password or None, admin=admin,
            external=external, password_method=state().config.password_hash_method)
    except domain.Conflict:  # lib/api/users.rb: the e-mail is checked first, then the username
        db.session.rollback()
        if db.session.scalar(select(User.id).where(db.func.lower(User.email) == email.lower())):
            fail(409, "Email has already been taken")
        fail(409, "Username has already been taken")
    db.session.commit()
    return created(user_json(user, full=True))


@bp.put("/users/<user_id>")
def update_user(user_id: str) -> Response:
    """Change `admin`, `external` or `name` of a user (admin)."""
    instance_ability("admin")
    user, values = _user(user_id), params()
    admin, external = flag(values, "admin", user.admin), flag(values, "external", user.external)
    name = text(values, "name")
    user.admin, user.external = admin, external
    if name:
        user.name = name
    db.session.commit()
    return jsonify(user_json(user, full=True))


@bp.post("/users/<user_id>/<any(block, unblock):change>")
def block_user(user_id: str, change: str) -> tuple[Response, int]:
    """Block or unblock a user (admin), answering as lib/api/users.rb does.

    Blocking oneself is refused; blocking a blocked user answers `null` (the endpoint
    `break`s), unblocking a user who is not blocked `false`; a deactivated user cannot be
    unblocked here.
    """
    instance_ability("admin")
    user = _user(user_id)
    if change == "block":
        instance_ability("block_user", user.id)  # never oneself
        if user.state == "blocked":
            return jsonify(None), 201
        domain.set_user_state(user, "blocked")
    else:
        if user.state == "deactivated":
            fail(403, "403 Forbidden - Deactivated users cannot be unblocked by the API")
        if user.state != "blocked":
            return jsonify(False), 201
        domain.set_user_state(user, "active")
    db.session.commit()
    return jsonify(True), 201


@bp.delete("/users/<user_id>")
def delete_user(user_id: str) -> Response:
    """Delete a user (admin)."""
    instance_ability("admin")
    user = _user(user_id)
    if user.username == "root":
        fail(403, "403 Forbidden - the forge's root user cannot be deleted")
    db.session.delete(user)
    db.session.commit()
    return no_content()


@bp.post("/users/<user_id>/personal_access_tokens")
def create_token(user_id: str) -> tuple[Response, int]:
    """Create a PAT for a user (admin); the answer holds its secret, once."""
    instance_ability("admin")
    user, values = _user(user_id), params()
    name = text(values, "name", required=True)
    assert name is not None
    scopes = _scopes(values)
    expires_at = _date(values, "expires_at")
    token, secret = domain.create_token(now(), user, name=name, scopes=scopes, expires_at=expires_at)
    db.session.commit()
    return created(token_json(token, secret))


def _scopes(values: dict[str, Any]) -> list[str]:
    """`scopes`: an array of known scope names, or a comma-separated string of them."""
    scopes = values.get("scopes")
    if isinstance(scopes, str):
        scopes = [s for s in scopes.split(",") if s]
    if scopes is None or scopes == []:
        missing("scopes")
    if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
        invalid("scopes")
    if any(s not in perm.PAT_SCOPES for s in scopes):
        raise ApiError(400, {"error": "scopes does not have a valid value"})
    return scopes


def _date(values: dict[str, Any], name: str) -> datetime | None:
    """A Date parameter (`YYYY-MM-DD`) as midnight; anything else is invalid, as Grape says."""
    value = values.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        invalid(name)
    try:
        return datetime.combine(date.fromisoformat(value), time())
    except ValueError:
        invalid(name)


@bp.get("/personal_access_tokens")
def list_tokens() -> Response:
    """One's own PATs (admins: everybody's, or `user_id`'s)."""
    who = instance_ability("read_user")
    viewer = current_user(who)
    assert viewer is not None
    query = select(PersonalAccessToken).order_by(PersonalAccessToken.id)
    user_id = integer(params(), "user_id", required=False)
    if not perm.acts_as_admin(who):
        query = query.where(PersonalAccessToken.user_id == viewer.id)
    elif user_id is not None:
        owner = by_id(User, user_id)
        query = query.where(PersonalAccessToken.user_id == (owner.id if owner else -1))
    return paginate(list(db.session.scalars(query)), token_json)


@bp.delete("/personal_access_tokens/<token_id>")
def revoke_token(token_id: str) -> Response:
    """Revoke a PAT (one's own, or any as admin)."""
    token = by_id(PersonalAccessToken, token_id)
    instance_ability("revoke_token", token.user_id if token else None)
    if token is None:
        fail(404, "404 Not Found")
    token.revoked = True
    db.session.commit()
    return no_content()
