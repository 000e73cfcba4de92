"""``python -m bench.console``: the console's pages at 10,000 buckets.

Starts the same local environment as ``bench/run.py`` (PostgreSQL, moto, a Fence-like issuer,
the Arborist stub and the service as its own process), inserts the buckets (each of one of 50
projects under ``/programs/DEV``), then requests pages one after another, signed in with the
``access_token`` cookie as a browser is, and reports p50/p99 per page kind: as a bucket admin,
as a registrant of one project (200 buckets) and as a registrant of the whole program (every
bucket, the widest filter a registrant's listing runs). The target: p99 under 300 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import asyncpg
import httpx

from bench.run import environment, insert_buckets

TARGET_P99_MS = 300.0


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> int:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--buckets", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=300, help="per page kind")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, environment(Path(tmp)) as env:
        url = str(env["url"])
        arborist = env["arborist"]
        arborist.make_admin("admin")  # type: ignore[attr-defined]
        arborist.grant("carol", "bucket_register", PROJECT)  # type: ignore[attr-defined]
        arborist.grant("paula", "bucket_register", PROGRAM)  # type: ignore[attr-defined]
        dsn = env["database"].dsn  # type: ignore[attr-defined]
        asyncio.run(insert_buckets(dsn, args.buckets))
        asyncio.run(_file_under_projects(dsn))
        print(f"console pages, {args.buckets} buckets, {args.requests} requests each")
        worst = 0.0
        for user, title, visible in (
            ("admin", "bucket admin", args.buckets),
            ("carol", f"registrant of {PROJECT}", args.buckets // 50),
            ("paula", f"registrant of {PROGRAM}", args.buckets),
        ):
            cookies = {"access_token": env["issuer"].token(user), "csrftoken": "bench"}  # type: ignore[attr-defined]
            with httpx.Client(base_url=url, cookies=cookies, timeout=30) as http:
                print(f" as {title}")
                worst = max(worst, _measure(http, _pages(http, visible), args.requests))
    verdict = "ok" if worst < TARGET_P99_MS else "TOO SLOW"
    print(f"worst p99 {worst:.1f} ms (target < {TARGET_P99_MS:.0f} ms): {verdict}")
    return 0 if worst < TARGET_P99_MS else 1


PROGRAM = "/programs/DEV"
PROJECT = "/programs/DEV/projects/P7"


async def _file_under_projects(dsn: str) -> None:
    """Each bucket belongs to the project its ``owner_project`` names (P0..P49)."""
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(
            "UPDATE bucket SET project_resource = $1 || owner_project", PROGRAM + "/projects/"
        )
    finally:
        await connection.close()


def _pages(http: httpx.Client, visible: int) -> dict[str, str]:
    """The pages to time for a user who sees ``visible`` buckets."""
    http.get("/console/buckets").raise_for_status()
    pages = {
        "first page (50 rows)": "/console/buckets",
        "200 rows": "/console/buckets?limit=200",
        "filtered (label+owner)": "/console/buckets?label=tier:hot&owner_project=P7",
        "a bucket page": "/console/buckets/bench-list-000007",
        "health": "/console/health",
    }
    if visible > 400:
        pages["a page in the middle"] = f"/console/buckets?cursor={_cursor_at(http, visible // 2)}"
    return pages


def _measure(http: httpx.Client, pages: dict[str, str], requests: int) -> float:
    worst = 0.0
    for kind, path in pages.items():
        http.get(path).raise_for_status()
        samples = []
        for _ in range(requests):
            started = time.perf_counter()
            answer = http.get(path)
            samples.append((time.perf_counter() - started) * 1000)
            assert answer.status_code == 200, answer.status_code
        p99 = percentile(samples, 0.99)
        worst = max(worst, p99)
        print(
            f"  {kind:<24} p50 {statistics.median(samples):6.1f} ms"
            f"  p99 {p99:6.1f} ms  ({len(answer.content)} bytes)"
        )
    return worst


def _cursor_at(http: httpx.Client, position: int) -> str:
    """Follow "Next page" links until about ``position`` buckets in."""
    path, seen = "/console/buckets?limit=200", 0
    while seen + 200 < position:
        page = http.get(path).text
        marker = 'href="/console/buckets?'
        start = page.rindex(marker) + len('href="')
        path = page[start : page.index('"', start)].replace("&amp;", "&")
        seen += 200
    return path.split("cursor=", 1)[1].split("&", 1)[0]


if __name__ == "__main__":
    sys.exit(main())
