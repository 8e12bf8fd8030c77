"""The control API under `/-/forge/`: seed, reset, jobs, memberships and the decision log.

For tests and scripts outside pytest. Every call needs an administrator's PAT in the
`PRIVATE-TOKEN` header; refusals are recorded in the decision log.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Blueprint, Flask, Response, abort, current_app, jsonify, request
from sqlalchemy import select
from werkzeug.exceptions import HTTPException

from forge import auth, domain, seed
from forge import permissions as perm
from forge.models import Event, Job, db
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


def job_json(job: Job, token: str | None = None) -> dict[str, Any]:
    """Render a job as the control API shows it."""
    data = {
        "id": job.id, "status": job.status, "project": job.project.full_path,
        "project_id": job.project_id, "user": job.user.username, "ref": job.ref, "sha": job.sha,
        "name": job.name, "stage": job.stage, "timeout": job.timeout,
        "started_at": job.started_at.isoformat() + "Z" if job.started_at else None,
        "finished_at": job.finished_at.isoformat() + "Z" if job.finished_at else None,
        "variables": domain.job_variables(job, token, _state().config.base_url,
                                          _state().config.registry_url),
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
    domain.reset(_state().backend, _state().lfs)
    db.session.commit()
    return jsonify(status="reset"), 200


@bp.post("/jobs")
def start_job() -> tuple[Response, int]:
    """Start a job: `{"project", "user", "ref", "name", "timeout"}`."""
    state, body = _state(), _body()
    for key in ("project", "user"):
        if not body.get(key):
            abort(400, f"{key} is missing")
    project = domain.get_project(body["project"])
    user = domain.get_user(str(body["user"]))
    try:
        timeout = seed.job_timeout(body.get("timeout", 3600))
    except ValueError as exc:
        abort(400, f"timeout {exc}")
    job, token = domain.create_job(
        state.now(), state.backend, project, user, ref=body.get("ref"),
        name=str(body.get("name", "build")), stage=str(body.get("stage", "test")),
        timeout=timeout, status=str(body.get("status", "running")), token=body.get("token"))
    db.session.commit()
    return jsonify(job_json(job, token)), 201


def _job(job_id: int) -> Job:
    return domain.get_job(job_id)


@bp.get("/jobs/<int:job_id>")
def show_job(job_id: int) -> Response:
    """Show a job (its token is never shown again)."""
    return jsonify(job_json(_job(job_id)))


@bp.patch("/jobs/<int:job_id>")
def update_job(job_id: int) -> Response:
    """Change a job's status: `{"status": "success"}`."""
    job, body = _job(job_id), _body()
    if not body.get("status"):
        abort(400, "status is missing")
    domain.set_job_status(_state().now(), job, str(body["status"]))
    db.session.commit()
    return jsonify(job_json(job))


@bp.put("/members")
def set_member() -> Response:
    """Add or change a membership: `{"user", "project" | "group", "role"}`."""
    body = _body()
    user = domain.get_user(str(body.get("user", "")))
    target: Any = (domain.get_project(body["project"]) if body.get("project")
                   else domain.get_group(str(body.get("group", ""))))
    if body.get("role") in (None, "", "none"):
        domain.remove_member(user, target)
        db.session.commit()
        return jsonify(user=user.username, target=target.full_path, access_level=0)
    member = domain.set_member(user, target, body["role"])
    db.session.commit()
    return jsonify(user=user.username, target=target.full_path, access_level=member.access_level)


@bp.post("/allowlist")
def add_allowlist() -> tuple[Response, int]:
    """Admit a project or group to a project's inbound allowlist."""
    state, body = _state(), _body()
    target = domain.get_project(body.get("project", ""))
    if body.get("source_project"):
        domain.allow_project(state.now(), target, domain.get_project(body["source_project"]))
    else:
        domain.allow_group(state.now(), target, domain.get_group(str(body.get("source_group", ""))))
    db.session.commit()
    return jsonify(project=target.full_path), 201


@bp.get("/events")
def events() -> Response:
    """List the decision log, oldest first; `?since=<id>` returns only newer events."""
    since = request.args.get("since", "0")
    if not since.isdigit():
        abort(400, "since must be an event id")
    rows = db.session.scalars(select(Event).where(Event.id > int(since)).order_by(Event.id))
    return jsonify([row.to_dict() for row in rows])


def init_app(app: Flask) -> None:
    """Register the control API."""
    app.register_blueprint(bp)
