"""The data path's one-step body parse answers every request exactly as FastAPI's own handler
did: the same status and message for each mistake, and for a missing token."""

from __future__ import annotations

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI
from fastapi.responses import JSONResponse

from app.api import data, fence
from app.api.deps import TrustedOrUserCallerDep
from app.api.errors import install_error_handlers
from app.api.routing import DataPathRoute
from app.api.schemas import PresignRequest
from app.errors import AccessDenied
from tests.support.fence import FenceIssuer

VALID = b'{"bucket": "no-such-bucket", "key": "k.bam", "op": "read"}'
JSON = "application/json"

# (name, body, content type, whether a user token is sent)
CASES: list[tuple[str, bytes, str | None, bool]] = [
    ("valid", VALID, JSON, True),
    ("valid-charset", VALID, "application/json; charset=utf-8", True),
    ("valid-upper-case-type", VALID, "Application/JSON", True),
    ("valid-no-token", VALID, JSON, False),
    ("invalid-json", b'{"bucket": ', JSON, True),
    ("invalid-json-no-token", b'{"bucket": ', JSON, False),
    ("nan", b'{"bucket": "b", "key": "k", "op": "read", "expires_in": NaN}', JSON, True),
    ("extra-field", b'{"bucket": "b", "key": "k", "op": "read", "colour": 1}', JSON, True),
    ("bad-op", b'{"bucket": "b", "key": "k", "op": "fly"}', JSON, True),
    ("missing-key", b'{"bucket": "b", "op": "read"}', JSON, True),
    ("int-as-str", b'{"bucket": 5, "key": "k", "op": "read"}', JSON, True),
    ("array", b"[1, 2]", JSON, True),
    ("empty", b"", JSON, True),
    ("text-plain", VALID, "text/plain", True),
    ("no-content-type", VALID, None, True),
    ("form", b"bucket=b&key=k&op=read", "application/x-www-form-urlencoded", True),
    (
        "duplicate-key",
        b'{"bucket": "b", "bucket": "no-such-bucket", "key": "k", "op": "read"}',
        JSON,
        True,
    ),
    (
        "trusted-fields-from-a-user",
        b'{"bucket": "b", "key": "k", "op": "read", "authz": []}',
        JSON,
        True,
    ),
    ("not-utf8", b'{"bucket": "\xff", "key": "k", "op": "read"}', JSON, True),
]


# What FastAPI's stock handler answered for each case before the one-step parse existed.
STOCK_ANSWERS: dict[str, tuple[int, str]] = {
    "array": (400, "Input should be a valid dictionary or object to extract fields from"),
    "bad-op": (400, "op: Input should be 'read', 'write' or 'delete'"),
    "duplicate-key": (404, "bucket 'no-such-bucket' is not registered"),
    "empty": (400, "Field required"),
    "extra-field": (400, "colour: Extra inputs are not permitted"),
    "form": (400, "Input should be a valid dictionary or object to extract fields from"),
    "int-as-str": (400, "bucket: Input should be a valid string"),
    "invalid-json": (400, "11: JSON decode error"),
    # No credentials: refused before the body is read (app/api/limits.py), whatever it holds.
    "invalid-json-no-token": (401, "an access token is required (Authorization: Bearer <token>)"),
    "missing-key": (400, "key: Field required"),
    "nan": (400, "expires_in: Input should be a finite number"),
    "no-content-type": (400, "Input should be a valid dictionary or object to extract fields from"),
    "not-utf8": (400, "There was an error parsing the body"),
    "text-plain": (400, "Input should be a valid dictionary or object to extract fields from"),
    "trusted-fields-from-a-user": (
        403,
        "on_behalf_of, authz, method, audit and legacy are for trusted callers only",
    ),
    "valid": (404, "bucket 'no-such-bucket' is not registered"),
    "valid-charset": (404, "bucket 'no-such-bucket' is not registered"),
    "valid-no-token": (401, "an access token is required (Authorization: Bearer <token>)"),
    "valid-upper-case-type": (404, "bucket 'no-such-bucket' is not registered"),
}


@pytest.mark.parametrize(
    ("name", "body", "content_type", "with_token"), CASES, ids=[c[0] for c in CASES]
)
async def test_answers_are_the_stock_handlers(
    client: httpx.AsyncClient,
    issuer: FenceIssuer,
    name: str,
    body: bytes,
    content_type: str | None,
    with_token: bool,
) -> None:
    headers = {}
    if content_type is not None:
        headers["content-type"] = content_type
    if with_token:
        headers["authorization"] = f"Bearer {issuer.token('alice')}"
    response = await client.post("/presign", content=body, headers=headers)
    assert (response.status_code, response.json()["message"]) == STOCK_ANSWERS[name]
    if response.status_code == 400:
        assert response.json()["error"] == "invalid_request"


def test_the_data_path_routes_take_the_one_step_parse() -> None:
    one_step = {
        route.path
        for router in (data.router, fence.router)
        for route in router.routes
        if isinstance(route, DataPathRoute) and route.one_step
    }
    assert one_step == {"/presign", "/multipart/presign", "/presign/batch"}


async def test_a_router_included_with_dependencies_keeps_the_stock_handler() -> None:
    """Dependencies added at inclusion would be skipped by the one-step parse: they run."""

    async def closed() -> None:
        raise AccessDenied("closed for maintenance")

    router = APIRouter(route_class=DataPathRoute)

    @router.post("/presign")
    async def presign(body: PresignRequest, caller: TrustedOrUserCallerDep) -> JSONResponse:
        return JSONResponse({"bucket": body.bucket})

    app = FastAPI()
    install_error_handlers(app)
    app.include_router(router, dependencies=[Depends(closed)])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://registry") as http:
        response = await http.post("/presign", content=VALID, headers={"content-type": JSON})
    assert response.status_code == 403
    assert response.json()["message"] == "closed for maintenance"
