"""Arborist's policy model evaluated in-process, for local development mode only.

The file uses the ``authz`` section of a Gen3 ``user.yaml`` (resources, roles, policies) plus a
``users`` map of user name → policy ids, so a policy written here carries over to a real
Arborist unchanged. Semantics follow Arborist: a grant on ``/a`` covers ``/a/b`` (whole path
segments), ``*`` as a permission's service or method matches any, user names match whatever
their case, a resource without a leading ``/`` is a tag (none are defined here, so it grants
nothing), and ``anonymous_policies`` / ``all_users_policies`` hold for everyone / every user.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import yaml

# PostgreSQL's ltree (where Arborist keeps resource paths): labels of letters, digits and
# underscores, at most 255 characters each before PostgreSQL 16 (1000 from 16 on).
LTREE_LABEL_MAX = 255
_LTREE_LABEL = re.compile(r"[A-Za-z0-9_]+")


class LtreeSyntaxError(ValueError):
    """Arborist's database would refuse this path (Arborist answers 400)."""


def arborist_ltree(path: str) -> list[str]:
    """The ltree labels Arborist turns a resource path into, or ``LtreeSyntaxError``.

    Arborist first "underscore-encodes" the path (``_ - . ~`` become ``_S0`` .. ``_S3``, the rest
    is query-escaped with ``%`` turned into ``__``, so a space becomes ``+``), then maps ``/`` to
    ``.`` and drops leading dots. An empty result (the path ``/``) names no resource at all.
    """
    if not path.startswith("/"):
        raise LtreeSyntaxError("a resource path starts with '/' (anything else is a tag)")
    encoded = path
    for char, code in (("_", "_S0"), ("-", "_S1"), (".", "_S2"), ("~", "_S3")):
        encoded = encoded.replace(char, code)
    encoded = quote_plus(encoded, safe="/").replace("%", "__")
    dotted = encoded.replace("/", ".").lstrip(".")
    if not dotted:
        raise LtreeSyntaxError("missing resource in auth request")
    labels = dotted.split(".")
    for label in labels:
        if not _LTREE_LABEL.fullmatch(label):
            raise LtreeSyntaxError("ltree syntax error")
        if len(label) > LTREE_LABEL_MAX:
            raise LtreeSyntaxError(f"label string is too long (at most {LTREE_LABEL_MAX})")
    return labels


def path_covers(granted: str, requested: str) -> bool:
    """True when ``granted`` is ``requested`` or one of its ancestors, as ltree compares them."""
    if not requested.startswith("/") or not granted.startswith("/"):
        return False
    try:
        granted_labels = arborist_ltree(granted)
        requested_labels = arborist_ltree(requested)
    except LtreeSyntaxError:
        return False
    return requested_labels[: len(granted_labels)] == granted_labels


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
        self._users: dict[str, list[str]] = {}
        for name, info in users.items():
            self._users.setdefault(str(name).lower(), []).extend((info or {}).get("policies", []))
        clients = document.get("clients") or {}
        self._clients: dict[str, list[str]] = {
            str(client): list((info or {}).get("policies", [])) for client, info in clients.items()
        }
        self._anonymous: list[str] = list(authz.get("anonymous_policies", []))
        self._all_users: list[str] = list(authz.get("all_users_policies", []))

    @classmethod
    def load(cls, path: Path) -> PolicyDocument:
        return cls(yaml.safe_load(path.read_text()) or {})

    def user_policies(self, username: str | None) -> list[str]:
        if username is None:
            return list(self._anonymous)
        return self._users.get(username.lower(), []) + self._all_users + self._anonymous

    def client_policies(self, client_id: str) -> list[str]:
        """A client's own policies; Arborist adds no group policies to a client."""
        return list(self._clients.get(client_id, []))

    def mapping(
        self, username: str | None, *, policies: list[str] | None = None
    ) -> dict[str, list[Permission]]:
        """Arborist's ``/auth/mapping`` answer: each granted resource path → the actions held
        there (its own, as granted; a grant on ``/a`` also covers ``/a/b``)."""
        answer: dict[str, list[Permission]] = {}
        for policy_id in self.user_policies(username) if policies is None else policies:
            role_ids, resource_paths = self._policies.get(policy_id, ([], []))
            for path in resource_paths:
                held = answer.setdefault(path, [])
                for role_id in role_ids:
                    for perm in self._roles.get(role_id, []):
                        if perm not in held:
                            held.append(perm)
        return {path: held for path, held in answer.items() if held}

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
