"""The filters and orders GitLab's project and group lists declare, checked as Grape checks them.

`/projects`, `/users/:id/projects` and `/groups/:id/projects` share lib/api/projects.rb's
parameters; `/groups`, `/groups/:id/subgroups` and `/descendant_groups` share
lib/api/groups.rb's. A Boolean that is not one of Grape's spellings, or a value outside
`values:`, is GitLab's 400 rather than a filter silently dropped. Forge has no archived,
starred or imported projects, so asking for only those lists none.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from forge import domain
from forge import permissions as perm
from forge.api import choice, flag, integer, not_a_value, text
from forge.models import Group, Project, User

PROJECT_ORDERS: dict[str, Callable[[Project], Any]] = {
    "id": lambda p: p.id, "name": lambda p: p.name.lower(), "path": lambda p: p.path.lower(),
    "created_at": lambda p: (p.created_at, p.id), "updated_at": lambda p: (p.created_at, p.id),
    "last_activity_at": lambda p: (p.created_at, p.id), "similarity": lambda p: p.id,
    "star_count": lambda p: p.id, "storage_size": lambda p: p.id, "repository_size": lambda p: p.id,
    "wiki_size": lambda p: p.id, "packages_size": lambda p: p.id,
}
PROJECT_FLAGS = ("simple", "statistics", "with_custom_attributes", "search_namespaces",
                 "with_issues_enabled", "with_merge_requests_enabled", "include_hidden",
                 "include_pending_delete", "wiki_checksum_failed", "repository_checksum_failed")
GROUP_ORDERS: dict[str, Callable[[Group], Any]] = {
    "name": lambda g: (g.name.lower(), g.id), "path": lambda g: (g.path.lower(), g.id),
    "id": lambda g: g.id, "similarity": lambda g: g.id,
}
GROUP_FLAGS = ("statistics", "with_custom_attributes", "all_available")


def _min_access_level(values: dict[str, Any]) -> int | None:
    level = integer(values, "min_access_level", required=False)
    if level is not None and level not in perm.ACCESS_LEVELS:
        not_a_value("min_access_level")
    return level


def _sorted(items: list[Any], values: dict[str, Any], orders: dict[str, Callable[[Any], Any]],
            order_by: str, sort: str) -> list[Any]:
    key = choice(values, "order_by", orders) or order_by
    descending = (choice(values, "sort", ("asc", "desc")) or sort) == "desc"
    return sorted(items, key=orders[key], reverse=descending)


def projects(found: list[Project], values: dict[str, Any], user: User | None) -> list[Project]:
    """Filter and order visible projects as GitLab's project lists do (newest first)."""
    for name in PROJECT_FLAGS:
        flag(values, name)
    # Project.search: path, name and description; the namespace too with search_namespaces
    in_namespaces = flag(values, "search_namespaces")
    archived, starred = flag(values, "archived"), flag(values, "starred")
    imported = flag(values, "imported")
    membership, owned = flag(values, "membership"), flag(values, "owned")
    visibility = choice(values, "visibility", perm.VISIBILITIES)
    search = text(values, "search")
    level = _min_access_level(values)
    if archived or starred or imported:  # forge has none of those
        return []

    def role(project: Project) -> int:
        return domain.project_facts(project, user).role if user is not None else perm.NO_ACCESS

    by_role = membership or level is not None  # a role costs a query: only when filtered by one
    kept = [p for p in found
            if (not search or search.lower() in "\n".join(
                (p.full_path if in_namespaces else p.path, p.name, p.description or "")).lower())
            and (visibility is None or p.visibility == visibility)
            and (not owned or (user is not None and p.owner_id == user.id))
            and (not by_role or perm.listed_by_role(role(p), level, membership=membership))]
    return _sorted(kept, values, PROJECT_ORDERS, "created_at", "desc")


def groups(found: list[Group], values: dict[str, Any], user: User | None) -> list[Group]:
    """Filter and order visible groups as GitLab's group lists do (by name)."""
    for name in GROUP_FLAGS:
        flag(values, name)
    owned, top_level = flag(values, "owned"), flag(values, "top_level_only")
    search = text(values, "search")
    level = _min_access_level(values)
    by_role = owned or level is not None
    kept = [g for g in found
            if (not search or search.lower() in f"{g.full_path} {g.name}".lower())
            and (not top_level or g.parent_id is None)
            and (not by_role or perm.listed_by_role(domain.group_role(g, user), level, owned=owned))]
    return _sorted(kept, values, GROUP_ORDERS, "name", "asc")
