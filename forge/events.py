"""Read the decision log a page at a time, and keep it bounded.

`page(since, limit, **filters)` returns events newer than `since`, oldest first;
`prune(keep)` deletes all but the `keep` newest. Both run in an app context and leave
committing to the caller.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, delete, func, select

from forge.models import Event, db

DEFAULT_LIMIT = 1000
MAX_LIMIT = 10_000
MAX_ID = 2**63 - 1
FILTERS = {"method", "path", "credential", "username", "user_id", "job_id", "project",
           "project_id", "action", "ref", "allowed", "reason", "status", "message"}


@dataclass(frozen=True)
class Page:
    """Up to `limit` events, oldest first; `more` tells whether newer ones follow `next_since`."""

    events: list[dict[str, Any]]
    more: bool
    next_since: int


def page(since: int = 0, limit: int | None = DEFAULT_LIMIT, **filters: Any) -> Page:
    """Return the events with id > `since` that match `filters` (field=value), oldest first.

    `limit=None` returns them all (the fixture's `Forge.events()`); unknown filter names
    raise ValueError.
    """
    unknown = sorted(set(filters) - FILTERS)
    if unknown:
        raise ValueError(f"cannot filter events by {', '.join(unknown)}; "
                         f"use {', '.join(sorted(FILTERS))}")
    if any(isinstance(value, int) and not -MAX_ID - 1 <= value <= MAX_ID for value in filters.values()):
        return Page([], False, since)  # no row holds a number the integer columns cannot
    conditions: list[ColumnElement[bool]] = [Event.id > min(max(since, 0), MAX_ID)]
    conditions += [getattr(Event, name) == value for name, value in filters.items()]
    query = select(Event).where(*conditions).order_by(Event.id)
    if limit is not None:
        query = query.limit(limit + 1)
    rows = list(db.session.scalars(query))
    more = limit is not None and len(rows) > limit
    rows = rows[:limit] if limit is not None else rows
    return Page([row.to_dict() for row in rows], more, rows[-1].id if rows else since)


def prune(keep: int) -> int:
    """Delete all but the `keep` newest events; return how many were deleted."""
    if keep < 0:
        raise ValueError("keep must be 0 or more")
    query = delete(Event)
    if keep:
        newest_dropped = db.session.scalar(
            select(Event.id).order_by(Event.id.desc()).offset(keep).limit(1))
        if newest_dropped is None:
            return 0
        query = query.where(Event.id <= newest_dropped)
    deleted: int = db.session.execute(query).rowcount  # type: ignore[attr-defined]
    return deleted


def count() -> int:
    """Return how many events the log holds."""
    return db.session.scalar(select(func.count(Event.id))) or 0
