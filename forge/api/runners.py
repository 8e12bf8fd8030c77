"""The runner API (lib/api/ci/runner.rb): what a GitLab Runner calls to register, take
jobs and report them, plus `POST /user/runners` and a job's log for API users.

Runner requests authenticate with the runner's token; a runner's requests about a job
with the job's token, which works only while the job runs. Refusals are GitLab's 403s
(`403 Forbidden`, `403 Forbidden - Job is not running` with a `Job-Status` header).
"""

from __future__ import annotations

import re
import secrets
from typing import Any

from flask import Response, jsonify, request, send_file
from sqlalchemy import select

from forge import auth, domain, jobs, runners
from forge import permissions as perm
from forge.api import (
    ApiError,
    bp,
    by_id,
    check,
    current_user,
    fail,
    find_group,
    find_project,
    flag,
    integer,
    invalid,
    missing,
    now,
    paginate,
    params,
    principal,
    project_ability,
    record,
    state,
    text,
)
from forge.api.ci import job_json
from forge.models import Job, Runner, db

TRACE_UPDATE_INTERVAL = "3"  # seconds; GitLab's default while nobody watches the log


def _tags(values: dict[str, Any]) -> list[str]:
    """`tag_list` as Grape reads it: a list, repeated form fields, or comma-separated text."""
    if request.form:
        listed = request.form.getlist("tag_list") + request.form.getlist("tag_list[]")
        if len(listed) > 1:
            return [str(tag) for tag in listed]
    raw = values.get("tag_list", values.get("tag_list[]"))
    if raw is None or raw == "":
        return []
    if isinstance(raw, dict) or (isinstance(raw, list)
                                 and any(isinstance(tag, list | dict) for tag in raw)):
        invalid("tag_list")
    if isinstance(raw, list):
        return [str(tag) for tag in raw]
    return [tag.strip() for tag in str(raw).split(",")]


def _registration_details(runner: Runner, token: str) -> dict[str, Any]:
    return {"id": runner.id, "token": token, "token_expires_at": None}


def _runner_options(values: dict[str, Any]) -> dict[str, Any]:
    paused = flag(values, "paused") if "paused" in values else (
        not flag(values, "active", True) if "active" in values else False)
    return {
        "description": text(values, "description") or "",
        "tags": _tags(values),
        "run_untagged": flag(values, "run_untagged", True) if "run_untagged" in values else None,
        "paused": paused,
        "locked": flag(values, "locked"),
        "access_level": text(values, "access_level") or "not_protected",
        "maximum_timeout": integer(values, "maximum_timeout", required=False),
    }


def _runner_principal() -> perm.Principal:
    return perm.Principal(perm.Kind.RUNNER)


def _authenticated_runner(values: dict[str, Any], action: str) -> Runner:
    """The runner whose token the request carries, or GitLab's 403."""
    token = text(values, "token") or request.headers.get("Runner-Token", "")
    if not token:
        missing("token")
    runner = runners.find_runner(token)
    decision = perm.authorize_runner(runner is not None)
    if not decision.allowed:
        check(_runner_principal(), action, decision)
    assert runner is not None
    runners.heartbeat(now(), runner, values.get("info"))
    return runner


@bp.post("/runners")
def register_runner() -> tuple[Response, int]:
    """Register an instance runner with the registration token (`forge serve` prints it)."""
    values = params()
    token = text(values, "token", required=True) or ""
    expected = state().config.runner_registration_token
    matches = bool(expected) and secrets.compare_digest(token.encode(), expected.encode())
    check(_runner_principal(), "runner_register", perm.authorize_registration(matches))
    runner, secret = runners.create_runner(now(), info=values.get("info")
                                           if isinstance(values.get("info"), dict) else None,
                                           **_runner_options(values))
    db.session.commit()
    return jsonify(_registration_details(runner, secret)), 201


@bp.delete("/runners")
def unregister_runner() -> Response:
    """Delete the runner whose token is given."""
    runner = _authenticated_runner(params(), "runner_delete")
    db.session.delete(runner)
    db.session.commit()
    return Response(status=204)


@bp.post("/runners/verify")
def verify_runner() -> Response:
    """Check a runner's token (what `gitlab-runner register --token glrt-...` calls)."""
    values = params()
    runner = _authenticated_runner(values, "runner_verify")
    db.session.commit()
    return jsonify(_registration_details(runner, text(values, "token") or ""))


