"""What the registry answers, as small typed objects."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


def _timestamp(value: str) -> datetime:
    # Python < 3.11 does not read a trailing "Z".
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@dataclass(frozen=True)
class Binding:
    prefix: str
    resource_path: str
    allowed_ops: dict[str, bool]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Binding:
        return cls(
            prefix=data.get("prefix") or "",
            resource_path=data["resource_path"],
            allowed_ops=dict(data.get("allowed_ops") or {}),
        )


@dataclass(frozen=True)
class ResolvedBucket:
    """A bucket's non-secret metadata (``GET /resolve/{name}``): no credentials, ever."""

    name: str
    provider: str
    region: str | None
    endpoint: str | None
    auth_mode: str
    status: str
    owner_project: str | None
    data_upload_allowed: bool
    is_default_upload: bool
    requester_pays: bool
    labels: dict[str, str]
    version: int
    bindings: list[Binding] = field(default_factory=list)
    public: bool = False

    @property
    def is_active(self) -> bool:
        return self.status == "active"

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ResolvedBucket:
        return cls(
            name=data["name"],
            provider=data["provider"],
            region=data.get("region"),
            endpoint=data.get("endpoint"),
            auth_mode=data["auth_mode"],
            status=data["status"],
            owner_project=data.get("owner_project"),
            data_upload_allowed=bool(data.get("data_upload_allowed")),
            is_default_upload=bool(data.get("is_default_upload")),
            requester_pays=bool(data.get("requester_pays")),
            labels=dict(data.get("labels") or {}),
            version=int(data.get("version") or 0),
            bindings=[Binding.from_json(item) for item in data.get("bindings") or []],
            public=bool(data.get("public")),
        )


@dataclass(frozen=True)
class PresignedUrl:
    """A URL anyone holding it may use with ``method`` (and ``headers``) until ``expires_at``
    (None for the unsigned URL of a public object, which does not expire)."""

    url: str
    method: str
    expires_at: datetime | None
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PresignedUrl:
        return cls(
            url=data["url"],
            method=data["method"],
            expires_at=_timestamp(data["expires_at"]) if data.get("expires_at") else None,
            headers=dict(data.get("headers") or {}),
        )
