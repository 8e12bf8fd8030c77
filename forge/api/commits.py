"""Commits, trees, blobs, archives and compare: `/projects/:id/repository/...` reads and commits."""

from __future__ import annotations

import base64
import io
import tarfile
from datetime import UTC
from typing import Any
from urllib.parse import unquote

from dulwich.objects import Blob, Commit
from dulwich.repo import Repo
from flask import Response, jsonify

from forge import domain
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
    find_project,
    flag,
    instance_ability,
    integer,
    invalid,
    missing,
    moment,
    now,
    paginate,
    params,
    project_ability,
    state,
    text,
    web_url,
)
from forge.api.repository import (
    author_of,
    authorize_ref,
    branch_shas,
    commit_actions,
    commit_detail,
    commit_json,
    commit_stats,
    file_content,
    file_path_parts,
    repository,
    resolve,
    tag_shas,
    writing,
)
from forge.models import Project
from forge.repos import compare_and_swap

REPO = "/projects/<project_id>/repository"


def _date(values: dict[str, Any], name: str) -> int | None:
    """An ISO 8601 time parameter as epoch seconds (naive times are UTC)."""
    when = moment(values, name)
    return None if when is None else int(when.replace(tzinfo=UTC).timestamp())


def _commit_or_404(repo: Repo, ref: str) -> Commit:
    commit = resolve(repo, unquote(ref))
    if commit is None:
        fail(404, "404 Commit Not Found")
    return commit


@bp.get(f"{REPO}/commits")
def list_commits(project_id: str) -> Response:
    """History of `ref_name` (default branch) or of every branch (`all`), newest first."""
    project, _ = project_ability(project_id, "read_repository")
    values = params()
    ref, path = text(values, "ref_name"), text(values, "path")
    since, until = _date(values, "since"), _date(values, "until")
    every, first_parent = flag(values, "all"), flag(values, "first_parent")
    with_stats, author = flag(values, "with_stats"), text(values, "author")
    flag(values, "trailers")
    choice(values, "order", ("default", "topo"))
    with repository(project) as repo:
        if every:
            heads = list({*branch_shas(repo).values(), *tag_shas(repo).values()})
        else:
            commit = resolve(repo, ref or project.default_branch)
            if commit is None:
                if ref:  # GitLab: an unknown ref_name is 404
                    fail(404, "404 Commit Not Found")
                heads = []
            else:
                heads = [commit.id]
        commits = ops.history(repo, heads, path=path.strip("/") if path else None, since=since,
                              until=until, first_parent=first_parent)
        if every:
            commits.sort(key=lambda c: -c.commit_time)
        if author:  # git log --author: a pattern in the author's name or e-mail
            commits = [c for c in commits if author.lower() in c.author.decode(errors="replace").lower()]
        if with_stats:  # Entities::CommitWithStats
            return paginate(commits, lambda c: {**commit_json(project, c), "stats": commit_stats(repo, c)})
        return paginate(commits, lambda c: commit_json(project, c))


def _actions(values: dict[str, Any]) -> list[ops.Action]:
    """`actions`: Grape's validation of each entry, then ops.Action values."""
    raw = values.get("actions")
    if raw is None or raw == []:
        missing("actions")
    if not isinstance(raw, list) or not all(isinstance(a, dict) for a in raw):
        invalid("actions")
    actions = []
    for entry in raw:
        action = text(entry, "action")
        if action is None:
            missing("actions[action]")
        if action not in ops.ACTIONS:
            raise ApiError(400, {"error": "actions[action] does not have a valid value"})
        file_path = text(entry, "file_path")
        if not file_path:
            missing("actions[file_path]")
        path = "/".join(file_path_parts(file_path))
        previous = text(entry, "previous_path")
        if action == "move" and not previous:
            missing("actions[previous_path]")
        content = entry.get("content")
        data: bytes | None = None
        if content is not None:
            data = file_content(entry, required=False)
        elif action == "create":
            data = b""
        mode = entry.get("execute_filemode")
        actions.append(ops.Action(
            action, path, data, "/".join(file_path_parts(previous)) if previous else None,
            flag(entry, "execute_filemode") if mode not in (None, "") else None,
            text(entry, "last_commit_id")))
    return actions


def _may_push_to_branch(project: Project, who: perm.Principal, branch: str) -> None:
    """lib/api/commits.rb's `authorize_push_to_branch!`, after reading the code was allowed."""
    facts = domain.project_facts(project, current_user(who))
    check(who, "api_push_to_branch", perm.authorize_api_commit(
        who, facts, branch, now(), state().config.base_url), project)


