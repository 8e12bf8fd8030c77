"""Domain operations: create and change users, groups, projects, scopes and jobs.

Every way into the forge (seed files, the control API, the pytest fixture, the CLI)
goes through these functions. They act on the session and raise `DomainError`; the
caller commits and picks the HTTP status. The clock is passed in as `now`.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

from dulwich.refs import Ref, check_ref_format
from sqlalchemy import bindparam, func, select
from sqlalchemy.exc import IntegrityError
from werkzeug.security import generate_password_hash

from forge import inputs
from forge import permissions as perm
from forge.database import restart_ids
from forge.models import (
    Event,
    Group,
    Job,
    JobArtifact,
    JobLog,
    LfsLock,
    LfsObject,
    Membership,
    PackageFile,
    PersonalAccessToken,
    Pipeline,
    Project,
    ProtectedBranch,
    Release,
    Runner,
    ScopeLink,
    User,
    db,
)
from forge.repos import (
    BlobStore,
    FileContent,
    Gitlink,
    RepositoryBackend,
    TreeEntry,
    commit_files,
    lfs_pointer,
    open_repo,
    ref_lock,
)
from forge.tokens import digest as digest
from forge.tokens import new_job_token as new_job_token
from forge.tokens import new_personal_token as new_personal_token
from forge.tokens import same_digest as same_digest

PATH_SEGMENT = re.compile(r"^[a-zA-Z0-9_][a-zA-Z0-9_.-]*$")
RESERVED_SUFFIXES = (".git", ".atom")
MAX_ALLOWLIST = 200
MAX_ID = 2**63 - 1  # the largest id an integer column holds
# Gitlab::GitRefValidator: bytes and sequences git-check-ref-format refuses, and the
# prefixes GitLab keeps for qualified names.
REF_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f ~^:?*\[\\]|\.\.|//|@\{")
REF_PREFIXES = ("refs/heads/", "refs/remotes/")
Row = TypeVar("Row")


class DomainError(ValueError):
    """A request the forge cannot carry out; `status` suggests the HTTP answer."""

    status = 400


class NotFound(DomainError):
    """A named thing does not exist."""

    status = 404


class Conflict(DomainError):
    """The thing exists already."""

    status = 409


class Forbidden(DomainError):
    """The rules refuse the operation."""

    status = 403


def check_path(full_path: str, what: str = "path") -> list[str]:
    """Split a namespace path into segments, refusing anything GitLab would not accept."""
    parts = full_path.strip("/").split("/")
    for part in parts:
        if not PATH_SEGMENT.match(part) or part.endswith(RESERVED_SUFFIXES) or part.endswith("."):
            raise DomainError(f"invalid {what} {full_path!r}: segment {part!r} is not allowed")
    return parts


def valid_ref_name(name: str) -> bool:
    """Whether GitLab accepts `name` for a new branch or tag (`Gitlab::GitRefValidator.validate`).

    Besides git's rules, the name must be one forge can store (`perm.storable_ref_name`,
    the limits pushes get too): GitLab's validator lets longer names through and Gitaly
    then fails to write them.
    """
    if not name or name == "HEAD" or name.startswith(REF_PREFIXES) or name.startswith("-"):
        return False
    if name.endswith(("/", ".")) or REF_FORBIDDEN.search(name) or not perm.storable_ref_name(name):
        return False
    if any(p.startswith(".") or p.endswith(".lock") for p in name.split("/")):
        return False
    return check_ref_format(Ref(f"heads/{name}".encode()))


def role_level(role: int | str) -> int:
    """Turn a role name (`developer`) or access level (30) into an access level."""
    if isinstance(role, bool):
        raise DomainError(f"unknown role {role!r}")
    if isinstance(role, int):
        if role not in perm.ROLE_NAMES.values():
            raise DomainError(f"unknown access level {role}")
        return role
    key = str(role).strip().lower().replace(" ", "_")
    if inputs.digits(key):
        return role_level(int(key))
    if key not in perm.ROLE_NAMES:
        raise DomainError(f"unknown role {role!r}; use one of {', '.join(perm.ROLE_NAMES)}")
    return perm.ROLE_NAMES[key]


# -- lookups ---------------------------------------------------------------------------

# GitLab numbers groups and personal namespaces in one sequence; forge keeps groups and users
# in separate tables, so a user's personal namespace takes this base plus the user's id and no
# namespace id names both a group and a user.
USER_NAMESPACE_BASE = 1_000_000


def user_namespace_id(user: User) -> int:
    """The namespace id of `user`'s personal namespace."""
    return USER_NAMESPACE_BASE + user.id


