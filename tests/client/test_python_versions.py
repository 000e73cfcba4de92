"""The client runs inside Fence, which is still on Python 3.9: it must parse with the 3.9
grammar, evaluate nothing 3.10+ at import time, and work on every interpreter 3.9-3.13 found
on this machine (each gets the client's declared dependencies, resolved for that version)."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

CLIENT = Path(__file__).resolve().parents[2] / "clients" / "python"
PACKAGE = CLIENT / "bucket_registry_client"
SOURCES = sorted(PACKAGE.glob("*.py"))
VERSIONS = ["3.9", "3.10", "3.11", "3.12", "3.13"]

SMOKE = """
import json
import sys
import httpx
import bucket_registry_client as brc
from bucket_registry_client.fence import FenceBucketRegistry

def answer(request):
    if request.url.path == "/credentials":
        return httpx.Response(200, json={"access_token": "t", "expiration": "2030-01-01T00:00:00Z",
                                         "bucket": "b", "prefix": "p/", "provider": "gcp"})
    if request.url.path == "/presign" and json.loads(request.content)["bucket"] == "b":
        return httpx.Response(200, json={"url": "https://b.example/k?sig", "method": "GET",
                                         "expires_at": "2030-01-01T00:00:00.123Z", "headers": {}})
    return httpx.Response(404, json={"ok": False, "error": "bucket_not_found",
                                     "message": "no bucket"})

client = brc.BucketRegistryClient("http://registry", service_token="svc",
                                  transport=httpx.MockTransport(answer))
signed = client.presign("b", "k", "read", brc.OnBehalfOf.user("alice"),
                        grant=brc.Grant(authz=("/a",)))
assert signed.url.endswith("?sig") and signed.expires_at.year == 2030
token = client.credentials("b", "p/", ["read", "list"], brc.OnBehalfOf.user("alice"),
                           duration=900, grant=brc.Grant(authz=("/a",)))
assert isinstance(token, brc.GcsAccessToken) and token.expiration.year == 2030
try:
    client.resolve("missing")
except brc.BucketNotFound as exc:
    assert exc.status == 404
else:
    raise AssertionError("no BucketNotFound")
fence = FenceBucketRegistry(client, brc.LegacyFallback(enabled=True))
routed = fence.get_signed_url("s3://missing/k", "download", 60, authz=["/a"], token="t")
assert routed == brc.UseLegacy(brc.UNREGISTERED, "missing"), routed
print("ok", sys.version_info[:2])
"""


def test_pyproject_declares_python_and_dependencies() -> None:
    project = tomllib.loads((CLIENT / "pyproject.toml").read_text())["project"]
    assert project["requires-python"] == ">=3.9"
    names = {
        dep.split(">")[0].split("=")[0].split("<")[0].strip() for dep in project["dependencies"]
    }
    assert names == {"httpx", "pybreaker"}


@pytest.mark.parametrize("source", SOURCES, ids=lambda path: path.name)
def test_parses_with_the_python_39_grammar(source: Path) -> None:
    tree = ast.parse(source.read_text(), filename=str(source), feature_version=(3, 9))
    annotations = _annotation_nodes(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
            # ``X | Y`` is only safe where it is never evaluated: postponed annotations.
            assert id(node) in annotations, f"{source.name}:{node.lineno} uses | at run time"
        if isinstance(node, ast.Call) and _name(node.func) == "dataclass":
            used = {keyword.arg for keyword in node.keywords}
            assert not used & {"slots", "kw_only"}, f"{source.name}:{node.lineno} needs 3.10"
        assert not isinstance(node, ast.Match)
    if annotations:
        assert "from __future__ import annotations" in source.read_text(), source.name


def _annotation_nodes(tree: ast.AST) -> set[int]:
    roots: list[ast.AST] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.AnnAssign):
            roots.append(node.annotation)
        elif isinstance(node, ast.arg) and node.annotation is not None:
            roots.append(node.annotation)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.returns:
            roots.append(node.returns)
    return {id(inner) for root in roots for inner in ast.walk(root)}


def _name(node: ast.AST) -> str:
    return node.id if isinstance(node, ast.Name) else getattr(node, "attr", "")


def _interpreter(version: str) -> str | None:
    """A working ``python{version}``: on PATH, else under pyenv's versions. A pyenv shim for
    a version that is not activated refuses to run, so every candidate is tried once."""
    candidates = [shutil.which(f"python{version}")]
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    candidates += [str(path / "bin" / f"python{version}") for path in root.glob(f"{version}.*")]
    for candidate in candidates:
        if candidate and Path(candidate).exists() and _runs(candidate, version):
            return candidate
    return None


def _runs(python: str, version: str) -> bool:
    try:
        probe = subprocess.run(
            [python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except OSError:
        return False
    return probe.returncode == 0 and probe.stdout.strip() == version


@pytest.mark.parametrize("version", VERSIONS)
def test_imports_and_works_on(version: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    python = _interpreter(version)
    if python is None:
        pytest.skip(f"python{version} is not installed on this machine")
    project = tomllib.loads((CLIENT / "pyproject.toml").read_text())["project"]
    target = tmp_path_factory.mktemp(f"deps-{version}")
    installed = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--target",
            str(target),
            "--python-version",
            version,
            "--only-binary=:all:",
            "--implementation",
            "py",
            *project["dependencies"],
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert installed.returncode == 0, installed.stderr[-2000:]
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), str(CLIENT)])}
    ran = subprocess.run(
        [python, "-c", SMOKE],
        capture_output=True,
        text=True,
        timeout=120,
        env=environment,
        cwd=tmp_path_factory.getbasetemp(),
    )
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert ran.stdout.startswith("ok"), ran.stdout
