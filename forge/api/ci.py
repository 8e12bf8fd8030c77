"""What CI jobs call with `$CI_JOB_TOKEN`: `/job`, generic packages and releases."""

from __future__ import annotations

import hashlib
import re
from typing import Any
from urllib.parse import unquote, urlsplit

from flask import Response, jsonify, send_file
from sqlalchemy import select

from forge import domain
from forge import permissions as perm
from forge.api import (
    ApiError,
    bp,
    check,
    choice,
    created,
    current_user,
    fail,
    invalid,
    iso,
    missing,
    moment,
    now,
    paginate,
    params,
    principal,
    project_ability,
    state,
    text,
    web_url,
)
from forge.api.repository import commit_json, create_tag_ref, repository, resolve
from forge.api.users import user_json
from forge.models import Job, JobArtifact, PackageFile, Project, Release, Runner, db

PACKAGE_NAME = re.compile(r"^[A-Za-z0-9._+-]+$")
PACKAGE_VERSION = re.compile(r"^(?!.*\.\.)[A-Za-z0-9._+-]+$")
FILE_NAME = re.compile(r"^[A-Za-z0-9._+~@-]+$")


def job_json(job: Job) -> dict[str, Any]:
    """A job as GitLab's `Entities::Ci::Job` renders it (`GET /job`, the jobs API)."""
    duration = ((job.finished_at or now()) - job.started_at).total_seconds() if job.started_at else None
    artifacts = list(db.session.scalars(select(JobArtifact).where(JobArtifact.job_id == job.id)
                                        .order_by(JobArtifact.id)))
    data: dict[str, Any] = {
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
        "artifacts": [{"file_type": a.file_type, "size": a.size, "filename": a.filename,
                       "file_format": a.file_format} for a in artifacts],
        "runner": _runner_json(job.runner_id), "runner_manager": None,
        "tag_list": list((job.spec or {}).get("tags") or []), "erased_at": None,
        "archived": False,
    }
    archive = next((a for a in artifacts if a.file_type == "archive"), None)
    if archive is not None:
        data["artifacts_file"] = {"filename": archive.filename, "size": archive.size}
    if job.status == "failed":  # Entities::Ci::Job shows it for failed jobs only
        data["failure_reason"] = job.failure_reason or "unknown_failure"
    return data


def _runner_json(runner_id: int | None) -> dict[str, Any] | None:
    runner = db.session.get(Runner, runner_id) if runner_id is not None else None
    if runner is None:
        return None
    return {"id": runner.id, "description": runner.description, "ip_address": None,
            "active": not runner.paused, "paused": runner.paused,
            "is_shared": runner.runner_type == "instance_type", "runner_type": runner.runner_type,
            "name": (runner.info or {}).get("name"), "online": True,
            "status": "paused" if runner.paused else "online"}


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


def package_json(project: Project, first: PackageFile) -> dict[str, Any]:
    """A generic package (name and version) as GitLab's Package entity."""
    path = f"/{project.full_path}/-/packages/{first.id}"
    return {"id": first.id, "name": first.name, "version": first.version, "package_type": "generic",
            "status": "default", "_links": {"web_path": path, "delete_api_path":
                                            f"{state().config.base_url}/api/v4/projects/"
                                            f"{project.id}/packages/{first.id}"},
            "created_at": iso(first.created_at), "last_downloaded_at": None, "conan_package_name": None,
            "tags": [], "pipeline": None, "pipelines": [],
            "project_id": project.id, "project_path": project.full_path}


def packages_of(projects: list[Project]) -> list[tuple[Project, PackageFile]]:
    """Each (name, version) package of the projects, by its first file, oldest first."""
    found: dict[tuple[int, str, str], tuple[Project, PackageFile]] = {}
    by_id = {p.id: p for p in projects}
    rows = db.session.scalars(select(PackageFile).where(PackageFile.project_id.in_(list(by_id)))
                              .order_by(PackageFile.id))
    for row in rows:
        found.setdefault((row.project_id, row.name, row.version), (by_id[row.project_id], row))
    return list(found.values())


@bp.get("/projects/<project_id>/packages")
def list_packages(project_id: str) -> Response:
    """A project's packages (forge has generic ones only)."""
    project, _ = project_ability(project_id, "read_packages", job_token_endpoint=True)
    return paginate(packages_of([project]), lambda item: package_json(*item))