def namespace_by_id(key: object) -> Group | User | None:
    """The group or user (personal namespace) a namespace id names, or None."""
    found = by_id(Group, key)
    if found is None and isinstance(key, (int, str)) and inputs.digits(str(key)):
        number = int(key)
        if number > USER_NAMESPACE_BASE:
            return by_id(User, number - USER_NAMESPACE_BASE)
    return found


def by_id(model: type[Row], key: object) -> Row | None:
    """Find a row by a numeric id from outside; None when `key` is no id the table can hold.

    An id past the integer column's range is simply not found (as ActiveRecord answers),
    rather than an overflow inside the database driver.
    """
    if isinstance(key, bool):
        return None
    if isinstance(key, str):
        if not inputs.digits(key):
            return None
        key = int(key)
    if not isinstance(key, int) or not 0 < key <= MAX_ID:
        return None
    row: Row | None = db.session.get(model, key)
    return row


def user_by_username(username: str) -> User | None:
    """A user by username, without regard to case (GitLab's `User.by_username`, `iwhere`)."""
    user: User | None = db.session.scalar(
        select(User).where(func.lower(User.username) == username.lower()).order_by(User.id))
    return user


def user_by_login(login: str) -> User | None:
    """The user a login names (GitLab's `User.by_login`): an e-mail address when it has an
    `@`, else a username; either without regard to case."""
    if "@" in login:
        user: User | None = db.session.scalar(
            select(User).where(func.lower(User.email) == login.lower()).order_by(User.id))
        return user
    return user_by_username(login)


def get_user(username: str) -> User:
    """Find a user by username (any case), or raise NotFound."""
    user = user_by_username(username)
    if user is None:
        raise NotFound(f"user {username!r} does not exist")
    return user


def get_group(full_path: str) -> Group:
    """Find a group by full path, or raise NotFound."""
    group: Group | None = db.session.scalar(
        select(Group).where(Group.full_path == full_path.strip("/")))
    if group is None:
        raise NotFound(f"group {full_path!r} does not exist")
    return group


_PROJECT_BY_PATH = select(Project).where(Project.full_path == bindparam("path"))


def find_project(full_path: str) -> Project | None:
    """Find a project by full path (case-insensitively, as GitLab routes do)."""
    path = full_path.strip("/")
    project = db.session.scalar(_PROJECT_BY_PATH, {"path": path})
    if project is None:
        project = db.session.scalar(
            select(Project).where(db.func.lower(Project.full_path) == path.lower()))
    return project


def get_project(ref: str | int) -> Project:
    """Find a project by numeric id or full path, or raise NotFound."""
    project = None
    if isinstance(ref, int) or inputs.digits(str(ref)):
        project = by_id(Project, ref)
    else:
        project = find_project(str(ref))
    if project is None:
        raise NotFound(f"project {ref!r} does not exist")
    return project


_GROUPS_BY_PATH = select(Group.id).where(Group.full_path.in_(bindparam("paths", expanding=True)))


def _prefixes(full_path: str) -> list[str]:
    """`a`, `a/b`, `a/b/c` for `a/b/c`: the paths of a namespace and all its ancestors."""
    parts = full_path.split("/")
    return ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]


def ancestor_ids(group: Group | None) -> list[int]:
    """The ids of `group` and all its ancestors (groups are found by path, in one statement)."""
    return list(db.session.scalars(_GROUPS_BY_PATH, {"paths": _prefixes(group.full_path)})
                ) if group is not None else []


def namespace_paths(project: Project) -> list[str]:
    """The full paths of the project's group and all its ancestors (none in a user namespace)."""
    return _prefixes(project.full_path)[:-1] if project.group_id is not None else []


def namespace_group_ids(project: Project) -> frozenset[int]:
    """The ids of the project's group and all its ancestors, without loading the group."""
    paths = namespace_paths(project)
    return frozenset(db.session.scalars(_GROUPS_BY_PATH, {"paths": paths})) if paths else frozenset()


def descendants(group: Group) -> list[Group]:
    """The group and every group below it, parents before children."""
    found, level = [group], [group.id]
    while level:
        children = list(db.session.scalars(select(Group).where(Group.parent_id.in_(level))
                                           .order_by(Group.id)))
        found += children
        level = [child.id for child in children]
    return found


