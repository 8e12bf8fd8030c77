"""Apply a seed scenario (users, groups, projects, scopes, jobs) described in YAML or JSON.

The same format serves `forge serve --seed`, `POST /-/forge/seed` and the pytest
plugin. Unknown keys and references to things that do not exist are errors naming
the offending entry; a scenario is applied whole or not at all.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

import yaml

from forge import domain
from forge.models import db
from forge.repos import read_directory
from forge.state import ForgeState

TOP_KEYS = {"users", "groups", "projects", "jobs"}
USER_KEYS = {"username", "email", "name", "password", "admin", "external", "state", "tokens"}
TOKEN_KEYS = {"name", "scopes", "token", "expires_at", "revoked"}
GROUP_KEYS = {"path", "name", "visibility", "members"}
PROJECT_KEYS = {"path", "name", "visibility", "default_branch", "members", "protected_branches",
                "files", "template", "job_token_scope", "lfs_files", "lfs_enabled", "submodules"}
BRANCH_KEYS = {"name", "push_access_level", "allow_force_push"}
SCOPE_KEYS = {"inbound_enabled", "outbound_enabled", "push_repository_allowed",
              "fine_grained_permissions",
              "ci_push_repository_for_job_token_allowed", "allowlist", "outbound"}
ALLOWLIST_KEYS = {"projects", "groups"}
ENTRY_KEYS = {"path", "default_permissions", "job_token_policies"}
JOB_KEYS = {"project", "user", "status", "ref", "name", "stage", "timeout", "token"}


class SeedError(domain.DomainError):
    """The scenario is malformed or refers to something that does not exist."""


def load(text: str | bytes) -> dict[str, Any]:
    """Parse a scenario from YAML (JSON is YAML too)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SeedError(f"scenario is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SeedError("scenario must be a mapping with users, groups, projects and jobs")
    return data


def load_file(path: Path) -> dict[str, Any]:
    """Read a scenario file."""
    return load(Path(path).read_text())


def _check_keys(entry: Any, allowed: set[str], where: str) -> dict[str, Any]:
    if not isinstance(entry, dict):
        raise SeedError(f"{where}: expected a mapping, got {type(entry).__name__}")
    unknown = sorted(set(entry) - allowed)
    if unknown:
        raise SeedError(f"{where}: unknown key {', '.join(map(repr, unknown))}; "
                        f"allowed: {', '.join(sorted(allowed))}")
    return entry


def _list(data: Mapping[str, Any], key: str, where: str) -> list[Any]:
    value = data.get(key) or []
    if not isinstance(value, list):
        raise SeedError(f"{where}{key}: expected a list")
    return value


def _members(value: Any, where: str) -> list[tuple[Any, Any]]:
    """Accept `{alice: developer}` or `[{user: alice, role: developer}]`."""
    if not value:
        return []
    if isinstance(value, dict):
        return list(value.items())
    if isinstance(value, list):
        pairs = []
        for i, item in enumerate(value):
            item = _check_keys(item, {"user", "role"}, f"{where}[{i}]")
            pairs.append((item.get("user"), item.get("role")))
        return pairs
    raise SeedError(f"{where}: expected a mapping of user to role")


def _where(kind: str, index: int, entry: Any, key: str) -> str:
    """Name an entry for error messages: `projects[2] (acme/app)`."""
    if isinstance(entry, dict) and entry.get(key):
        return f"{kind}[{index}] ({entry[key]})"
    return f"{kind}[{index}]"


def _datetime(value: Any, where: str) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.replace(tzinfo=None)
    if isinstance(value, date):
        return datetime.combine(value, time())
    try:
        return datetime.fromisoformat(str(value)).replace(tzinfo=None)
    except ValueError:
        raise SeedError(f"{where}: {value!r} is not a date") from None


def apply(state: ForgeState, scenario: Mapping[str, Any], base_dir: Path | None = None
          ) -> dict[str, Any]:
    """Create everything `scenario` describes; return ids and generated secrets.

    The caller commits; on error the caller rolls back (repositories created on disk
    for this scenario are removed here).
    """
    created: list[int] = []
    try:
        return _apply(state, scenario, base_dir or Path.cwd(), created)
    except domain.DomainError:
        for project_id in created:
            state.backend.delete(project_id)
        raise


def _apply(state: ForgeState, scenario: Mapping[str, Any], base_dir: Path, created: list[int]
           ) -> dict[str, Any]:
    now = state.now()
    _check_keys(scenario, TOP_KEYS, "scenario")
    result: dict[str, Any] = {"users": {}, "groups": {}, "projects": {}, "jobs": []}

    def named(where: str, action: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return action(*args, **kwargs)
        except SeedError:
            raise
        except domain.DomainError as exc:
            raise SeedError(f"{where}: {exc}") from None

    for i, entry in enumerate(_list(scenario, "users", "")):
        where = _where("users", i, entry, "username")
        entry = _check_keys(entry, USER_KEYS, where)
        if not entry.get("username"):
            raise SeedError(f"{where}: username is missing")
        user = named(where, domain.create_user, now, str(entry["username"]),
                     email=entry.get("email"), name=entry.get("name"),
                     password=entry.get("password"), admin=bool(entry.get("admin", False)),
                     external=bool(entry.get("external", False)),
                     state=entry.get("state", "active"),
                     password_method=state.config.password_hash_method)
        tokens: dict[str, str] = {}
        for j, tok in enumerate(_list(entry, "tokens", f"{where}.")):
            twhere = f"{where}.tokens[{j}]"
            tok = _check_keys(tok, TOKEN_KEYS, twhere)
            name = str(tok.get("name") or f"token-{j + 1}")
            pat, secret = named(twhere, domain.create_token, now, user, name=name,
                                scopes=tok.get("scopes") or ["api"],
                                expires_at=_datetime(tok.get("expires_at"), twhere),
                                token=tok.get("token"))
            pat.revoked = bool(tok.get("revoked", False))
            tokens[name] = secret
        result["users"][user.username] = {"id": user.id, "tokens": tokens}

    groups = [(i, _check_keys(g, GROUP_KEYS, _where("groups", i, g, "path")))
              for i, g in enumerate(_list(scenario, "groups", ""))]
    for i, entry in sorted(groups, key=lambda item: str(item[1].get("path", "")).count("/")):
        where = _where("groups", i, entry, "path")
        if not entry.get("path"):
            raise SeedError(f"{where}: path is missing")
        group = named(where, domain.create_group, now, str(entry["path"]), name=entry.get("name"),
                      visibility=entry.get("visibility", "private"))
        for username, role in _members(entry.get("members"), f"{where}.members"):
            named(f"{where}.members", lambda u=username, r=role, g=group: domain.set_member(
                domain.get_user(str(u)), g, r))
        result["groups"][group.full_path] = group.id

    projects = []
    for i, entry in enumerate(_list(scenario, "projects", "")):
        where = _where("projects", i, entry, "path")
        entry = _check_keys(entry, PROJECT_KEYS, where)
        if not entry.get("path"):
            raise SeedError(f"{where}: path is missing")
        files = _files(entry, base_dir, where)
        lfs_files = _mapping(entry, "lfs_files", where)
        submodules = _mapping(entry, "submodules", where)
        project = named(where, domain.create_project, now, state.backend, str(entry["path"]),
                        name=entry.get("name"), visibility=entry.get("visibility", "private"),
                        default_branch=entry.get("default_branch", "main"), files=files,
                        lfs_files=lfs_files, lfs=state.lfs, submodules=submodules)
        if "lfs_enabled" in entry:
            domain.update_project(project, lfs_enabled=bool(entry["lfs_enabled"]))
        created.append(project.id)
        for username, role in _members(entry.get("members"), f"{where}.members"):
            named(f"{where}.members", lambda u=username, r=role, p=project: domain.set_member(
                domain.get_user(str(u)), p, r))
        for j, rule in enumerate(_list(entry, "protected_branches", f"{where}.")):
            bwhere = f"{where}.protected_branches[{j}]"
            rule = _check_keys(rule, BRANCH_KEYS, bwhere)
            if not rule.get("name"):
                raise SeedError(f"{bwhere}: name is missing")
            named(bwhere, domain.protect_branch, project, str(rule["name"]),
                  rule.get("push_access_level", "maintainer"),
                  bool(rule.get("allow_force_push", False)))
        result["projects"][project.full_path] = project.id
        projects.append((where, project, entry))

    for where, project, entry in projects:
        _scope(state, project, entry.get("job_token_scope"), f"{where}.job_token_scope", named)

    for i, entry in enumerate(_list(scenario, "jobs", "")):
        where = f"jobs[{i}]"
        entry = _check_keys(entry, JOB_KEYS, where)
        for key in ("project", "user"):
            if not entry.get(key):
                raise SeedError(f"{where}: {key} is missing")
        project = named(where, domain.get_project, str(entry["project"]))
        user = named(where, domain.get_user, str(entry["user"]))
        job, token = named(where, domain.create_job, now, state.backend, project, user,
                           ref=entry.get("ref"), name=entry.get("name", "build"),
                           stage=entry.get("stage", "test"),
                           timeout=int(entry.get("timeout", 3600)),
                           status=entry.get("status", "running"), token=entry.get("token"))
        result["jobs"].append({"id": job.id, "project": project.full_path, "user": user.username,
                               "status": job.status, "token": token})
    db.session.flush()
    return result


def _mapping(entry: Mapping[str, Any], key: str, where: str) -> dict[str, str] | None:
    value = entry.get(key) or {}
    if not isinstance(value, dict):
        raise SeedError(f"{where}.{key}: expected a mapping of path to content or URL")
    return {str(k): str(v) for k, v in value.items()} or None


def _files(entry: Mapping[str, Any], base_dir: Path, where: str) -> dict[str, Any] | None:
    files: dict[str, Any] = {}
    if entry.get("template"):
        template = (base_dir / str(entry["template"])).resolve()
        try:
            files.update(read_directory(template))
        except ValueError as exc:
            raise SeedError(f"{where}.template: {exc}") from None
    inline = entry.get("files") or {}
    if not isinstance(inline, dict):
        raise SeedError(f"{where}.files: expected a mapping of file name to content")
    files.update({str(k): v if isinstance(v, bytes) else str(v) for k, v in inline.items()})
    return files or None


def _scope(state: ForgeState, project: Any, scope: Any, where: str, named: Any) -> None:
    if not scope:
        return
    scope = _check_keys(scope, SCOPE_KEYS, where)
    now = state.now()
    changes = {}
    for key, attr in (("inbound_enabled", "inbound_enabled"),
                      ("outbound_enabled", "outbound_enabled"),
                      ("push_repository_allowed", "job_push_allowed"),
                      ("ci_push_repository_for_job_token_allowed", "job_push_allowed"),
                      ("fine_grained_permissions", "job_token_policies_enabled")):
        if key in scope:
            changes[attr] = bool(scope[key])
    domain.update_project(project, **changes)
    allowlist = _check_keys(scope.get("allowlist") or {}, ALLOWLIST_KEYS, f"{where}.allowlist")
    for kind in ("projects", "groups"):
        for j, item in enumerate(_list(allowlist, kind, f"{where}.allowlist.")):
            ewhere = f"{where}.allowlist.{kind}[{j}]"
            if isinstance(item, str):
                item = {"path": item}
            item = _check_keys(item, ENTRY_KEYS, ewhere)
            options = {"default_permissions": bool(item.get("default_permissions", True)),
                       "job_token_policies": list(item.get("job_token_policies") or [])}
            if kind == "projects":
                source = named(ewhere, domain.get_project, str(item.get("path")))
                named(ewhere, domain.allow_project, now, project, source, **options)
            else:
                group = named(ewhere, domain.get_group, str(item.get("path")))
                named(ewhere, domain.allow_group, now, project, group, **options)
    for j, path in enumerate(_list(scope, "outbound", f"{where}.")):
        target = named(f"{where}.outbound[{j}]", domain.get_project, str(path))
        named(f"{where}.outbound[{j}]", domain.allow_outbound, now, project, target)
