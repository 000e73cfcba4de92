"""``POST /multipart/presign`` with ``part_numbers``: many part URLs from one call and one
decision, for a user and for a trusted caller, with bytes through the URLs it hands out."""

from __future__ import annotations

import hashlib
import os
from typing import Any

import pytest

from tests.e2e.conftest import Flow
from tests.e2e.test_data_path import MIB, key_id_of, send
from tests.e2e.test_trusted_callers import (  # noqa: F401
    UPLOADS,
    Fence,
    cluster,
    fence,
    fence_flow,
    user_token,
)
from tests.support.arborist import ArboristStub

TARGET = {"bucket": "minio-abc", "key": "incoming/bulk.cram"}


async def upload_through(
    post: Any, target: dict[str, Any], chunks: list[bytes], order: list[int]
) -> list[dict[str, Any]]:
    """Init, sign every part in one call (numbers in ``order``), PUT each chunk, complete."""
    init = await post("/multipart/init", target)
    assert init.status_code == 200, init.text
    upload = {**target, "upload_id": init.json()["upload_id"]}
    signed = await post("/multipart/presign", {**upload, "part_numbers": order})
    assert signed.status_code == 200, signed.text
    answer = signed.json()
    assert [part["part_number"] for part in answer["parts"]] == order
    assert answer["method"] == "PUT" and answer["expires_at"] and answer["headers"] == {}
    etags = []
    for part in answer["parts"]:
        number, url = part["part_number"], part["url"]
        assert f"partNumber={number}&" in url and key_id_of(url)
        sent = await send({"method": "PUT", "url": url}, chunks[number - 1])
        assert sent.status_code == 200, sent.text
        etags.append({"part_number": number, "etag": sent.headers["etag"]})
    done = await post("/multipart/complete", {**upload, "parts": etags})
    assert done.status_code == 200, done.text
    return answer["parts"]


async def test_a_user_signs_all_parts_in_one_call_and_the_bytes_arrive(
    static_flow: Flow,
    all_logs: Any,
) -> None:
    flow = static_flow
    user = flow.user("submitter")

    async def post(path: str, body: dict[str, Any]) -> Any:
        return await flow.call("POST", path, json=body, headers=user)

    chunks = [os.urandom(5 * MIB), os.urandom(5 * MIB), os.urandom(MIB // 2)]
    before = flow.arborist.call_count
    all_logs.clear()
    await upload_through(post, TARGET, chunks, [3, 1, 2])
    # One decision for the whole list (the decision cache is off here: each call asks).
    decisions = [r for r in all_logs.records if getattr(r, "action", None) == "multipart_presign"]
    assert len(decisions) == 1 and decisions[0].parts == 3
    assert flow.arborist.call_count - before <= 4  # init, the parts, complete; nothing per part

    read = await flow.presign("submitter", "minio-abc", TARGET["key"], "read")
    got = await send(read.json())
    assert hashlib.sha256(got.content).digest() == hashlib.sha256(b"".join(chunks)).digest()


async def test_the_single_part_answer_keeps_its_shape(static_flow: Flow) -> None:
    flow = static_flow
    user = flow.user("submitter")
    init = await flow.call("POST", "/multipart/init", json=TARGET, headers=user)
    upload = {**TARGET, "upload_id": init.json()["upload_id"]}
    one = await flow.call(
        "POST", "/multipart/presign", json={**upload, "part_number": 4}, headers=user
    )
    assert one.status_code == 200, one.text
    assert set(one.json()) == {"url", "method", "expires_at", "headers"}
    many = await flow.call(
        "POST",
        "/multipart/presign",
        json={**upload, "part_numbers": list(range(1, 10_001))},
        headers=user,
    )
    assert many.status_code == 200
    assert len(many.json()["parts"]) == 10_000


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({}, "exactly one of part_number or part_numbers"),
        ({"part_number": 1, "part_numbers": [2]}, "exactly one of part_number or part_numbers"),
        ({"part_numbers": []}, "part_numbers"),
        ({"part_numbers": [1, 2, 1]}, "only once"),
        ({"part_numbers": [0]}, "part_numbers.0"),
        ({"part_numbers": [1, 10_001]}, "part_numbers.1"),
        ({"part_numbers": list(range(1, 10_002))}, "part_numbers"),
        ({"part_numbers": ["one"]}, "part_numbers.0"),
        ({"part_numbers": [1.5]}, "part_numbers.0"),
        ({"part_numbers": 3}, "part_numbers"),
    ],
    ids=[
        "neither",
        "both",
        "empty",
        "duplicate",
        "zero",
        "too-high",
        "too-many",
        "string",
        "fraction",
        "not-a-list",
    ],
)
async def test_bad_part_lists_are_400_and_sign_nothing(
    static_flow: Flow,
    change: dict[str, Any],
    message: str,
    all_logs: Any,
) -> None:
    flow = static_flow
    user = flow.user("submitter")
    init = await flow.call("POST", "/multipart/init", json=TARGET, headers=user)
    upload = {**TARGET, "upload_id": init.json()["upload_id"], **change}
    all_logs.clear()
    answer = await flow.call("POST", "/multipart/presign", json=upload, headers=user)
    assert answer.status_code == 400, answer.text
    assert message in answer.json()["message"]
    assert "X-Amz-Signature" not in answer.text
    assert not [r for r in all_logs.records if getattr(r, "decision", None) == "allowed"]


async def test_a_denied_user_gets_no_part_url(static_flow: Flow) -> None:
    flow = static_flow
    init = await flow.call("POST", "/multipart/init", json=TARGET, headers=flow.user("submitter"))
    upload = {**TARGET, "upload_id": init.json()["upload_id"], "part_numbers": [1, 2]}
    denied = await flow.call(
        "POST", "/multipart/presign", json=upload, headers=flow.user("reader-only")
    )
    assert denied.status_code == 403
    assert "X-Amz-Signature" not in denied.text


async def test_a_trusted_caller_signs_parts_for_a_file_upload_holder(
    fence: Fence,  # noqa: F811
    fence_flow: Flow,  # noqa: F811
) -> None:
    flow = fence_flow
    arborist: ArboristStub = flow.arborist
    arborist.grant("submitter", "uploader", "/data_file")
    arborist.grant("submitter", "reader", "/data_file")
    target = {
        "bucket": UPLOADS,
        "key": "guid-11/bulk.cram",
        "on_behalf_of": user_token(flow, "submitter"),
        "authz": ["/data_file"],
        "method": "file_upload",
    }
    chunks = [os.urandom(5 * MIB), os.urandom(1024)]
    await upload_through(fence.post, target, chunks, [1, 2])
    read = await fence.post(
        "/presign",
        {
            "bucket": UPLOADS,
            "key": "guid-11/bulk.cram",
            "op": "read",
            "on_behalf_of": user_token(flow, "submitter"),
            "authz": ["/data_file"],
        },
    )
    assert read.status_code == 200, read.text
    got = await send(read.json())
    assert got.content == b"".join(chunks)

    stranger = {**target, "on_behalf_of": user_token(flow, "stranger")}
    init = await fence.post("/multipart/init", target)
    refused = await fence.post(
        "/multipart/presign",
        {**stranger, "upload_id": init.json()["upload_id"], "part_numbers": [1]},
    )
    assert refused.status_code == 403
