"""The GitLab v4 REST subset under `/api/v4`: credentials, errors, ids, pagination.

Views live in the sibling modules; each asks `forge.permissions` through `authorize`
here, so no view compares roles itself. Errors use GitLab's envelope
(`{"message": "404 Project Not Found"}`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, NoReturn, TypeVar
from urllib.parse import quote, unquote, urlencode

from flask import Blueprint, Flask, Response, current_app, g, jsonify, request
from sqlalchemy.exc import IntegrityError
from werkzeug.exceptions import HTTPException

from forge import auth, domain, inputs
from forge import permissions as perm
from forge.models import Group, Project, User, db
from forge.state import ForgeState, state_of

bp = Blueprint("api", __name__, url_prefix="/api/v4")
Row = TypeVar("Row")


class ApiError(Exception):
    """An API refusal with its status, GitLab body and any headers."""

    def __init__(self, status: int, body: dict[str, Any],
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(body)
        self.status = status
        self.body = body
        self.headers = headers or {}


def fail(status: int, message: str) -> NoReturn:
    """Raise GitLab's `{"message": ...}` error."""
    raise ApiError(status, {"message": message})


def too_long(errors: dict[str, list[str]], values: dict[str, str | None], maximum: int = 255) -> None:
    """Add ActiveRecord's length error for each value longer than `maximum`, by field name."""
    for field, value in values.items():
        if value is not None and len(value) > maximum:
            errors.setdefault(field, []).append(f"is too long (maximum is {maximum} characters)")


def missing(name: str) -> NoReturn:
    """Raise GitLab's missing-parameter error."""
    raise ApiError(400, {"error": f"{name} is missing"})


def state() -> ForgeState:
    """The forge serving this request."""
    return state_of(current_app)


def now() -> datetime:
    """The forge's clock."""
    return state().now()


def iso(value: datetime | None) -> str | None:
    """Render a naive UTC time as GitLab does."""
    return value.isoformat(timespec="milliseconds") + "Z" if value else None


# -- credentials ------------------------------------------------------------------------

def principal(job_token_endpoint: bool = False, basic: bool = False) -> perm.Principal:
    """The request's principal, as GitLab's API reads credentials (see `auth.api_principal`).

    With a `sudo` parameter (or `Sudo` header) an admin's PAT with the `sudo` scope acts
    as the user it names (id or username); any other caller, one without credentials
    included, is refused as lib/api/helpers.rb's `sudo!` refuses it.
    """
    who = auth.api_principal(request.headers, request.args,
                             job_token_endpoint=job_token_endpoint, basic=basic)
    target = _sudo_identifier()
    if target is None:
        return who
    name = f"forge_sudo_{job_token_endpoint}_{basic}"  # checked and logged once per request
    if name not in g:
        check(who, "api_sudo", perm.authorize_sudo(who, now(), state().config.base_url))
        user = auth.find_user(target)
        if user is None:
            fail(404, f"404 User with ID or username '{target}' Not Found")
        setattr(g, name, auth.acting_as(who, user))
    acting: perm.Principal = getattr(g, name)
    return acting


def _sudo_identifier() -> str | None:
    """lib/api/helpers.rb's `params[:sudo] || env['HTTP_SUDO']`: the parameter (query, form or
    JSON body) before the header, and an empty one counts (Ruby's "" is true)."""
    values = inputs.query_params(request) if request.endpoint in UPLOADS else params()
    value = values.get("sudo")
    if value is None or value is False:
        value = request.headers.get("Sudo")
    return None if value is None else str(value)


def record(who: perm.Principal, action: str, decision: perm.Decision,
           project: Project | None = None) -> None:
    """Log an API decision."""
    auth.record(now(), request.method, request.path, who, action, decision, project)


