"""Per-request cost breakdown from a py-spy profile of the service under load.

``python -m bench.run --profile DIR`` records one py-spy ``raw`` profile per load run; this
module assigns each sample to the first cost below found from the innermost frame outwards,
and turns sample counts into microseconds of service CPU per request::

    python -m bench.breakdown DIR/presign-direct.txt --requests 38440 --rate 250
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

# (cost, frame patterns), innermost match wins; frames are "function (file:line)".
COSTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("access log line", ("logging/", "pythonjsonlogger", "AccessService._log", "annotate_request")),
    ("metrics", ("prometheus_client", "Metrics.observe")),
    ("signing", ("app/storage/", "botocore/", "urllib/parse")),
    (
        "token check (cached)",
        (
            "app/authz/tokens",
            "app/authz/callers",
            "app/authz/principals",
            "bearer_token",
            "trusted_or_user_caller",
            "authenticated_caller",
        ),
    ),
    ("decision cache", ("app/authz/arborist", "AuthorizationMemo", "app/authz/policy")),
    ("bucket lookup", ("app/access/directory", "app/cache")),
    (
        "access decision (bindings, key rules)",
        ("app/access/", "app/registry/", "requester_for", "app/api/delegation"),
    ),
    (
        "body parsing",
        (
            "request_body_to_args",
            "Request.body",
            "Request.json",
            "json/decoder",
            "json/__init__.py",
            "pydantic",
            "model_validate",
            "app/api/fast",
            "_read_body",
        ),
    ),
    ("JSON encoding", ("json/encoder", "orjson", "render", "JSONResponse.__init__", "url_json")),
    ("handler", ("app/api/",)),
    ("request id", ("uuid", "RequestIdMiddleware", "app/logs")),
    ("HTTP server (parse, socket write)", ("uvicorn/", "httptools")),
    ("ASGI, routing, middleware, dependencies", ("fastapi/", "starlette/", "contextlib")),
)


def classify(frames: list[str]) -> str:
    for frame in reversed(frames):
        for cost, patterns in COSTS:
            if any(pattern in frame for pattern in patterns):
                return cost
    return "event loop, other"


def breakdown(path: Path) -> tuple[Counter[str], int]:
    samples: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [re.sub(r":\d+\)$", ")", frame) for frame in stack.split(";")]
        samples[classify(frames)] += int(count)
        total += int(count)
    return samples, total


def report(path: Path, requests: int, rate: float) -> str:
    samples, total = breakdown(path)
    lines = [f"{'cost':<42} {'share':>6} {'µs/request':>11}"]
    for cost, count in samples.most_common():
        micros = count / rate / max(1, requests) * 1e6
        lines.append(f"{cost:<42} {100 * count / total:5.1f}% {micros:11.1f}")
    lines.append(
        f"{'total (busy samples)':<42} {100.0:5.1f}% {total / rate / requests * 1e6:11.1f}"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile", type=Path)
    parser.add_argument("--requests", type=int, required=True, help="requests served meanwhile")
    parser.add_argument("--rate", type=float, default=250, help="py-spy samples per second")
    args = parser.parse_args()
    print(report(args.profile, args.requests, args.rate))


if __name__ == "__main__":
    main()
