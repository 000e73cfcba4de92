"""Real-HTTP stubs of the secrets managers the service talks to, each speaking its wire format.

* ``VaultStub`` — KV v2 data reads (``/v1/{mount}/data/{path}?version=N``), writes, ``destroy``
  and ``metadata``, Kubernetes auth login, ``auth/token/renew-self``; Vault's
  ``{"errors": [...]}`` bodies, 403 for bad tokens.
* ``KubernetesStub`` — v1 Secrets under ``/api/v1/namespaces/{ns}/secrets``: get, create,
  delete and list by label selector, returning v1 Secret objects or v1 ``Status`` objects for
  failures; checks the bearer token and, per namespace, the RBAC verbs granted.
* ``GcpSecretManagerStub`` — ``GET /v1/projects/P/secrets/S/versions/{v}:access`` returning
  ``AccessSecretVersionResponse`` (``name``, ``payload.data``, ``payload.dataCrc32c``), plus
  secret creation, ``:addVersion``, version listing, ``:destroy`` / ``:disable`` and the
  Secret's ``versionAliases`` (PATCH with ``updateMask`` and ``etag``); Google's
  ``{"error": {...}}`` bodies; checks the bearer token.

Each counts what it served and can be switched to fail with a status code.
"""

from __future__ import annotations

import base64
import itertools
import re
import threading
import time
import uuid
from collections import Counter
from typing import Any
from urllib.parse import parse_qs, urlsplit

from app.secrets.gcp_sm import crc32c
from tests.support.net import BackgroundHTTPServer, JsonHandler


class _Stub:
    handler: type[JsonHandler]

    def __init__(self) -> None:
        self.server = BackgroundHTTPServer(self.handler)
        self.server.stub = self  # type: ignore[attr-defined]
        self.lock = threading.Lock()
        self.calls: Counter[str] = Counter()
        self.fail_with: int | None = None
        self.delay = 0.0

    @property
    def url(self) -> str:
        return self.server.url

    def start(self) -> Any:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    def count(self, what: str) -> None:
        with self.lock:
            self.calls[what] += 1


# --- Vault ---------------------------------------------------------------------------------


def _vault_errors(*messages: str) -> dict[str, Any]:
    return {"errors": list(messages)}


def _vault_envelope(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "request_id": str(uuid.uuid4()),
        "lease_id": "",
        "renewable": False,
        "lease_duration": 0,
        "data": None,
        "wrap_info": None,
        "warnings": None,
        "auth": None,
    }
    body.update(fields)
    return body