def check(who: perm.Principal, action: str, decision: perm.Decision,
          project: Project | None = None) -> None:
    """Log the decision and raise its GitLab error when it refuses."""
    record(who, action, decision, project)
    db.session.commit()
    if not decision.allowed:
        if decision.message == perm.API_INSUFFICIENT_SCOPE:
            raise ApiError(403, {
                "error": "insufficient_scope",
                "error_description": "The request requires higher privileges than provided by "
                                     "the access token.",
                "scope": "sudo" if decision.reason == "insufficient_sudo_scope" else "api"})
        if decision.reason == "namespace_not_valid":  # render_validation_error!
            raise ApiError(400, {"message": {"namespace": [decision.message]}})
        if decision.message in (perm.API_TOKEN_EXPIRED, perm.API_TOKEN_REVOKED):
            raise ApiError(401, {"error": "invalid_token", "error_description": decision.message},
                           {"WWW-Authenticate": 'Bearer realm="Protected by OAuth 2.0", '
                                                'error="invalid_token", '
                                                f'error_description="{decision.message}"'})
        fail(decision.status, decision.message)


def current_user(who: perm.Principal) -> User | None:
    """The ORM user behind a principal."""
    return auth.user_of(who)


def project_ability(project_id: str, ability: str, *, job_token_endpoint: bool = False,
                    basic: bool = False) -> tuple[Project, perm.Principal]:
    """Find the project (id or URL-encoded path) and require `ability` on it."""
    who = principal(job_token_endpoint, basic)
    project = find_project(project_id)
    facts = domain.project_facts(project, current_user(who)) if project is not None else None
    check(who, f"api_{ability}", perm.authorize_api(who, ability, facts, now(),
                                                    state().config.base_url), project)
    assert project is not None
    return project, who


def instance_ability(ability: str, target_user_id: int | None = None) -> perm.Principal:
    """Require an instance-level ability (admin, read_user, ...)."""
    who = principal()
    check(who, f"api_{ability}", perm.authorize_instance(
        who, ability, now(), state().config.base_url, target_user_id))
    return who


def group_ability(group: Group, ability: str) -> perm.Principal:
    """Require `read_group`, `create_subgroup` or `admin_members` on a group."""
    who = principal()
    role = domain.group_role(group, current_user(who))
    check(who, f"api_{ability}", perm.authorize_group(
        who, ability, group.visibility, role, now(), state().config.base_url))
    return who


# -- ids, bodies, pages -----------------------------------------------------------------

def find_project(ref: str) -> Project | None:
    """A project by numeric id or URL-encoded full path."""
    ref = unquote(ref)
    if inputs.digits(ref):
        return by_id(Project, ref)
    try:
        domain.check_path(ref)
    except domain.DomainError:
        return None
    return domain.find_project(ref)


def find_group(ref: str) -> Group:
    """A group by numeric id or URL-encoded full path, or 404."""
    ref = unquote(ref)
    group = by_id(Group, ref) if inputs.digits(ref) else None
    if group is None and not inputs.digits(ref):
        try:
            group = domain.get_group(ref)
        except domain.DomainError:
            group = None
    if group is None:
        fail(404, "404 Group Not Found")
    return group


def params() -> dict[str, Any]:
    """The request's parameters: query string, form or JSON body, merged like Grape does.

    Query and form parameters nest as Rack nests them (`actions[][file_path]=...`). The
    request was screened (`inputs.screen`) before the view ran, so they parse.
    """
    values: dict[str, Any] = dict(inputs.query_params(request))
    if request.form:
        values.update(inputs.form_params(request))
    body = inputs.json_body(request)
    if isinstance(body, dict):
        values.update(body)
    return values


def invalid(name: str) -> NoReturn:
    """Raise Grape's error for a parameter of the wrong type or format."""
    raise ApiError(400, {"error": f"{name} is invalid"})


def integer(values: dict[str, Any], name: str, required: bool = True) -> int | None:
    """Read an integer parameter, with GitLab's 400 when it is missing or invalid."""
    value = values.get(name)
    if value is None or value == "":
        if required:
            missing(name)
        return None
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        invalid(name)
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        invalid(name)


