"""What CI jobs call with `$CI_JOB_TOKEN`: `/job`, generic packages and releases."""

from __future__ import annotations

import hashlib
import re
from typing import Any
from urllib.parse import unquote

from flask import Response, jsonify, send_file
from sqlalchemy import select

from forge import permissions as perm
from forge.api import (
    ApiError,
    bp,
    check,
    created,
    fail,
    iso,
    missing,
    now,
    paginate,
    params,
    principal,
    project_ability,
    state,
    web_url,
)
from forge.api.repository import commit_json, create_tag_ref, repository, resolve
from forge.api.users import user_json
from forge.models import Job, PackageFile, Project, Release, db

PACKAGE_NAME = re.compile(r"^[A-Za-z0-9._+-]+$")
PACKAGE_VERSION = re.compile(r"^(?!.*\.\.)[A-Za-z0-9._+-]+$")
FILE_NAME = re.compile(r"^[A-Za-z0-9._+~@-]+$")


def job_json(job: Job) -> dict[str, Any]:
    """A job as `GET /job` renders it."""
    duration = ((job.finished_at or now()) - job.started_at).total_seconds() if job.started_at else None
    return {
        "id": job.id, "status": job.status, "stage": job.stage, "name": job.name, "ref": job.ref,
        "tag": bool(job.pipeline and job.pipeline.tag), "coverage": None, "allow_failure": False,
        "created_at": iso(job.created_at), "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at), "duration": duration,
        "user": user_json(job.user), "commit": {"id": job.sha, "short_id": job.sha[:8]},
        "pipeline": {"id": job.pipeline_id, "project_id": job.project_id, "ref": job.ref,
                     "sha": job.sha, "status": job.status},
        "project": {"id": job.project_id, "path_with_namespace": job.project.full_path,
                    "ci_job_token_scope_enabled": job.project.outbound_enabled},
        "web_url": web_url(f"{job.project.full_path}/-/jobs/{job.id}"),
        "artifacts": [], "runner": None,
    }


@bp.get("/job")
def current_job() -> Response:
    """The job whose token authenticates the call."""
    who = principal(job_token_endpoint=True)
    check(who, "api_read_job", perm.authorize_current_job(who, now(), state().config.base_url))
    assert who.job is not None
    job = db.session.get(Job, who.job.id)
    assert job is not None
    return jsonify(job_json(job))


# -- generic packages --------------------------------------------------------------------

def _package_path(name: str, version: str, file_name: str) -> tuple[str, str, str]:
    name, version, file_name = unquote(name), unquote(version), unquote(file_name)
    for value, pattern, label in ((name, PACKAGE_NAME, "package_name"),
                                  (version, PACKAGE_VERSION, "package_version"),
                                  (file_name, FILE_NAME, "file_name")):
        if not pattern.match(value) or len(value) > 255:
            raise ApiError(400, {"error": f"{label} is invalid"})
    return name, version, file_name


GENERIC = "/projects/<project_id>/packages/generic/<name>/<version>/<file_name>"


@bp.put(GENERIC)
def upload_package(project_id: str, name: str, version: str, file_name: str) -> tuple[Response, int]:
    """Store a generic package file (developer; job tokens of allowed jobs too)."""
    project, _ = project_ability(project_id, "create_package", job_token_endpoint=True, basic=True)
    name, version, file_name = _package_path(name, version, file_name)
    from flask import request
    md5, sha1 = hashlib.md5(usedforsecurity=False), hashlib.sha1(usedforsecurity=False)
    stored = state().packages.put_stream(request.stream, also=(md5, sha1))
    assert stored is not None
    sha256, size = stored
    row = PackageFile(project_id=project.id, name=name, version=version, file_name=file_name,
                      size=size, sha256=sha256, created_at=now())
    db.session.add(row)
    db.session.commit()
    if request.args.get("select") == "package_file":  # GitLab's answer with the checksums
        return jsonify(id=row.id, package_id=row.id, created_at=iso(row.created_at),
                       updated_at=iso(row.created_at), size=size, file_store=1,
                       file_md5=md5.hexdigest(), file_sha1=sha1.hexdigest(),
                       file_sha256=sha256, file_name=file_name), 201
    return jsonify(message="201 Created"), 201


@bp.get(GENERIC)
def download_package(project_id: str, name: str, version: str, file_name: str) -> Response:
    """Send the newest file with that name of a generic package."""
    project, _ = project_ability(project_id, "read_packages", job_token_endpoint=True, basic=True)
    name, version, file_name = _package_path(name, version, file_name)
    row = db.session.scalars(select(PackageFile).where(
        PackageFile.project_id == project.id, PackageFile.name == name,
        PackageFile.version == version, PackageFile.file_name == file_name,
    ).order_by(PackageFile.id.desc())).first()
    store = state().packages
    if row is None or not store.exists(row.sha256):
        fail(404, "404 Package Not Found")
    return send_file(store.path_for(row.sha256), mimetype="application/octet-stream",
                     download_name=file_name, as_attachment=True)


# -- releases ---------------------------------------------------------------------------

def release_json(project: Project, release: Release) -> dict[str, Any]:
    """A release as GitLab renders one."""
    with repository(project) as repo:
        commit = resolve(repo, release.sha)
        commit_data = commit_json(project, commit) if commit else None
    return {
        "tag_name": release.tag_name, "name": release.name, "description": release.description,
        "created_at": iso(release.created_at), "released_at": iso(release.created_at),
        "upcoming_release": False, "author": user_json(release.author) if release.author else None,
        "commit": commit_data, "assets": {"count": 0, "sources": [], "links": []},
        "_links": {"self": web_url(f"{project.full_path}/-/releases/{release.tag_name}")},
    }


def _releases(project: Project) -> list[Release]:
    return list(db.session.scalars(select(Release).where(Release.project_id == project.id)
                                   .order_by(Release.created_at.desc(), Release.id.desc())))


@bp.get("/projects/<project_id>/releases")
def list_releases(project_id: str) -> Response:
    """Releases, newest first."""
    project, _ = project_ability(project_id, "read_release", job_token_endpoint=True)
    return paginate(_releases(project), lambda release: release_json(project, release))


@bp.get("/projects/<project_id>/releases/<path:tag_name>")
def show_release(project_id: str, tag_name: str) -> Response:
    """One release, by tag."""
    project, _ = project_ability(project_id, "read_release", job_token_endpoint=True)
    for release in _releases(project):
        if release.tag_name == unquote(tag_name):
            return jsonify(release_json(project, release))
    fail(404, "404 Not Found")


@bp.post("/projects/<project_id>/releases")
def create_release(project_id: str) -> tuple[Response, int]:
    """Create a release for `tag_name`, creating the tag at `ref` when it does not exist."""
    project, who = project_ability(project_id, "create_release", job_token_endpoint=True)
    values = params()
    if not values.get("tag_name"):
        missing("tag_name")
    tag = str(values["tag_name"])
    if any(r.tag_name == tag for r in _releases(project)):
        fail(409, "Release already exists")
    with repository(project) as repo:
        commit = resolve(repo, tag) if f"refs/tags/{tag}".encode() in repo.refs.as_dict() else None
    if commit is not None:
        sha = commit.id.decode()
    elif values.get("ref"):
        sha = create_tag_ref(project, who, tag, str(values["ref"]))
    else:
        fail(422, "Ref is not specified")
    release = Release(project_id=project.id, tag_name=tag, name=str(values.get("name") or tag),
                      description=str(values.get("description") or ""), sha=sha,
                      author_id=who.user.id if who.user else None, created_at=now())
    db.session.add(release)
    db.session.commit()
    return created(release_json(project, release))
