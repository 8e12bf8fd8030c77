"""Repository reads and ref changes: branches, tags, files and commits (via dulwich)."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import unquote

from dulwich.objects import Blob, Commit, Tag
from dulwich.refs import Ref, check_ref_format
from dulwich.repo import Repo
from flask import Response, g, jsonify
from sqlalchemy import select

from forge import domain, inputs, repos
from forge import permissions as perm
from forge import repository_ops as ops
from forge.api import (
    ApiError,
    bp,
    check,
    choice,
    created,
    current_user,
    fail,
    flag,
    missing,
    no_content,
    now,
    paginate,
    params,
    project_ability,
    state,
    text,
    web_url,
)
from forge.models import Project, ProtectedBranch, Release, db
from forge.repos import RepositoryBusy, compare_and_swap, current_ref, in_use, open_repo

ZERO = perm.ZERO_SHA
# Gitlab::PathTraversal: `..` as a whole part (either slash), or a newline.
PATH_TRAVERSAL = re.compile(r"\A\.{1,2}\Z|\A\.\.[/\\]|[/\\]\.\.\Z|[/\\]\.\.[/\\]|\n")
INVALID_FILE_PATH = "file_path should be a valid file path"
# Commits::CreateService refusals: lib/api/files.rb and commits.rb render them bare (render_api_error!).
ON_A_BRANCH = "You can only create or edit files when you are on a branch"
FILE_CHANGED = "You are attempting to update a file that has changed since you started editing it."


def ref_conflict(repo: Repo, ref: str) -> str | None:
    """git's refusal when `ref` and an existing ref would be a file and a directory, else None."""
    names = sorted(name.decode(errors="replace") for name in repo.refs.as_dict())
    for name in names:
        if name.startswith(ref + "/"):
            return f"'{name}' exists; cannot create '{ref}'"
        if ref.startswith(name + "/"):
            return f"'{name}' exists; cannot create '{ref}'"
    return None


def file_path_parts(file_path: str) -> list[str]:
    """Split a URL-encoded `file_path`, refusing what GitLab's FilePath validator refuses.

    That is path traversal and absolute paths; forge also refuses what a git tree cannot
    hold (empty parts, `.`, `.git`, NUL bytes), with the same answer.
    """
    path = unquote(file_path)
    parts = path.split("/")
    if (PATH_TRAVERSAL.search(path) or path.startswith("/") or "\x00" in path
            or any(p in ("", ".", "..", ".git") for p in parts)):
        raise ApiError(400, {"error": INVALID_FILE_PATH})
    return parts


@contextmanager
def repository(project: Project) -> Iterator[Repo]:
    """Open the project's repository to read it, or 404 when it has none."""
    backend = state().backend
    if not backend.exists(project.id):
        fail(404, "404 Repository Not Found")
    path = backend.path_for(project.id)
    with _available(), in_use(path), open_repo(path) as repo:
        yield repo


@contextmanager
def writing(project: Project) -> Iterator[Repo]:
    """Open the project's repository holding its ref lock: the one way refs change here."""
    backend = state().backend
    if not backend.exists(project.id):
        fail(404, "404 Repository Not Found")
    with _available(), repos.writing(backend.path_for(project.id)) as repo:
        yield repo


@contextmanager
def _available() -> Iterator[None]:
    """Answer 503 when another writer held the repository too long, as Gitaly's lock errors do."""
    try:
        yield
    except RepositoryBusy:
        fail(503, "503 Service Unavailable - the repository is busy; try again")


def resolve(repo: Repo, ref: str) -> Commit | None:
    """The commit a branch, tag or sha names."""
    if ref == "HEAD":  # what HEAD names (the default branch)
        try:
            head = repo.refs[b"HEAD"]  # type: ignore[index]
        except KeyError:
            return None
        return ops.peel(repo, head)
    for name in (f"refs/heads/{ref}", f"refs/tags/{ref}", ref):
        sha = ref_sha(repo, name)
        if sha is not None:
            break
    else:
        sha = ref.encode() if len(ref) == 40 else None
    return ops.peel(repo, sha) if sha else None


