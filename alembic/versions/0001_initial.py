"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-29 15:47:56.742740
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "bucket",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("region", sa.String(length=64), nullable=True),
        sa.Column("endpoint", sa.String(length=2048), nullable=True),
        sa.Column("auth_mode", sa.String(length=32), nullable=False),
        sa.Column("role_arn", sa.String(length=2048), nullable=True),
        sa.Column("external_id", sa.String(length=1224), nullable=True),
        sa.Column("secret_ref", sa.String(length=2048), nullable=True),
        sa.Column("secret_version", sa.String(length=256), nullable=True),
        sa.Column("service_account", sa.String(length=320), nullable=True),
        sa.Column("owner_project", sa.String(length=255), nullable=True),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("data_upload_allowed", sa.Boolean(), nullable=False),
        sa.Column("is_default_upload", sa.Boolean(), nullable=False),
        sa.Column("requester_pays", sa.Boolean(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("bucket", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_bucket_name"), ["name"], unique=True)
        batch_op.create_index(
            batch_op.f("ix_bucket_owner_project"), ["owner_project"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_bucket_provider"), ["provider"], unique=False)
        batch_op.create_index(batch_op.f("ix_bucket_status"), ["status"], unique=False)
        batch_op.create_index(
            "uq_bucket_default_upload_global",
            ["is_default_upload"],
            unique=True,
            postgresql_where=sa.text("is_default_upload AND owner_project IS NULL"),
            sqlite_where=sa.text("is_default_upload AND owner_project IS NULL"),
        )
        batch_op.create_index(
            "uq_bucket_default_upload_project",
            ["owner_project"],
            unique=True,
            postgresql_where=sa.text("is_default_upload AND owner_project IS NOT NULL"),
            sqlite_where=sa.text("is_default_upload AND owner_project IS NOT NULL"),
        )

    op.create_table(
        "bucket_audit",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("bucket_id", sa.Uuid(), nullable=True),
        sa.Column("bucket_name", sa.String(length=255), nullable=False),
        sa.Column("actor", sa.String(length=255), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("diff", sa.JSON(), nullable=False),
        sa.Column("request_id", sa.String(length=128), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("bucket_audit", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_bucket_audit_actor"), ["actor"], unique=False)
        batch_op.create_index(batch_op.f("ix_bucket_audit_at"), ["at"], unique=False)
        batch_op.create_index("ix_bucket_audit_bucket_id_id", ["bucket_id", "id"], unique=False)

    op.create_table(
        "bucket_prefix",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("bucket_id", sa.Uuid(), nullable=False),
        sa.Column("prefix", sa.String(length=1024), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["bucket_id"], ["bucket.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("bucket_id", "prefix", name="uq_bucket_prefix"),
    )
    with op.batch_alter_table("bucket_prefix", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_bucket_prefix_bucket_id"), ["bucket_id"], unique=False)

    op.create_table(
        "bucket_policy_binding",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("bucket_id", sa.Uuid(), nullable=False),
        sa.Column("prefix_id", sa.Uuid(), nullable=True),
        sa.Column("resource_path", sa.String(length=1024), nullable=False),
        sa.Column("allowed_ops", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["bucket_id"], ["bucket.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["prefix_id"], ["bucket_prefix.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("bucket_policy_binding", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_bucket_policy_binding_bucket_id"), ["bucket_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("bucket_policy_binding", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_bucket_policy_binding_bucket_id"))

    op.drop_table("bucket_policy_binding")
    with op.batch_alter_table("bucket_prefix", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_bucket_prefix_bucket_id"))

    op.drop_table("bucket_prefix")
    with op.batch_alter_table("bucket_audit", schema=None) as batch_op:
        batch_op.drop_index("ix_bucket_audit_bucket_id_id")
        batch_op.drop_index(batch_op.f("ix_bucket_audit_at"))
        batch_op.drop_index(batch_op.f("ix_bucket_audit_actor"))

    op.drop_table("bucket_audit")
    with op.batch_alter_table("bucket", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_bucket_default_upload_project",
            postgresql_where=sa.text("is_default_upload AND owner_project IS NOT NULL"),
            sqlite_where=sa.text("is_default_upload AND owner_project IS NOT NULL"),
        )
        batch_op.drop_index(
            "uq_bucket_default_upload_global",
            postgresql_where=sa.text("is_default_upload AND owner_project IS NULL"),
            sqlite_where=sa.text("is_default_upload AND owner_project IS NULL"),
        )
        batch_op.drop_index(batch_op.f("ix_bucket_status"))
        batch_op.drop_index(batch_op.f("ix_bucket_provider"))
        batch_op.drop_index(batch_op.f("ix_bucket_owner_project"))
        batch_op.drop_index(batch_op.f("ix_bucket_name"))

    op.drop_table("bucket")
