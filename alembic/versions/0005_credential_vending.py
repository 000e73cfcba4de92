"""bucket.credential_vending, sts_endpoint and max_credential_ttl

Revision ID: 0005_credential_vending
Revises: 0002
Create Date: 2026-12-20 10:00:00.000000

Every existing bucket keeps vending off: its role's trust policy may not yet allow
``sts:SetSourceIdentity`` and ``sts:TagSession``, which every vended session uses.
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0005_credential_vending"
down_revision: str | None = "0004_self_service"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("bucket", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("credential_vending", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.add_column(sa.Column("sts_endpoint", sa.String(length=2048), nullable=True))
        batch_op.add_column(sa.Column("max_credential_ttl", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("bucket", schema=None) as batch_op:
        batch_op.drop_column("max_credential_ttl")
        batch_op.drop_column("sts_endpoint")
        batch_op.drop_column("credential_vending")