def ref_sha(repo: Repo, name: str) -> bytes | None:
    """What the full ref `name` points at, reading that ref alone (not every ref, as a
    listing does); None when there is no such ref or the name is no ref name."""
    try:
        raw = name.encode(errors="surrogateescape")
    except UnicodeEncodeError:
        return None
    if not raw.startswith(b"refs/") or not check_ref_format(Ref(raw)):
        return None
    try:
        return repo.refs[Ref(raw)]
    except KeyError:
        return None


def _when(seconds: int) -> str:
    return ops.git_time(seconds).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def commit_json(project: Project, commit: Commit) -> dict[str, Any]:
    """A commit as GitLab renders one."""
    author, committer = commit.author.decode(errors="replace"), commit.committer.decode(errors="replace")

    def split(who: str) -> tuple[str, str]:
        name, _, email = who.partition(" <")
        return name, email.rstrip(">")

    message = commit.message.decode(errors="replace")
    sha = commit.id.decode()
    return {"id": sha, "short_id": sha[:8], "title": message.splitlines()[0] if message else "",
            "message": message, "author_name": split(author)[0], "author_email": split(author)[1],
            "authored_date": _when(commit.author_time), "committer_name": split(committer)[0],
            "committer_email": split(committer)[1], "committed_date": _when(commit.commit_time),
            "created_at": _when(commit.commit_time),
            "parent_ids": [p.decode() for p in commit.parents], "trailers": {}, "extended_trailers": {},
            "web_url": web_url(f"{project.full_path}/-/commit/{sha}")}


def commit_stats(repo: Repo, commit: Commit) -> dict[str, int]:
    """Lines added and removed against the first parent, as GitLab's CommitStats."""
    parent = repo[commit.parents[0]].tree if commit.parents else None  # type: ignore[attr-defined]
    changes = ops.diffs(repo, parent, commit.tree)
    additions = sum(str(d["diff"]).count("\n+") + str(d["diff"]).startswith("+") for d in changes)
    deletions = sum(str(d["diff"]).count("\n-") + str(d["diff"]).startswith("-") for d in changes)
    return {"additions": additions, "deletions": deletions, "total": additions + deletions}


def commit_detail(project: Project, repo: Repo, commit: Commit, stats: bool = True) -> dict[str, Any]:
    """GitLab's CommitDetail: the commit, its stats (unless `stats=false`), status and pipeline."""
    detail = {**commit_json(project, commit), "status": None, "project_id": project.id,
              "last_pipeline": None}
    if stats:
        detail["stats"] = commit_stats(repo, commit)
    return detail


def _refs(repo: Repo, prefix: str) -> dict[str, bytes]:
    """Ref names under `prefix` (`refs/heads/`, `refs/tags/`), shortened, with their shas."""
    # A name that is not UTF-8 (pushed before forge refused them) is listed, not a 500.
    return {name.decode(errors="replace")[len(prefix):]: sha
            for name, sha in repo.refs.as_dict().items() if name.startswith(prefix.encode())}


def branch_shas(repo: Repo) -> dict[str, bytes]:
    """Branch names with the shas they point at."""
    return _refs(repo, "refs/heads/")


def tag_shas(repo: Repo) -> dict[str, bytes]:
    """Tag names with the shas of their tag objects (or commits, for lightweight tags)."""
    return _refs(repo, "refs/tags/")


def branch_json(project: Project, repo: Repo, name: str, who: perm.Principal) -> dict[str, Any]:
    """A branch as GitLab's Entities::Branch renders one for the caller `who`.

    `merged`: into the default branch; `developers_can_push`/`_merge`: a matching rule grants
    exactly developers that level; `can_push`: Gitlab::UserAccess#can_push_to_branch? for `who`.
    """
    commit = resolve(repo, name)
    facts = domain.project_facts(project, current_user(who))
    rules = [r for r in db.session.scalars(select(ProtectedBranch).where(
        ProtectedBranch.project_id == project.id)) if perm.ProtectedBranch(r.name).matches(name)]
    default = resolve(repo, project.default_branch) if name != project.default_branch else None
    merged = commit is not None and default is not None and commit.id in _ancestors(repo, default.id)
    return {"name": name, "merged": merged, "protected": bool(rules),
            "default": name == project.default_branch,
            "developers_can_push": any(r.push_access_level == perm.DEVELOPER for r in rules),
            "developers_can_merge": any((r.merge_access_level or perm.MAINTAINER) == perm.DEVELOPER
                                        for r in rules),
            "can_push": who.kind is not perm.Kind.ANONYMOUS and perm.can_push_to_branch(who, facts, name),
            "web_url": web_url(f"{project.full_path}/-/tree/{name}"),
            "commit": commit_json(project, commit) if commit else None}


