"""A Credential Access Boundary as Cloud Storage applies it, for the Google API stub and the
property tests: the rules' shape checked as Google's STS checks it, and each request judged by
the roles' permissions and the rules' CEL conditions, evaluated with cel-python.

A request is allowed by a boundary when some rule names its bucket, lists a role that holds
the permission, and has no condition or one that evaluates to true with ``resource.name``
(``projects/_/buckets/B`` for bucket-level calls such as listings, ``…/objects/NAME`` for an
object) and ``api.getAttribute(name, default)`` (``storage.googleapis.com/objectListPrefix``
is a listing's ``prefix`` parameter). Only the permissions of the roles below are modelled:
a role outside the table is an invalid boundary, as it would be for a permission model that
does not know it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import celpy
from celpy import celtypes

RESOURCE_PREFIX = "//storage.googleapis.com/projects/_/buckets/"
LIST_PREFIX_ATTRIBUTE = "storage.googleapis.com/objectListPrefix"
MAX_RULES = 10

GET = "storage.objects.get"
LIST = "storage.objects.list"
CREATE = "storage.objects.create"
DELETE = "storage.objects.delete"
BUCKET_GET = "storage.buckets.get"

# The permissions of Cloud Storage's predefined roles that these tests touch.
ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    "roles/storage.objectViewer": frozenset({GET, LIST}),
    "roles/storage.objectCreator": frozenset({CREATE}),
    "roles/storage.objectAdmin": frozenset({GET, LIST, CREATE, DELETE}),
    "roles/storage.legacyBucketReader": frozenset({BUCKET_GET, LIST}),
    "roles/storage.legacyBucketWriter": frozenset({BUCKET_GET, LIST, CREATE, DELETE}),
    "roles/storage.legacyObjectReader": frozenset({GET}),
}

_ENV = celpy.Environment()


class InvalidBoundary(ValueError):
    """The boundary would be refused by Google's STS (400 ``invalid_request``)."""


@dataclass(frozen=True)
class StorageQuestion:
    """One permission a Cloud Storage request needs."""

    permission: str
    bucket: str
    object_name: str | None = None
    attributes: Mapping[str, str] = field(default_factory=dict)

    @property
    def resource_name(self) -> str:
        base = f"projects/_/buckets/{self.bucket}"
        return base if self.object_name is None else f"{base}/objects/{self.object_name}"


@dataclass(frozen=True)
class _Rule:
    bucket: str
    permissions: frozenset[str]
    program: Any | None
    expression: str | None


def _get_attribute(_api: Any, name: Any, default: Any) -> Any:
    attributes = _api if isinstance(_api, Mapping) else {}
    return attributes.get(name, default)


class AccessBoundary:
    def __init__(self, rules: list[_Rule]) -> None:
        self.rules = rules

    @classmethod
    def parse(cls, options: Any) -> AccessBoundary:
        """The ``options`` object of a token exchange, or ``InvalidBoundary``."""
        if not isinstance(options, dict) or set(options) != {"accessBoundary"}:
            raise InvalidBoundary("options must hold exactly accessBoundary")
        boundary = options["accessBoundary"]
        raw_rules = boundary.get("accessBoundaryRules") if isinstance(boundary, dict) else None
        if not isinstance(raw_rules, list) or not 1 <= len(raw_rules) <= MAX_RULES:
            raise InvalidBoundary(f"accessBoundaryRules: 1 to {MAX_RULES} rules")
        return cls([cls._rule(raw) for raw in raw_rules])

    @staticmethod
    def _rule(raw: Any) -> _Rule:
        if not isinstance(raw, dict):
            raise InvalidBoundary("a rule must be an object")
        resource = raw.get("availableResource")
        if not isinstance(resource, str) or not resource.startswith(RESOURCE_PREFIX):
            raise InvalidBoundary("availableResource must name a Cloud Storage bucket")
        bucket = resource[len(RESOURCE_PREFIX) :]
        if not bucket or "/" in bucket:
            raise InvalidBoundary("availableResource must name a bucket, not an object")
        permissions: set[str] = set()
        for entry in raw.get("availablePermissions") or []:
            role = entry[len("inRole:") :] if isinstance(entry, str) else None
            if not isinstance(entry, str) or not entry.startswith("inRole:"):
                raise InvalidBoundary("availablePermissions entries are inRole:ROLE")
            if role not in ROLE_PERMISSIONS:
                raise InvalidBoundary(f"unknown role {role}")
            permissions |= ROLE_PERMISSIONS[role]
        if not permissions:
            raise InvalidBoundary("availablePermissions must not be empty")
        condition = raw.get("availabilityCondition")
        expression = None
        program = None
        if condition is not None:
            expression = condition.get("expression") if isinstance(condition, dict) else None
            if not isinstance(expression, str) or not expression:
                raise InvalidBoundary("availabilityCondition needs an expression")
            program = compile_condition(expression)
        return _Rule(bucket, frozenset(permissions), program, expression)

    def allows(self, question: StorageQuestion) -> bool:
        for rule in self.rules:
            if rule.bucket != question.bucket or question.permission not in rule.permissions:
                continue
            if rule.program is None or evaluate(rule.program, question) is True:
                return True
        return False


def compile_condition(expression: str) -> Any:
    try:
        return _ENV.program(_ENV.compile(expression), functions={"getAttribute": _get_attribute})
    except celpy.CELParseError as exc:
        raise InvalidBoundary(f"availabilityCondition does not parse: {exc}") from None


def evaluate(program: Any, question: StorageQuestion) -> Any:
    """The condition's value for ``question`` (an error counts as false, as in IAM)."""
    activation = {
        "resource": celtypes.MapType(
            {celtypes.StringType("name"): celtypes.StringType(question.resource_name)}
        ),
        "api": celtypes.MapType(
            {
                celtypes.StringType(name): celtypes.StringType(value)
                for name, value in question.attributes.items()
            }
        ),
    }
    try:
        result = program.evaluate(activation)
    except celpy.CELEvalError:
        return False
    return bool(result) if isinstance(result, celtypes.BoolType) else False