def text(values: dict[str, Any], name: str, required: bool = False) -> str | None:
    """Read a String parameter as Grape coerces one: scalars become text, lists and hashes are invalid."""
    value = values.get(name)
    if value is None or value == "":
        if required:
            missing(name)
        return None if value is None else ""
    if isinstance(value, (list, dict)):
        invalid(name)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def moment(values: dict[str, Any], name: str) -> datetime | None:
    """Read a DateTime parameter (ISO 8601, `2019-03-15T08:00:00Z`, a date alone is its
    midnight) as a naive UTC time; anything else is Grape's 400 `<name> is invalid`."""
    raw = text(values, name)
    if not raw:
        return None
    try:
        when = datetime.fromisoformat(raw)
        return when.astimezone(UTC).replace(tzinfo=None) if when.tzinfo else when
    except (ValueError, OverflowError):  # OverflowError: past year 9999 or before 1 in UTC
        invalid(name)


def choice(values: dict[str, Any], name: str, options: Iterable[Any]) -> str | None:
    """Read a String parameter declared with Grape `values:`; anything else gets Grape's 400."""
    value = text(values, name)
    if value is not None and value not in {str(o) for o in options}:
        not_a_value(name)
    return value


def not_a_value(name: str) -> NoReturn:
    """Raise Grape's refusal of a value outside a parameter's `values:`."""
    raise ApiError(400, {"error": f"{name} does not have a valid value"})


# Grape coerces Boolean parameters with dry-types' `params.bool`: exactly these spellings
# (lower, Capitalised or UPPER case; `tRuE` or ` true` is invalid).
BOOLEAN_WORDS = {
    **{word: True for word in ("1", "on", "On", "ON", "t", "true", "True", "TRUE", "T",
                               "y", "yes", "Yes", "YES", "Y")},
    **{word: False for word in ("0", "off", "Off", "OFF", "f", "false", "False", "FALSE", "F",
                                "n", "no", "No", "NO", "N")},
}


def flag(values: dict[str, Any], name: str, default: bool = False) -> bool:
    """Read a Boolean parameter as Grape does: true/false and their spellings, else invalid."""
    value = values.get(name)
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    word = str(value) if isinstance(value, (str, int)) else None
    if word not in BOOLEAN_WORDS:
        invalid(name)
    return BOOLEAN_WORDS[word]


def by_id(model: type[Row], key: Any) -> Row | None:
    """A row by a numeric id taken from a request; None when the key is no id the table can hold."""
    return domain.by_id(model, key)


def _page_number(values: Any, name: str, default: int) -> int:
    """`page` or `per_page`: Grape's 400 when given but not an integer, as GitLab declares them."""
    raw = values.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        invalid(name)


def paginate(items: Sequence[Any], render: Callable[[Any], dict[str, Any]]) -> Response:
    """A list page with GitLab's pagination headers."""
    values = request.args
    page = max(_page_number(values, "page", 1), 1)
    per_page = min(max(_page_number(values, "per_page", 20), 1), 100)
    total = len(items)
    pages = max(math.ceil(total / per_page), 1)
    chunk = items[(page - 1) * per_page: page * per_page]
    response = jsonify([render(item) for item in chunk])
    base = state().config.base_url + request.path
    query = {k: v for k, v in values.items() if k not in ("page", "per_page")}

    def link(number: int) -> str:
        return f"{base}?{urlencode({**query, 'page': number, 'per_page': per_page})}"

    links = []
    if page > 1:
        links.append(f'<{link(page - 1)}>; rel="prev"')
    if page < pages:
        links.append(f'<{link(page + 1)}>; rel="next"')
    links += [f'<{link(1)}>; rel="first"', f'<{link(pages)}>; rel="last"']
    response.headers.update({
        "X-Total": str(total), "X-Total-Pages": str(pages), "X-Page": str(page),
        "X-Per-Page": str(per_page), "X-Next-Page": str(page + 1) if page < pages else "",
        "X-Prev-Page": str(page - 1) if page > 1 else "", "Link": ", ".join(links)})
    return response


