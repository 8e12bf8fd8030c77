"""Decide whether a principal may do an action to a project, as GitLab would.

This package is pure: it takes plain facts and returns a `Decision`. It imports no
Flask, SQLAlchemy, dulwich, clock or I/O, so the whole permission matrix runs as fast
unit tests. Every allow/deny rule of the forge lives here; callers only gather facts and
use the names exported below (`from forge import permissions as perm`).

- `core`: roles, principals, credentials, the shared messages and a job token's scopes;
- `git`: fetch, push and ref updates;
- `registry` and `lfs`: the registry's token endpoint, Git LFS batches and locks;
- `api`: the REST API's abilities and the control API;
- `runners`: running jobs, runners, job updates and artifacts.

The underscored helpers are the package's own, shared between its modules.
"""

from forge.permissions.api import *  # noqa: F403
from forge.permissions.core import *  # noqa: F403
from forge.permissions.git import *  # noqa: F403
from forge.permissions.lfs import *  # noqa: F403
from forge.permissions.registry import *  # noqa: F403
from forge.permissions.runners import *  # noqa: F403
