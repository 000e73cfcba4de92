"""Arborist's policy model evaluated in-process, for local development mode only.

The file uses the ``authz`` section of a Gen3 ``user.yaml`` (resources, roles, policies) plus a
``users`` map of user name → policy ids, so a policy written here carries over to a real
Arborist unchanged. Semantics follow Arborist: a grant on ``/a`` covers ``/a/b`` (whole path
segments), and ``*`` as a permission's service or method matches any.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


def path_covers(granted: str, requested: str) -> bool:
    """True when ``granted`` is ``requested`` or one of its ancestors, segment by segment."""
    granted_parts = [part for part in granted.split("/") if part]
    requested_parts = [part for part in requested.split("/") if part]
    return requested_parts[: len(granted_parts)] == granted_parts


@dataclass(frozen=True, slots=True)
class Permission:
    service: str
    method: str

    def allows(self, service: str, method: str) -> bool:
        return self.service in ("*", service) and self.method in ("*", method)


class PolicyDocument:
    """Who may do what, in Arborist's resource/role/policy terms."""

    def __init__(self, document: Mapping[str, Any]) -> None:
        authz = document.get("authz", document)
        self._roles: dict[str, list[Permission]] = {
            role["id"]: [
                Permission(perm["action"]["service"], perm["action"]["method"])
                for perm in role.get("permissions", [])
            ]
            for role in authz.get("roles", [])
        }
        self._policies: dict[str, tuple[list[str], list[str]]] = {
            policy["id"]: (list(policy.get("role_ids", [])), list(policy.get("resource_paths", [])))
            for policy in authz.get("policies", [])
        }
        users = document.get("users") or {}
        self._users: dict[str, list[str]] = {
            name: list((info or {}).get("policies", [])) for name, info in users.items()
        }
        self._anonymous: list[str] = list(authz.get("anonymous_policies", []))

    @classmethod
    def load(cls, path: Path) -> PolicyDocument:
        return cls(yaml.safe_load(path.read_text()) or {})

    def user_policies(self, username: str | None) -> list[str]:
        if username is None:
            return list(self._anonymous)
        return self._users.get(username, []) + self._anonymous

    def allows(
        self,
        username: str | None,
        service: str,
        method: str,
        resource: str,
        *,
        policies: list[str] | None = None,
    ) -> bool:
        for policy_id in self.user_policies(username) if policies is None else policies:
            role_ids, resource_paths = self._policies.get(policy_id, ([], []))
            if not any(path_covers(path, resource) for path in resource_paths):
                continue
            for role_id in role_ids:
                if any(perm.allows(service, method) for perm in self._roles.get(role_id, [])):
                    return True
        return False