def created(data: dict[str, Any]) -> tuple[Response, int]:
    """A 201 answer."""
    return jsonify(data), 201


def no_content() -> Response:
    """A 204 answer."""
    return Response(status=204)


def web_url(path: str) -> str:
    """The browser URL of a path on this forge."""
    return f"{state().config.base_url}/{path}"


# -- screening and errors -------------------------------------------------------------

# Views that stream the request body to disk: a package file is content, not parameters.
UPLOADS = frozenset({"api.upload_package"})


@bp.before_request
def screen_input() -> Response | None:
    """Refuse malformed strings and JSON bodies as GitLab's middleware does, before any view."""
    return inputs.screen(request, body=request.endpoint not in UPLOADS)


@bp.errorhandler(ApiError)
def api_error(exc: ApiError) -> Response:
    """Render a refusal."""
    db.session.rollback()
    response = jsonify(exc.body)
    response.status_code = exc.status
    response.headers.update(exc.headers)
    return response


@bp.errorhandler(domain.DomainError)
def domain_error(exc: domain.DomainError) -> Response:
    """Render a refused operation as GitLab's `400 Bad request - ...` and friends."""
    db.session.rollback()
    prefix = {400: "400 Bad request - ", 403: "403 Forbidden - ", 404: "404 ",
              409: ""}.get(exc.status, "")
    response = jsonify(message=f"{prefix}{exc}")
    response.status_code = exc.status
    return response


@bp.errorhandler(IntegrityError)
def conflict(exc: IntegrityError) -> Response:
    """A create that lost a race to an identical one (the unique index refused it): 409.

    The winner's request passed the same checks a moment earlier; GitLab's `conflict!`.
    """
    db.session.rollback()
    response = jsonify(message="409 Conflict")
    response.status_code = 409
    return response


@bp.errorhandler(HTTPException)
def http_error(exc: HTTPException) -> Response:
    """Unknown routes and methods, too large bodies: GitLab's JSON envelope."""
    code = exc.code or 500
    if code in (404, 405):  # Grape's catch-all route and its MethodNotAllowed
        response = jsonify(error={404: "404 Not Found", 405: "405 Not Allowed"}[code])
    else:
        text = {413: "413 Request Entity Too Large"}.get(code, f"{code} {exc.name}")
        response = jsonify(message=text)
    response.status_code = code
    return response


class EncodedIds:
    """Keep `%2F` inside API path segments encoded, so `acme%2Fapp` stays one segment.

    werkzeug decodes PATH_INFO before routing; GitLab addresses projects and files by
    URL-encoded paths. Views `unquote` the segments they read.
    """

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        raw = environ.get("RAW_URI") or environ.get("REQUEST_URI") or ""
        raw_path = raw.split("?", 1)[0]
        if raw_path.startswith("/api/v4/") and "%2f" in raw_path.lower():
            segments = [quote(unquote(part), safe="@:+!$&'()*,;=-._~") for part in raw_path.split("/")]
            environ["PATH_INFO"] = "/".join(segments)
        return self.app(environ, start_response)


@bp.after_request
def utf8_headers(response: Response) -> Response:
    """Send header values as UTF-8, as Rails does (`X-Gitlab-File-Name: ☃.txt`): WSGI takes
    them as latin-1 text, so each non-ASCII value goes as the latin-1 reading of its bytes."""
    items = list(response.headers.items())
    if not all(value.isascii() for _, value in items):
        response.headers.clear()
        for name, value in items:
            response.headers.add(name, value if value.isascii()
                                 else value.encode("utf-8", "replace").decode("latin-1"))
    return response


def init_app(app: Flask) -> None:
    """Register the API."""
    from forge.api import ci, commits, instance, projects, repository, runners, scope, users  # noqa: F401 - registers routes

    app.register_blueprint(bp)
    app.wsgi_app = EncodedIds(app.wsgi_app)  # type: ignore[method-assign]
