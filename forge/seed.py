"""Apply a seed scenario (users, groups, projects, scopes, jobs) described in YAML or JSON.

The same format serves `forge serve --seed`, `POST /-/forge/seed` and the pytest
plugin. Unknown keys and references to things that do not exist are errors naming
the offending entry; a scenario is applied whole or not at all.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

import yaml

from forge import domain, inputs, jobs
from forge.models import db
from forge.state import ForgeState
from forge.templates import TemplateError, read_template

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
JOB_KEYS = {"project", "user", "status", "ref", "name", "stage", "timeout", "token", "pipeline",
            "script", "image", "variables", "tags", "needs", "artifacts"}
MAX_JOB_TIMEOUT = 30 * 24 * 3600  # GitLab refuses job timeouts above a month
NO_TEMPLATES_DIR = ("this forge has no templates directory: start it with `forge serve "
                    "--templates-dir DIR` (or --seed FILE, whose directory is used), or send the "
                    "files inline under `files:`, as `forge seed FILE` does")


class SeedError(domain.DomainError):
    """The scenario is malformed or refers to something that does not exist."""


def load(text: str | bytes) -> dict[str, Any]:
    """Parse a scenario from YAML (JSON is YAML too)."""
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:  # where and what, never the text (it may hold a secret)
        mark = exc.problem_mark or exc.context_mark
        at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise SeedError(f"scenario is not valid YAML: {at}{exc.problem or exc.context}") from None
    except yaml.YAMLError:
        raise SeedError("scenario is not valid YAML") from None
    except RecursionError:
        raise SeedError("scenario is nested too deeply") from None
    except (ValueError, OverflowError):  # e.g. a date like 2030-02-30
        raise SeedError("scenario is not valid YAML: a value is out of range "
                        "(an impossible date or number)") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SeedError("scenario must be a mapping with users, groups, projects and jobs")
    return data


def load_file(path: Path) -> dict[str, Any]:
    """Read a scenario file."""
    return load(Path(path).read_text())


def _kind(value: Any) -> str:
    """Name a value's type for an error message (never the value: it may be a secret)."""
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, datetime | date):
        return "a date"
    kinds = {str: "a string", bytes: "binary data", int: "a number", float: "a number",
             list: "a list", dict: "a mapping"}
    return next((name for kind, name in kinds.items() if isinstance(value, kind)),
                type(value).__name__)


def _check_keys(entry: Any, allowed: set[str], where: str) -> dict[str, Any]:
    if not isinstance(entry, dict):
        raise SeedError(f"{where}: expected a mapping, got {_kind(entry)}")
    unknown = sorted(set(map(str, entry)) - allowed)
    if unknown:
        raise SeedError(f"{where}: unknown key {', '.join(map(repr, unknown))}; "
                        f"allowed: {', '.join(sorted(allowed))}")
    return entry


def _list(data: Mapping[str, Any], key: str, where: str) -> list[Any]:
    value = data.get(key) or []
    if not isinstance(value, list):
        raise SeedError(f"{where}{key}: expected a list, got {_kind(value)}")
    return value