# -- releases ---------------------------------------------------------------------------

def release_json(project: Project, release: Release, who: perm.Principal | None = None) -> dict[str, Any]:
    """A release as Entities::Release renders one for `who` (None: someone who may read the code).

    Without download rights (a guest of a private project) the name is `Release-<id>` and the
    tag, commit, paths and sources are left out.
    """
    released = release.released_at or release.created_at
    # Release#upcoming_release?: released_at.to_i > Time.zone.now.to_i
    upcoming = released.replace(microsecond=0) > now().replace(microsecond=0)
    if who is not None and not perm.authorize_api(
            who, "read_release_code", domain.project_facts(project, current_user(who)), now(),
            state().config.base_url).allowed:
        links = [link_json(project, release, link) for link in sorted_links(release)]
        return {"name": f"Release-{release.id}", "description": release.description,
                "description_html": release.description, "created_at": iso(release.created_at),
                "released_at": iso(released), "upcoming_release": upcoming,
                "author": user_json(release.author) if release.author else None,
                "milestones": [], "assets": {"count": len(links), "links": links},
                "_links": {"self": web_url(f"{project.full_path}/-/releases/{release.tag_name}")}}
    with repository(project) as repo:
        commit = resolve(repo, release.sha)
        commit_data = commit_json(project, commit) if commit else None
    archive = f"{project.full_path}/-/archive/{release.tag_name}/{project.path}-{release.tag_name}"
    sources = [{"format": fmt, "url": web_url(f"{archive}.{fmt}")}
               for fmt in ("zip", "tar.gz", "tar.bz2", "tar")]
    links = [link_json(project, release, link) for link in sorted_links(release)]
    return {
        "tag_name": release.tag_name, "name": release.name, "description": release.description,
        "created_at": iso(release.created_at), "released_at": iso(released),
        "upcoming_release": upcoming, "author": user_json(release.author) if release.author else None,
        "commit": commit_data, "commit_path": f"/{project.full_path}/-/commit/{release.sha}",
        "tag_path": f"/{project.full_path}/-/tags/{release.tag_name}",
        "description_html": release.description, "milestones": [], "evidences": [],
        "assets": {"count": len(sources) + len(links), "sources": sources, "links": links},
        "_links": {"self": web_url(f"{project.full_path}/-/releases/{release.tag_name}"),
                   "edit_url": web_url(f"{project.full_path}/-/releases/{release.tag_name}/edit")},
    }


def link_json(project: Project, release: Release, link: dict[str, Any]) -> dict[str, Any]:
    """A release asset link as GitLab renders one."""
    path = link.get("direct_asset_path")
    direct = web_url(f"{project.full_path}/-/releases/{release.tag_name}/downloads{path}") if path \
        else link["url"]
    return {"id": link["id"], "name": link["name"], "url": link["url"], "direct_asset_url": direct,
            "link_type": link.get("link_type") or "other"}


def sorted_links(release: Release) -> list[dict[str, Any]]:
    """A release's links newest first (Releases::Link.sorted: created_at descending)."""
    return sorted(release.links or [], key=lambda link: -int(link["id"]))


def _releases(project: Project, order_by: str = "released_at", sort: str = "desc") -> list[Release]:
    """A project's releases in ReleasesFinder's order (`released_at` or `created_at`, then id)."""
    found = db.session.scalars(select(Release).where(Release.project_id == project.id))
    if order_by == "released_at":
        return sorted(found, key=lambda r: (r.released_at or r.created_at, r.id), reverse=sort == "desc")
    return sorted(found, key=lambda r: (r.created_at, r.id), reverse=sort == "desc")


@bp.get("/projects/<project_id>/releases")
def list_releases(project_id: str) -> Response:
    """Releases, by `order_by` (`released_at`, `created_at`) and `sort` (default: newest released first)."""
    project, who = project_ability(project_id, "read_release", job_token_endpoint=True)
    values = params()
    order_by = choice(values, "order_by", ("released_at", "created_at")) or "released_at"
    sort = choice(values, "sort", ("asc", "desc")) or "desc"
    return paginate(_releases(project, order_by, sort), lambda release: release_json(project, release, who))


