r"""The schema's revisions (Alembic), applied on start by `forge.database.migrate`.

Each file in versions/ is one revision, named NNNN_<what>.py; NNNN is its revision id and
the highest number is the head. The history is a line: each revision's `down_revision`
is the number before it. A new database skips them all (the models' tables are created
and stamped at the head); an existing one runs the revisions it lacks, in one transaction
under the schema lock.

To add a nullable column or a table:

1. Change forge/models.py as usual.
2. Add versions/NNNN_<what>.py with the next number, for example:

       '''Jobs remember the runner that picked them.

       Revision ID: 0002
       '''

       from __future__ import annotations

       import sqlalchemy as sa
       from alembic import op

       revision = "0002"
       down_revision = "0001"
       branch_labels = None
       depends_on = None


       def upgrade() -> None:
           '''Add jobs.runner_id.'''
           op.add_column("jobs", sa.Column("runner_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                                           nullable=True))


       def downgrade() -> None:
           '''Drop jobs.runner_id.'''
           op.drop_column("jobs", "runner_id")

   A new table: `op.create_table(...)` with the columns as in the model (ids are
   `BigInteger().with_variant(Integer(), "sqlite")`, strings
   `String(n).with_variant(Text(), "postgresql")`, as `forge.models.Chars` makes them).
   Alembic can write the body for you: `python -c` with
   `alembic.autogenerate.produce_migrations` against a database at the previous head.
3. Run `pytest tests/test_database.py` (and with `--forge-database postgresql`): it fails
   until the revisions produce exactly the models' schema.

Two branches that each add revision NNNN: renumber one to NNNN+1 and point its
`down_revision` at the other.
"""
