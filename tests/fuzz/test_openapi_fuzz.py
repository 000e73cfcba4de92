"""Fuzz every operation of the served OpenAPI with valid admin and user tokens: no 5xx, and
every answer matches the documented status codes, content types and schemas."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, settings
from schemathesis import checks as sc
from schemathesis.specs.openapi import checks as oc

from tests.support.live import LiveServer

SPEC = yaml.safe_load((Path(__file__).resolve().parents[2] / "openapi.yaml").read_text())
schema = schemathesis.openapi.from_dict(SPEC)

CHECKS = [
    sc.not_a_server_error,
    oc.status_code_conformance,
    oc.content_type_conformance,
    oc.response_schema_conformance,
    oc.response_headers_conformance,
]


@pytest.fixture(scope="module")
def live(postgres, issuer, arborist_server, moto_server) -> Iterator[LiveServer]:
    from app.config import Settings

    arborist_server.reset()
    arborist_server.make_admin("fuzz-admin")
    arborist_server.grant("fuzz-admin", "everything", "/")
    settings_ = Settings(
        database_url=postgres.url,
        arborist_url=arborist_server.url,
        user_api=issuer.user_api,
        arborist_timeout=2.0,
        endpoint_allowlist=["127.0.0.1"],
    )
    server = LiveServer(settings_).start()
    yield server
    server.stop()
    arborist_server.reset()


@pytest.fixture(scope="module")
def tokens(issuer) -> dict[str, str]:
    return {
        "admin": issuer.token("fuzz-admin", lifetime=3600),
        "user": issuer.token("fuzz-user", lifetime=3600),
    }


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_no_server_errors_and_documented_answers(case, live: LiveServer, tokens) -> None:
    who = "admin" if case.path.startswith("/admin") or case.path == "/presign" else "user"
    case.call_and_validate(
        base_url=live.url,
        headers={"Authorization": f"Bearer {tokens[who]}"},
        checks=CHECKS,
        timeout=30,
    )
