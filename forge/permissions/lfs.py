"""Git LFS: batch operations and locks (spec section 4).
"""

from __future__ import annotations

from datetime import datetime

from forge.permissions.core import (
    MAINTAINER,
    Action,
    Decision,
    Kind,
    Principal,
    Project,
    _allow,
    _deny,
    effective_role,
)
from forge.permissions.git import authorize

LFS_FORBIDDEN = "Access forbidden. Check your access level."
LFS_NOT_FOUND = "Not found."


def authorize_lfs(principal: Principal, operation: str, project: Project | None, now: datetime,
                  base_url: str, lfs_enabled: bool = True) -> Decision:
    """Decide an LFS `download` or `upload` (batch, object transfer, locks).

    Download follows clone rights and upload push rights, except that a job token never
    uploads. Refusals are 401 as for git, else 403 when the caller may download and
    404 otherwise, with GitLab's LFS messages.
    """
    read = authorize(principal, Action.READ, project, now, base_url)
    if read.status == 401:
        return read
    if project is None or not lfs_enabled:
        return _deny("lfs_disabled" if project else read.reason, 404, LFS_NOT_FOUND)
    if operation == "download":
        return read if read.allowed else _deny(read.reason, 404, LFS_NOT_FOUND)
    push = authorize(principal, Action.PUSH, project, now, base_url)
    if push.status == 401:
        return push
    if principal.kind is Kind.JOB and read.allowed:
        push = _deny("job_token_lfs_upload", 403, LFS_FORBIDDEN)
    if push.allowed:
        return push
    if read.allowed:
        return _deny(push.reason, 403, LFS_FORBIDDEN)
    return _deny(read.reason, 404, LFS_NOT_FOUND)


def authorize_unlock(principal: Principal, project: Project, owner_id: int, path: str,
                     force: bool) -> Decision:
    """Decide removing an LFS lock, for a principal already allowed to upload."""
    user = principal.user
    if user is not None and user.id == owner_id:
        return _allow("own_lock")
    if not force:
        return _deny("locked_by_other", 403, f"{path} is locked by GitLab User {owner_id}")
    if effective_role(principal, project) < MAINTAINER:
        return _deny("insufficient_role", 403,
                     "You must have maintainer access to force delete a lock")
    return _allow("force_unlock")