class _VaultHandler(JsonHandler):
    def do_POST(self) -> None:
        stub: VaultStub = self.stub
        path = urlsplit(self.path).path
        if stub.fail_with:
            self.send_json(stub.fail_with, _vault_errors("Vault is sealed"))
            return
        if path == f"/v1/auth/{stub.auth_mount}/login":
            body = self.read_json()
            stub.count("login")
            if body.get("role") != stub.role or body.get("jwt") != stub.jwt:
                self.send_json(403, _vault_errors("permission denied"))
                return
            self.send_json(200, _vault_envelope(auth=stub.issue_token()))
        elif re.fullmatch(r"/v1/([^/]+)/(data|destroy)/(.+)", path):
            self._write(path)
        elif path == "/v1/auth/token/renew-self":
            self.read_json()
            stub.count("renew")
            token = self.headers.get("X-Vault-Token")
            if stub.refuse_renewal or token not in stub.tokens:
                self.send_json(403, _vault_errors("permission denied"))
                return
            self.send_json(200, _vault_envelope(auth=stub.auth_block(token)))
        else:
            self.send_json(404, _vault_errors())

    def _authorized(self) -> bool:
        stub: VaultStub = self.stub
        token = self.headers.get("X-Vault-Token")
        if token not in stub.tokens and token != stub.root_token:
            self.send_json(403, _vault_errors("permission denied"))
            return False
        return True

    def _write(self, path: str) -> None:
        """KV v2 ``data`` writes (a new version) and ``destroy`` (versions' data removed)."""
        stub: VaultStub = self.stub
        body = self.read_json()
        if not self._authorized():
            return
        match = re.fullmatch(r"/v1/([^/]+)/(data|destroy)/(.+)", path)
        assert match is not None
        key = f"{match.group(1)}/{match.group(3)}"
        if match.group(2) == "data":
            stub.count("write")
            if not isinstance(body.get("data"), dict):
                self.send_json(400, _vault_errors("no data provided"))
                return
            version = stub.put(key, body["data"])
            self.send_json(200, _vault_envelope(data={"version": version, "destroyed": False}))
            return
        stub.count("destroy")
        with stub.lock:
            versions = stub.secrets.get(key, [])
            for number in body.get("versions") or []:
                if 1 <= number <= len(versions):
                    versions[number - 1] = None
                    stub.destroyed.add((key, number))
        self.send_response(204)
        self.end_headers()

    def do_DELETE(self) -> None:
        """``DELETE /v1/{mount}/metadata/{path}``: every version and the key's history go."""
        stub: VaultStub = self.stub
        match = re.fullmatch(r"/v1/([^/]+)/metadata/(.+)", urlsplit(self.path).path)
        if stub.fail_with:
            self.send_json(stub.fail_with, _vault_errors("Vault is sealed"))
            return
        if match is None:
            self.send_json(404, _vault_errors())
            return
        if not self._authorized():
            return
        stub.count("delete_metadata")
        key = f"{match.group(1)}/{match.group(2)}"
        with stub.lock:
            stub.secrets.pop(key, None)
            stub.destroyed = {(path, number) for path, number in stub.destroyed if path != key}
        self.send_response(204)
        self.end_headers()

    def do_GET(self) -> None:
        stub: VaultStub = self.stub
        parts = urlsplit(self.path)
        match = re.fullmatch(r"/v1/([^/]+)/data/(.+)", parts.path)
        if stub.fail_with:
            self.send_json(stub.fail_with, _vault_errors("Vault is sealed"))
            return
        metadata_path = re.fullmatch(r"/v1/([^/]+)/metadata/(.+)", parts.path)
        if metadata_path is not None:
            if not self._authorized():
                return
            key = f"{metadata_path.group(1)}/{metadata_path.group(2)}"
            versions = stub.secrets.get(key)
            if not versions:
                self.send_json(404, _vault_errors())
                return
            listed = {
                str(number): {"destroyed": (key, number) in stub.destroyed, "deletion_time": ""}
                for number in range(1, len(versions) + 1)
            }
            self.send_json(
                200,
                _vault_envelope(data={"current_version": len(versions), "versions": listed}),
            )
            return
        if match is None:
            self.send_json(404, _vault_errors())
            return
        stub.count("read")
        token = self.headers.get("X-Vault-Token")
        with stub.lock:
            stub.read_tokens.append(token)
        if token not in stub.tokens and token != stub.root_token:
            self.send_json(403, _vault_errors("permission denied"))
            return
        versions = stub.secrets.get(f"{match.group(1)}/{match.group(2)}")
        if not versions:
            self.send_json(404, _vault_errors())
            return
        wanted = parse_qs(parts.query).get("version", ["0"])[0]
        number = int(wanted) if wanted != "0" else len(versions)
        if not 1 <= number <= len(versions):
            self.send_json(404, _vault_errors())
            return
        data = versions[number - 1]
        metadata = {
            "created_time": "2024-05-01T12:00:00.000000Z",
            "custom_metadata": None,
            "deletion_time": "" if data is not None else "2024-05-02T12:00:00.000000Z",
            "destroyed": False,
            "version": number,
        }
        if data is None:
            # Vault answers a soft-deleted version with 404 and the metadata only.
            self.send_json(404, _vault_envelope(data={"data": None, "metadata": metadata}))
            return
        self.send_json(200, _vault_envelope(data={"data": data, "metadata": metadata}))


