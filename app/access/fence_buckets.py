"""Fence's ``GET /data/buckets`` answer, built from the registry instead of fence-config.yaml.

Fence keeps only each bucket's ``region`` (and ``endpoint_url``) from its configuration, so
clients that read that endpoint learn nothing about credentials; the same holds here: the
rows' credential columns are never read into the answer.
"""

from __future__ import annotations

from typing import Any

from app.registry.records import BucketStatus, Provider
from app.registry.service import BucketFilter, RegistryService

_PAGE = 1000


async def fence_buckets(registry: RegistryService) -> dict[str, dict[str, dict[str, Any]]]:
    """``{"S3_BUCKETS": {name: {...}}, "GS_BUCKETS": {name: {...}}}`` for active buckets."""
    s3: dict[str, dict[str, Any]] = {}
    gs: dict[str, dict[str, Any]] = {}
    cursor: str | None = None
    while True:
        page = await registry.list_buckets(BucketFilter(status=BucketStatus.ACTIVE), _PAGE, cursor)
        for row in page.items:
            info: dict[str, Any] = {}
            if row.region:
                info["region"] = row.region
            if Provider(row.provider) is Provider.GCP:
                gs[row.name] = info
                continue
            if row.endpoint:
                info["endpoint_url"] = row.endpoint
            if row.requester_pays:
                info["requester_pays"] = True
            s3[row.name] = info
        cursor = page.next_cursor
        if cursor is None:
            return {"S3_BUCKETS": s3, "GS_BUCKETS": gs}