@bp.post(f"{REPO}/commits")
def create_commit(project_id: str) -> tuple[Response, int]:
    """Commit `actions` on `branch` (from `start_branch`), as GitLab's Commits API does."""
    project, who = project_ability(project_id, "read_repository")
    values = params()
    branch = text(values, "branch", required=True)
    message = text(values, "commit_message", required=True)
    assert branch is not None and message is not None
    actions = _actions(values)
    start_branch, start_sha = text(values, "start_branch"), text(values, "start_sha")
    if start_branch is not None and start_sha is not None:
        raise ApiError(400, {"error": "start_branch, start_sha are mutually exclusive"})
    _may_push_to_branch(project, who, branch)
    stats = flag(values, "stats", default=True)
    commit = commit_actions(project, who, branch, start_branch, actions, message,
                            author_of(who, values), start_sha=start_sha)
    with repository(project) as repo:
        return created(commit_detail(project, repo, commit, stats))


@bp.get(f"{REPO}/commits/<sha>/diff")
def commit_diff(project_id: str, sha: str) -> Response:
    """The changes a commit made to its first parent."""
    project, _ = project_ability(project_id, "read_repository")
    flag(params(), "unidiff")
    with repository(project) as repo:
        commit = _commit_or_404(repo, sha)
        parent = repo[commit.parents[0]].tree if commit.parents else None  # type: ignore[attr-defined]
        return paginate(ops.diffs(repo, parent, commit.tree), lambda d: d)


@bp.get(f"{REPO}/commits/<sha>/refs")
def commit_refs(project_id: str, sha: str) -> Response:
    """Branches and tags whose history holds the commit (`type`: branch, tag or all)."""
    project, _ = project_ability(project_id, "read_repository")
    kind = text(params(), "type") or "all"
    if kind not in ("branch", "tag", "all"):
        raise ApiError(400, {"error": "type does not have a valid value"})
    found = []
    with repository(project) as repo:
        commit = _commit_or_404(repo, sha)
        for label, refs in (("branch", branch_shas(repo)), ("tag", tag_shas(repo))):
            if kind not in (label, "all"):
                continue
            for name, head in sorted(refs.items()):
                tip = ops.peel(repo, head)
                if tip is not None and commit.id in {c.id for c in ops.history(repo, [tip.id])}:
                    found.append({"type": label, "name": name})
    return paginate(found, lambda r: r)


@bp.get(f"{REPO}/commits/<sha>/merge_requests")
def commit_merge_requests(project_id: str, sha: str) -> Response:
    """Merge requests of a commit: forge has none, so an empty list for a known commit."""
    project, _ = project_ability(project_id, "read_repository", job_token_endpoint=True)
    with repository(project) as repo:
        _commit_or_404(repo, sha)
    return paginate([], lambda r: r)


@bp.get(f"{REPO}/tree")
def tree(project_id: str) -> Response:
    """Entries of a directory (`path`) at `ref`; `recursive` lists everything below it."""
    project, _ = project_ability(project_id, "read_repository")
    values = params()
    ref, path = text(values, "ref") or project.default_branch, (text(values, "path") or "").strip("/")
    recursive = flag(values, "recursive")
    if choice(values, "pagination", ("legacy", "keyset", "none")) == "none" and not recursive:
        raise ApiError(400, {"error": 'pagination cannot be "none" unless "recursive" is true'})
    with repository(project) as repo:
        commit = resolve(repo, ref)
        if commit is None:
            fail(404, "404 Tree Not Found")
        tree_id = commit.tree
        if path:
            found = ops.lookup(repo, commit, path)
            if found is None or found[0] != "directory":
                fail(404, "404 Tree Not Found")
            tree_id = found[2]
        prefix = f"{path}/" if path else ""
        entries = [{"id": sha.decode(), "name": name.rsplit("/", 1)[-1],
                    "type": "tree" if mode & 0o170000 == 0o040000 else
                    "commit" if mode == 0o160000 else "blob",
                    "path": name, "mode": f"{mode:06o}"}
                   for name, mode, sha in ops.walk_tree(repo, tree_id, prefix, recursive)]
    return paginate(entries, lambda e: e)