class VaultStub(_Stub):
    handler = _VaultHandler

    def __init__(self) -> None:
        super().__init__()
        self.auth_mount = "kubernetes"
        self.role = "bucket-registry"
        self.jwt = "eyJhbGciOiJSUzI1NiJ9.service-account.signature"
        self.root_token = "hvs.root-token-for-tests"
        self.lease_duration = 3600
        self.renewable = True
        self.refuse_renewal = False
        self.tokens: set[str] = set()
        self.read_tokens: list[str | None] = []
        self.secrets: dict[str, list[dict[str, Any] | None]] = {}
        self.destroyed: set[tuple[str, int]] = set()
        self._serial = itertools.count(1)

    def put(self, path: str, data: dict[str, Any] | None) -> int:
        """Add a version at ``mount/path`` (None: a soft-deleted version); returns its number."""
        with self.lock:
            versions = self.secrets.setdefault(path, [])
            versions.append(data)
            return len(versions)

    def issue_token(self) -> dict[str, Any]:
        token = f"hvs.k8s-login-{next(self._serial)}"
        with self.lock:
            self.tokens.add(token)
        return self.auth_block(token)

    def revoke_all(self) -> None:
        with self.lock:
            self.tokens.clear()

    def auth_block(self, token: str) -> dict[str, Any]:
        return {
            "client_token": token,
            "accessor": f"accessor-{token[-4:]}",
            "policies": ["default", "bucket-registry"],
            "token_policies": ["default", "bucket-registry"],
            "metadata": {
                "role": self.role,
                "service_account_name": "bucket-registry",
                "service_account_namespace": "gen3",
                "service_account_secret_name": "",
                "service_account_uid": "9f3c1c52-3c52-4a8e-9d1f-6d1b7f4c0a11",
            },
            "lease_duration": self.lease_duration,
            "renewable": self.renewable,
            "entity_id": "1f5e1d1c-6b86-4d4c-9d7e-2c1f4b6a7e55",
            "token_type": "service",
            "orphan": True,
        }


# --- Kubernetes ----------------------------------------------------------------------------


def _k8s_status(code: int, reason: str, message: str, name: str = "") -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "details": {"name": name, "kind": "secrets"} if name else {},
        "code": code,
    }