def _ancestors(repo: Repo, head: bytes) -> set[bytes]:
    """Every commit reachable from `head`, walked once per request (a branch list asks
    whether each of its branches is merged into the default branch)."""
    walked: dict[bytes, set[bytes]] = g.setdefault("ancestors", {})
    if head not in walked:
        walked[head] = {c.id for c in ops.history(repo, [head])}
    return walked[head]


def tag_json(project: Project, repo: Repo, name: str, who: perm.Principal | None = None) -> dict[str, Any]:
    """A tag as GitLab renders one."""
    sha = ref_sha(repo, f"refs/tags/{name}")
    if sha is None:
        raise KeyError(name)
    obj = repo[sha]
    message = obj.message.decode(errors="replace") if isinstance(obj, Tag) else ""
    commit = ops.peel(repo, sha)  # the tag's, even when a branch has its name
    release = db.session.scalar(select(Release).where(Release.project_id == project.id,
                                                      Release.tag_name == name))
    return {"name": name, "message": message or None, "target": sha.decode(),
            "commit": commit_json(project, commit) if commit else None,
            "release": {"tag_name": release.tag_name, "description": release.description}
            if release is not None else None,
            "protected": False,
            "created_at": _when(obj.tag_time) if isinstance(obj, Tag) else None}


def authorize_ref(project: Project, who: perm.Principal, ref: str, old: str, new: str) -> None:
    """Let an API write of `ref` (old to new) through the per-ref push rules (branch and tag
    calls, commits and file edits, cherry-picks and reverts share it). GitLab runs them as
    the pre-receive hook of a change made from the web, and its services answer the hook's
    refusal as a 400 with the bare message (`rescue Gitlab::Git::PreReceiveError`)."""
    facts = domain.project_facts(project, current_user(who))
    decision = perm.authorize_ref_update(who, facts, ref, old, new, True, web=True)
    if not decision.allowed:
        decision = dataclasses.replace(decision, status=400)
    check(who, "api_push_ref", decision, project)


def _update_ref(project: Project, who: perm.Principal, ref: str, old: str, new: str) -> None:
    """Move a ref after the per-ref push rules allowed it (a compare-and-swap)."""
    authorize_ref(project, who, ref, old, new)
    with writing(project) as repo:
        if not compare_and_swap(repo, ref.encode(), old.encode(), new.encode()):
            fail(409, "409 Conflict - the reference changed meanwhile")


REF_KINDS: dict[str, tuple[str, str, Any]] = {
    "branches": ("refs/heads/", "Branch", branch_json),
    "tags": ("refs/tags/", "Tag", tag_json),
}
KIND_ROUTE = "/projects/<project_id>/repository/<any(branches, tags):kind>"


@bp.get(KIND_ROUTE)
def list_refs(project_id: str, kind: str) -> Response:
    """Branches or tags, `search` filtering by name."""
    project, who = project_ability(project_id, "read_repository", job_token_endpoint=True)
    prefix, _, render = REF_KINDS[kind]
    values = params()
    search = str(values.get("search") or "")
    with repository(project) as repo:
        refs = {name: sha for name, sha in _refs(repo, prefix).items() if search in name}
        return paginate(_ordered(repo, refs, kind, values),
                        lambda name: render(project, repo, name, who))  # the page only


def _ordered(repo: Repo, refs: dict[str, bytes], kind: str, values: dict[str, Any]) -> list[str]:
    """Ref names in GitLab's order: tags by `order_by` (name, updated: their commit's date,
    version; default updated) and `sort` (default desc); branches by `sort` (name_asc,
    updated_asc, updated_desc; default name_asc). `refs`: names with their shas."""
    names = list(refs)

    def updated(name: str) -> tuple[int, str]:
        commit = ops.peel(repo, refs[name])
        return (commit.commit_time if commit is not None else 0), name

    if kind == "tags":
        order = choice(values, "order_by", ("name", "updated", "version")) or "updated"
        descending = (choice(values, "sort", ("asc", "desc")) or "desc") == "desc"
        key: Any = {"name": lambda name: name, "updated": updated, "version": _version_key}[order]
        return sorted(names, key=key, reverse=descending)
    sort = choice(values, "sort", ("name_asc", "updated_asc", "updated_desc")) or "name_asc"
    if sort == "name_asc":
        return sorted(names)
    return sorted(names, key=updated, reverse=sort == "updated_desc")