def _text(value: Any, where: str) -> str:
    """A name, path or secret: a string (whole numbers are accepted as their digits)."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise SeedError(f"{where}: expected a string, got {_kind(value)}")


def _opt_secret(entry: Mapping[str, Any], key: str, where: str) -> str | None:
    """A password or token: a string only. YAML reads `password: 01234567` as the octal
    number 342391, and a secret must never quietly become another one."""
    value = entry.get(key)
    if value is None or isinstance(value, str):
        return value
    hint = " (quote it)" if isinstance(value, int | float) and not isinstance(value, bool) else ""
    raise SeedError(f"{where}.{key}: expected a string, got {_kind(value)}{hint}")


def _opt_text(entry: Mapping[str, Any], key: str, where: str, default: str | None = None
              ) -> str | None:
    value = entry.get(key)
    return default if value is None else _text(value, f"{where}.{key}")


def _required(entry: Mapping[str, Any], key: str, where: str) -> str:
    value = entry.get(key)
    if value is None or value == "":
        raise SeedError(f"{where}: {key} is missing")
    return _text(value, f"{where}.{key}")


def _flag(entry: Mapping[str, Any], key: str, where: str, default: bool) -> bool:
    value = entry.get(key, default)
    if not isinstance(value, bool):
        raise SeedError(f"{where}.{key}: expected true or false, got {_kind(value)}")
    return value


def _texts(value: Any, where: str) -> list[str]:
    if not isinstance(value, list):
        raise SeedError(f"{where}: expected a list of strings, got {_kind(value)}")
    return [_text(item, f"{where}[{i}]") for i, item in enumerate(value)]


def _role(value: Any, where: str) -> str | int:
    if isinstance(value, str | int) and not isinstance(value, bool):
        return value
    raise SeedError(f"{where}: expected a role name or access level, got {_kind(value)}")


def _members(value: Any, where: str) -> list[tuple[str, str | int]]:
    """Accept `{alice: developer}` or `[{user: alice, role: developer}]`."""
    if not value:
        return []
    if isinstance(value, dict):
        return [(_text(user, where), _role(role, f"{where}.{user}"))
                for user, role in value.items()]
    if isinstance(value, list):
        pairs = []
        for i, item in enumerate(value):
            item = _check_keys(item, {"user", "role"}, f"{where}[{i}]")
            pairs.append((_required(item, "user", f"{where}[{i}]"),
                          _role(item.get("role"), f"{where}[{i}].role")))
        return pairs
    raise SeedError(f"{where}: expected a mapping of user to role, got {_kind(value)}")


def _where(kind: str, index: int, entry: Any, key: str) -> str:
    """Name an entry for error messages: `projects[2] (acme/app)`."""
    if isinstance(entry, dict) and isinstance(entry.get(key), str) and entry[key]:
        return f"{kind}[{index}] ({entry[key]})"
    return f"{kind}[{index}]"


def parse_datetime(value: Any, where: str) -> datetime | None:
    """A date or time as a seed (or the fixture) takes it: a date, a datetime, or ISO 8601
    text; naive UTC. Anything else is a SeedError naming `where`."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.replace(tzinfo=None)
    if isinstance(value, date):
        return datetime.combine(value, time())
    if not isinstance(value, str):
        raise SeedError(f"{where}: expected a date (YYYY-MM-DD), got {_kind(value)}")
    try:
        return datetime.fromisoformat(value).replace(tzinfo=None)
    except ValueError:
        raise SeedError(f"{where}: not a date: use YYYY-MM-DD or an ISO 8601 time") from None


def job_timeout(value: Any) -> int:
    """Check a job timeout: whole seconds from 1 to 30 days; raise ValueError otherwise."""
    if isinstance(value, str) and inputs.digits(value.strip()):
        value = int(value)
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_JOB_TIMEOUT:
        raise ValueError(f"must be a whole number of seconds from 1 to {MAX_JOB_TIMEOUT}")
    return value


def check_file_name(name: Any, where: str) -> str:
    """A path inside a repository: relative, without `.`, `..` or `.git` segments."""
    if not isinstance(name, str):
        raise SeedError(f"{where}: file names are strings, got {_kind(name)}")
    if "\\" in name or "\0" in name or any(
            segment in ("", ".", "..") or segment.lower() == ".git" for segment in name.split("/")):
        raise SeedError(f"{where}: invalid file name {name!r}: use a relative path without "
                        "'.', '..' or '.git' segments")
    return name


def apply(state: ForgeState, scenario: Mapping[str, Any], templates_dir: Path | None = None
          ) -> dict[str, Any]:
    """Create everything `scenario` describes; return ids and generated secrets.

    `template:` entries name directories below `templates_dir` (the seed file's
    directory, or the server's templates directory); without one they are refused.
    The caller commits; on error the caller rolls back (repositories created on disk
    for this scenario are removed here).
    """
    created: list[int] = []
    try:
        return _apply(state, scenario, templates_dir, created)
    except domain.DomainError:
        for project_id in created:
            state.backend.delete(project_id)
        raise