# -- users and tokens ------------------------------------------------------------------

def create_user(
    now: datetime,
    username: str,
    *,
    email: str | None = None,
    name: str | None = None,
    password: str | None = None,
    admin: bool = False,
    external: bool = False,
    state: str = "active",
    password_method: str = "pbkdf2:sha256:10000",
) -> User:
    """Create a user; usernames share the namespace with top-level groups."""
    check_path(username, "username")
    if state not in ("active", "blocked", "deactivated"):
        raise DomainError(f"unknown user state {state!r}; use active, blocked or deactivated")
    if user_by_username(username) is not None:
        raise Conflict(f"user {username!r} already exists")
    if db.session.scalar(select(Group).where(Group.full_path == username)) is not None:
        raise Conflict(f"{username!r} is already taken by a group")
    email = email or f"{username}@example.com"
    # GitLab compares e-mail addresses without case (User.by_any_email(email.downcase))
    if db.session.scalar(select(User).where(func.lower(User.email) == email.lower())) is not None:
        raise Conflict(f"e-mail {email!r} is already taken")
    user = User(
        username=username, email=email, name=name or username.title(), admin=admin,
        external=external, state=state, created_at=now,
        password_hash=generate_password_hash(password, method=password_method) if password else "",
    )
    db.session.add(user)
    db.session.flush()
    return user


def set_user_state(user: User, state: str) -> None:
    """Block, deactivate or re-activate a user."""
    if state not in ("active", "blocked", "deactivated"):
        raise DomainError(f"unknown user state {state!r}")
    user.state = state


def create_token(
    now: datetime,
    user: User,
    *,
    name: str = "token",
    scopes: Iterable[str] = ("api",),
    expires_at: datetime | None = None,
    token: str | None = None,
) -> tuple[PersonalAccessToken, str]:
    """Create a PAT for `user`; return it with its secret, which is not stored."""
    scopes = sorted(set(scopes))
    unknown = [s for s in scopes if s not in perm.PAT_SCOPES]
    if unknown or not scopes:
        raise DomainError(f"invalid token scopes {unknown or scopes!r} for token {name!r}")
    secret = token or new_personal_token()
    if len(secret) < 8:
        raise DomainError(f"token {name!r} is too short: use at least 8 characters")
    if db.session.scalar(select(PersonalAccessToken).where(
            PersonalAccessToken.token_digest == digest(secret))) is not None:
        raise Conflict(f"token {name!r}: that token value is already in use")
    pat = PersonalAccessToken(
        user_id=user.id, name=name, scopes=scopes, expires_at=expires_at, revoked=False,
        token_digest=digest(secret), created_at=now)
    db.session.add(pat)
    db.session.flush()
    return pat, secret


# -- groups and projects ---------------------------------------------------------------

def create_group(now: datetime, full_path: str, *, name: str | None = None,
                 visibility: str = "private") -> Group:
    """Create a group; its parent (all but the last segment) must exist."""
    parts = check_path(full_path, "group path")
    if visibility not in perm.VISIBILITIES:
        raise DomainError(f"unknown visibility {visibility!r} for group {full_path!r}")
    full = "/".join(parts)
    if db.session.scalar(select(Group).where(Group.full_path == full)) is not None:
        raise Conflict(f"group {full!r} already exists")
    parent = get_group("/".join(parts[:-1])) if len(parts) > 1 else None
    if parent is None and db.session.scalar(select(User).where(User.username == full)):
        raise Conflict(f"{full!r} is already taken by a user")
    if find_project(full) is not None:
        raise Conflict(f"{full!r} is already taken by a project")
    group = Group(parent=parent, path=parts[-1], name=name or parts[-1], full_path=full,
                  visibility=visibility, created_at=now)
    db.session.add(group)
    db.session.flush()
    return group


def update_group(group: Group, **changes: Any) -> None:
    """Change a group's name, description or visibility."""
    unknown = sorted(set(changes) - {"name", "description", "visibility"})
    if unknown:
        raise DomainError(f"cannot change {', '.join(unknown)} of group {group.full_path!r}")
    if "visibility" in changes and changes["visibility"] not in perm.VISIBILITIES:
        raise DomainError(f"unknown visibility {changes['visibility']!r}")
    for key, value in changes.items():
        setattr(group, key, value)


