"""Git LFS as GitLab serves it: the batch API, object transfer and the locks API.

Authentication and every allow/deny decision go through `forge.auth` and
`forge.permissions` (`authorize_lfs`), as for git itself.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from flask import Blueprint, Flask, Response, abort, current_app, json, request, send_file
from werkzeug.exceptions import HTTPException

from forge import auth, domain, inputs
from forge import permissions as perm
from forge.models import LfsLock, Project, db
from forge.repos import OID
from forge.state import ForgeState, state_of

CONTENT_TYPE = "application/vnd.git-lfs+json"
MISSING = "Object does not exist on the server or you don't have permissions to access it"
LEGACY = "Server supports batch API only, please update your Git LFS client to version 1.0.1 and up."
PREFIX = "/<path:project>.git"

bp = Blueprint("lfs", __name__)


def _state() -> ForgeState:
    return state_of(current_app)


def lfs_json(data: Any, status: int = 200) -> Response:
    """Answer with LFS JSON and its content type."""
    return Response(json.dumps(data), status=status, content_type=CONTENT_TYPE)


class Allowed(NamedTuple):
    """An authorized LFS request: who asks, and the project (row and facts)."""

    principal: perm.Principal
    project: Project
    facts: perm.Project


def _authorize(project_path: str, operation: str, action: str) -> Allowed:
    """Authorize an LFS request, or abort with GitLab's refusal (401 text, else LFS JSON)."""
    state = _state()
    now, base = state.now(), state.config.base_url

    def decide(principal: perm.Principal, facts: perm.Project | None, project: Any) -> perm.Decision:
        enabled = project.lfs_enabled if project is not None else True
        return perm.authorize_lfs(principal, operation, facts, now, base, enabled)

    outcome = auth.authorize_request(
        now=now, backend=state.backend, method=request.method, path=request.path,
        authorization=request.headers.get("Authorization"), project_path=project_path,
        action=action, decide=decide)
    db.session.commit()
    decision = outcome.decision
    if decision.allowed:
        assert outcome.project is not None and outcome.facts is not None
        return Allowed(outcome.principal, outcome.project, outcome.facts)
    if decision.status == 401:
        response = Response(decision.message, status=401, content_type="text/plain; charset=utf-8")
        response.headers["WWW-Authenticate"] = 'Basic realm="GitLab"'
        abort(response)
    abort(not_found() if decision.status == 404 else lfs_json(
        {"message": decision.message, "documentation_url": f"{base}/help"}, decision.status))


def not_found() -> Response:
    """GitLab's LFS 404."""
    base = _state().config.base_url
    return lfs_json({"message": perm.LFS_NOT_FOUND, "documentation_url": f"{base}/help"}, 404)


@bp.before_request
def screen_input() -> Response | None:
    """Refuse malformed strings and JSON bodies as GitLab's middleware does, before any view."""
    return inputs.screen(request, body=request.endpoint != "lfs.upload")


def _body() -> dict[str, Any]:
    """The JSON body, read whatever the content type (git-lfs always sends JSON); {} if none."""
    try:
        data = inputs.json_body(request, force=True)
    except inputs.BadJson:
        return {}
    return data if isinstance(data, dict) else {}


def lock_path(path: Any) -> str | None:
    """A lock's path as git-lfs sends it: relative to the repository root, no `..`, no NUL."""
    if not isinstance(path, str) or not path:
        return None
    parts = path.split("/")
    if path.startswith("/") or "\x00" in path or "\n" in path or any(
            p in ("", ".", "..") for p in parts):
        return None
    return path


@bp.post(f"{PREFIX}/info/lfs/objects/batch")
def batch(project: str) -> Response:
    """Answer a batch request with download or upload actions (basic transfer)."""
    body = _body()
    operation = body.get("operation")
    if operation not in ("download", "upload"):
        return lfs_json({"message": "operation must be download or upload"}, 422)
    outcome = _authorize(project, operation, f"lfs_{operation}")
    objects = body.get("objects")
    if not isinstance(objects, list) or not objects:
        return not_found()
    href = f"{_state().config.base_url}/{outcome.project.full_path}.git/gitlab-lfs/objects"
    header = {"Authorization": request.headers["Authorization"]} if (
        "Authorization" in request.headers) else {}
    wanted = [o for o in objects if _valid(o)]
    present = domain.lfs_objects(outcome.project, [o["oid"] for o in wanted])
    answer = []
    for obj in objects:
        if not _valid(obj):
            answer.append({**(obj if isinstance(obj, dict) else {}),
                           "error": {"code": 422, "message": "Invalid object: oid or size"}})
            continue
        item: dict[str, Any] = {"oid": obj["oid"], "size": obj["size"]}
        stored = obj["oid"] in present and _state().lfs.exists(obj["oid"])
        if operation == "download":
            if stored:
                if outcome.project.visibility == "public":  # GitLab: when anyone may download
                    item["authenticated"] = True
                item["actions"] = {"download": {"href": f"{href}/{obj['oid']}", "header": header}}
            else:
                item["error"] = {"code": 404, "message": MISSING}
        elif not stored:
            item["actions"] = {"upload": {
                "href": f"{href}/{obj['oid']}/{obj['size']}",
                "header": {**header, "Content-Type": "application/octet-stream",
                           "Transfer-Encoding": "chunked"}}}
        answer.append(item)
    return lfs_json({"transfer": "basic", "objects": answer, "hash_algo": "sha256"})