class _KubernetesHandler(JsonHandler):
    """v1 Secrets: get, create (``POST …/secrets``), delete, and list with ``labelSelector``
    (equality terms joined by ``,``), ``limit`` and ``continue``, as the API server does."""

    def _guard(self, verb: str, namespace: str | None, name: str = "") -> bool:
        stub: KubernetesStub = self.stub
        if stub.delay:
            time.sleep(stub.delay)
        if self.headers.get("Authorization") != f"Bearer {stub.token}":
            self.send_json(401, _k8s_status(401, "Unauthorized", "Unauthorized"))
            return False
        if stub.fail_with:
            self.send_json(
                stub.fail_with, _k8s_status(stub.fail_with, "InternalError", "etcd timeout")
            )
            return False
        if namespace is not None and (
            namespace in stub.forbidden_namespaces
            or verb not in stub.allowed_verbs.get(namespace, KubernetesStub.ALL_VERBS)
        ):
            what = f'secrets "{name}"' if name else "secrets"
            message = (
                f'{what} is forbidden: User "system:serviceaccount:gen3:bucket-registry" '
                f'cannot {verb} resource "secrets" in API group "" in the namespace '
                f'"{namespace}"'
            )
            self.send_json(403, _k8s_status(403, "Forbidden", message, name))
            return False
        return True

    def do_GET(self) -> None:
        stub: KubernetesStub = self.stub
        parts = urlsplit(self.path)
        one = re.fullmatch(r"/api/v1/namespaces/([^/]+)/secrets/([^/]+)", parts.path)
        many = re.fullmatch(r"/api/v1/namespaces/([^/]+)/secrets", parts.path)
        if one is not None:
            namespace, name = one.groups()
            if not self._guard("get", namespace, name):
                return
            stub.count("read")
            secret = stub.secrets.get((namespace, name))
            if secret is None:
                self.send_json(
                    404, _k8s_status(404, "NotFound", f'secrets "{name}" not found', name)
                )
                return
            self.send_json(200, secret)
        elif many is not None:
            namespace = many.group(1)
            if not self._guard("list", namespace):
                return
            stub.count("list")
            self._list(namespace, parse_qs(parts.query))
        else:
            if self._guard("get", None):
                self.send_json(404, _k8s_status(404, "NotFound", "the server could not find it"))

    def _list(self, namespace: str, query: dict[str, list[str]]) -> None:
        stub: KubernetesStub = self.stub
        wanted = dict(
            term.split("=", 1) for term in query.get("labelSelector", [""])[0].split(",") if term
        )
        with stub.lock:
            items = [
                secret
                for (ns, _name), secret in sorted(stub.secrets.items())
                if ns == namespace
                and all(
                    (secret["metadata"].get("labels") or {}).get(key) == value
                    for key, value in wanted.items()
                )
            ]
        start = int(query.get("continue", ["0"])[0])
        limit = int(query.get("limit", ["0"])[0]) or len(items) or 1
        metadata: dict[str, Any] = {"resourceVersion": str(next(stub._resource_version))}
        if start + limit < len(items):
            metadata["continue"] = str(start + limit)
        self.send_json(
            200,
            {
                "kind": "SecretList",
                "apiVersion": "v1",
                "metadata": metadata,
                "items": items[start : start + limit],
            },
        )

    def do_POST(self) -> None:
        stub: KubernetesStub = self.stub
        body = self.read_json()
        match = re.fullmatch(r"/api/v1/namespaces/([^/]+)/secrets", urlsplit(self.path).path)
        if match is None:
            if self._guard("create", None):
                self.send_json(404, _k8s_status(404, "NotFound", "the server could not find it"))
            return
        namespace = match.group(1)
        metadata = body.get("metadata") or {}
        name = str(metadata.get("name") or "")
        if not self._guard("create", namespace, name):
            return
        stub.count("create")
        if (
            body.get("kind") != "Secret"
            or metadata.get("namespace", namespace) != namespace
            or len(name) > 253
            or not re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", name)
        ):
            self.send_json(
                422,
                _k8s_status(422, "Invalid", f'Secret "{name}" is invalid: metadata.name', name),
            )
            return
        with stub.lock:
            if (namespace, name) in stub.secrets:
                self.send_json(
                    409,
                    _k8s_status(409, "AlreadyExists", f'secrets "{name}" already exists', name),
                )
                return
        data = {
            key: base64.b64decode(value).decode() for key, value in (body.get("data") or {}).items()
        }
        stub.put(namespace, name, data, labels=metadata.get("labels"))
        self.send_json(201, stub.secrets[(namespace, name)])

    def do_DELETE(self) -> None:
        stub: KubernetesStub = self.stub
        self.read_json()
        match = re.fullmatch(
            r"/api/v1/namespaces/([^/]+)/secrets/([^/]+)", urlsplit(self.path).path
        )
        if match is None:
            if self._guard("delete", None):
                self.send_json(404, _k8s_status(404, "NotFound", "the server could not find it"))
            return
        namespace, name = match.groups()
        if not self._guard("delete", namespace, name):
            return
        stub.count("delete")
        with stub.lock:
            secret = stub.secrets.pop((namespace, name), None)
        if secret is None:
            self.send_json(404, _k8s_status(404, "NotFound", f'secrets "{name}" not found', name))
            return
        self.send_json(
            200,
            {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "details": {"name": name, "kind": "secrets", "uid": secret["metadata"]["uid"]},
            },
        )