def _creation_order(entries: list[tuple[int, Any]]) -> list[tuple[int, Any]]:
    """Projects in file order, except that each comes after the scenario's projects its
    submodules point at: their commits must exist when its first commit is made."""
    paths = {entry["path"].strip("/"): (i, entry) for i, entry in entries
             if isinstance(entry, Mapping) and isinstance(entry.get("path"), str)}
    order: list[tuple[int, Any]] = []
    state: dict[int, str] = {}

    def visit(i: int, entry: Any) -> None:
        if state.get(i) == "done":
            return
        if state.get(i) == "visiting":
            raise SeedError(f"{_where('projects', i, entry, 'path')}.submodules: "
                            "the scenario's submodules point at each other in a circle")
        state[i] = "visiting"
        submodules = entry.get("submodules") if isinstance(entry, Mapping) else None
        if isinstance(submodules, Mapping) and isinstance(entry.get("path"), str):
            for url in submodules.values():
                try:
                    target = domain.submodule_target(entry["path"].strip("/"), str(url))
                except ValueError:
                    continue  # reported when the project is created
                if target in paths:
                    visit(*paths[target])
        state[i] = "done"
        order.append((i, entry))

    for i, entry in entries:
        visit(i, entry)
    return order


def _apply(state: ForgeState, scenario: Mapping[str, Any], templates_dir: Path | None,
           created: list[int]) -> dict[str, Any]:
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
        user = named(where, domain.create_user, now, _required(entry, "username", where),
                     email=_opt_text(entry, "email", where), name=_opt_text(entry, "name", where),
                     password=_opt_secret(entry, "password", where),
                     admin=_flag(entry, "admin", where, False),
                     external=_flag(entry, "external", where, False),
                     state=_opt_text(entry, "state", where, "active"),
                     password_method=state.config.password_hash_method)
        tokens: dict[str, str] = {}
        for j, tok in enumerate(_list(entry, "tokens", f"{where}.")):
            twhere = f"{where}.tokens[{j}]"
            tok = _check_keys(tok, TOKEN_KEYS, twhere)
            name = _opt_text(tok, "name", twhere) or f"token-{j + 1}"
            scopes = _texts(tok["scopes"], f"{twhere}.scopes") if tok.get("scopes") else ["api"]
            pat, secret = named(twhere, domain.create_token, now, user, name=name, scopes=scopes,
                                expires_at=parse_datetime(tok.get("expires_at"), f"{twhere}.expires_at"),
                                token=_opt_secret(tok, "token", twhere))
            pat.revoked = _flag(tok, "revoked", twhere, False)
            tokens[name] = secret
        result["users"][user.username] = {"id": user.id, "tokens": tokens}

    groups = [(i, _check_keys(g, GROUP_KEYS, _where("groups", i, g, "path")))
              for i, g in enumerate(_list(scenario, "groups", ""))]
    for i, entry in groups:
        _required(entry, "path", _where("groups", i, entry, "path"))
    for i, entry in sorted(groups, key=lambda item: str(item[1]["path"]).count("/")):
        where = _where("groups", i, entry, "path")
        group = named(where, domain.create_group, now, _required(entry, "path", where),
                      name=_opt_text(entry, "name", where),
                      visibility=_opt_text(entry, "visibility", where, "private"))
        for username, role in _members(entry.get("members"), f"{where}.members"):
            named(f"{where}.members", lambda u=username, r=role, g=group: domain.set_member(
                domain.get_user(u), g, r))
        result["groups"][group.full_path] = group.id

    projects = []
    for i, entry in _creation_order(list(enumerate(_list(scenario, "projects", "")))):
        where = _where("projects", i, entry, "path")
        entry = _check_keys(entry, PROJECT_KEYS, where)
        path = _required(entry, "path", where)
        files = _files(entry, templates_dir, where)
        lfs_files = _contents(entry, "lfs_files", where)
        submodules = _submodules(entry, where)
        project = named(where, domain.create_project, now, state.backend, path,
                        name=_opt_text(entry, "name", where),
                        visibility=_opt_text(entry, "visibility", where, "private"),
                        default_branch=_opt_text(entry, "default_branch", where, "main"),
                        files=files, lfs_files=lfs_files, lfs=state.lfs, submodules=submodules)
        created.append(project.id)
        if "lfs_enabled" in entry:
            domain.update_project(project, lfs_enabled=_flag(entry, "lfs_enabled", where, True))
        for username, role in _members(entry.get("members"), f"{where}.members"):
            named(f"{where}.members", lambda u=username, r=role, p=project: domain.set_member(
                domain.get_user(u), p, r))
        for j, rule in enumerate(_list(entry, "protected_branches", f"{where}.")):
            bwhere = f"{where}.protected_branches[{j}]"
            rule = _check_keys(rule, BRANCH_KEYS, bwhere)
            named(bwhere, domain.protect_branch, project, _required(rule, "name", bwhere),
                  _role(rule.get("push_access_level", "maintainer"), f"{bwhere}.push_access_level"),
                  _flag(rule, "allow_force_push", bwhere, False))
        result["projects"][project.full_path] = project.id
        projects.append((where, project, entry))

    for where, project, entry in projects:
        _scope(state, project, entry.get("job_token_scope"), f"{where}.job_token_scope", named)

    pipelines: dict[tuple[int, str], Any] = {}  # jobs with one `pipeline:` label share one
    for i, entry in enumerate(_list(scenario, "jobs", "")):
        where = f"jobs[{i}]"
        entry = _check_keys(entry, JOB_KEYS, where)
        project = named(where, domain.get_project, _required(entry, "project", where))
        user = named(where, domain.get_user, _required(entry, "user", where))
        try:
            timeout = job_timeout(entry.get("timeout", 3600))
        except ValueError as exc:
            raise SeedError(f"{where}.timeout: {exc}") from None
        label = _opt_text(entry, "pipeline", where)
        shared = pipelines.get((project.id, label)) if label else None
        spec = named(where, _job_spec, entry, where)
        job, token = named(where, jobs.create_job, now, state.backend, project, user,
                           ref=_opt_text(entry, "ref", where),
                           name=_opt_text(entry, "name", where, "build"),
                           stage=_opt_text(entry, "stage", where, "test"), timeout=timeout,
                           status=_opt_text(entry, "status", where,
                                            None if jobs.is_runner_job(spec) else "running"),
                           token=_opt_secret(entry, "token", where), pipeline=shared, spec=spec,
                           seal=state.seal)
        if label:
            pipelines[(project.id, label)] = job.pipeline
        result["jobs"].append({"id": job.id, "project": project.full_path, "user": user.username,
                               "status": job.status, "token": token, "pipeline": job.pipeline_id})
    db.session.flush()
    return result


