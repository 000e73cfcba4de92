"""Real-HTTP stubs of the secrets managers the service talks to, each speaking its wire format.

* ``VaultStub`` — KV v2 data reads (``/v1/{mount}/data/{path}?version=N``), writes, ``destroy``
  and ``metadata``, Kubernetes auth login, ``auth/token/renew-self``; Vault's
  ``{"errors": [...]}`` bodies, 403 for bad tokens.
* ``KubernetesStub`` — ``GET /api/v1/namespaces/{ns}/secrets/{name}`` returning v1 Secret
  objects, or v1 ``Status`` objects for failures; checks the bearer token.
* ``GcpSecretManagerStub`` — ``GET /v1/projects/P/secrets/S/versions/{v}:access`` returning
  ``AccessSecretVersionResponse`` (``name``, ``payload.data``, ``payload.dataCrc32c``) or
  Google's ``{"error": {...}}`` bodies; checks the bearer token.

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
    def do_GET(self) -> None:
        stub: KubernetesStub = self.stub
        match = re.fullmatch(r"/api/v1/namespaces/([^/]+)/secrets/([^/?]+)", self.path)
        if stub.delay:
            time.sleep(stub.delay)
        if self.headers.get("Authorization") != f"Bearer {stub.token}":
            self.send_json(401, _k8s_status(401, "Unauthorized", "Unauthorized"))
            return
        if stub.fail_with:
            self.send_json(
                stub.fail_with, _k8s_status(stub.fail_with, "InternalError", "etcd timeout")
            )
            return
        if match is None:
            self.send_json(404, _k8s_status(404, "NotFound", "the server could not find it"))
            return
        namespace, name = match.groups()
        stub.count("read")
        if namespace in stub.forbidden_namespaces:
            message = (
                f'secrets "{name}" is forbidden: User '
                '"system:serviceaccount:gen3:bucket-registry" cannot get resource "secrets" '
                f'in API group "" in the namespace "{namespace}"'
            )
            self.send_json(403, _k8s_status(403, "Forbidden", message, name))
            return
        secret = stub.secrets.get((namespace, name))
        if secret is None:
            self.send_json(404, _k8s_status(404, "NotFound", f'secrets "{name}" not found', name))
            return
        self.send_json(200, secret)


class KubernetesStub(_Stub):
    handler = _KubernetesHandler

    def __init__(self) -> None:
        super().__init__()
        self.token = "k8s-service-account-token"
        self.forbidden_namespaces: set[str] = set()
        self.secrets: dict[tuple[str, str], dict[str, Any]] = {}
        self._resource_version = itertools.count(4711)

    def put(self, namespace: str, name: str, data: dict[str, str]) -> str:
        """Create or replace a Secret; returns its new ``resourceVersion``."""
        resource_version = str(next(self._resource_version))
        self.secrets[(namespace, name)] = {
            "kind": "Secret",
            "apiVersion": "v1",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "uid": str(uuid.uuid4()),
                "resourceVersion": resource_version,
                "creationTimestamp": "2024-05-01T12:00:00Z",
            },
            "data": {key: base64.b64encode(value.encode()).decode() for key, value in data.items()},
            "type": "Opaque",
        }
        return resource_version


# --- GCP Secret Manager --------------------------------------------------------------------


def _google_error(code: int, status: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "status": status}}


class _GcpHandler(JsonHandler):
    def do_GET(self) -> None:
        stub: GcpSecretManagerStub = self.stub
        match = re.fullmatch(
            r"/v1/projects/([^/]+)/secrets/([^/]+)/versions/([^/:]+):access", self.path
        )
        stub.count("access")
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
            return
        if stub.fail_with:
            status = "RESOURCE_EXHAUSTED" if stub.fail_with == 429 else "UNAVAILABLE"
            self.send_json(stub.fail_with, _google_error(stub.fail_with, status, "try again"))
            return
        if match is None:
            self.send_json(404, _google_error(404, "NOT_FOUND", "unknown path"))
            return
        project, secret, version = match.groups()
        if project in stub.forbidden_projects:
            self.send_json(
                403,
                _google_error(
                    403,
                    "PERMISSION_DENIED",
                    f"Permission 'secretmanager.versions.access' denied for resource "
                    f"'projects/{project}/secrets/{secret}/versions/{version}' (or it may not "
                    "exist).",
                ),
            )
            return
        versions = stub.secrets.get((project, secret))
        number = len(versions or []) if version == "latest" else int(version)
        if not versions or not 1 <= number <= len(versions):
            self.send_json(
                404,
                _google_error(
                    404,
                    "NOT_FOUND",
                    f"Secret [projects/{stub.project_number}/secrets/{secret}] not found or "
                    "has no versions.",
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


class GcpSecretManagerStub(_Stub):
    handler = _GcpHandler

    def __init__(self) -> None:
        super().__init__()
        self.project_number = "123456789012"
        self.valid_tokens = {"ya29.valid-access-token"}
        self.forbidden_projects: set[str] = set()
        self.corrupt_checksum = False
        self.secrets: dict[tuple[str, str], list[bytes]] = {}

    def add_version(self, project: str, secret: str, data: bytes) -> int:
        versions = self.secrets.setdefault((project, secret), [])
        versions.append(data)
        return len(versions)