@bp.post("/user/runners")
def create_user_runner() -> tuple[Response, int]:
    """Create a runner with a PAT (`create_runner` or `api` scope): the token-first flow."""
    who = principal()
    values = params()
    runner_type = text(values, "runner_type", required=True) or ""
    if runner_type not in perm.RUNNER_TYPES:
        raise ApiError(400, {"error": "runner_type does not have a valid value"})
    group = project = None
    role = perm.NO_ACCESS
    user = current_user(who)
    if runner_type == "group_type":
        group = find_group(str(integer(values, "group_id")))
        role = domain.group_role(group, user)
    elif runner_type == "project_type":
        project = find_project(str(integer(values, "project_id")))
        if project is None:
            fail(404, "404 Project Not Found")
        role = perm.effective_role(who, domain.project_facts(project, user))
    check(who, "api_create_runner", perm.authorize_create_runner(
        who, runner_type, role, now(), state().config.base_url), project)
    runner, secret = runners.create_runner(now(), runner_type=runner_type, group=group,
                                           project=project, creator=user,
                                           **_runner_options(values))
    db.session.commit()
    return jsonify(_registration_details(runner, secret)), 201


@bp.post("/jobs/request")
def request_job() -> Response | tuple[Response, int]:
    """Hand the runner the oldest pending job it may run (201), or 204 when there is none."""
    values = params()
    runner = _authenticated_runner(values, "runner_request_job")
    runners.fail_timed_out(now())
    last_update = secrets.token_hex(16)
    if runner.paused:
        db.session.commit()
        return Response(status=204, headers={"X-GitLab-Last-Update": last_update})
    taken = runners.take_job(now(), runner, state().unseal)
    if taken is None:
        db.session.commit()
        return Response(status=204, headers={"X-GitLab-Last-Update": last_update})
    job = taken.job
    record(_job_principal(job), "runner_take_job", taken.decision, job.project)
    config = state().config
    body = runners.payload(job, taken.token, runner, base_url=config.base_url,
                           registry=config.registry_url, backend=state().backend,
                           store=state().packages)
    db.session.commit()
    return jsonify(body), 201


def _job_principal(job: Job) -> perm.Principal:
    return perm.Principal(perm.Kind.JOB, user=domain.user_facts(job.user), job=jobs.job_facts(job))


def _job_token(values: dict[str, Any]) -> str:
    return text(values, "token") or request.headers.get("Job-Token", "")


def _authenticated_job(job_id: int, values: dict[str, Any], action: str) -> Job:
    """The job, when the request carries its token and it runs; else GitLab's 403."""
    runners.fail_timed_out(now())
    job = by_id(Job, job_id)
    token = _job_token(values)
    matches = job is not None and bool(token) and domain.same_digest(job.token_digest, token)
    decision = perm.authorize_job_update(jobs.job_facts(job) if job is not None else None,
                                         matches, now())
    who = _job_principal(job) if job is not None and matches else perm.Principal(
        perm.Kind.INVALID, failure="unknown_job_token")
    record(who, action, decision, job.project if job is not None else None)
    db.session.commit()
    if not decision.allowed:
        headers = {"Job-Status": job.status} if job is not None and matches else {}
        response = jsonify(message=decision.message)
        response.status_code = decision.status
        response.headers.update(headers)
        raise _Refused(response)
    assert job is not None
    return job


class _Refused(Exception):
    """A finished response to send as it is."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


@bp.errorhandler(_Refused)
def _refused(exc: _Refused) -> Response:
    db.session.rollback()
    return exc.response


@bp.put("/jobs/<int:job_id>")
def update_job(job_id: int) -> Response:
    """The runner reports the job's state: `success` or `failed` end it (its token dies)."""
    values = params()
    job = _authenticated_job(job_id, values, "runner_update_job")
    exit_code = integer(values, "exit_code", required=False)
    if exit_code is not None and not -runners.MAX_INT - 1 <= exit_code <= runners.MAX_INT:
        raise ApiError(400, {"error": "exit_code is invalid"})  # more than the column holds
    runners.finish_job(now(), job, text(values, "state") or "", exit_code=exit_code,
                       failure_reason=text(values, "failure_reason"))
    db.session.commit()
    response = jsonify(200)
    response.headers["X-GitLab-Trace-Update-Interval"] = TRACE_UPDATE_INTERVAL
    response.headers["Job-Status"] = job.status
    return response


@bp.patch("/jobs/<int:job_id>/trace")
def patch_trace(job_id: int) -> Response:
    """Append to the job's log at the byte `Content-Range` starts at; 416 when it does not
    start where the log ends."""
    values = dict(request.args)
    job = _authenticated_job(job_id, values, "runner_patch_trace")
    content_range = request.headers.get("Content-Range")
    if content_range is None:
        fail(400, "400 Missing header Content-Range")
    # GitLab reads the start as Ruby's `content_range.split('-')[0].to_i`: leading digits
    # (after blanks and a sign), else 0
    number = re.match(r"\s*([+-]?\d+)", content_range.split("-", 1)[0])
    start = int(number.group(1)) if number else 0
    data = request.get_data()
    if runners.trace_too_large(start, data):
        # GitLab's AppendBuildTraceService drops the job (trace_size_exceeded) and answers 403
        runners.finish_job(now(), job, "failed", failure_reason="trace_size_exceeded")
        db.session.commit()
        fail(403, perm.RUNNER_FORBIDDEN)
    ok, size = runners.append_log(job, start, data,
                                  runners.log_secrets(job, _job_token(values)))
    if not ok:
        db.session.rollback()
        response = jsonify(message="416 Range Not Satisfiable")
        response.status_code = 416
        response.headers["Range"] = f"0-{size}"
        return response
    db.session.commit()
    response = Response(status=202)
    response.headers.update({"Job-Status": job.status, "Range": f"0-{size}",
                             "X-GitLab-Trace-Update-Interval": TRACE_UPDATE_INTERVAL})
    return response


