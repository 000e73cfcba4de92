"""openapi.yaml at the repo root is exactly what the app serves."""

from __future__ import annotations

from pathlib import Path

import yaml

from app.cli import render_openapi

ROOT = Path(__file__).resolve().parent.parent


async def test_committed_openapi_matches_the_served_one(client) -> None:
    served = (await client.get("/openapi.json")).json()
    committed = yaml.safe_load((ROOT / "openapi.yaml").read_text())
    assert committed == served, "openapi.yaml is stale: run `make openapi`"
    assert yaml.safe_load(render_openapi()) == served


async def test_every_operation_documents_its_errors(client) -> None:
    spec = (await client.get("/openapi.json")).json()
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            if path.startswith("/admin"):
                assert {"400", "401", "403", "503"} <= set(operation["responses"]), (method, path)
