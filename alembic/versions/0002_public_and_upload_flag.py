"""bucket.public; data_upload_allowed set where bindings already allow uploads

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-14 10:00:00.000000

Until this revision the data path ignored ``data_upload_allowed``; it is now enforced on write
and multipart. Buckets whose bindings allow either get the flag, so no deployed bucket loses
the uploads it accepted before.
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_UPLOAD_OPS = ("write", "multipart")

_bucket = sa.table(
    "bucket",
    sa.column("id", sa.Uuid()),
    sa.column("data_upload_allowed", sa.Boolean()),
)
_binding = sa.table(
    "bucket_policy_binding",
    sa.column("bucket_id", sa.Uuid()),
    sa.column("allowed_ops", sa.JSON()),
)


def upgrade() -> None:
    with op.batch_alter_table("bucket", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("public", sa.Boolean(), nullable=False, server_default=sa.false())
        )

    connection = op.get_bind()
    # JSON operators differ between PostgreSQL and SQLite: decode the ops in Python instead.
    rows = connection.execute(sa.select(_binding.c.bucket_id, _binding.c.allowed_ops))
    uploading = sorted({bucket_id for bucket_id, ops in rows if _allows_upload(ops)}, key=str)
    if uploading:
        connection.execute(
            sa.update(_bucket)
            .where(_bucket.c.id.in_(uploading), _bucket.c.data_upload_allowed.is_(sa.false()))
            .values(data_upload_allowed=True)
        )


def downgrade() -> None:
    # The flag set above stays: before this revision it was not enforced, so it is harmless.
    with op.batch_alter_table("bucket", schema=None) as batch_op:
        batch_op.drop_column("public")


def _allows_upload(ops: Any) -> bool:
    return isinstance(ops, dict) and any(ops.get(name) is True for name in _UPLOAD_OPS)