@bp.post("/jobs/<int:job_id>/artifacts")
def upload_artifacts(job_id: int) -> tuple[Response, int]:
    """Store the job's artifacts file (multipart `file`), by content hash."""
    values = {**request.args.to_dict(), **request.form.to_dict()}
    job = _authenticated_job(job_id, values, "runner_upload_artifacts")
    upload = request.files.get("file")
    if upload is None:
        missing("file")
    file_type = text(values, "artifact_type") or "archive"
    file_format = text(values, "artifact_format") or "zip"
    for name, value, allowed in (("artifact_type", file_type, runners.ARTIFACT_TYPES),
                                 ("artifact_format", file_format, runners.ARTIFACT_FORMATS)):
        if value not in allowed:
            raise ApiError(400, {"error": f"{name} does not have a valid value"})
    stored = state().packages.put_stream(upload.stream)
    assert stored is not None
    sha256, size = stored
    filename = (upload.filename or "").rsplit("/", 1)[-1][-255:] or "artifacts.zip"
    try:
        runners.add_artifact(now(), job, filename, sha256, size, file_type=file_type,
                             file_format=file_format)
    except runners.ArtifactExists as exc:
        fail(400, str(exc))
    db.session.commit()
    return jsonify(201), 201


@bp.get("/jobs/<int:job_id>/artifacts")
def download_artifacts(job_id: int) -> Response:
    """Send a job's artifacts archive: to its own token (running or not), or to the token of
    a running job that may read the job's project (a dependent job)."""
    token = request.args.get("token") or request.headers.get("Job-Token", "")
    job = by_id(Job, job_id)
    own = job is not None and bool(token) and domain.same_digest(job.token_digest, token)
    if own:
        assert job is not None
        who = _job_principal(job)
    else:
        who = auth.principal_for(auth.Credentials(auth.JOB_TOKEN_USER, token) if token else None)
    facts = domain.project_facts(job.project, auth.user_of(who), state().backend) if job else None
    decision = perm.authorize_artifacts_download(own, who, facts, now(), state().config.base_url)
    check(who, "runner_download_artifacts", decision, job.project if job is not None else None)
    assert job is not None
    stored = runners.archive(job)
    if stored is None or not state().packages.exists(stored.sha256):
        fail(404, "404 Not Found")
    return send_file(state().packages.path_for(stored.sha256), mimetype="application/zip",
                     download_name=stored.filename, as_attachment=True)


def _project_job(project_id: str, job_id: int) -> Job:
    """The project's job, for a caller who may read its jobs (reporter and up in private
    projects), or GitLab's 404."""
    project, _ = project_ability(project_id, "read_build")
    runners.fail_timed_out(now())
    db.session.commit()
    job = by_id(Job, job_id)
    if job is None or job.project_id != project.id:
        fail(404, "404 Job Not Found")
    return job


@bp.get("/projects/<project_id>/jobs")
def list_jobs(project_id: str) -> Response:
    """The project's jobs, newest first; `scope` (one status or a list) filters them."""
    project, _ = project_ability(project_id, "read_build")
    runners.fail_timed_out(now())
    db.session.commit()
    scopes = request.args.getlist("scope") + request.args.getlist("scope[]")
    if any(scope not in perm.JOB_STATUSES for scope in scopes):
        raise ApiError(400, {"error": "scope does not have a valid value"})
    query = select(Job).where(Job.project_id == project.id).order_by(Job.id.desc())
    if scopes:
        query = query.where(Job.status.in_(scopes))
    return paginate(list(db.session.scalars(query)), job_json)


@bp.get("/projects/<project_id>/jobs/<int:job_id>")
def show_job(project_id: str, job_id: int) -> Response:
    """One job of the project, as GitLab's `Entities::Ci::Job`."""
    return jsonify(job_json(_project_job(project_id, job_id)))


@bp.get("/projects/<project_id>/jobs/<int:job_id>/trace")
def job_trace(project_id: str, job_id: int) -> Response:
    """A job's log, as plain text (reporter and up in private projects)."""
    job = _project_job(project_id, job_id)
    response = Response(runners.job_log(job), mimetype="text/plain")
    response.headers["Content-Disposition"] = f'infile; filename="{job.id}.log"'
    return response
