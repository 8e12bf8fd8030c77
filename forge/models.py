"""The forge's data: users, tokens, groups, projects, memberships, jobs and the decision log.

Models hold data only: they never commit and never read the clock. Secrets are stored
as SHA-256 digests (tokens) or salted hashes (passwords), never raw.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import (
    JSON,
    BigInteger,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, registry, relationship
from sqlalchemy.types import TypeEngine


class Base(DeclarativeBase):
    """Declarative base shared by every model.

    Integers are 64-bit on PostgreSQL, as SQLite's are (and GitLab's ids): an id from
    outside up to 2**63-1 is looked up, never an overflow in the driver.
    """

    registry = registry(type_annotation_map={int: BigInteger().with_variant(Integer(), "sqlite")})


db = SQLAlchemy(model_class=Base)


def Chars(length: int) -> TypeEngine[str]:  # noqa: N802 - reads as the type it is
    """VARCHAR(length) on SQLite, which never enforces it; TEXT on PostgreSQL, which would.

    forge checks lengths where GitLab does; elsewhere both databases store what they are
    given, so a long value behaves the same on either.
    """
    return String(length).with_variant(Text(), "postgresql")


class User(db.Model):  # type: ignore[name-defined,misc]
    """A person who signs in with a password or tokens."""

    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(Chars(255), unique=True)
    email: Mapped[str] = mapped_column(Chars(255), unique=True)
    name: Mapped[str] = mapped_column(Chars(255), default="")
    password_hash: Mapped[str] = mapped_column(Chars(255), default="")
    admin: Mapped[bool] = mapped_column(default=False)
    external: Mapped[bool] = mapped_column(default=False)
    state: Mapped[str] = mapped_column(Chars(20), default="active")
    created_at: Mapped[datetime]
    # `/user/status`: {"message", "emoji", "availability", "clear_status_at"}; None when unset
    status: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class PersonalAccessToken(db.Model):  # type: ignore[name-defined,misc]
    """A user's personal access token, kept as a digest."""

    __tablename__ = "personal_access_tokens"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(Chars(255))
    scopes: Mapped[list[str]] = mapped_column(JSON)
    expires_at: Mapped[datetime | None]
    revoked: Mapped[bool] = mapped_column(default=False)
    token_digest: Mapped[str] = mapped_column(Chars(64), unique=True)
    created_at: Mapped[datetime]
    user: Mapped[User] = relationship()


class Group(db.Model):  # type: ignore[name-defined,misc]
    """A group; `parent_id` nests it inside another to any depth."""

    __tablename__ = "groups"
    id: Mapped[int] = mapped_column(primary_key=True)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("groups.id", ondelete="CASCADE"))
    path: Mapped[str] = mapped_column(Chars(255))
    name: Mapped[str] = mapped_column(Chars(255))
    full_path: Mapped[str] = mapped_column(Chars(1024), unique=True)
    visibility: Mapped[str] = mapped_column(Chars(10), default="private")
    created_at: Mapped[datetime]
    description: Mapped[str | None] = mapped_column(Chars(2000))
    parent: Mapped[Group | None] = relationship(remote_side=[id])


class Project(db.Model):  # type: ignore[name-defined,misc]
    """A project with one bare repository, in a group or in a user's namespace."""

    __tablename__ = "projects"
    id: Mapped[int] = mapped_column(primary_key=True)
    group_id: Mapped[int | None] = mapped_column(ForeignKey("groups.id", ondelete="CASCADE"))
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    path: Mapped[str] = mapped_column(Chars(255))
    name: Mapped[str] = mapped_column(Chars(255))
    full_path: Mapped[str] = mapped_column(Chars(1024), unique=True)
    visibility: Mapped[str] = mapped_column(Chars(10), default="private")
    default_branch: Mapped[str] = mapped_column(Chars(255), default="main")
    inbound_enabled: Mapped[bool] = mapped_column(default=True)
    outbound_enabled: Mapped[bool] = mapped_column(default=False)
    job_push_allowed: Mapped[bool] = mapped_column(default=False)
    lfs_enabled: Mapped[bool] = mapped_column(default=True)
    job_token_policies_enabled: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime]
    description: Mapped[str | None] = mapped_column(Chars(2000))
    group: Mapped[Group | None] = relationship()
    owner: Mapped[User | None] = relationship()


