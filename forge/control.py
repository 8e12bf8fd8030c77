"""The control API under `/-/forge/`: seed, reset, jobs, memberships and the decision log.

For tests and scripts outside pytest. Every call needs an administrator's PAT in the
`PRIVATE-TOKEN` header; refusals are recorded in the decision log.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, Flask, Response, abort, current_app, jsonify, request
from werkzeug.exceptions import HTTPException

from forge import auth, domain, events, inputs, jobs, seed
from forge import permissions as perm
from forge.models import Job, db
from forge.state import ForgeState, state_of

bp = Blueprint("control", __name__, url_prefix="/-/forge")


def _state() -> ForgeState:
    return state_of(current_app)


def _error(status: int, message: str) -> Response:
    response = jsonify(message=message)
    response.status_code = status
    return response


@bp.before_request
def require_admin() -> Response | None:
    """Let only an active administrator's valid PAT through."""
    state = _state()
    principal = auth.api_principal(request.headers, {})
    decision = perm.authorize_admin(principal, state.now(), state.config.base_url)
    if decision.allowed:
        return None
    auth.record(state.now(), request.method, request.path, principal, "admin", decision)
    db.session.commit()
    return _error(decision.status, decision.message)


@bp.errorhandler(domain.DomainError)
def domain_error(exc: domain.DomainError) -> Response:
    """Turn a refused operation into GitLab-style JSON."""
    db.session.rollback()
    return _error(exc.status, str(exc))


@bp.errorhandler(HTTPException)
def http_error(exc: HTTPException) -> Response:
    """Answer HTTP errors (bad JSON, unknown routes) with JSON too."""
    return _error(exc.code or 500, exc.description or exc.name)


def _body() -> dict[str, Any]:
    if request.mimetype in ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml"):
        data: Any = seed.load(request.get_data())
    else:
        try:
            data = request.get_json(silent=True)
        except RecursionError:
            abort(400, "the JSON body is nested too deeply")
    if not isinstance(data, dict):
        abort(400, "expected a JSON object (or YAML with a YAML content type)")
    return data


MAX_ID = 2**63 - 1  # SQLite's largest integer: bigger ids exist nowhere


def _text(body: dict[str, Any], key: str, default: str | None = None) -> str | None:
    """An optional string field of the body (whole numbers are taken as their digits)."""
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, str | int):
        abort(400, f"{key} must be a string")
    if isinstance(value, int) and not 0 <= value <= MAX_ID:
        raise domain.NotFound(f"{key} {value} does not exist")
    return str(value)


def _name(body: dict[str, Any], key: str) -> str:
    """A required name, path or id of the body."""
    value = _text(body, key)
    if not value:
        abort(400, f"{key} is missing")
    if inputs.digits(value) and int(value) > MAX_ID:
        raise domain.NotFound(f"{key} {value} does not exist")
    return value


def job_json(job: Job, token: str | None = None, state: ForgeState | None = None) -> dict[str, Any]:
    """Render a job as the control API shows it."""
    state = state or _state()
    data = {
        "id": job.id, "status": job.status, "project": job.project.full_path,
        "pipeline": job.pipeline_id,
        "project_id": job.project_id, "user": job.user.username, "ref": job.ref, "sha": job.sha,
        "name": job.name, "stage": job.stage, "timeout": job.timeout,
        "started_at": job.started_at.isoformat() + "Z" if job.started_at else None,
        "finished_at": job.finished_at.isoformat() + "Z" if job.finished_at else None,
        "variables": jobs.job_variables(job, token, state.config.base_url,
                                        state.config.registry_url, state.backend),
        "failure_reason": job.failure_reason, "exit_code": job.exit_code, "runner": job.runner_id,
        "script": (job.spec or {}).get("script") or None,
    }
    if token is not None:
        data["token"] = token
    return data


