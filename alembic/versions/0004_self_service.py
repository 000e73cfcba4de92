"""project self-service: bucket.project_resource, pending_external_id, validation

Revision ID: 0004_self_service
Revises: 0002
Create Date: 2026-12-20 10:00:00.000000

Buckets registered by project members name the Arborist path they belong to; a role bucket's
next external ID waits in ``pending_external_id`` until a validation with it passes; the last
validation's result is kept per bucket. ``status`` gains ``pending`` and ``rejected`` (the
column is a string already).
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0004_self_service"
down_revision: str | None = "0003_billing_projects"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("bucket", schema=None) as batch_op:
        batch_op.add_column(sa.Column("project_resource", sa.String(length=1024), nullable=True))
        batch_op.add_column(sa.Column("pending_external_id", sa.String(length=1224), nullable=True))
        batch_op.add_column(sa.Column("validation", sa.JSON(), nullable=True))
        batch_op.create_index("ix_bucket_project_resource", ["project_resource"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("bucket", schema=None) as batch_op:
        batch_op.drop_index("ix_bucket_project_resource")
        batch_op.drop_column("validation")
        batch_op.drop_column("pending_external_id")
        batch_op.drop_column("project_resource")