def create_project(
    now: datetime,
    backend: RepositoryBackend,
    full_path: str,
    *,
    name: str | None = None,
    visibility: str = "private",
    default_branch: str = "main",
    files: Mapping[str, FileContent] | None = None,
    protect_default_branch: bool = True,
    author: str = "Forge <forge@example.com>",
    lfs_files: Mapping[str, FileContent] | None = None,
    lfs: BlobStore | None = None,
    submodules: Mapping[str, str] | None = None,
) -> Project:
    """Create a project in a group or a user's namespace, with its bare repository.

    The default branch is protected like GitLab's default (maintainers push, nobody
    force-pushes). With `files`, the repository starts with one commit holding them;
    `lfs_files` are stored as LFS objects and committed as pointers tracked in
    `.gitattributes`; `submodules` maps a path to another forge project's URL (relative,
    like `../lib.git`, or absolute) and commits it at that project's default branch.
    """
    parts = check_path(full_path, "project path")
    if len(parts) < 2:
        raise DomainError(f"project path {full_path!r} needs a namespace: group/project or user/project")
    check_file_names(full_path, [*(files or {}), *(lfs_files or {}), *(submodules or {})])
    if visibility not in perm.VISIBILITIES:
        raise DomainError(f"unknown visibility {visibility!r} for project {full_path!r}")
    if not valid_ref_name(default_branch):
        raise DomainError(f"invalid default branch {default_branch!r} for project {full_path!r}")
    full = "/".join(parts)
    if find_project(full) is not None:
        raise Conflict(f"project {full!r} already exists")
    namespace = "/".join(parts[:-1])
    group = db.session.scalar(select(Group).where(Group.full_path == namespace))
    owner = None
    if group is None:
        owner = db.session.scalar(select(User).where(User.username == namespace))
        if owner is None:
            raise NotFound(f"namespace {namespace!r} of project {full!r} does not exist")
    if db.session.scalar(select(Group).where(Group.full_path == full)) is not None:
        raise Conflict(f"{full!r} is already taken by a group")
    project = Project(
        group=group, owner=owner, path=parts[-1], name=name or parts[-1], full_path=full,
        visibility=visibility, default_branch=default_branch, created_at=now)
    db.session.add(project)
    db.session.flush()
    if protect_default_branch:
        protect_branch(project, default_branch)
    tree: dict[str, TreeEntry] = dict(files or {})
    if submodules:  # first: a bad one leaves no LFS object stored
        tree.update(_submodule_entries(backend, project, submodules))
    if lfs_files:
        if lfs is None:
            raise DomainError("LFS files need the forge's LFS store")
        attributes = str(tree.get(".gitattributes", ""))
        for name, content in lfs_files.items():
            oid, size = lfs.put_bytes(content.encode() if isinstance(content, str) else content)
            link_lfs_object(now, project, oid, size)
            tree[name] = lfs_pointer(oid, size)
            attributes += f"{name.replace(' ', '[[:space:]]')} filter=lfs diff=lfs merge=lfs -text\n"
        tree[".gitattributes"] = attributes
    with backend.create(project.id, default_branch) as repo:
        if tree:
            commit_files(repo, default_branch, tree, author=author, timestamp=int(now.timestamp()))
    return project


def check_file_names(full_path: str, names: Iterable[str]) -> None:
    """Refuse repository content a git tree cannot hold, naming the file, before anything is made.

    A name is a path inside the repository: no `..`, `.` or `.git` part, no NUL byte or
    newline, not absolute, and no name may be both a file and a directory.
    """
    files: set[tuple[str, ...]] = set()
    for name in names:
        parts = tuple(name.split("/")) if isinstance(name, str) else ()
        if not parts or name.startswith("/") or any(
                p in ("", ".", "..", ".git") or "\x00" in p or "\n" in p for p in parts):
            raise DomainError(f"invalid file name {name!r} in the content of project {full_path!r}")
        files.add(parts)
    for parts in files:
        for end in range(1, len(parts)):
            if parts[:end] in files:
                raise DomainError(f"file name {'/'.join(parts)!r} in the content of project "
                                  f"{full_path!r}: {'/'.join(parts[:end])!r} is a file")


def submodule_target(project_path: str, url: str) -> str:
    """The full path of the forge project a submodule URL of `project_path` names:
    `../lib.git` beside it, or the path of an absolute URL. ValueError for no URL."""
    split = urlsplit(url)
    return (split.path if split.scheme else posixpath.normpath(
        posixpath.join(f"{project_path}.git", url))).strip("/").removesuffix(".git")


