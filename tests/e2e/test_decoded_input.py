"""Whatever is decoded from a caller (cursors) or from a store (XML answers) is bounded and
checked: a bad value is a clear 4xx or 503, never a 500."""

from __future__ import annotations

import base64
import json
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest

from tests.e2e.conftest import (
    ALL_OPS,
    PROJECT,
    STATIC_KEY_ID,
    STATIC_SECRET,
    Flow,
    put_static_secret,
)
from tests.support.net import BackgroundHTTPServer


def cursor(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "value",
    [
        {"after": 10**30, "before": 10**30},
        {"after": -1, "before": -(10**30)},
        {"after": True, "before": True},
        {"after": "a\x00b", "before": 1.5},
        {"after": "x" * 5000, "before": "1"},
        [1, 2],
        "plain",
        None,
        {"after": {"nested": 1}, "before": [1]},
    ],
)
async def test_hostile_cursors_are_400(make_flow, moto, gateway, value) -> None:
    flow: Flow = await make_flow()
    for url in ("/admin/buckets", "/admin/audit"):
        response = await flow.call("GET", url, params={"cursor": cursor(value)}, headers=flow.admin)
        assert response.status_code == 400, (url, response.text)
        assert response.json()["message"].startswith("cursor:")
    deep = "[" * 1500 + "]" * 1500
    long = base64.urlsafe_b64encode(deep.encode()).decode()
    response = await flow.call("GET", "/admin/audit", params={"cursor": long}, headers=flow.admin)
    assert response.status_code == 400


class _NoUploadId(BaseHTTPRequestHandler):
    """A store that answers CreateMultipartUpload with no UploadId."""

    def log_message(self, *_args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = (
            b'<?xml version="1.0" encoding="UTF-8"?><InitiateMultipartUploadResult>'
            b"<Bucket>odd-store</Bucket><Key>a</Key></InitiateMultipartUploadResult>"
        )
        self.send_response(200)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


async def test_a_store_answer_without_upload_id_is_503(make_flow, moto, gateway) -> None:
    store = BackgroundHTTPServer(_NoUploadId).start()
    try:
        flow: Flow = await make_flow()
        put_static_secret(moto, "gen3/bucket-registry/odd-store", STATIC_KEY_ID, STATIC_SECRET)
        body = {
            "name": "odd-store",
            "provider": "minio",
            "endpoint": store.url,
            "auth_mode": "static",
            "secret_ref": "aws-sm://gen3/bucket-registry/odd-store",
            "owner_project": "ABC",
            "data_upload_allowed": True,
        }
        await flow.register(body, None, ALL_OPS)
        flow.arborist.grant("submitter", "writer", PROJECT)
        response = await flow.call(
            "POST",
            "/multipart/init",
            json={"bucket": "odd-store", "key": "a"},
            headers=flow.user("submitter"),
        )
        assert response.status_code == 503, response.text
        assert "UploadId" in response.json()["message"]
    finally:
        store.stop()