class KubernetesStub(_Stub):
    handler = _KubernetesHandler
    ALL_VERBS = frozenset({"get", "list", "create", "delete"})

    def __init__(self) -> None:
        super().__init__()
        self.token = "k8s-service-account-token"
        self.forbidden_namespaces: set[str] = set()
        # RBAC: the verbs granted per namespace (every verb where none are listed).
        self.allowed_verbs: dict[str, frozenset[str]] = {}
        self.secrets: dict[tuple[str, str], dict[str, Any]] = {}
        self._resource_version = itertools.count(4711)

    def put(
        self,
        namespace: str,
        name: str,
        data: dict[str, str],
        *,
        labels: dict[str, str] | None = None,
    ) -> str:
        """Create or replace a Secret; returns its new ``resourceVersion``."""
        resource_version = str(next(self._resource_version))
        metadata: dict[str, Any] = {
            "name": name,
            "namespace": namespace,
            "uid": str(uuid.uuid4()),
            "resourceVersion": resource_version,
            "creationTimestamp": "2024-05-01T12:00:00Z",
        }
        if labels:
            metadata["labels"] = dict(labels)
        secret = {
            "kind": "Secret",
            "apiVersion": "v1",
            "metadata": metadata,
            "data": {key: base64.b64encode(value.encode()).decode() for key, value in data.items()},
            "type": "Opaque",
        }
        with self.lock:
            self.secrets[(namespace, name)] = secret
        return resource_version

    def names(self, namespace: str) -> list[str]:
        with self.lock:
            return sorted(name for ns, name in self.secrets if ns == namespace)


# --- GCP Secret Manager --------------------------------------------------------------------


def _google_error(code: int, status: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "status": status}}