def _valid(obj: Any) -> bool:
    return (isinstance(obj, dict) and isinstance(obj.get("oid"), str) and bool(OID.match(obj["oid"]))
            and isinstance(obj.get("size"), int) and not isinstance(obj["size"], bool)
            and obj["size"] >= 0)


@bp.get(f"{PREFIX}/gitlab-lfs/objects/<oid>")
def download(project: str, oid: str) -> Response:
    """Send an object's content."""
    outcome = _authorize(project, "download", "lfs_download")
    store = _state().lfs
    if not OID.match(oid) or oid not in domain.lfs_objects(outcome.project, [oid]) or (
            not store.exists(oid)):
        return not_found()
    return send_file(store.path_for(oid), mimetype="application/octet-stream")


@bp.put(f"{PREFIX}/gitlab-lfs/objects/<oid>/<int:size>")
def upload(project: str, oid: str, size: int) -> Response:
    """Receive an object; keep it only when its content matches its oid and size."""
    outcome = _authorize(project, "upload", "lfs_upload")
    state = _state()
    if not OID.match(oid):
        return lfs_json({"message": "Invalid oid"}, 422)
    if state.lfs.put_stream(request.stream, oid, size) is None:
        return lfs_json({"message": "The object does not match its oid and size."}, 422)
    domain.link_lfs_object(state.now(), outcome.project, oid, size)
    db.session.commit()
    return lfs_json({}, 200)


@bp.post(f"{PREFIX}/info/lfs/objects")
@bp.get(f"{PREFIX}/info/lfs/objects/<oid>")
def legacy(project: str, oid: str = "") -> Response:
    """The pre-batch API, which GitLab answers with 501."""
    try:
        _authorize(project, "download", "lfs_legacy")
    except HTTPException as refused:  # only the 401 challenge wins over the 501
        if refused.response is not None and refused.response.status_code == 401:
            raise
    base = _state().config.base_url
    return lfs_json({"message": LEGACY, "documentation_url": f"{base}/help"}, 501)


def lock_json(lock: LfsLock) -> dict[str, Any]:
    """Render a lock as the locks API does."""
    return {"id": str(lock.id), "path": lock.path,
            "locked_at": lock.created_at.isoformat() + "Z", "owner": {"name": lock.user.username}}


@bp.get(f"{PREFIX}/info/lfs/locks")
def locks(project: str) -> Response:
    """List locks, optionally filtered by `path` or `id`."""
    outcome = _authorize(project, "download", "lfs_locks")
    found = domain.list_locks(outcome.project, path=request.args.get("path"),
                              lock_id=request.args.get("id"))
    return lfs_json({"locks": [lock_json(lock) for lock in found]})


@bp.post(f"{PREFIX}/info/lfs/locks")
def create_lock(project: str) -> Response:
    """Lock a path (push rights needed)."""
    outcome = _authorize(project, "upload", "lfs_lock")
    raw = _body().get("path")
    if raw is None or raw == "":
        return lfs_json({"message": "path is missing"}, 422)
    path = lock_path(raw)
    if path is None:
        return lfs_json({"message": "path is invalid"}, 422)
    user = auth.user_of(outcome.principal)
    assert user is not None
    try:
        lock = domain.create_lock(_state().now(), outcome.project, user, path)
    except domain.LockTaken as taken:
        db.session.rollback()
        return lfs_json({"lock": lock_json(taken.lock), "message": str(taken)}, 409)
    except domain.Conflict as conflict:
        db.session.rollback()
        return lfs_json({"message": str(conflict)}, 409)
    db.session.commit()
    return lfs_json({"lock": lock_json(lock)}, 201)


@bp.post(f"{PREFIX}/info/lfs/locks/verify")
def verify_locks(project: str) -> Response:
    """Split the locks into the caller's own and everybody else's (before a push)."""
    outcome = _authorize(project, "upload", "lfs_locks_verify")
    user = outcome.principal.user
    found = domain.list_locks(outcome.project)
    mine = [lock_json(lock) for lock in found if user is not None and lock.user_id == user.id]
    theirs = [lock_json(lock) for lock in found if user is None or lock.user_id != user.id]
    return lfs_json({"ours": mine, "theirs": theirs})


@bp.post(f"{PREFIX}/info/lfs/locks/<lock_id>/unlock")
def unlock(project: str, lock_id: str) -> Response:
    """Remove a lock: one's own, or anybody's with `force` as a maintainer."""
    outcome = _authorize(project, "upload", "lfs_unlock")
    state = _state()
    try:
        lock = domain.get_lock(outcome.project, lock_id)
    except domain.NotFound as exc:
        return lfs_json({"message": str(exc)}, 404)
    decision = perm.authorize_unlock(outcome.principal, outcome.facts, lock.user_id, lock.path,
                                     _body().get("force") is True)
    auth.record(state.now(), request.method, request.path, outcome.principal, "lfs_unlock",
                decision, outcome.project, ref=lock.path)
    if not decision.allowed:
        db.session.commit()
        return lfs_json({"message": decision.message}, decision.status)
    data = lock_json(lock)
    db.session.delete(lock)
    db.session.commit()
    return lfs_json({"lock": data})


def init_app(app: Flask) -> None:
    """Register the LFS routes."""
    app.register_blueprint(bp)