def _version_key(name: str) -> list[tuple[int, int, str]]:
    """Order names as versions: numbers by value (v1.10 after v1.9)."""
    return [(0, int(part), "") if inputs.digits(part) else (1, 0, part) for part in re.split(r"(\d+)", name)]


@bp.get(f"{KIND_ROUTE}/<path:name>")
def show_ref(project_id: str, kind: str, name: str) -> Response:
    """One branch or tag."""
    project, who = project_ability(project_id, "read_repository", job_token_endpoint=True)
    prefix, label, render = REF_KINDS[kind]
    name = unquote(name)
    with repository(project) as repo:
        if name not in _refs(repo, prefix):
            fail(404, f"404 {label} Not Found")
        return jsonify(render(project, repo, name, who))


@bp.delete(f"{KIND_ROUTE}/<path:name>")
def delete_ref(project_id: str, kind: str, name: str) -> Response:
    """Delete a branch or tag (developer; protected and default branches are refused)."""
    project, who = project_ability(project_id, "push_code")
    prefix, label, _ = REF_KINDS[kind]
    name = unquote(name)
    with repository(project) as repo:
        sha = _refs(repo, prefix).get(name)
    if sha is None:
        fail(404, f"404 {label} Not Found")
    _update_ref(project, who, f"{prefix}{name}", sha.decode(), ZERO)
    return no_content()


@bp.post("/projects/<project_id>/repository/branches")
def create_branch(project_id: str) -> tuple[Response, int]:
    """Create a branch at `ref` (developer)."""
    project, who = project_ability(project_id, "push_code")
    values = params()
    branch, ref = text(values, "branch", required=True), text(values, "ref", required=True)
    assert branch is not None and ref is not None
    with repository(project) as repo:
        empty = not branch_shas(repo)
    if empty:  # Branches::CreateService#create_default_branch: an empty README.md first
        commit_actions(project, who, project.default_branch, None,
                       [ops.Action("create", "README.md", b"")], "Add README.md", author_of(who, {}))
    # lib/api/branches.rb answers the service's errors with render_api_error!: no prefix.
    if not domain.valid_ref_name(branch):
        fail(400, "Branch name is invalid")
    with repository(project) as repo:
        if branch in branch_shas(repo):
            fail(400, "Branch already exists")
        commit = resolve(repo, ref)
        if commit is None:
            fail(400, f"Failed to create branch '{branch}': invalid reference name '{ref}'")
        conflict = ref_conflict(repo, f"refs/heads/{branch}")
        if conflict:  # Branches::CreateService's answer to Gitaly's refusal
            fail(400, f"Failed to create branch '{branch}': {conflict}")
    _update_ref(project, who, f"refs/heads/{branch}", ZERO, commit.id.decode())
    with repository(project) as repo:
        return created(branch_json(project, repo, branch, who))


@bp.post("/projects/<project_id>/repository/tags")
def create_tag(project_id: str) -> tuple[Response, int]:
    """Create a lightweight tag at `ref` (developer)."""
    project, who = project_ability(project_id, "push_code")
    values = params()
    tag, ref = text(values, "tag_name", required=True), text(values, "ref", required=True)
    assert tag is not None and ref is not None
    create_tag_ref(project, who, tag, ref, text(values, "message"))
    with repository(project) as repo:
        return created(tag_json(project, repo, tag))


def create_tag_ref(project: Project, who: perm.Principal, tag: str, ref: str,
                   message: str | None = None) -> str:
    """Create `refs/tags/<tag>` at `ref`, annotated when there is a `message`; return the commit sha.

    Refusals are Tags::CreateService's messages, which lib/api/tags.rb renders as they are.
    """
    if not domain.valid_ref_name(tag):
        fail(400, "Tag name invalid")
    with repository(project) as repo:
        if tag in tag_shas(repo):
            fail(400, f"Tag {tag} already exists")
        commit = resolve(repo, ref)
        if commit is None:
            fail(400, f"Target {ref} is invalid")
        conflict = ref_conflict(repo, f"refs/tags/{tag}")
        if conflict:
            fail(400, f"Failed to create tag '{tag}': {conflict}")
        target = commit.id
        if message:
            target = ops.new_tag(repo, tag, commit, author_of(who, {}), message, now()).id
    _update_ref(project, who, f"refs/tags/{tag}", ZERO, target.decode())
    return commit.id.decode()