def _job_spec(entry: Mapping[str, Any], where: str) -> dict[str, Any] | None:
    """A seed job's runner definition (`script`, `image`, `variables`, `tags`, `needs`,
    `artifacts`), or None for a job the test runs itself."""
    if not any(entry.get(key) is not None for key in ("script", "image", "variables", "tags",
                                                       "needs", "artifacts")):
        return None
    variables = entry.get("variables") or {}
    if not isinstance(variables, dict):
        raise SeedError(f"{where}.variables: expected a mapping of name to value, got {_kind(variables)}")
    artifacts = entry.get("artifacts")
    if artifacts is not None and not isinstance(artifacts, dict):
        raise SeedError(f"{where}.artifacts: expected a mapping, got {_kind(artifacts)}")
    script = entry.get("script")
    return jobs.job_spec(
        script=None if script is None else script if isinstance(script, str)
        else _texts(script, f"{where}.script"),
        image=_opt_text(entry, "image", where), variables=variables,
        tags=_texts(entry.get("tags") or [], f"{where}.tags"),
        needs=_texts(entry.get("needs") or [], f"{where}.needs"), artifacts=artifacts)


def _contents(entry: Mapping[str, Any], key: str, where: str) -> dict[str, str | bytes] | None:
    """`{path: content}` with safe paths; content is text, binary data or a number."""
    value = entry.get(key) or {}
    if not isinstance(value, dict):
        raise SeedError(f"{where}.{key}: expected a mapping of file name to content, "
                        f"got {_kind(value)}")
    contents: dict[str, str | bytes] = {}
    for name, content in value.items():
        fwhere = f"{where}.{key}"
        check_file_name(name, fwhere)
        if isinstance(content, bool) or not isinstance(content, str | bytes | int | float):
            raise SeedError(f"{fwhere}[{name!r}]: expected the file's content, got {_kind(content)}")
        contents[name] = content if isinstance(content, str | bytes) else str(content)
    return contents or None