@bp.post("/seed")
def seed_scenario() -> tuple[Response, int]:
    """Create what a scenario describes; answer with ids and generated secrets."""
    state = _state()
    templates = Path(state.config.templates_dir) if state.config.templates_dir else None
    result = seed.apply(state, _body(), templates)
    db.session.commit()
    return jsonify(result), 201


@bp.post("/reset")
def reset() -> tuple[Response, int]:
    """Empty the forge, keeping the root user and its token."""
    _state().housekeeper.wait_idle(30)  # no sweep of a directory a new project will reuse
    domain.reset(_state().backend, _state().lfs)
    db.session.commit()
    _state().set_clock_offset(0)
    return jsonify(status="reset"), 200


@bp.post("/clock")
def move_clock() -> tuple[Response, int]:
    """Move the forge's clock, in every process: `{"advance": seconds}` or `{"offset": seconds}`."""
    state, body = _state(), _body()
    key = "advance" if "advance" in body else "offset"
    value = body.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not -1e9 < value < 1e9:
        abort(400, "expected {\"advance\": seconds} or {\"offset\": seconds}")
    offset = value + (state.clock_offset().total_seconds() if key == "advance" else 0)
    try:
        state.set_clock_offset(offset)
    except ValueError as exc:  # too far: the forge's times would leave years 1..9999
        abort(400, str(exc))
    return jsonify(offset=offset, now=state.now().isoformat() + "Z"), 200


@bp.post("/jobs")
def start_job() -> tuple[Response, int]:
    """Start a job: `{"project", "user", "ref", "name", "timeout", "pipeline"}`; with a
    `script` (and `image`, `variables`, `tags`, `needs`, `artifacts`) queue it for a runner."""
    state, body = _state(), _body()
    project_ref, username = _name(body, "project"), _name(body, "user")
    try:
        timeout = seed.job_timeout(body.get("timeout", 3600))
    except ValueError as exc:
        abort(400, f"timeout {exc}")
    ref, name, stage = _text(body, "ref"), _text(body, "name", "build"), _text(body, "stage", "test")
    spec = _spec(body)
    status = _text(body, "status", None if jobs.is_runner_job(spec) else "running")
    token = _text(body, "token")
    project = domain.get_project(project_ref)
    user = domain.get_user(username)
    pipeline = body.get("pipeline")
    if pipeline is not None and (isinstance(pipeline, bool) or not isinstance(pipeline, int)):
        abort(400, "pipeline must be the id of a pipeline of the project")
    job, token = jobs.create_job(
        state.now(), state.backend, project, user, ref=ref, name=name or "build",
        stage=stage or "test", timeout=timeout, status=status, token=token,
        pipeline=_pipeline(pipeline) if pipeline is not None else None, spec=spec,
        seal=state.seal)
    db.session.commit()
    if pipeline is None:  # a new refs/pipelines/<id>: its refs may want packing
        state.housekeeper.after_push(project.id)
    return jsonify(job_json(job, token)), 201


SPEC_KEYS = ("script", "image", "variables", "tags", "needs", "artifacts", "services", "after_script")


def _spec(body: dict[str, Any]) -> dict[str, Any] | None:
    """The runner job a body describes (`script` and friends), checked; None without any."""
    given = {key: body[key] for key in SPEC_KEYS if body.get(key) is not None}
    if not given:
        return None
    if isinstance(given.get("variables"), list) or (
            "variables" in given and not isinstance(given["variables"], dict)):
        abort(400, "variables must be a mapping of name to value")
    if "artifacts" in given and not isinstance(given["artifacts"], dict):
        abort(400, "artifacts must be a mapping (paths, when, expire_in, name)")
    return jobs.job_spec(**given)


def _pipeline(pipeline_id: int) -> Any:
    if not 0 < pipeline_id <= MAX_ID:
        raise domain.NotFound(f"pipeline {pipeline_id} does not exist")
    return jobs.get_pipeline(pipeline_id)


def _job(job_id: int) -> Job:
    if job_id > MAX_ID:
        raise domain.NotFound(f"job {job_id} does not exist")
    return jobs.get_job(job_id)