class _GcpHandler(JsonHandler):
    """Secret Manager v1 REST: ``versions/{v}:access`` (a number, ``latest`` or an alias),
    ``secrets?secretId=`` (create), ``secrets/S`` (get, and PATCH ``versionAliases`` with
    ``updateMask`` and ``etag``), ``secrets/S:addVersion``, ``secrets/S/versions`` (list,
    paged) and ``versions/N:destroy`` / ``:disable``."""

    def _guard(self) -> bool:
        stub: GcpSecretManagerStub = self.stub
        if self.headers.get("Authorization") not in {f"Bearer {t}" for t in stub.valid_tokens}:
            self.send_json(
                401,
                _google_error(
                    401,
                    "UNAUTHENTICATED",
                    "Request had invalid authentication credentials. Expected OAuth 2 access "
                    "token, login cookie or other valid authentication credential.",
                ),
            )
            return False
        if stub.fail_with:
            status = "RESOURCE_EXHAUSTED" if stub.fail_with == 429 else "UNAVAILABLE"
            self.send_json(stub.fail_with, _google_error(stub.fail_with, status, "try again"))
            return False
        return True

    def _forbidden(self, project: str, permission: str, resource: str) -> bool:
        stub: GcpSecretManagerStub = self.stub
        if project not in stub.forbidden_projects:
            return False
        self.send_json(
            403,
            _google_error(
                403,
                "PERMISSION_DENIED",
                f"Permission '{permission}' denied for resource '{resource}' (or it may not "
                "exist).",
            ),
        )
        return True

    def _no_secret(self, secret: str) -> None:
        stub: GcpSecretManagerStub = self.stub
        self.send_json(
            404,
            _google_error(
                404,
                "NOT_FOUND",
                f"Secret [projects/{stub.project_number}/secrets/{secret}] not found or has no "
                "versions.",
            ),
        )

    def do_GET(self) -> None:
        stub: GcpSecretManagerStub = self.stub
        parts = urlsplit(self.path)
        access = re.fullmatch(
            r"/v1/projects/([^/]+)/secrets/([^/]+)/versions/([^/:]+):access", parts.path
        )
        if access is not None:
            stub.count("access")
        if not self._guard():
            return
        if access is not None:
            self._access(*access.groups())
            return
        listing = re.fullmatch(r"/v1/projects/([^/]+)/secrets/([^/:]+)/versions", parts.path)
        secret_path = re.fullmatch(r"/v1/projects/([^/]+)/secrets/([^/:]+)", parts.path)
        if listing is not None:
            self._list(*listing.groups(), parse_qs(parts.query))
        elif secret_path is not None:
            project, secret = secret_path.groups()
            if self._forbidden(project, "secretmanager.secrets.get", parts.path[4:]):
                return
            with stub.lock:
                found = stub.secret_resource(project, secret)
            if found is None:
                self._no_secret(secret)
            else:
                self.send_json(200, found)
        else:
            self.send_json(404, _google_error(404, "NOT_FOUND", "unknown path"))

    def _access(self, project: str, secret: str, version: str) -> None:
        stub: GcpSecretManagerStub = self.stub
        resource = f"projects/{project}/secrets/{secret}/versions/{version}"
        if self._forbidden(project, "secretmanager.versions.access", resource):
            return
        with stub.lock:
            number = stub.resolve_version(project, secret, version)
            versions = stub.secrets.get((project, secret)) or []
            state = stub.state_of(project, secret, number) if number else None
        if number is None or not 1 <= number <= len(versions):
            self._no_secret(secret)
            return
        if state != "ENABLED":
            self.send_json(
                400,
                _google_error(
                    400,
                    "FAILED_PRECONDITION",
                    f"Secret Version [projects/{stub.project_number}/secrets/{secret}/versions/"
                    f"{number}] is in {state} state.",
                ),
            )
            return
        data = versions[number - 1]
        checksum = crc32c(data) ^ (1 if stub.corrupt_checksum else 0)
        self.send_json(
            200,
            {
                # The API names the version by project number, not project id.
                "name": f"projects/{stub.project_number}/secrets/{secret}/versions/{number}",
                "payload": {
                    "data": base64.b64encode(data).decode(),
                    "dataCrc32c": str(checksum),
                },
            },
        )

    def _list(self, project: str, secret: str, query: dict[str, list[str]]) -> None:
        stub: GcpSecretManagerStub = self.stub
        stub.count("list_versions")
        if self._forbidden(project, "secretmanager.versions.list", f"projects/{project}"):
            return
        with stub.lock:
            if (project, secret) not in stub.secrets:
                self._no_secret(secret)
                return
            # Newest first, as the API lists them.
            numbers = list(range(len(stub.secrets[(project, secret)]), 0, -1))
            items = [stub.version_resource(project, secret, number) for number in numbers]
        size = int(query.get("pageSize", ["25"])[0])
        start = int(query.get("pageToken", ["0"])[0])
        body: dict[str, Any] = {"versions": items[start : start + size], "totalSize": len(items)}
        if start + size < len(items):
            body["nextPageToken"] = str(start + size)
        self.send_json(200, body)

    def do_POST(self) -> None:
        parts = urlsplit(self.path)
        body = self.read_json()
        if not self._guard():
            return
        create = re.fullmatch(r"/v1/projects/([^/]+)/secrets", parts.path)
        add = re.fullmatch(r"/v1/projects/([^/]+)/secrets/([^/:]+):addVersion", parts.path)
        change = re.fullmatch(
            r"/v1/projects/([^/]+)/secrets/([^/:]+)/versions/([0-9]+):(destroy|disable|enable)",
            parts.path,
        )
        if create is not None:
            self._create(create.group(1), parse_qs(parts.query).get("secretId", [""])[0], body)
        elif add is not None:
            self._add(*add.groups(), body)
        elif change is not None:
            self._change_state(*change.groups())
        else:
            self.send_json(404, _google_error(404, "NOT_FOUND", "unknown path"))

    def _create(self, project: str, secret: str, body: dict[str, Any]) -> None:
        stub: GcpSecretManagerStub = self.stub
        stub.count("create")
        if self._forbidden(project, "secretmanager.secrets.create", f"projects/{project}"):
            return
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,255}", secret) or "replication" not in body:
            self.send_json(400, _google_error(400, "INVALID_ARGUMENT", "invalid secret"))
            return
        with stub.lock:
            if (project, secret) in stub.secrets:
                self.send_json(
                    409,
                    _google_error(
                        409,
                        "ALREADY_EXISTS",
                        f"Secret [projects/{stub.project_number}/secrets/{secret}] already exists.",
                    ),
                )
                return
            stub.secrets[(project, secret)] = []
            stub.labels[(project, secret)] = dict(body.get("labels") or {})
            found = stub.secret_resource(project, secret)
        self.send_json(200, found)

    def _add(self, project: str, secret: str, body: dict[str, Any]) -> None:
        stub: GcpSecretManagerStub = self.stub
        stub.count("add_version")
        if self._forbidden(
            project, "secretmanager.versions.add", f"projects/{project}/secrets/{secret}"
        ):
            return
        payload = body.get("payload") or {}
        try:
            data = base64.b64decode(payload.get("data", ""), validate=True)
        except (ValueError, TypeError):
            self.send_json(400, _google_error(400, "INVALID_ARGUMENT", "invalid payload"))
            return
        checksum = payload.get("dataCrc32c")
        if checksum is not None and str(checksum) != str(crc32c(data)):
            self.send_json(
                400,
                _google_error(
                    400, "INVALID_ARGUMENT", "Checksum mismatch: the payload was corrupted."
                ),
            )
            return
        with stub.lock:
            if (project, secret) not in stub.secrets:
                self._no_secret(secret)
                return
            number = stub.add_version_locked(project, secret, data)
            found = stub.version_resource(project, secret, number)
        self.send_json(200, found)

    def _change_state(self, project: str, secret: str, version: str, verb: str) -> None:
        stub: GcpSecretManagerStub = self.stub
        stub.count(verb)
        number = int(version)
        with stub.lock:
            versions = stub.secrets.get((project, secret)) or []
            if not 1 <= number <= len(versions):
                self._no_secret(secret)
                return
            aliased = number in stub.aliases.get((project, secret), {}).values()
            if aliased and verb != "enable":
                self.send_json(
                    400,
                    _google_error(
                        400,
                        "FAILED_PRECONDITION",
                        f"Secret Version [projects/{stub.project_number}/secrets/{secret}/"
                        f"versions/{number}] has an alias and cannot be {verb}ed.",
                    ),
                )
                return
            state = stub.state_of(project, secret, number)
            if state == "DESTROYED" and verb != "destroy":
                self.send_json(
                    400, _google_error(400, "FAILED_PRECONDITION", "the version is destroyed")
                )
                return
            new_state = {"destroy": "DESTROYED", "disable": "DISABLED", "enable": "ENABLED"}[verb]
            stub.states[(project, secret)][number - 1] = new_state
            if new_state == "DESTROYED":
                versions[number - 1] = b""
            found = stub.version_resource(project, secret, number)
        self.send_json(200, found)

    def do_DELETE(self) -> None:
        stub: GcpSecretManagerStub = self.stub
        parts = urlsplit(self.path)
        if not self._guard():
            return
        match = re.fullmatch(r"/v1/projects/([^/]+)/secrets/([^/:]+)", parts.path)
        if match is None:
            self.send_json(404, _google_error(404, "NOT_FOUND", "unknown path"))
            return
        project, secret = match.groups()
        stub.count("delete")
        if self._forbidden(project, "secretmanager.secrets.delete", parts.path[4:]):
            return
        with stub.lock:
            if stub.secrets.pop((project, secret), None) is None:
                self._no_secret(secret)
                return
            for table in (stub.states, stub.aliases, stub.labels, stub.revisions):
                table.pop((project, secret), None)  # type: ignore[attr-defined]
        self.send_json(200, {})

    def do_PATCH(self) -> None:
        stub: GcpSecretManagerStub = self.stub
        parts = urlsplit(self.path)
        body = self.read_json()
        if not self._guard():
            return
        match = re.fullmatch(r"/v1/projects/([^/]+)/secrets/([^/:]+)", parts.path)
        if match is None:
            self.send_json(404, _google_error(404, "NOT_FOUND", "unknown path"))
            return
        project, secret = match.groups()
        stub.count("patch")
        mask = parse_qs(parts.query).get("updateMask", [""])[0]
        if mask != "versionAliases":
            self.send_json(
                400, _google_error(400, "INVALID_ARGUMENT", "updateMask must name the fields")
            )
            return
        with stub.lock:
            if (project, secret) not in stub.secrets:
                self._no_secret(secret)
                return
            if body.get("etag") and body["etag"] != stub.etag_of(project, secret):
                self.send_json(
                    409,
                    _google_error(409, "ABORTED", "The etag does not match the current etag."),
                )
                return
            aliases = {
                name: int(value) for name, value in (body.get("versionAliases") or {}).items()
            }
            count = len(stub.secrets[(project, secret)])
            if any(not 1 <= number <= count for number in aliases.values()):
                self.send_json(
                    400, _google_error(400, "INVALID_ARGUMENT", "an alias names no version")
                )
                return
            stub.aliases[(project, secret)] = aliases
            stub.revisions[(project, secret)] = stub.revisions.get((project, secret), 0) + 1
            found = stub.secret_resource(project, secret)
        self.send_json(200, found)