def _blob(project: Project, sha: str) -> Blob:
    with repository(project) as repo:
        try:
            obj = repo[sha.encode()] if len(sha) == 40 else None
        except (KeyError, ValueError):
            obj = None
        if not isinstance(obj, Blob):
            fail(404, "404 Blob Not Found")
        return obj


@bp.get(f"{REPO}/blobs/<sha>")
def show_blob(project_id: str, sha: str) -> Response:
    """A blob by its id, base64-encoded, as lib/api/repositories.rb answers."""
    project, _ = project_ability(project_id, "read_repository")
    blob = _blob(project, sha)
    return jsonify(size=len(blob.data), encoding="base64",
                   content=base64.b64encode(blob.data).decode(), sha=blob.id.decode())


@bp.get(f"{REPO}/blobs/<sha>/raw")
def raw_blob(project_id: str, sha: str) -> Response:
    """A blob's content by its id."""
    project, _ = project_ability(project_id, "read_repository")
    return Response(_blob(project, sha).data, mimetype="text/plain")


@bp.get(f"{REPO}/archive")
@bp.get(f"{REPO}/archive.<path:fmt>")
def repository_archive(project_id: str, fmt: str = "tar.gz") -> Response:
    """The tree at `sha` (default branch) as tar.gz, tar.bz2, tar or zip, under `<project>-<ref>-<sha>/`."""
    project, _ = project_ability(project_id, "read_repository")
    if fmt not in ops.ARCHIVE_FORMATS:
        fail(404, "404 File Not Found")
    values = params()
    flag(values, "include_lfs_blobs", default=True)  # forge archives pointer files as they are
    ref = text(values, "sha") or project.default_branch
    with repository(project) as repo:
        commit = resolve(repo, ref)
        if commit is None:
            fail(404, "404 File Not Found")
        prefix = f"{project.path}-{ref.replace('/', '-')}-{commit.id.decode()}"
        try:
            data = ops.archive(repo, commit, prefix, fmt, text(values, "path"))
        except ops.ContentError:
            fail(404, "404 File Not Found")
    name = f"{prefix}.{fmt}"
    response = Response(data, mimetype="application/zip" if fmt == "zip" else "application/octet-stream")
    response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


@bp.get(f"{REPO}/compare")
def compare(project_id: str) -> Response:
    """Commits and diffs from `from` to `to` (`straight`: diff the two trees directly)."""
    project, _ = project_ability(project_id, "read_repository")
    values = params()
    start, end = text(values, "from", required=True), text(values, "to", required=True)
    assert start is not None and end is not None
    straight = flag(values, "straight")
    flag(values, "unidiff")
    from_project = integer(values, "from_project_id", required=False)
    if from_project is not None and from_project != project.id:  # forge has no forks
        fail(400, f"Target project id:{from_project} is not a fork of project id:{project_id}")
    with repository(project) as repo:
        old, new = resolve(repo, start), resolve(repo, end)
        if old is None or new is None:
            fail(404, "404 Ref Not Found")
        base_ids = {c.id for c in ops.history(repo, [old.id])}
        commits = [c for c in ops.history(repo, [new.id]) if c.id not in base_ids]
        if straight:
            base_tree = old.tree
        else:
            shared = next((c for c in ops.history(repo, [new.id]) if c.id in base_ids), None)
            base_tree = shared.tree if shared is not None else None
        changes = ops.diffs(repo, base_tree, new.tree)
        return jsonify(commit=commit_json(project, commits[0]) if commits else None,
                       commits=[commit_json(project, c) for c in reversed(commits)], diffs=changes,
                       compare_timeout=False, compare_same_ref=start == end,
                       web_url=web_url(f"{project.full_path}/-/compare/{start}...{end}"))


@bp.get("/projects/<project_id>/snapshot")
def snapshot(project_id: str) -> Response:
    """The bare repository as a tar file (administrators only, as GitLab's snapshot API)."""
    instance_ability("admin")
    project = find_project(project_id)
    if project is None:
        fail(404, "404 Project Not Found")
    backend = state().backend
    if not backend.exists(project.id):
        fail(404, "404 Repository Not Found")
    buffer = io.BytesIO()
    with repository(project), tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(backend.path_for(project.id), arcname=".",
                filter=lambda member: None if member.name.endswith(".lock") else member)
    return Response(buffer.getvalue(), mimetype="application/x-tar")


