"""Baseline: the schema of forge when it adopted Alembic; also upgrades a database from before.

A database from before migrations has some of these tables, possibly without columns
added later (all nullable): the missing tables are created and the missing nullable
columns added. A new database never runs this: `forge.database.migrate` creates the
models' tables and stamps the head.

Revision ID: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

SNAPSHOT = sa.MetaData()
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # 64-bit on PostgreSQL, as in SQLite


def chars(length: int) -> sa.types.TypeEngine[str]:
    """VARCHAR(length) on SQLite; TEXT on PostgreSQL (see `forge.models.Chars`)."""
    return sa.String(length).with_variant(sa.Text(), "postgresql")


sa.Table(
    "events",
    SNAPSHOT,
    sa.Column("id", ID, nullable=False),
    sa.Column("at", sa.DateTime(), nullable=False),
    sa.Column("method", chars(10), nullable=False),
    sa.Column("path", chars(2048), nullable=False),
    sa.Column("credential", chars(40), nullable=False),
    sa.Column("username", chars(255), nullable=True),
    sa.Column("user_id", ID, nullable=True),
    sa.Column("job_id", ID, nullable=True),
    sa.Column("project", chars(1024), nullable=True),
    sa.Column("project_id", ID, nullable=True),
    sa.Column("action", chars(40), nullable=False),
    sa.Column("ref", chars(1024), nullable=True),
    sa.Column("allowed", sa.Boolean(), nullable=False),
    sa.Column("reason", chars(80), nullable=False),
    sa.Column("status", ID, nullable=False),
    sa.Column("message", chars(2048), nullable=False),
    sa.Column("push_options", sa.JSON(), nullable=True),
    sa.PrimaryKeyConstraint("id"),
)
sa.Table(
    "groups",
    SNAPSHOT,
    sa.Column("id", ID, nullable=False),
    sa.Column("parent_id", ID, nullable=True),
    sa.Column("path", chars(255), nullable=False),
    sa.Column("name", chars(255), nullable=False),
    sa.Column("full_path", chars(1024), nullable=False),
    sa.Column("visibility", chars(10), nullable=False),
    sa.Column("created_at", sa.DateTime(), nullable=False),
    sa.Column("description", chars(2000), nullable=True),
    sa.ForeignKeyConstraint(["parent_id"], ["groups.id"], ondelete="CASCADE"),
    sa.PrimaryKeyConstraint("id"),
    sa.UniqueConstraint("full_path"),
)
sa.Table(
    "users",
    SNAPSHOT,
    sa.Column("id", ID, nullable=False),
    sa.Column("username", chars(255), nullable=False),
    sa.Column("email", chars(255), nullable=False),
    sa.Column("name", chars(255), nullable=False),
    sa.Column("password_hash", chars(255), nullable=False),
    sa.Column("admin", sa.Boolean(), nullable=False),
    sa.Column("external", sa.Boolean(), nullable=False),
    sa.Column("state", chars(20), nullable=False),
    sa.Column("created_at", sa.DateTime(), nullable=False),
    sa.Column("status", sa.JSON(), nullable=True),
    sa.PrimaryKeyConstraint("id"),
    sa.UniqueConstraint("email"),
    sa.UniqueConstraint("username"),
)
sa.Table(
    "personal_access_tokens",
    SNAPSHOT,
    sa.Column("id", ID, nullable=False),
    sa.Column("user_id", ID, nullable=False),
    sa.Column("name", chars(255), nullable=False),
    sa.Column("scopes", sa.JSON(), nullable=False),
    sa.Column("expires_at", sa.DateTime(), nullable=True),
    sa.Column("revoked", sa.Boolean(), nullable=False),
    sa.Column("token_digest", chars(64), nullable=False),
    sa.Column("created_at", sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
    sa.PrimaryKeyConstraint("id"),
    sa.UniqueConstraint("token_digest"),
)
sa.Table(
    "projects",
    SNAPSHOT,
    sa.Column("id", ID, nullable=False),
    sa.Column("group_id", ID, nullable=True),
    sa.Column("owner_id", ID, nullable=True),
    sa.Column("path", chars(255), nullable=False),
    sa.Column("name", chars(255), nullable=False),
    sa.Column("full_path", chars(1024), nullable=False),
    sa.Column("visibility", chars(10), nullable=False),
    sa.Column("default_branch", chars(255), nullable=False),
    sa.Column("inbound_enabled", sa.Boolean(), nullable=False),
    sa.Column("outbound_enabled", sa.Boolean(), nullable=False),
    sa.Column("job_push_allowed", sa.Boolean(), nullable=False),
    sa.Column("lfs_enabled", sa.Boolean(), nullable=False),
    sa.Column("job_token_policies_enabled", sa.Boolean(), nullable=False),
    sa.Column("created_at", sa.DateTime(), nullable=False),
    sa.Column("description", chars(2000), nullable=True),
    sa.ForeignKeyConstraint(["group_id"], ["groups.id"], ondelete="CASCADE"),
    sa.ForeignKeyConstraint(["owner_id"], ["users.id"], ondelete="CASCADE"),
    sa.PrimaryKeyConstraint("id"),
    sa.UniqueConstraint("full_path"),
)
sa.Table(
    "job_token_scope_links",
    SNAPSHOT,
    sa.Column("id", ID, nullable=False),
    sa.Column("project_id", ID, nullable=False),
    sa.Column("direction", chars(10), nullable=False),
    sa.Column("source_project_id", ID, nullable=True),
    sa.Column("source_group_id", ID, nullable=True),
    sa.Column("default_permissions", sa.Boolean(), nullable=False),
    sa.Column("job_token_policies", sa.JSON(), nullable=False),
    sa.Column("created_at", sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="CASCADE"),
    sa.ForeignKeyConstraint(["source_group_id"], ["groups.id"], ondelete="CASCADE"),
    sa.ForeignKeyConstraint(["source_project_id"], ["projects.id"], ondelete="CASCADE"),
    sa.PrimaryKeyConstraint("id"),
    sa.UniqueConstraint("project_id", "direction", "source_project_id", "source_group_id"),
)
sa.Index(
    "uq_scope_links_group",
    SNAPSHOT.tables["job_token_scope_links"].c["project_id"],
    SNAPSHOT.tables["job_token_scope_links"].c["direction"],
    SNAPSHOT.tables["job_token_scope_links"].c["source_group_id"],
    unique=True,
    sqlite_where=sa.text("source_group_id IS NOT NULL"),
    postgresql_where=sa.text("source_group_id IS NOT NULL"),
)
sa.Index(
    "uq_scope_links_project",
    SNAPSHOT.tables["job_token_scope_links"].c["project_id"],
    SNAPSHOT.tables["job_token_scope_links"].c["direction"],
    SNAPSHOT.tables["job_token_scope_links"].c["source_project_id"],
    unique=True,
    sqlite_where=sa.text("source_project_id IS NOT NULL"),
    postgresql_where=sa.text("source_project_id IS NOT NULL"),
)
sa.Table(
    "lfs_locks",
    SNAPSHOT,
    sa.Column("id", ID, nullable=False),
    sa.Column("project_id", ID, nullable=False),
    sa.Column("path", chars(4096), nullable=False),
    sa.Column("user_id", ID, nullable=False),
    sa.Column("created_at", sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="CASCADE"),
    sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
    sa.PrimaryKeyConstraint("id"),
    sa.UniqueConstraint("project_id", "path"),
)
sa.Table(
    "lfs_objects",
    SNAPSHOT,
    sa.Column("id", ID, nullable=False),
    sa.Column("project_id", ID, nullable=False),
    sa.Column("oid", chars(64), nullable=False),
    sa.Column("size", ID, nullable=False),
    sa.Column("created_at", sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="CASCADE"),
    sa.PrimaryKeyConstraint("id"),
    sa.UniqueConstraint("project_id", "oid"),
)
sa.Table(
    "memberships",
    SNAPSHOT,
    sa.Column("id", ID, nullable=False),
    sa.Column("user_id", ID, nullable=False),
    sa.Column("group_id", ID, nullable=True),
    sa.Column("project_id", ID, nullable=True),
    sa.Column("access_level", ID, nullable=False),
    sa.ForeignKeyConstraint(["group_id"], ["groups.id"], ondelete="CASCADE"),
    sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="CASCADE"),
    sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
    sa.PrimaryKeyConstraint("id"),
    sa.UniqueConstraint("user_id", "group_id", "project_id"),
)
sa.Index("ix_memberships_user", SNAPSHOT.tables["memberships"].c["user_id"], unique=False)
sa.Index(
    "uq_memberships_group",
    SNAPSHOT.tables["memberships"].c["user_id"],
    SNAPSHOT.tables["memberships"].c["group_id"],
    unique=True,
    sqlite_where=sa.text("group_id IS NOT NULL"),
    postgresql_where=sa.text("group_id IS NOT NULL"),
)
sa.Index(
    "uq_memberships_project",
    SNAPSHOT.tables["memberships"].c["user_id"],
    SNAPSHOT.tables["memberships"].c["project_id"],
    unique=True,
    sqlite_where=sa.text("project_id IS NOT NULL"),
    postgresql_where=sa.text("project_id IS NOT NULL"),
)
sa.Table(
    "package_files",
    SNAPSHOT,
    sa.Column("id", ID, nullable=False),
    sa.Column("project_id", ID, nullable=False),
    sa.Column("name", chars(255), nullable=False),
    sa.Column("version", chars(255), nullable=False),
    sa.Column("file_name", chars(255), nullable=False),
    sa.Column("size", ID, nullable=False),
    sa.Column("sha256", chars(64), nullable=False),
    sa.Column("created_at", sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="CASCADE"),
    sa.PrimaryKeyConstraint("id"),
)
sa.Index(
    "ix_package_files_lookup",
    SNAPSHOT.tables["package_files"].c["project_id"],
    SNAPSHOT.tables["package_files"].c["name"],
    SNAPSHOT.tables["package_files"].c["version"],
    SNAPSHOT.tables["package_files"].c["file_name"],
    unique=False,
)
sa.Table(
    "pipelines",
    SNAPSHOT,
    sa.Column("id", ID, nullable=False),
    sa.Column("project_id", ID, nullable=False),
    sa.Column("iid", ID, nullable=False),
    sa.Column("ref", chars(1024), nullable=False),
    sa.Column("sha", chars(64), nullable=False),
    sa.Column("source", chars(40), nullable=False),
    sa.Column("created_at", sa.DateTime(), nullable=False),
    sa.Column("tag", sa.Boolean(), nullable=True),
    sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="CASCADE"),
    sa.PrimaryKeyConstraint("id"),
)
sa.Table(
    "protected_branches",
    SNAPSHOT,
    sa.Column("id", ID, nullable=False),
    sa.Column("project_id", ID, nullable=False),
    sa.Column("name", chars(255), nullable=False),
    sa.Column("push_access_level", ID, nullable=False),
    sa.Column("allow_force_push", sa.Boolean(), nullable=False),
    sa.Column("merge_access_level", ID, nullable=True),
    sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="CASCADE"),
    sa.PrimaryKeyConstraint("id"),
    sa.UniqueConstraint("project_id", "name"),
)
sa.Table(
    "releases",
    SNAPSHOT,
    sa.Column("id", ID, nullable=False),
    sa.Column("project_id", ID, nullable=False),
    sa.Column("tag_name", chars(255), nullable=False),
    sa.Column("name", chars(255), nullable=False),
    sa.Column("description", chars(65535), nullable=False),
    sa.Column("sha", chars(64), nullable=False),
    sa.Column("author_id", ID, nullable=True),
    sa.Column("created_at", sa.DateTime(), nullable=False),
    sa.Column("links", sa.JSON(), nullable=True),
    sa.ForeignKeyConstraint(["author_id"], ["users.id"], ondelete="SET NULL"),
    sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="CASCADE"),
    sa.PrimaryKeyConstraint("id"),
    sa.UniqueConstraint("project_id", "tag_name"),
)
sa.Table(
    "runners",
    SNAPSHOT,
    sa.Column("id", ID, nullable=False),
    sa.Column("token_digest", chars(64), nullable=False),
    sa.Column("runner_type", chars(20), nullable=False),
    sa.Column("group_id", ID, nullable=True),
    sa.Column("project_id", ID, nullable=True),
    sa.Column("description", chars(1024), nullable=False),
    sa.Column("tags", sa.JSON(), nullable=False),
    sa.Column("run_untagged", sa.Boolean(), nullable=False),
    sa.Column("paused", sa.Boolean(), nullable=False),
    sa.Column("locked", sa.Boolean(), nullable=False),
    sa.Column("access_level", chars(20), nullable=False),
    sa.Column("maximum_timeout", ID, nullable=True),
    sa.Column("creator_id", ID, nullable=True),
    sa.Column("info", sa.JSON(), nullable=True),
    sa.Column("created_at", sa.DateTime(), nullable=False),
    sa.Column("contacted_at", sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(["creator_id"], ["users.id"], ondelete="SET NULL"),
    sa.ForeignKeyConstraint(["group_id"], ["groups.id"], ondelete="CASCADE"),
    sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="CASCADE"),
    sa.PrimaryKeyConstraint("id"),
    sa.UniqueConstraint("token_digest"),
)
sa.Table(
    "jobs",
    SNAPSHOT,
    sa.Column("id", ID, nullable=False),
    sa.Column("project_id", ID, nullable=False),
    sa.Column("user_id", ID, nullable=False),
    sa.Column("ref", chars(255), nullable=False),
    sa.Column("sha", chars(64), nullable=False),
    sa.Column("name", chars(255), nullable=False),
    sa.Column("stage", chars(255), nullable=False),
    sa.Column("status", chars(20), nullable=False),
    sa.Column("pipeline_id", ID, nullable=False),
    sa.Column("timeout", ID, nullable=False),
    sa.Column("token_digest", chars(64), nullable=False),
    sa.Column("created_at", sa.DateTime(), nullable=False),
    sa.Column("started_at", sa.DateTime(), nullable=True),
    sa.Column("finished_at", sa.DateTime(), nullable=True),
    sa.Column("spec", sa.JSON(), nullable=True),
    sa.Column("sealed_token", chars(512), nullable=True),
    sa.Column("runner_id", ID, nullable=True),
    sa.Column("failure_reason", chars(80), nullable=True),
    sa.Column("exit_code", ID, nullable=True),
    sa.ForeignKeyConstraint(["pipeline_id"], ["pipelines.id"], ondelete="CASCADE"),
    sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="CASCADE"),
    sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
    sa.PrimaryKeyConstraint("id"),
    sa.UniqueConstraint("token_digest"),
)
sa.Table(
    "job_artifacts",
    SNAPSHOT,
    sa.Column("id", ID, nullable=False),
    sa.Column("job_id", ID, nullable=False),
    sa.Column("file_type", chars(40), nullable=False),
    sa.Column("file_format", chars(20), nullable=False),
    sa.Column("filename", chars(255), nullable=False),
    sa.Column("size", ID, nullable=False),
    sa.Column("sha256", chars(64), nullable=False),
    sa.Column("created_at", sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="CASCADE"),
    sa.PrimaryKeyConstraint("id"),
)
sa.Table(
    "job_logs",
    SNAPSHOT,
    sa.Column("job_id", ID, nullable=False),
    sa.Column("content", sa.LargeBinary(), nullable=False),
    sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="CASCADE"),
    sa.PrimaryKeyConstraint("job_id"),
)


def upgrade() -> None:
    """Create the missing tables, and add the missing nullable columns of existing ones."""
    bind = op.get_bind()
    existing = set(sa.inspect(bind).get_table_names())
    for table in SNAPSHOT.sorted_tables:
        if table.name not in existing:
            table.create(bind)
            continue
        have = {column["name"] for column in sa.inspect(bind).get_columns(table.name)}
        for column in table.columns:
            if column.name not in have and column.nullable:
                op.add_column(table.name, column._copy())


def downgrade() -> None:
    """Drop every table (the database was empty before forge)."""
    for table in reversed(SNAPSHOT.sorted_tables):
        op.drop_table(table.name)