class Membership(db.Model):  # type: ignore[name-defined,misc]
    """A user's access level in exactly one group or one project."""

    __tablename__ = "memberships"
    # A unique constraint over nullable columns lets rows with NULLs repeat, so two
    # racing requests could both add the member; partial unique indexes cannot be raced.
    __table_args__ = (
        UniqueConstraint("user_id", "group_id", "project_id"),
        Index("ix_memberships_user", "user_id"),
        Index("uq_memberships_project", "user_id", "project_id", unique=True,
              sqlite_where=text("project_id IS NOT NULL"),
              postgresql_where=text("project_id IS NOT NULL")),
        Index("uq_memberships_group", "user_id", "group_id", unique=True,
              sqlite_where=text("group_id IS NOT NULL"), postgresql_where=text("group_id IS NOT NULL")),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    group_id: Mapped[int | None] = mapped_column(ForeignKey("groups.id", ondelete="CASCADE"))
    project_id: Mapped[int | None] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    access_level: Mapped[int]
    user: Mapped[User] = relationship()


class ProtectedBranch(db.Model):  # type: ignore[name-defined,misc]
    """A protected branch rule of a project (a name or a `*` wildcard)."""

    __tablename__ = "protected_branches"
    __table_args__ = (UniqueConstraint("project_id", "name"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(Chars(255))
    push_access_level: Mapped[int] = mapped_column(default=40)
    allow_force_push: Mapped[bool] = mapped_column(default=False)
    # who may merge (GitLab's merge_access_level); forge has no merge requests, it is kept
    # and shown so configuration tools see what they set. None: maintainers (GitLab's default).
    merge_access_level: Mapped[int | None]


class ScopeLink(db.Model):  # type: ignore[name-defined,misc]
    """One entry of a project's job token scope.

    `direction` is `inbound` (target `project_id` admits jobs of `source_project_id`
    or of projects below `source_group_id`) or `outbound` (legacy: jobs of
    `project_id` may reach `source_project_id`).
    """

    __tablename__ = "job_token_scope_links"
    __table_args__ = (
        UniqueConstraint("project_id", "direction", "source_project_id", "source_group_id"),
        Index("uq_scope_links_project", "project_id", "direction", "source_project_id", unique=True,
              sqlite_where=text("source_project_id IS NOT NULL"),
              postgresql_where=text("source_project_id IS NOT NULL")),
        Index("uq_scope_links_group", "project_id", "direction", "source_group_id", unique=True,
              sqlite_where=text("source_group_id IS NOT NULL"),
              postgresql_where=text("source_group_id IS NOT NULL")),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    direction: Mapped[str] = mapped_column(Chars(10), default="inbound")
    source_project_id: Mapped[int | None] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"))
    source_group_id: Mapped[int | None] = mapped_column(ForeignKey("groups.id", ondelete="CASCADE"))
    default_permissions: Mapped[bool] = mapped_column(default=True)
    job_token_policies: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime]


class LfsObject(db.Model):  # type: ignore[name-defined,misc]
    """An LFS object a project may download: content-addressed, stored once on disk."""

    __tablename__ = "lfs_objects"
    __table_args__ = (UniqueConstraint("project_id", "oid"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    oid: Mapped[str] = mapped_column(Chars(64))
    size: Mapped[int]
    created_at: Mapped[datetime]


class LfsLock(db.Model):  # type: ignore[name-defined,misc]
    """A file lock taken with `git lfs lock`."""

    __tablename__ = "lfs_locks"
    __table_args__ = (UniqueConstraint("project_id", "path"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    path: Mapped[str] = mapped_column(Chars(4096))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    created_at: Mapped[datetime]
    user: Mapped[User] = relationship()


class PackageFile(db.Model):  # type: ignore[name-defined,misc]
    """A file of a generic package (`/packages/generic/:name/:version/:file`).

    Uploading the same file name again adds a row, as GitLab does; downloads take the newest.
    """

    __tablename__ = "package_files"
    __table_args__ = (Index("ix_package_files_lookup", "project_id", "name", "version", "file_name"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(Chars(255))
    version: Mapped[str] = mapped_column(Chars(255))
    file_name: Mapped[str] = mapped_column(Chars(255))
    size: Mapped[int]
    sha256: Mapped[str] = mapped_column(Chars(64))
    created_at: Mapped[datetime]


class Release(db.Model):  # type: ignore[name-defined,misc]
    """A release of a project, tied to a tag."""

    __tablename__ = "releases"
    __table_args__ = (UniqueConstraint("project_id", "tag_name"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    tag_name: Mapped[str] = mapped_column(Chars(255))
    name: Mapped[str] = mapped_column(Chars(255))
    description: Mapped[str] = mapped_column(Chars(65535), default="")
    sha: Mapped[str] = mapped_column(Chars(64))
    author_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime]
    released_at: Mapped[datetime | None]  # None: created_at (a release from before the column)
    # asset links: [{"id", "name", "url", "link_type", "direct_asset_path"}]; None when none
    links: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    author: Mapped[User | None] = relationship()


class Pipeline(db.Model):  # type: ignore[name-defined,misc]
    """A pipeline: the commit its jobs run for, pinned by `refs/pipelines/<id>`."""

    __tablename__ = "pipelines"
    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    iid: Mapped[int]  # numbered per project, as CI_PIPELINE_IID
    ref: Mapped[str] = mapped_column(Chars(1024))
    sha: Mapped[str] = mapped_column(Chars(64), default="")
    source: Mapped[str] = mapped_column(Chars(40), default="push")
    created_at: Mapped[datetime]
    tag: Mapped[bool | None]  # `ref` is a tag (CI_COMMIT_TAG), not a branch; None: a branch
    project: Mapped[Project] = relationship()


class Job(db.Model):  # type: ignore[name-defined,misc]
    """A CI job; its token works only while it runs."""

    __tablename__ = "jobs"
    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    ref: Mapped[str] = mapped_column(Chars(255))
    sha: Mapped[str] = mapped_column(Chars(64), default="")
    name: Mapped[str] = mapped_column(Chars(255), default="build")
    stage: Mapped[str] = mapped_column(Chars(255), default="test")
    status: Mapped[str] = mapped_column(Chars(20), default="running")
    pipeline_id: Mapped[int] = mapped_column(ForeignKey("pipelines.id", ondelete="CASCADE"))
    timeout: Mapped[int] = mapped_column(default=3600)
    token_digest: Mapped[str] = mapped_column(Chars(64), unique=True)
    created_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    # A job for runners: its definition (script, image, variables, tags, needs, artifacts),
    # None for jobs that tests run themselves.
    spec: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # The token, encrypted with the forge's secret key, for the runner that takes the job
    # (a database dump alone does not reveal it); None once taken, and for other jobs.
    sealed_token: Mapped[str | None] = mapped_column(Chars(512))
    runner_id: Mapped[int | None]
    failure_reason: Mapped[str | None] = mapped_column(Chars(80))
    exit_code: Mapped[int | None]
    project: Mapped[Project] = relationship()
    user: Mapped[User] = relationship()
    pipeline: Mapped[Pipeline | None] = relationship()


class Runner(db.Model):  # type: ignore[name-defined,misc]
    """A registered runner; it authenticates with a token kept as a digest."""

    __tablename__ = "runners"
    id: Mapped[int] = mapped_column(primary_key=True)
    token_digest: Mapped[str] = mapped_column(Chars(64), unique=True)
    runner_type: Mapped[str] = mapped_column(Chars(20), default="instance_type")
    group_id: Mapped[int | None] = mapped_column(ForeignKey("groups.id", ondelete="CASCADE"))
    project_id: Mapped[int | None] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    description: Mapped[str] = mapped_column(Chars(1024), default="")
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    run_untagged: Mapped[bool] = mapped_column(default=True)
    paused: Mapped[bool] = mapped_column(default=False)
    locked: Mapped[bool] = mapped_column(default=False)
    access_level: Mapped[str] = mapped_column(Chars(20), default="not_protected")
    maximum_timeout: Mapped[int | None]
    creator_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    info: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # what it said about itself
    created_at: Mapped[datetime]
    contacted_at: Mapped[datetime | None]


class JobLog(db.Model):  # type: ignore[name-defined,misc]
    """The log (trace) a runner sent for a job, appended chunk by chunk."""

    __tablename__ = "job_logs"
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    content: Mapped[bytes] = mapped_column(LargeBinary, default=b"")


class JobArtifact(db.Model):  # type: ignore[name-defined,misc]
    """An artifacts file a runner uploaded for a job, stored by content hash."""

    __tablename__ = "job_artifacts"
    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    file_type: Mapped[str] = mapped_column(Chars(40), default="archive")
    file_format: Mapped[str] = mapped_column(Chars(20), default="zip")
    filename: Mapped[str] = mapped_column(Chars(255))
    size: Mapped[int]
    sha256: Mapped[str] = mapped_column(Chars(64))
    created_at: Mapped[datetime]


class Event(db.Model):  # type: ignore[name-defined,misc]
    """One recorded authentication or authorization decision. Never holds a secret."""

    __tablename__ = "events"
    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime]
    method: Mapped[str] = mapped_column(Chars(10))
    path: Mapped[str] = mapped_column(Chars(2048))
    credential: Mapped[str] = mapped_column(Chars(40))
    username: Mapped[str | None] = mapped_column(Chars(255))
    user_id: Mapped[int | None]
    job_id: Mapped[int | None]
    project: Mapped[str | None] = mapped_column(Chars(1024))
    project_id: Mapped[int | None]
    action: Mapped[str] = mapped_column(Chars(40))
    ref: Mapped[str | None] = mapped_column(Chars(1024))
    allowed: Mapped[bool]
    reason: Mapped[str] = mapped_column(Chars(80))
    status: Mapped[int]
    message: Mapped[str] = mapped_column(Chars(2048), default="")
    push_options: Mapped[list[str] | None] = mapped_column(JSON)  # `git push -o`, on push_ref

    def to_dict(self) -> dict[str, Any]:
        """Render the event as JSON-ready data."""
        return {
            "id": self.id,
            "at": self.at.isoformat() + "Z",
            "method": self.method,
            "path": self.path,
            "credential": self.credential,
            "username": self.username,
            "user_id": self.user_id,
            "job_id": self.job_id,
            "project": self.project,
            "project_id": self.project_id,
            "action": self.action,
            "ref": self.ref,
            "allowed": self.allowed,
            "reason": self.reason,
            "status": self.status,
            "message": self.message,
            "push_options": self.push_options,
        }