def _submodule_entries(backend: RepositoryBackend, project: Project,
                       submodules: Mapping[str, str]) -> dict[str, TreeEntry]:
    """`.gitmodules` and gitlinks for submodules that are other forge projects."""
    entries: dict[str, TreeEntry] = {}
    config = ""
    for path, url in submodules.items():
        try:
            target_path = submodule_target(project.full_path, url)
        except ValueError:  # `http://[::1`; not echoed, as a URL may carry a password
            raise DomainError(f"submodule {path!r}: not a valid URL") from None
        target = find_project(target_path)
        if target is None:
            raise NotFound(f"submodule {path!r}: project {target_path!r} does not exist")
        sha = backend.resolve(target.id, target.default_branch)
        if not sha:
            raise DomainError(f"submodule {path!r}: {target.full_path!r} has no commit on "
                              f"{target.default_branch!r} yet")
        entries[path] = Gitlink(sha)
        config += f'[submodule "{path}"]\n\tpath = {path}\n\turl = {url}\n'
    entries[".gitmodules"] = config
    return entries


def delete_project(backend: RepositoryBackend, project: Project) -> None:
    """Delete a project, its jobs, scope entries and repository."""
    db.session.delete(project)
    db.session.flush()
    backend.delete(project.id)


def update_project(project: Project, **changes: Any) -> None:
    """Change a project's visibility, default branch or job token settings."""
    allowed = {"visibility", "default_branch", "inbound_enabled", "outbound_enabled",
               "job_push_allowed", "lfs_enabled", "job_token_policies_enabled", "name",
               "description"}
    unknown = sorted(set(changes) - allowed)
    if unknown:
        raise DomainError(f"cannot change {', '.join(unknown)} of project {project.full_path!r}")
    if "visibility" in changes and changes["visibility"] not in perm.VISIBILITIES:
        raise DomainError(f"unknown visibility {changes['visibility']!r}")
    if "default_branch" in changes and not valid_ref_name(str(changes["default_branch"])):
        raise DomainError(f"invalid default branch {changes['default_branch']!r}")
    for key, value in changes.items():
        setattr(project, key, value)


def adopt_default_branch(project: Project, backend: RepositoryBackend) -> str | None:
    """After a push: when the project's default branch does not exist but others do (the
    first push to an empty project named another branch), the branch Gitaly names default
    (`main`, else `master`, else the first by name) becomes the default branch, as GitLab's
    BranchHooksService makes it: HEAD points at it and the default branch's protection
    moves to it. Returns the new name, or None when nothing changed."""
    repo_dir = backend.path_for(project.id)
    with ref_lock(repo_dir), open_repo(repo_dir) as repo:
        heads = sorted(name.decode(errors="replace")
                       for name in repo.refs.keys(base=Ref(b"refs/heads/")))
        if not heads or project.default_branch in heads:
            return None
        chosen = next((name for name in ("main", "master") if name in heads), heads[0])
        repo.refs.set_symbolic_ref(Ref(b"HEAD"), Ref(f"refs/heads/{chosen}".encode()))
    rules = {rule.name: rule for rule in db.session.scalars(select(ProtectedBranch).where(
        ProtectedBranch.project_id == project.id))}
    if project.default_branch in rules:  # GitLab protects the branch that came, not the one that did not
        if chosen in rules:
            db.session.delete(rules[project.default_branch])
        else:
            rules[project.default_branch].name = chosen
    project.default_branch = chosen
    return chosen


def set_member(user: User, target: Group | Project, role: int | str) -> Membership:
    """Add `user` to a group or project with `role`, or change their role there."""
    level = role_level(role)
    column = Membership.group_id if isinstance(target, Group) else Membership.project_id
    member = db.session.scalar(
        select(Membership).where(Membership.user_id == user.id, column == target.id))
    if member is None:
        member = _new_membership(user, target, level)
    member.access_level = level
    db.session.flush()
    return member


def _new_membership(user: User, target: Group | Project, level: int) -> Membership:
    member = Membership(user_id=user.id, access_level=level)
    if isinstance(target, Group):
        member.group_id = target.id
    else:
        member.project_id = target.id
    db.session.add(member)
    return member


def add_member(user: User, target: Group | Project, role: int | str) -> Membership:
    """Add `user` to a group or project with `role`; Conflict when they are a member already.

    Unlike `set_member` it never changes an existing role, so of two racing adds one
    creates the membership and the other is refused (here, or by the unique index).
    """
    level = role_level(role)
    column = Membership.group_id if isinstance(target, Group) else Membership.project_id
    if db.session.scalar(select(Membership.id).where(
            Membership.user_id == user.id, column == target.id)) is not None:
        raise Conflict("Member already exists")
    member = _new_membership(user, target, level)
    db.session.flush()
    return member


