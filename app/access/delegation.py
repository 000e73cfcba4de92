"""A trusted caller (Fence) acting for a principal, authorized the way Fence authorizes.

Fence decides a download or an upload on the indexd record's ``authz`` list, not on the
bucket: Arborist must grant the principal every requested method on **every** path in it. The
registry asks exactly that, and adds one guardrail of its own: each of those paths must be
covered (equal, or a descendant) by a binding of the bucket whose prefix matches the key and
whose operations include the op — bindings say which resources a bucket may serve. A binding
on ``/`` serves every resource.

Fence's two legacy rules carry no authz: ``acl`` (a record with only an ACL, judged by Fence)
and ``uploader`` (a blank record whose uploader is the user). They are taken on the caller's
word, logged, need a binding on ``/`` (acl) or covering ``/data_file`` (uploader), and can be
turned off.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from app.authz.callers import ServiceCaller
from app.authz.principals import Principal, PrincipalKind
from app.errors import InvalidInput
from app.registry.records import BindingRecord, Op

ROOT_RESOURCE = "/"
UPLOADER_RESOURCE = "/data_file"

# Methods a trusted caller may ask per op (Fence's upload-with-authz asks create and
# write-storage together; its uploaders hold file_upload on /data_file).
ALLOWED_METHODS: Mapping[Op, frozenset[str]] = {
    Op.READ: frozenset({"read-storage"}),
    Op.WRITE: frozenset({"write-storage", "file_upload", "create"}),
    Op.MULTIPART: frozenset({"write-storage", "file_upload", "create"}),
    Op.DELETE: frozenset({"delete"}),
}
DEFAULT_METHOD: Mapping[Op, str] = {
    Op.READ: "read-storage",
    Op.WRITE: "write-storage",
    Op.MULTIPART: "write-storage",
    Op.DELETE: "delete",
}


class Legacy(enum.StrEnum):
    ACL = "acl"
    UPLOADER = "uploader"

    @property
    def resource(self) -> str:
        """The resource a binding must cover for this rule to be served by a bucket."""
        return ROOT_RESOURCE if self is Legacy.ACL else UPLOADER_RESOURCE


def covers(binding_path: str, resource: str) -> bool:
    """True when a binding on ``binding_path`` may serve ``resource``."""
    return (
        binding_path == ROOT_RESOURCE
        or resource == binding_path
        or resource.startswith(binding_path + "/")
    )


def uncovered(bindings: Sequence[BindingRecord], resources: Sequence[str]) -> list[str]:
    """The resources no binding covers."""
    return [
        resource
        for resource in resources
        if not any(covers(binding.resource_path, resource) for binding in bindings)
    ]


@dataclass(frozen=True, slots=True)
class Delegation:
    """What a trusted caller asked for: on whose behalf, on which resources, with which methods."""

    caller: ServiceCaller
    principal: Principal
    authz: tuple[str, ...]
    methods: tuple[str, ...] = ()
    legacy: Legacy | None = None
    audit: Mapping[str, str] | None = field(default=None)

    @property
    def actor(self) -> str:
        """The principal, as access-log lines and audit rows name it, and who relayed it."""
        if self.principal.kind is PrincipalKind.ANONYMOUS:
            who = "anonymous"
        elif self.principal.kind is PrincipalKind.USER:
            who = self.principal.value or "unknown"
        else:
            who = self.principal.username or self.principal.cache_key
        return f"{who} (via {self.caller.subject})"

    def methods_for(self, op: Op) -> tuple[str, ...]:
        """The Arborist methods to require for ``op``: the ones asked, all of them legal."""
        if not self.methods:
            return (DEFAULT_METHOD[op],)
        illegal = sorted(set(self.methods) - ALLOWED_METHODS[op])
        if illegal:
            allowed = ", ".join(sorted(ALLOWED_METHODS[op]))
            raise InvalidInput(
                f"method: {', '.join(illegal)} cannot authorize {op}; allowed: {allowed}"
            )
        return tuple(dict.fromkeys(self.methods))
