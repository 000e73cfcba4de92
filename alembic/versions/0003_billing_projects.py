"""bucket.billing_projects: the projects a caller may bill through user_project

Revision ID: 0003_billing_projects
Revises: 0002
Create Date: 2026-12-20 10:00:00.000000

Until this revision any well-formed ``user_project`` was signed into a gcp URL, so a caller
could bill any project the registry's service account may use. Existing buckets get an empty
list: only the configured ``GCP_BILLING_PROJECT`` may be named until an admin adds others.
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0003_billing_projects"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("bucket", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("billing_projects", sa.JSON(), nullable=False, server_default="[]")
        )


def downgrade() -> None:
    with op.batch_alter_table("bucket", schema=None) as batch_op:
        batch_op.drop_column("billing_projects")
