"""A small IAM policy evaluator, limited to the constructs the registry's session policies use.

Why not a library: moto's evaluator (``moto.iam.access_control``) turns patterns into regular
expressions without escaping them (a ``.`` in a prefix matches any character), knows no
``?`` wildcard and evaluates no ``StringLike``; the PyPI evaluators found are linters or
unmaintained. This one implements exactly what AWS documents for the constructs below, and
refuses everything else (``Unsupported``) instead of guessing, so a policy that grew a new
construct fails the tests rather than being judged wrongly.

Supported, per the IAM JSON policy reference:

- ``Version`` ``2012-10-17``; ``Statement`` a list or one object.
- Statement keys ``Sid``, ``Effect`` (``Allow`` / ``Deny``), ``Action``, ``Resource``
  (a string or a list), ``Condition``.
- ``Action`` matching: case-insensitive, ``*`` any run of characters, ``?`` one character.
- ``Resource`` matching: case-sensitive, same wildcards (``*`` crosses ``/``).
- ``Condition`` operators ``StringEquals`` and ``StringLike`` (values a string or a list;
  any value may match), several keys and operators all required; a key missing from the
  request context never satisfies them (no ``...IfExists``). Condition keys are
  case-insensitive.
- Evaluation: an explicit ``Deny`` wins, then any ``Allow``; otherwise the implicit deny.

Not supported (``Unsupported``): ``NotAction``, ``NotResource``, ``Principal``, policy
variables (``${…}``) anywhere, other condition operators, other versions.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class Unsupported(ValueError):
    """The policy uses a construct this evaluator does not implement."""


class Decision(enum.Enum):
    ALLOW = "allow"
    IMPLICIT_DENY = "implicit_deny"
    EXPLICIT_DENY = "explicit_deny"

    @property
    def allowed(self) -> bool:
        return self is Decision.ALLOW


_STATEMENT_KEYS = frozenset({"Sid", "Effect", "Action", "Resource", "Condition"})
_OPERATORS = frozenset({"StringEquals", "StringLike"})


def _values(raw: Any, what: str) -> list[str]:
    values = [raw] if isinstance(raw, str) else raw
    if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
        raise Unsupported(f"{what} must be a string or a non-empty list of strings")
    for value in values:
        if "${" in value:
            raise Unsupported(f"policy variables are not supported ({what}: {value!r})")
    return values


def wildcard_match(pattern: str, value: str, *, case_sensitive: bool = True) -> bool:
    """IAM's matching: ``*`` any run of characters (``/`` included), ``?`` exactly one."""
    regex = "".join(".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern)
    flags = re.DOTALL | (0 if case_sensitive else re.IGNORECASE)
    return re.fullmatch(regex, value, flags) is not None


@dataclass(frozen=True)
class Statement:
    effect: str
    actions: tuple[str, ...]
    resources: tuple[str, ...]
    conditions: tuple[tuple[str, str, tuple[str, ...]], ...]

    @classmethod
    def parse(cls, raw: Any) -> Statement:
        if not isinstance(raw, dict):
            raise Unsupported("a statement must be an object")
        unknown = set(raw) - _STATEMENT_KEYS
        if unknown:
            raise Unsupported(f"statement keys not supported: {sorted(unknown)}")
        effect = raw.get("Effect")
        if effect not in ("Allow", "Deny"):
            raise Unsupported(f"Effect must be Allow or Deny, not {effect!r}")
        if "Action" not in raw or "Resource" not in raw:
            raise Unsupported("a statement needs Action and Resource")
        conditions: list[tuple[str, str, tuple[str, ...]]] = []
        for operator, block in (raw.get("Condition") or {}).items():
            if operator not in _OPERATORS:
                raise Unsupported(f"condition operator {operator!r} is not supported")
            if not isinstance(block, dict) or not block:
                raise Unsupported(f"{operator} needs a non-empty object")
            for key, values in block.items():
                conditions.append((operator, key.lower(), tuple(_values(values, key))))
        return cls(
            effect,
            tuple(_values(raw["Action"], "Action")),
            tuple(_values(raw["Resource"], "Resource")),
            tuple(conditions),
        )

    def applies(self, action: str, resource: str, context: Mapping[str, str]) -> bool:
        if not any(wildcard_match(p, action, case_sensitive=False) for p in self.actions):
            return False
        if not any(wildcard_match(p, resource) for p in self.resources):
            return False
        lowered = {key.lower(): value for key, value in context.items()}
        for operator, key, values in self.conditions:
            actual = lowered.get(key)
            if actual is None:
                return False
            if operator == "StringEquals" and actual not in values:
                return False
            if operator == "StringLike" and not any(wildcard_match(v, actual) for v in values):
                return False
        return True


@dataclass(frozen=True)
class Policy:
    statements: tuple[Statement, ...]

    @classmethod
    def parse(cls, document: str | Mapping[str, Any]) -> Policy:
        raw = json.loads(document) if isinstance(document, str) else dict(document)
        if set(raw) - {"Version", "Statement", "Id"}:
            raise Unsupported(f"policy keys not supported: {sorted(set(raw))}")
        if raw.get("Version") != "2012-10-17":
            raise Unsupported("only Version 2012-10-17 is supported")
        statements = raw.get("Statement")
        if isinstance(statements, dict):
            statements = [statements]
        if not isinstance(statements, list) or not statements:
            raise Unsupported("Statement must be an object or a non-empty list")
        return cls(tuple(Statement.parse(item) for item in statements))

    def evaluate(
        self, action: str, resource: str, context: Mapping[str, str] | None = None
    ) -> Decision:
        context = context or {}
        matching = [s for s in self.statements if s.applies(action, resource, context)]
        if any(s.effect == "Deny" for s in matching):
            return Decision.EXPLICIT_DENY
        if matching:
            return Decision.ALLOW
        return Decision.IMPLICIT_DENY

    def allows(self, action: str, resource: str, context: Mapping[str, str] | None = None) -> bool:
        return self.evaluate(action, resource, context).allowed