class GcpSecretManagerStub(_Stub):
    handler = _GcpHandler

    def __init__(self) -> None:
        super().__init__()
        self.project_number = "123456789012"
        self.valid_tokens = {"ya29.valid-access-token"}
        self.forbidden_projects: set[str] = set()
        self.corrupt_checksum = False
        self.secrets: dict[tuple[str, str], list[bytes]] = {}
        self.states: dict[tuple[str, str], list[str]] = {}
        self.aliases: dict[tuple[str, str], dict[str, int]] = {}
        self.labels: dict[tuple[str, str], dict[str, str]] = {}
        self.revisions: dict[tuple[str, str], int] = {}

    def add_version(self, project: str, secret: str, data: bytes) -> int:
        with self.lock:
            return self.add_version_locked(project, secret, data)

    def add_version_locked(self, project: str, secret: str, data: bytes) -> int:
        versions = self.secrets.setdefault((project, secret), [])
        versions.append(data)
        self.states.setdefault((project, secret), []).append("ENABLED")
        return len(versions)

    def state_of(self, project: str, secret: str, number: int) -> str:
        states = self.states.get((project, secret), [])
        return states[number - 1] if 1 <= number <= len(states) else "ENABLED"

    def resolve_version(self, project: str, secret: str, version: str) -> int | None:
        if version == "latest":
            return len(self.secrets.get((project, secret)) or []) or None
        if version.isdigit():
            return int(version)
        return self.aliases.get((project, secret), {}).get(version)

    def etag_of(self, project: str, secret: str) -> str:
        return f'"{self.revisions.get((project, secret), 0)}"'

    def secret_resource(self, project: str, secret: str) -> dict[str, Any] | None:
        if (project, secret) not in self.secrets:
            return None
        resource: dict[str, Any] = {
            "name": f"projects/{self.project_number}/secrets/{secret}",
            "replication": {"automatic": {}},
            "createTime": "2024-05-01T12:00:00.000000Z",
            "etag": self.etag_of(project, secret),
        }
        if self.labels.get((project, secret)):
            resource["labels"] = self.labels[(project, secret)]
        aliases = self.aliases.get((project, secret))
        if aliases:
            # int64 map values arrive as JSON strings.
            resource["versionAliases"] = {name: str(number) for name, number in aliases.items()}
        return resource

    def version_resource(self, project: str, secret: str, number: int) -> dict[str, Any]:
        resource: dict[str, Any] = {
            "name": f"projects/{self.project_number}/secrets/{secret}/versions/{number}",
            "createTime": "2024-05-01T12:00:00.000000Z",
            "state": self.state_of(project, secret, number),
            "replicationStatus": {"automatic": {}},
            "etag": f'"{number}"',
            "clientSpecifiedPayloadChecksum": True,
        }
        if resource["state"] == "DESTROYED":
            resource["destroyTime"] = "2024-05-02T12:00:00.000000Z"
        return resource

    def state_by_version(self, project: str, secret: str) -> dict[int, str]:
        """Each version's state, by number (for assertions)."""
        with self.lock:
            states = self.states.get((project, secret), [])
            return {number: state for number, state in enumerate(states, 1)}