@bp.get("/projects/<project_id>/releases/<path:tag_name>")
def show_release(project_id: str, tag_name: str) -> Response:
    """One release, by tag (lib/api/releases.rb: authorize_read_code!, so reporters)."""
    project, _ = project_ability(project_id, "read_release_code", job_token_endpoint=True)
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
    links = _asset_links(values)
    released_at = moment(values, "released_at")  # Release#set_released_at: created_at when not given
    if any(r.tag_name == tag for r in _releases(project)):
        fail(409, "Release already exists")
    with repository(project) as repo:
        commit = resolve(repo, tag) if f"refs/tags/{tag}".encode() in repo.refs.as_dict() else None
    if commit is not None:
        sha = commit.id.decode()
    elif values.get("ref"):
        sha = create_tag_ref(project, who, tag, str(values["ref"]), text(values, "tag_message"))
    else:
        fail(422, "Ref is not specified")
    errors = [error for i, link in enumerate(links) for error in _link_errors(link, links[:i])]
    if errors:  # Releases::CreateService: release.save! raised; the tag it made stays
        fail(400, "Validation failed: " + ", ".join(f"Links {e[0].lower()}{e[1:]}" for e in errors))
    created_at = now()
    release = Release(project_id=project.id, tag_name=tag, name=str(values.get("name") or tag),
                      description=str(values.get("description") or ""), sha=sha,
                      author_id=who.user.id if who.user else None, created_at=created_at,
                      released_at=released_at or created_at, links=links or None)
    db.session.add(release)
    db.session.commit()
    return created(release_json(project, release))


def _asset_links(values: dict[str, Any]) -> list[dict[str, Any]]:
    """`assets[links]` of a new release, as lib/api/releases.rb declares them."""
    assets = values.get("assets")
    if assets is None:
        return []
    if not isinstance(assets, dict):
        invalid("assets")
    raw = assets.get("links")
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(entry, dict) for entry in raw):
        invalid("assets[links]")
    links = []
    for number, entry in enumerate(raw, start=1):
        for key in ("name", "url"):
            if entry.get(key) is None:
                missing(f"assets[links][{key}]")
        links.append(_link_fields(entry, {"id": number}))
    return links


def _release(project: Project, tag_name: str) -> Release:
    for release in _releases(project):
        if release.tag_name == unquote(tag_name):
            return release
    fail(404, "404 Not Found")


@bp.put("/projects/<project_id>/releases/<path:tag_name>")
def update_release(project_id: str, tag_name: str) -> Response:
    """Change a release's name, description or `released_at` (developer)."""
    project, _ = project_ability(project_id, "create_release", job_token_endpoint=True)
    release, values = _release(project, tag_name), params()
    released_at = moment(values, "released_at")
    for key in ("name", "description"):
        if values.get(key) is not None:
            setattr(release, key, text(values, key) or "")
    if released_at is not None:
        release.released_at = released_at
    db.session.commit()
    return jsonify(release_json(project, release))


@bp.delete("/projects/<project_id>/releases/<path:tag_name>")
def delete_release(project_id: str, tag_name: str) -> Response:
    """Delete a release (its tag stays), answering with the release as GitLab does."""
    project, _ = project_ability(project_id, "create_release", job_token_endpoint=True)
    release = _release(project, tag_name)
    data = release_json(project, release)
    db.session.delete(release)
    db.session.commit()
    return jsonify(data)


LINKS = "/projects/<project_id>/releases/<path:tag_name>/assets/links"
LINK_TYPES = ("other", "runbook", "image", "package")


@bp.get(LINKS)
def list_links(project_id: str, tag_name: str) -> Response:
    """A release's asset links."""
    project, _ = project_ability(project_id, "read_release", job_token_endpoint=True)
    release = _release(project, tag_name)
    return paginate(sorted_links(release), lambda link: link_json(project, release, link))


@bp.get(f"{LINKS}/<int:link_id>")
def show_link(project_id: str, tag_name: str, link_id: int) -> Response:
    """One asset link."""
    project, _ = project_ability(project_id, "read_release", job_token_endpoint=True)
    release = _release(project, tag_name)
    return jsonify(link_json(project, release, _link(release, link_id)))


def _link(release: Release, link_id: int) -> dict[str, Any]:
    for link in release.links or []:
        if link["id"] == link_id:
            return link
    fail(404, "404 Not found")