def _file(project: Project, file_path: str) -> tuple[bytes, bytes, Commit, str, str]:
    """A file's content, blob id, commit, path, and the ref it was read at.

    `ref` defaults to the default branch (GitLab's raw endpoint; the JSON one requires it);
    `HEAD` is what the repository's HEAD names.
    """
    from flask import request
    parts = file_path_parts(file_path)
    raw = request.path.endswith("/raw")
    ref = text(params(), "ref", required=not raw) or project.default_branch
    path = "/".join(parts)
    with repository(project) as repo:
        commit = resolve(repo, ref)
        if commit is None:
            fail(404, "404 Commit Not Found")
        found = ops.lookup(repo, commit, path)
        if found is None or found[0] != "file":
            fail(404, "404 File Not Found")
        blob = repo[found[2]]
        assert isinstance(blob, Blob)
        return blob.data, blob.id, commit, path, ref


def author_of(who: perm.Principal, values: dict[str, Any]) -> str:
    """`author_name <author_email>` from the request, else the caller."""
    user = current_user(who)
    name = text(values, "author_name") or (user.name if user else "Forge")
    email = text(values, "author_email") or (user.email if user else "forge@example.com")
    return f"{name} <{email}>"


def commit_actions(project: Project, who: perm.Principal, branch: str, start_branch: str | None,
                   actions: list[ops.Action], message: str, author: str,
                   start_sha: str | None = None,
                   changed: str = "The file has changed since you started editing it: {path}") -> Commit:
    """Commit `actions` on `branch` as Commits::CreateService does, in its order of checks.

    May the caller push to `branch`; does `start_sha` name a commit; does the start
    branch exist (an empty repository takes any branch: its first commit creates it);
    a new branch must not exist. Refusals are the service's bare messages, which the
    files and commits APIs render as 400. The ref moves under the repository's ref lock
    after the per-ref push rules allowed it.
    """
    facts = domain.project_facts(project, current_user(who))
    check(who, "api_commit_to_branch", perm.authorize_branch_commit(who, facts, branch), project)
    if start_sha is not None and not re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", start_sha):
        fail(400, f"Invalid start_sha '{start_sha}'")
    if not domain.valid_ref_name(branch):  # no such branch can exist; dulwich would raise
        fail(400, ON_A_BRANCH)
    start = start_branch or branch
    with writing(project) as repo:
        heads = branch_shas(repo)
        empty = not heads
        if start_sha is not None:
            parent = resolve(repo, start_sha)
            if parent is None:
                fail(400, f"Cannot find start_sha '{start_sha}'")
        elif not empty and start not in heads:
            fail(400, ON_A_BRANCH)
        else:
            parent = resolve(repo, start) if not empty else None
        if not empty and (start != branch or start_sha is not None) and branch in heads:
            fail(400, f"A branch called '{branch}' already exists. "
                      "Switch to that branch in order to make changes")
        for action in actions:  # `last_commit_id`: the writer's view of the file
            if ops.changed_since(repo, parent, action):
                fail(400, changed.format(path=action.file_path))
        try:
            tree = ops.apply_actions(repo, parent, actions)
        except ops.ContentError as exc:
            fail(400, str(exc))
        commit = ops.new_commit(repo, tree, [parent.id] if parent else [], author, message, now())
        ref = f"refs/heads/{branch}"
        old = current_ref(repo, ref.encode()).decode()
        authorize_ref(project, who, ref, old, commit.id.decode())
        if not compare_and_swap(repo, ref.encode(), old.encode(), commit.id):
            fail(409, "409 Conflict - the reference changed meanwhile")
    return commit


def file_content(values: dict[str, Any], required: bool = True) -> bytes | None:
    """`content` with `encoding` (text or base64), as the files and commits APIs take it."""
    content = text(values, "content")
    if content is None:
        if required:
            missing("content")
        return None
    encoding = text(values, "encoding") or "text"
    if encoding not in ("text", "base64"):
        raise ApiError(400, {"error": "encoding does not have a valid value"})
    if encoding == "base64":
        try:
            return base64.b64decode(content, validate=True)
        except ValueError:
            fail(400, "400 Bad request - content is not valid base64")
    return content.encode()