def remove_member(user: User, target: Group | Project) -> None:
    """Remove `user`'s direct membership of a group or project."""
    column = Membership.group_id if isinstance(target, Group) else Membership.project_id
    member = db.session.scalar(
        select(Membership).where(Membership.user_id == user.id, column == target.id))
    if member is None:
        raise NotFound(f"{user.username!r} is not a direct member of {target.full_path!r}")
    db.session.delete(member)


def protect_branch(project: Project, name: str, push_access_level: int | str = perm.MAINTAINER,
                   allow_force_push: bool = False, replace: bool = True,
                   merge_access_level: int | str | None = None) -> ProtectedBranch:
    """Protect a branch name or wildcard of `project`.

    An existing rule is replaced, or with `replace` false refused with Conflict (so of
    two racing creates one wins and the other is refused, here or by the unique index).
    """
    level = role_level(push_access_level)
    rule = db.session.scalar(select(ProtectedBranch).where(
        ProtectedBranch.project_id == project.id, ProtectedBranch.name == name))
    if rule is not None and not replace:
        raise Conflict(f"Protected branch '{name}' already exists")
    if rule is None:
        rule = ProtectedBranch(project_id=project.id, name=name)
        db.session.add(rule)
    rule.push_access_level = level
    rule.allow_force_push = allow_force_push
    rule.merge_access_level = None if merge_access_level is None else role_level(merge_access_level)
    db.session.flush()
    return rule


def unprotect_branch(project: Project, name: str) -> None:
    """Remove a protected branch rule."""
    rule = db.session.scalar(select(ProtectedBranch).where(
        ProtectedBranch.project_id == project.id, ProtectedBranch.name == name))
    if rule is None:
        raise NotFound(f"branch {name!r} of {project.full_path!r} is not protected")
    db.session.delete(rule)


# -- job token scope -------------------------------------------------------------------

def scope_links(project: Project, direction: str) -> list[ScopeLink]:
    """The project's job token scope entries, `inbound` (allowlist) or `outbound`, oldest first."""
    return list(db.session.scalars(select(ScopeLink).where(
        ScopeLink.project_id == project.id, ScopeLink.direction == direction
    ).order_by(ScopeLink.id)))


def check_policies(policies: Iterable[str]) -> list[str]:
    """Validate fine-grained job token policies."""
    policies = list(policies)
    unknown = sorted(set(policies) - perm.POLICIES)
    if unknown:
        raise DomainError(f"job_token_policies does not have a valid value: {', '.join(unknown)}")
    return policies


def allow_project(now: datetime, target: Project, source: Project, *,
                  default_permissions: bool = True,
                  job_token_policies: Iterable[str] = ()) -> ScopeLink:
    """Put `source` on `target`'s inbound allowlist."""
    if source.id == target.id:
        raise DomainError("Target project can't be the same as the source project")
    return _allow_inbound(now, target, "project", source.id, default_permissions,
                          job_token_policies)


def allow_group(now: datetime, target: Project, group: Group, *,
                default_permissions: bool = True,
                job_token_policies: Iterable[str] = ()) -> ScopeLink:
    """Put `group` (and so every project below it) on `target`'s inbound allowlist."""
    return _allow_inbound(now, target, "group", group.id, default_permissions, job_token_policies)


def _allow_inbound(now: datetime, target: Project, kind: str, source_id: int,
                   default_permissions: bool, job_token_policies: Iterable[str]) -> ScopeLink:
    column = f"source_{kind}_id"
    links = [link for link in scope_links(target, "inbound") if getattr(link, column) is not None]
    if any(getattr(link, column) == source_id for link in links):
        raise DomainError(f"This {kind} is already in the job token allowlist.")
    if len(links) >= MAX_ALLOWLIST:
        raise DomainError(f"The {kind} allowlist is limited to {MAX_ALLOWLIST} {kind}s.")
    link = ScopeLink(project_id=target.id, direction="inbound", **{column: source_id},
                     default_permissions=default_permissions,
                     job_token_policies=check_policies(job_token_policies), created_at=now)
    db.session.add(link)
    db.session.flush()
    return link