def _link_fields(values: dict[str, Any], link: dict[str, Any]) -> dict[str, Any]:
    for key in ("name", "url", "direct_asset_path", "filepath", "link_type"):
        if values.get(key) is not None:
            link["direct_asset_path" if key == "filepath" else key] = text(values, key)
    if link.get("link_type") not in (None, *LINK_TYPES):
        raise ApiError(400, {"error": "link_type does not have a valid value"})
    return link


# app/models/releases/link.rb: FILEPATH_REGEX, and the URL schemes of its addressable_url validation
LINK_FILEPATH = re.compile(r"\A/(?:[\-.\w]+/?)*[\da-zA-Z]+\Z")
LINK_SCHEMES = ("http", "https", "ftp")


def _scheme(url: str) -> str | None:
    """A URL's scheme in lower case; None when it cannot be parsed (`http://[::1`)."""
    try:
        return urlsplit(url).scheme.lower()
    except ValueError:
        return None


def _link_errors(link: dict[str, Any], others: list[dict[str, Any]]) -> list[str]:
    """Release::Link's validation errors as full messages, in its order (url, name, filepath)."""
    errors = []
    url, name, path = link.get("url") or "", link.get("name") or "", link.get("direct_asset_path")
    if not url:
        errors.append("Url can't be blank")
    elif (scheme := _scheme(url)) is None:  # Gitlab::UrlBlocker.parse_url's refusal
        errors.append("Url is blocked: URI is invalid")
    elif scheme not in LINK_SCHEMES:
        errors.append(f"Url is blocked: Only allowed schemes are {', '.join(LINK_SCHEMES)}")
    elif any(other["url"] == url for other in others):
        errors.append("Url has already been taken")
    if not name:
        errors.append("Name can't be blank")
    elif any(other["name"] == name for other in others):
        errors.append("Name has already been taken")
    if path:
        if any(other.get("direct_asset_path") == path for other in others):
            errors.append("Filepath has already been taken")
        if not LINK_FILEPATH.match(path):
            errors.append("Filepath is invalid")
        if len(path) > 128:
            errors.append("Filepath is too long (maximum is 128 characters)")
    return errors


def _save_link(release: Release, link: dict[str, Any]) -> None:
    """Store a new or changed link, or answer GitLab's 400 with the model's full messages."""
    others = [x for x in release.links or [] if x["id"] != link["id"]]
    errors = _link_errors(link, others)
    if errors:  # Releases::Links::CreateService/UpdateService: render_api_error!(full_messages, 400)
        raise ApiError(400, {"message": errors})
    # a new list, so the JSON column is written; an update keeps the link's place
    ids = [x["id"] for x in release.links or []]
    release.links = [link if x["id"] == link["id"] else x for x in release.links or []] \
        if link["id"] in ids else [*(release.links or []), link]
    db.session.commit()


@bp.post(LINKS)
def create_link(project_id: str, tag_name: str) -> tuple[Response, int]:
    """Add an asset link (`name`, `url`, optional `direct_asset_path`, `link_type`)."""
    project, _ = project_ability(project_id, "create_release", job_token_endpoint=True)
    release, values = _release(project, tag_name), params()
    text(values, "name", required=True)
    text(values, "url", required=True)
    links = list(release.links or [])
    link = _link_fields(values, {"id": max((x["id"] for x in links), default=0) + 1})
    _save_link(release, link)
    return created(link_json(project, release, link))


@bp.put(f"{LINKS}/<int:link_id>")
def update_link(project_id: str, tag_name: str, link_id: int) -> Response:
    """Change an asset link."""
    project, _ = project_ability(project_id, "create_release", job_token_endpoint=True)
    release, values = _release(project, tag_name), params()
    if values.get("name") is None and values.get("url") is None:
        raise ApiError(400, {"error": "name, url are missing, at least one parameter must be provided"})
    link = _link_fields(values, dict(_link(release, link_id)))
    _save_link(release, link)
    return jsonify(link_json(project, release, link))


@bp.delete(f"{LINKS}/<int:link_id>")
def delete_link(project_id: str, tag_name: str, link_id: int) -> Response:
    """Remove an asset link, answering with it."""
    project, _ = project_ability(project_id, "create_release", job_token_endpoint=True)
    release = _release(project, tag_name)
    link = _link(release, link_id)
    release.links = [x for x in release.links or [] if x["id"] != link_id] or None
    db.session.commit()
    return jsonify(link_json(project, release, link))