@bp.post("/projects/<project_id>/repository/files/<path:file_path>")
@bp.put("/projects/<project_id>/repository/files/<path:file_path>")
@bp.delete("/projects/<project_id>/repository/files/<path:file_path>")
def write_file(project_id: str, file_path: str) -> tuple[Response, int] | Response:
    """Create (POST), update (PUT) or delete (DELETE) a file with a new commit on `branch` (developer)."""
    from flask import request
    project, who = project_ability(project_id, "push_code")
    path = "/".join(file_path_parts(file_path))
    values = params()
    branch = text(values, "branch", required=True)
    action = {"POST": "create", "PUT": "update", "DELETE": "delete"}[request.method]
    data = file_content(values) if action != "delete" else None
    message = text(values, "commit_message", required=True)
    assert branch is not None and message is not None
    mode = flag(values, "execute_filemode") if values.get("execute_filemode") not in (None, "") else None
    last = text(values, "last_commit_id") if action == "update" else None  # Files::UpdateService only
    commit_actions(project, who, branch, text(values, "start_branch"),
                   [ops.Action(action, path, data, execute_filemode=mode, last_commit_id=last)], message,
                   author_of(who, values), changed=FILE_CHANGED)
    if action == "delete":
        return no_content()
    return jsonify(file_path=path, branch=branch), 201 if action == "create" else 200


@bp.get("/projects/<project_id>/repository/files/<path:file_path>/raw")
def raw_file(project_id: str, file_path: str) -> Response:
    """A file's content at `ref` (default: the default branch)."""
    project, _ = project_ability(project_id, "read_repository", job_token_endpoint=True)
    data, blob_id, commit, path, ref = _file(project, file_path)
    response = Response(data, mimetype="text/plain")
    response.headers.update(_file_headers(data, blob_id, commit, path, ref))
    return response


def _file_headers(data: bytes, blob_id: bytes, commit: Commit, path: str, ref: str) -> dict[str, str]:
    """GitLab's X-Gitlab-* headers of a file answer (what `files.head()` reads)."""
    return {"X-Gitlab-File-Name": path.rsplit("/", 1)[-1], "X-Gitlab-File-Path": path,
            "X-Gitlab-Size": str(len(data)), "X-Gitlab-Encoding": "base64", "X-Gitlab-Ref": ref,
            "X-Gitlab-Blob-Id": blob_id.decode(), "X-Gitlab-Commit-Id": commit.id.decode(),
            "X-Gitlab-Last-Commit-Id": commit.id.decode(),
            "X-Gitlab-Content-Sha256": hashlib.sha256(data).hexdigest(),
            "X-Gitlab-Execute-Filemode": "false"}


@bp.get("/projects/<project_id>/repository/files/<path:file_path>")
def show_file(project_id: str, file_path: str) -> Response:
    """A file at `ref`, base64-encoded, with its metadata (HEAD: the headers alone)."""
    project, _ = project_ability(project_id, "read_repository")
    data, blob_id, commit, path, ref = _file(project, file_path)
    response = jsonify(file_name=path.rsplit("/", 1)[-1], file_path=path, size=len(data),
                       encoding="base64", content=base64.b64encode(data).decode(),
                       content_sha256=hashlib.sha256(data).hexdigest(), ref=ref,
                       blob_id=blob_id.decode(), commit_id=commit.id.decode(),
                       last_commit_id=commit.id.decode(), execute_filemode=False)
    response.headers.update(_file_headers(data, blob_id, commit, path, ref))
    return response


@bp.get("/projects/<project_id>/repository/commits/<sha>")
def show_commit(project_id: str, sha: str) -> Response:
    """One commit (by sha, branch or tag) as GitLab's CommitDetail (`stats` unless `stats=false`)."""
    project, _ = project_ability(project_id, "read_repository", job_token_endpoint=True)
    stats = flag(params(), "stats", default=True)
    with repository(project) as repo:
        commit = resolve(repo, unquote(sha))
        if commit is None:
            fail(404, "404 Commit Not Found")
        return jsonify(commit_detail(project, repo, commit, stats))