def allow_outbound(now: datetime, project: Project, target: Project) -> ScopeLink:
    """Add `target` to `project`'s legacy outbound scope."""
    if any(link.source_project_id == target.id for link in scope_links(project, "outbound")):
        raise DomainError("This project is already in the outbound job token scope.")
    link = ScopeLink(project_id=project.id, direction="outbound", source_project_id=target.id,
                     created_at=now)
    db.session.add(link)
    db.session.flush()
    return link


def disallow(target: Project, *, project: Project | None = None, group: Group | None = None) -> None:
    """Remove a project or group entry from `target`'s inbound allowlist."""
    for link in scope_links(target, "inbound"):
        if (project is not None and link.source_project_id == project.id) or (
                group is not None and link.source_group_id == group.id):
            db.session.delete(link)
            return
    raise NotFound("entry is not in the job token allowlist")


# -- LFS -------------------------------------------------------------------------------

def link_lfs_object(now: datetime, project: Project, oid: str, size: int) -> None:
    """Let `project` download the stored object `oid`."""
    exists = db.session.scalar(select(LfsObject.id).where(
        LfsObject.project_id == project.id, LfsObject.oid == oid))
    if exists is None:
        db.session.add(LfsObject(project_id=project.id, oid=oid, size=size, created_at=now))
        try:
            db.session.flush()
        except IntegrityError:  # a parallel upload of the same object linked it first
            db.session.rollback()


def lfs_objects(project: Project, oids: Iterable[str]) -> dict[str, int]:
    """Return the oids (with sizes) among `oids` that `project` has."""
    rows = db.session.execute(select(LfsObject.oid, LfsObject.size).where(
        LfsObject.project_id == project.id, LfsObject.oid.in_(list(oids))))
    return {oid: size for oid, size in rows}


class LockTaken(Conflict):
    """The path is locked already; `lock` is the existing lock."""

    def __init__(self, lock: LfsLock) -> None:
        super().__init__("already locked")
        self.lock = lock


def find_lock(project: Project, path: str) -> LfsLock | None:
    """The lock on `path` in `project`, if any."""
    lock: LfsLock | None = db.session.scalar(select(LfsLock).where(
        LfsLock.project_id == project.id, LfsLock.path == path))
    return lock


def create_lock(now: datetime, project: Project, user: User, path: str) -> LfsLock:
    """Lock `path`; raises LockTaken when someone holds it.

    Two requests may both find the path free; the database's unique index lets one
    insert win. The loser's session is rolled back (its transaction held nothing else
    worth keeping) and it gets LockTaken with the winner's lock, as GitLab's
    LockFileService answers RecordNotUnique.
    """
    existing = find_lock(project, path)
    if existing is not None:
        raise LockTaken(existing)
    project_id = project.id
    lock = LfsLock(project_id=project_id, path=path, user_id=user.id, created_at=now)
    db.session.add(lock)
    try:
        db.session.flush()
    except IntegrityError:
        db.session.rollback()
        winner = db.session.scalar(select(LfsLock).where(
            LfsLock.project_id == project_id, LfsLock.path == path))
        if winner is None:  # the winner unlocked meanwhile: still a conflict for this try
            raise Conflict("already locked") from None
        raise LockTaken(winner) from None
    return lock


def get_lock(project: Project, lock_id: str) -> LfsLock:
    """Find a lock of `project` by id, or raise NotFound."""
    lock = by_id(LfsLock, str(lock_id))
    if lock is None or lock.project_id != project.id:
        raise NotFound("Lock not found")
    return lock


def list_locks(project: Project, *, path: str | None = None, lock_id: str | None = None
               ) -> list[LfsLock]:
    """Return `project`'s locks, optionally only the one at `path` or with `lock_id`."""
    query = select(LfsLock).where(LfsLock.project_id == project.id).order_by(LfsLock.id)
    if path:
        query = query.where(LfsLock.path == path)
    if lock_id:
        found = by_id(LfsLock, lock_id)
        query = query.where(LfsLock.id == (found.id if found is not None else -1))
    return list(db.session.scalars(query))


# -- facts for the permission rules ----------------------------------------------------

# Statements every git request runs, built once: SQLAlchemy then skips building and
# hashing them per call, which costs more than running them.
_ROLE = select(func.max(Membership.access_level)).where(
    Membership.user_id == bindparam("user"),
    (Membership.project_id == bindparam("project"))
    | Membership.group_id.in_(select(Group.id).where(
        Group.full_path.in_(bindparam("namespaces", expanding=True)))))