@bp.get(f"{REPO}/files/<path:file_path>/blame")
def blame(project_id: str, file_path: str) -> Response:
    """Who last changed each line of a file at `ref`: runs of lines with their commit."""
    project, _ = project_ability(project_id, "read_repository")
    path = "/".join(file_path_parts(file_path))
    ref = text(params(), "ref", required=True)
    assert ref is not None
    with repository(project) as repo:
        commit = resolve(repo, ref)
        if commit is None:
            fail(404, "404 Commit Not Found")
        found = ops.lookup(repo, commit, path)
        if found is None or found[0] != "file":
            fail(404, "404 File Not Found")
        runs = ops.blame(repo, commit, path)
        return paginate(runs, lambda run: {"commit": commit_json(project, run[0]), "lines": run[1]})


@bp.get("/projects/<project_id>/merge_requests")
def merge_requests(project_id: str) -> Response:
    """Merge requests: forge has none, so a project the caller sees lists none."""
    project_ability(project_id, "read_project")
    return paginate([], lambda item: item)


@bp.get(f"{REPO}/merge_base")
def merge_base(project_id: str) -> Response:
    """The best common ancestor of two or more `refs[]` (lib/api/repositories.rb's answers)."""
    from flask import request
    project, _ = project_ability(project_id, "read_repository")
    # Array[String] coerced with CommaSeparatedToArray: repeated, or `refs=a,b`
    refs = [ref for given in request.args.getlist("refs[]") or request.args.getlist("refs")
            for ref in given.split(",") if ref]
    if len(refs) < 2:
        fail(400, "Provide at least 2 refs")
    with repository(project) as repo:
        commits = {ref: resolve(repo, ref) for ref in refs}
        unknown = [ref for ref, commit in commits.items() if commit is None]
        if unknown:
            fail(400, f"Could not find {'refs' if len(unknown) > 1 else 'ref'}: {', '.join(unknown)}")
        walks = [ops.history(repo, [c.id]) for c in commits.values() if c is not None]
        shared = set.intersection(*({c.id for c in walk} for walk in walks))
        base = next((c for c in walks[0] if c.id in shared), None)
        if base is None:
            fail(404, "404 Merge Base Not Found")
        return jsonify(commit_json(project, base))


PICK_REFUSED = {
    "cherry_pick": "Sorry, we cannot cherry-pick this commit automatically. This commit may already "
                   "have been cherry-picked, or a more recent commit may have updated some of its content.",
    "revert": "Sorry, we cannot revert this commit automatically. This commit may already have been "
              "reverted, or a more recent commit may have updated some of its content.",
}


@bp.post(f"{REPO}/commits/<sha>/<any(cherry_pick, revert):operation>")
def pick_commit(project_id: str, sha: str, operation: str) -> tuple[Response, int]:
    """Cherry-pick a commit onto `branch`, or revert it there, with GitLab's messages."""
    project, who = project_ability(project_id, "read_repository")
    values = params()
    branch = text(values, "branch", required=True)
    assert branch is not None
    dry_run = flag(values, "dry_run")
    _may_push_to_branch(project, who, branch)
    with writing(project) as repo:
        commit = _commit_or_404(repo, sha)
        head = resolve(repo, branch) if branch in branch_shas(repo) else None
        if head is None:
            fail(404, "404 Branch Not Found")
        try:
            tree_id = ops.pick(repo, head, commit, reverse=operation == "revert")
        except ops.ContentError as exc:
            raise ApiError(400, {"message": PICK_REFUSED[operation], "error_code": str(exc)}) from None
        if dry_run:
            return jsonify(dry_run="success"), 200
        message = commit.message.decode(errors="replace")
        if operation == "revert":
            title = message.splitlines()[0].strip() if message else ""
            message = f'Revert "{title}"\n\nThis reverts commit {commit.id.decode()}'
        elif text(values, "message"):  # a custom message replaces GitLab's
            message = text(values, "message") or ""
        else:
            ending = "\n" if message.endswith("\n") else "\n\n"
            message = f"{message}{ending}(cherry picked from commit {commit.id.decode()})"
        author = author_of(who, {}) if operation == "revert" else commit.author.decode(errors="replace")
        new = ops.new_commit(repo, tree_id, [head.id], author, message, now(),
                             committer=author_of(who, {}))
        ref = f"refs/heads/{branch}"
        authorize_ref(project, who, ref, head.id.decode(), new.id.decode())
        if not compare_and_swap(repo, ref.encode(), head.id, new.id):
            fail(409, "409 Conflict - the reference changed meanwhile")
    return created(commit_json(project, new))
