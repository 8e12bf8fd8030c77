"""A configuration tool built on python-gitlab, as teams write them: declare groups, subgroups,
projects, members and branch protections; apply; a second run changes nothing."""

from __future__ import annotations

from typing import Any

import gitlab
import pytest

from forge.testing import Forge

LEVELS = gitlab.const.AccessLevel
CONFIG: dict[str, Any] = {
    "groups": [
        {"path": "acme", "name": "Acme", "description": "Everything Acme builds"},
        {"path": "acme/platform", "name": "Platform", "description": "Shared libraries"},
    ],
    "projects": [
        {"path": "acme/app", "description": "The application",
         "members": {"dev": LEVELS.DEVELOPER, "lead": LEVELS.MAINTAINER},
         "protected_branches": {"main": (LEVELS.MAINTAINER, LEVELS.DEVELOPER),
                                "release/*": (LEVELS.NO_ACCESS, LEVELS.MAINTAINER)}},
        {"path": "acme/platform/lib", "description": "The library",
         "members": {"dev": LEVELS.REPORTER},
         "protected_branches": {"main": (LEVELS.DEVELOPER, LEVELS.DEVELOPER)}},
    ],
    "group_members": {"acme": {"lead": LEVELS.OWNER}},
}


def _namespace(gl: gitlab.Gitlab, path: str) -> Any | None:
    try:
        return gl.namespaces.get(path)
    except gitlab.GitlabGetError as exc:
        assert exc.response_code == 404
        return None


def apply(gl: gitlab.Gitlab, config: dict[str, Any]) -> list[str]:
    """Make the forge match `config`; return what was changed."""
    changes: list[str] = []
    for spec in config["groups"]:
        found = _namespace(gl, spec["path"])
        if found is None:
            parent, _, path = spec["path"].rpartition("/")
            data = {"name": spec["name"], "path": path, "description": spec["description"]}
            if parent:
                data["parent_id"] = gl.namespaces.get(parent).id
            gl.groups.create(data)
            changes.append(f"create group {spec['path']}")
            continue
        group = gl.groups.get(found.id)
        if group.description != spec["description"]:
            group.description = spec["description"]
            group.save()
            changes.append(f"describe group {spec['path']}")
    for group_path, members in config["group_members"].items():
        group = gl.groups.get(gl.namespaces.get(group_path).id)
        changes += _members(gl, group, group_path, members)
    for spec in config["projects"]:
        namespace, _, name = spec["path"].rpartition("/")
        try:
            project = gl.projects.get(spec["path"])
        except gitlab.GitlabGetError:
            project = gl.projects.create({"name": name, "path": name, "description": spec["description"],
                                          "namespace_id": gl.namespaces.get(namespace).id})
            changes.append(f"create project {spec['path']}")
        if project.description != spec["description"]:
            project.description = spec["description"]
            project.save()
            changes.append(f"describe project {spec['path']}")
        changes += _members(gl, project, spec["path"], spec["members"])
        for branch, (push, merge) in spec["protected_branches"].items():
            try:
                rule = project.protectedbranches.get(branch)
                levels = (rule.push_access_levels[0]["access_level"],
                          rule.merge_access_levels[0]["access_level"])
                if levels == (push, merge):
                    continue
                rule.delete()
            except gitlab.GitlabGetError:
                pass
            project.protectedbranches.create({"name": branch, "push_access_level": push,
                                              "merge_access_level": merge})
            changes.append(f"protect {spec['path']} {branch}")
    return changes


def _members(gl: gitlab.Gitlab, target: Any, label: str, members: dict[str, int]) -> list[str]:
    changes = []
    for username, level in members.items():
        user = gl.users.list(username=username)[0]
        try:
            member = target.members.get(user.id)
        except gitlab.GitlabGetError:
            target.members.create({"user_id": user.id, "access_level": level})
            changes.append(f"add {username} to {label}")
            continue
        if member.access_level != level:
            member.access_level = level
            member.save()
            changes.append(f"set {username} in {label}")
    return changes


@pytest.fixture
def gl(forge: Forge) -> gitlab.Gitlab:
    for name in ("dev", "lead"):
        forge.create_user(name)
    client = gitlab.Gitlab(forge.url, private_token=forge.root_token)
    client.auth()
    return client


def test_config_tool_applies_then_changes_nothing(forge: Forge, gl: gitlab.Gitlab) -> None:
    first = apply(gl, CONFIG)
    assert "create group acme/platform" in first and "create project acme/platform/lib" in first
    assert "protect acme/app release/*" in first
    assert apply(gl, CONFIG) == []  # idempotent: everything read back as it was set
    lib = gl.projects.get("acme/platform/lib")
    assert (lib.description, lib.namespace["full_path"]) == ("The library", "acme/platform")
    assert gl.groups.get(gl.namespaces.get("acme/platform").id).description == "Shared libraries"
    rule = gl.projects.get("acme/app").protectedbranches.get("release/*")
    assert (rule.push_access_levels[0]["access_level"], rule.merge_access_levels[0]["access_level"]) == (
        LEVELS.NO_ACCESS, LEVELS.MAINTAINER)
    assert gl.version()[0] == "18.3.0"


def test_config_tool_repairs_drift(forge: Forge, gl: gitlab.Gitlab) -> None:
    apply(gl, CONFIG)
    app = gl.projects.get("acme/app")
    app.description = "changed by hand"
    app.save()
    rule = app.protectedbranches.get("main")
    rule.delete()
    app.protectedbranches.create({"name": "main", "push_access_level": LEVELS.DEVELOPER})
    assert sorted(apply(gl, CONFIG)) == ["describe project acme/app", "protect acme/app main"]
    assert apply(gl, CONFIG) == []