_INBOUND_LINKS = select(
    ScopeLink.source_project_id, ScopeLink.source_group_id, ScopeLink.default_permissions,
    ScopeLink.job_token_policies,
).where(ScopeLink.project_id == bindparam("project"), ScopeLink.direction == "inbound"
        ).order_by(ScopeLink.id)
_RULES = select(
    ProtectedBranch.name, ProtectedBranch.push_access_level, ProtectedBranch.allow_force_push,
).where(ProtectedBranch.project_id == bindparam("project")).order_by(ProtectedBranch.id)


def project_facts(project: Project, user: User | perm.User | None,
                  backend: RepositoryBackend | None = None) -> perm.Project:
    """Gather what the permission rules need to know about `project` for `user` (a row, or
    the facts of a principal's user: only the id counts).

    Every git request comes here, so it reads columns, not ORM objects: two statements
    for an anonymous read, three for a user.
    """
    role = perm.NO_ACCESS
    if user is not None:
        role = db.session.scalar(_ROLE, {
            "user": user.id, "project": project.id, "namespaces": namespace_paths(project)},
        ) or perm.NO_ACCESS
    links = db.session.execute(_INBOUND_LINKS, {"project": project.id}).all()
    rules = db.session.execute(_RULES, {"project": project.id}).all()
    return perm.Project(
        id=project.id, path=project.path, full_path=project.full_path,
        visibility=project.visibility, default_branch=project.default_branch,
        has_repository=backend.exists(project.id) if backend is not None else True,
        role=role, personal_owner=user is not None and project.owner_id == user.id,
        inbound_enabled=project.inbound_enabled,
        allowlist_project_ids=frozenset(source for source, _, _, _ in links if source),
        allowlist_group_ids=frozenset(group for _, group, _, _ in links if group),
        job_push_allowed=project.job_push_allowed,
        protected_branches=tuple(perm.ProtectedBranch(*rule) for rule in rules),
        fine_grained=project.job_token_policies_enabled,
        allowlist_entries=tuple(
            (source, group, default, frozenset(policies or ()))
            for source, group, default, policies in links),
    )


def group_role(group: Group, user: User | None) -> int:
    """A user's role in a group: the highest of its and its ancestors' memberships."""
    if user is None:
        return perm.NO_ACCESS
    levels = db.session.scalars(select(Membership.access_level).where(
        Membership.user_id == user.id, Membership.group_id.in_(ancestor_ids(group))))
    return max(levels, default=perm.NO_ACCESS)


def user_facts(user: User) -> perm.User:
    """Describe `user` to the permission rules."""
    return perm.User(user.id, user.username, user.admin, user.external, user.state)


# -- the whole forge -------------------------------------------------------------------

def ensure_root(now: datetime, root_token: str, root_password: str = "",
                password_method: str = "pbkdf2:sha256:10000") -> User:
    """Make sure the admin `root` exists and `root_token` is one of its PATs."""
    root = db.session.scalar(select(User).where(User.username == "root"))
    if root is None:
        root = create_user(now, "root", email="admin@example.com", name="Administrator",
                           password=root_password or None, admin=True,
                           password_method=password_method)
    if root_token and db.session.scalar(select(PersonalAccessToken).where(
            PersonalAccessToken.token_digest == digest(root_token))) is None:
        create_token(now, root, name="forge-root", scopes=["api", "sudo", "admin_mode"],
                     token=root_token)
    return root


def reset(backend: RepositoryBackend, lfs: BlobStore | None = None) -> None:
    """Empty the forge, keeping the root user and its tokens."""
    for model in (Event, JobLog, JobArtifact, Job, Pipeline, Runner, LfsLock, LfsObject,
                  PackageFile, Release, ScopeLink, ProtectedBranch, Membership, Project, Group):
        db.session.execute(db.delete(model))
    root = db.session.scalar(select(User).where(User.username == "root"))
    keep = root.id if root is not None else -1
    db.session.execute(db.delete(PersonalAccessToken).where(PersonalAccessToken.user_id != keep))
    db.session.execute(db.delete(User).where(User.id != keep))
    restart_ids(db.session.connection(), [model.__tablename__ for model in (
        Event, JobArtifact, Job, Pipeline, Runner, LfsLock, LfsObject, PackageFile, Release,
        ScopeLink, ProtectedBranch, Membership, Project, Group, PersonalAccessToken, User)])
    backend.delete_all()
    if lfs is not None:
        lfs.delete_all()