def _submodules(entry: Mapping[str, Any], where: str) -> dict[str, str] | None:
    value = entry.get("submodules") or {}
    if not isinstance(value, dict):
        raise SeedError(f"{where}.submodules: expected a mapping of path to URL, got {_kind(value)}")
    return {check_file_name(path, f"{where}.submodules"): _text(url, f"{where}.submodules[{path!r}]")
            for path, url in value.items()} or None


def _files(entry: Mapping[str, Any], templates_dir: Path | None, where: str
           ) -> dict[str, str | bytes] | None:
    files: dict[str, str | bytes] = {}
    if entry.get("template") is not None:
        if templates_dir is None:
            raise SeedError(f"{where}.template: {NO_TEMPLATES_DIR}")
        try:
            files.update(read_template(templates_dir, entry["template"]))
        except TemplateError as exc:
            raise SeedError(f"{where}.template: {exc}") from None
    files.update(_contents(entry, "files", where) or {})
    return files or None


def inline_templates(scenario: Mapping[str, Any], templates_dir: Path) -> dict[str, Any]:
    """Return `scenario` with each project's `template:` read (below `templates_dir`) into `files:`.

    What `forge seed FILE` sends, so a server needs no access to the client's files.
    """
    result = dict(scenario)
    projects = result.get("projects")
    if not isinstance(projects, list):
        return result
    result["projects"] = []
    for i, entry in enumerate(projects):
        if isinstance(entry, dict) and entry.get("template") is not None:
            where = _where("projects", i, entry, "path")
            entry = dict(entry)
            files: dict[str, Any] = dict(_files(entry, templates_dir, where) or {})
            del entry["template"]
            entry["files"] = {name: _as_text(content) for name, content in files.items()}
        result["projects"].append(entry)
    return result


def _as_text(content: str | bytes) -> str | bytes:
    if isinstance(content, bytes):
        try:
            return content.decode()
        except UnicodeDecodeError:
            return content
    return content


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
            changes[attr] = _flag(scope, key, where, False)
    domain.update_project(project, **changes)
    allowlist = _check_keys(scope.get("allowlist") or {}, ALLOWLIST_KEYS, f"{where}.allowlist")
    for kind in ("projects", "groups"):
        for j, item in enumerate(_list(allowlist, kind, f"{where}.allowlist.")):
            ewhere = f"{where}.allowlist.{kind}[{j}]"
            if isinstance(item, str):
                item = {"path": item}
            item = _check_keys(item, ENTRY_KEYS, ewhere)
            path = _required(item, "path", ewhere)
            policies = item.get("job_token_policies") or []
            options = {"default_permissions": _flag(item, "default_permissions", ewhere, True),
                       "job_token_policies": _texts(policies, f"{ewhere}.job_token_policies")}
            if kind == "projects":
                source = named(ewhere, domain.get_project, path)
                named(ewhere, domain.allow_project, now, project, source, **options)
            else:
                group = named(ewhere, domain.get_group, path)
                named(ewhere, domain.allow_group, now, project, group, **options)
    for j, path in enumerate(_list(scope, "outbound", f"{where}.")):
        target = named(f"{where}.outbound[{j}]", domain.get_project,
                       _text(path, f"{where}.outbound[{j}]"))
        named(f"{where}.outbound[{j}]", domain.allow_outbound, now, project, target)