@bp.get("/jobs/<int:job_id>")
def show_job(job_id: int) -> Response:
    """Show a job (its token is never shown again)."""
    return jsonify(job_json(_job(job_id)))


@bp.patch("/jobs/<int:job_id>")
def update_job(job_id: int) -> Response:
    """Change a job's status: `{"status": "success"}`."""
    job, body = _job(job_id), _body()
    jobs.set_job_status(_state().now(), job, _name(body, "status"))
    db.session.commit()
    return jsonify(job_json(job))


@bp.put("/members")
def set_member() -> Response:
    """Add or change a membership: `{"user", "project" | "group", "role"}`."""
    body = _body()
    user = domain.get_user(_text(body, "user", "") or "")
    target: Any = (domain.get_project(_name(body, "project")) if body.get("project")
                   else domain.get_group(_text(body, "group", "") or ""))
    role = body.get("role")
    if isinstance(role, bool) or not isinstance(role, str | int | None):
        abort(400, "role must be a role name or access level")
    if role in (None, "", "none"):
        domain.remove_member(user, target)
        db.session.commit()
        return jsonify(user=user.username, target=target.full_path, access_level=0)
    member = domain.set_member(user, target, role)
    db.session.commit()
    return jsonify(user=user.username, target=target.full_path, access_level=member.access_level)


@bp.post("/allowlist")
def add_allowlist() -> tuple[Response, int]:
    """Admit a project or group to a project's inbound allowlist."""
    state, body = _state(), _body()
    target = domain.get_project(_name(body, "project"))
    if body.get("source_project"):
        domain.allow_project(state.now(), target, domain.get_project(_name(body, "source_project")))
    else:
        domain.allow_group(state.now(), target, domain.get_group(_text(body, "source_group", "") or ""))
    db.session.commit()
    return jsonify(project=target.full_path), 201


EVENT_INTS = {"user_id", "job_id", "project_id", "status"}


def _int_arg(name: str, default: int) -> int:
    value = request.args.get(name, str(default))
    if not inputs.digits(value):
        abort(400, f"{name} must be a whole number")
    return int(value)


@bp.get("/events")
def events_log() -> Response:
    """List the decision log, oldest first, a page at a time: `?since=<id>&limit=<n>`.

    Other parameters filter by field (`?reason=...&allowed=false`). When more events
    follow, `X-Next-Since` holds the `since` of the next page (and `Link` its URL).
    The log keeps the newest `event_retention` events; older ones are pruned here.
    """
    since = _int_arg("since", 0)
    limit = _int_arg("limit", events.DEFAULT_LIMIT)
    if not 1 <= limit <= events.MAX_LIMIT:
        abort(400, f"limit must be from 1 to {events.MAX_LIMIT}")
    unknown = sorted(set(request.args) - events.FILTERS - {"since", "limit"})
    if unknown:  # a mistyped filter must not quietly return everything
        abort(400, f"cannot filter events by {', '.join(unknown)}; use since, limit or "
                   f"{', '.join(sorted(events.FILTERS))}")
    filters: dict[str, Any] = {}
    for key in events.FILTERS & set(request.args):
        value = request.args[key]
        if key == "allowed":
            if value not in ("true", "false"):
                abort(400, "allowed must be true or false")
            filters[key] = value == "true"
        elif key in EVENT_INTS:
            filters[key] = _int_arg(key, 0)
        else:
            filters[key] = value
    if _state().config.event_retention > 0:
        events.prune(_state().config.event_retention)
        db.session.commit()
    page = events.page(since, limit, **filters)
    response = jsonify(page.events)
    if page.more:
        args = {**request.args.to_dict(), "since": str(page.next_since), "limit": str(limit)}
        response.headers["X-Next-Since"] = str(page.next_since)
        response.headers["Link"] = f'<{request.base_url}?{urlencode(args)}>; rel="next"'
    return response


def init_app(app: Flask) -> None:
    """Register the control API."""
    app.register_blueprint(bp)
