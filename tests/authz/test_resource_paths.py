"""Resource paths by Arborist's rules: what the registry accepts, Arborist can judge.

The stub applies Arborist's conversion to ltree; the conversion itself is checked against
PostgreSQL's own ltree parser, so the property does not rest on the stub alone.
"""

from __future__ import annotations

import random
import string

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.authz.policy import LtreeSyntaxError, arborist_ltree
from app.errors import InvalidInput
from app.registry.validation import resource_path_problem, validate_resource_path
from tests.support.arborist import ArboristStub

READ = {"service": "fence", "method": "read-storage"}
# Everything a path could plausibly hold, hostile characters included.
ALPHABET = string.ascii_letters + string.digits + "_.~*@:+-/ %$#!?&=\t\n\\'\"é🙃"

segment = st.text(alphabet=ALPHABET.replace("/", ""), min_size=0, max_size=12)
paths = st.one_of(
    st.text(alphabet=ALPHABET, max_size=40),
    st.lists(segment, min_size=1, max_size=6).map(lambda parts: "/" + "/".join(parts)),
)


def arborist_judges(stub: ArboristStub, path: str) -> int:
    status, _ = stub.judge(
        {"user": {"user_id": "alice"}, "requests": [{"resource": path, "action": READ}]}
    )
    return status


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(path=paths)
def test_every_accepted_path_is_one_arborist_accepts(arborist_server, path) -> None:
    problem = resource_path_problem(path)
    if problem is None:
        assert validate_resource_path(path) == path
        assert arborist_judges(arborist_server, path) == 200
    else:
        with pytest.raises(InvalidInput, match="resource_path: "):
            validate_resource_path(path)


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("/programs/DEV projects", "spaces"),
        ("/programs/DEV/", "trailing '/'"),
        ("/programs//DEV", "'//'"),
        ("/", "names no Arborist resource"),
        ("/programs/" + "_" * 90, "too long"),
    ],
)
def test_paths_arborist_refuses_are_400_with_the_reason(arborist_server, path, why) -> None:
    with pytest.raises(InvalidInput, match=why) as caught:
        validate_resource_path(path, field="authz[0]")
    assert caught.value.status_code == 400
    assert caught.value.message.startswith("authz[0]: ")
    # ...and they are refused because Arborist would refuse them, not on a whim.
    assert arborist_judges(arborist_server, path) == 400


@pytest.mark.parametrize(
    "path",
    ["programs/DEV", "/programs/./DEV", "/programs/../x", "/programs/a\tb", "", "/a/é"],
)
def test_other_refusals(path) -> None:
    assert resource_path_problem(path) is not None


def test_usual_paths_are_valid() -> None:
    for path in (
        "/programs",
        "/programs/DEV/projects/ABC",
        "/services/bucket-registry",
        "/programs/phs000001.v1.p1/c_1-x~y",
        "/a/*/b@c:d+e",
    ):
        assert validate_resource_path(path) == path


async def test_the_ltree_conversion_matches_postgresql(postgres) -> None:
    """Whatever ``arborist_ltree`` accepts PostgreSQL's ltree accepts, and the reverse."""
    rng = random.Random(20240601)
    corpus = [
        "/a",
        "/a/b",
        "/a b",
        "/a/",
        "//a",
        "/a//b",
        "/" + "x" * 255,
        "/" + "x" * 256,
        "/_" * 3,
        "/" + "_" * 85,
        "/" + "_" * 86,
        "/é/🙃",
        "/a.b/c-d",
        "/%41",
    ]
    corpus += [
        "/" + "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 30))) for _ in range(300)
    ]
    connection = await asyncpg.connect(postgres.dsn, timeout=10)
    try:
        await connection.execute("CREATE EXTENSION IF NOT EXISTS ltree")
        for path in corpus:
            try:
                labels = arborist_ltree(path)
            except LtreeSyntaxError:
                labels = None
            # The text Arborist hands to text2ltree(), rebuilt independently of arborist_ltree.
            dotted = _arborist_text(path)
            try:
                parsed = await connection.fetchval("SELECT ltree2text(text2ltree($1))", dotted)
            except asyncpg.PostgresError:
                parsed = None
            if parsed == "":  # an empty ltree: Arborist refuses it before asking PostgreSQL
                parsed = None
            assert (labels is None) == (parsed is None), (path, dotted)
            if labels is not None:
                assert ".".join(labels) == parsed
    finally:
        await connection.close()


def _arborist_text(path: str) -> str:
    """Arborist's FormatPathForDb, spelled out step by step from its Go source."""
    text = path.replace("_", "_S0").replace("-", "_S1").replace(".", "_S2").replace("~", "_S3")
    escaped = "".join(
        "+"
        if ch == " "
        else ch
        if ch.isascii() and (ch.isalnum() or ch in "-_.~/")
        else "".join(f"%{byte:02X}" for byte in ch.encode())
        for ch in text
    )
    return escaped.replace("%", "__").replace("/", ".").lstrip(".")
