"""The documentation is self-contained: the contract lives in docs/, and every relative link in
the Markdown files resolves to a file (and heading) of this repository."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from markdown_it import MarkdownIt
from markdown_it.token import Token

ROOT = Path(__file__).resolve().parent.parent

# Where users and operators read: a contract cited from here must be one they have.
SCANNED = ("README.md", "docs", "app", "charts", "clients")
SKIPPED_DIRS = {".venv", "__pycache__", "build", "dist", "node_modules"}
# A link out of the repository, or a citation of a contract document that is not in it.
FORBIDDEN = re.compile(r"\.\./shared\b|\bSPEC\s*§")


def _files(root: Path, entries: tuple[str, ...]) -> Iterator[Path]:
    for entry in entries:
        path = root / entry
        if path.is_file():
            yield path
            continue
        for candidate in sorted(path.rglob("*")):
            parts = set(candidate.relative_to(root).parts)
            if candidate.is_file() and not parts & SKIPPED_DIRS and not _in_egg_info(parts):
                yield candidate


def _in_egg_info(parts: set[str]) -> bool:
    return any(part.endswith(".egg-info") for part in parts)


def _text(path: Path) -> str | None:
    data = path.read_bytes()
    if b"\0" in data:
        return None
    return data.decode("utf-8", errors="replace")


def forbidden_references(root: Path, entries: tuple[str, ...] = SCANNED) -> list[str]:
    """``path:line: text`` for every line that links to ``../shared`` or cites ``SPEC §``."""
    found = []
    for path in _files(root, entries):
        text = _text(path)
        if text is None:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if FORBIDDEN.search(line):
                found.append(f"{path.relative_to(root)}:{number}: {line.strip()}")
    return found


def markdown_files(root: Path) -> list[Path]:
    files = sorted(root.glob("*.md")) + sorted((root / "docs").glob("*.md"))
    for folder in ("charts", "clients"):
        files += [path for path in _files(root, (folder,)) if path.suffix == ".md"]
    return files


_PARSER = MarkdownIt("commonmark").enable("table")


def _slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to ``-``."""
    kept = "".join(
        char
        for char in heading.strip().lower()
        if char.isalnum() or char in "-_ " or unicodedata.category(char).startswith("M")
    )
    return kept.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    tokens = _PARSER.parse(path.read_text(encoding="utf-8"))
    for opening, inline in pairwise(tokens):
        if opening.type != "heading_open" or not inline.children:
            continue
        text = "".join(
            child.content for child in inline.children if child.type in ("text", "code_inline")
        )
        slug = _slug(text)
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        if count:
            seen[f"{slug}-{count}"] = 1
    return set(seen)


def _links(path: Path) -> Iterator[str]:
    def walk(tokens: list[Token]) -> Iterator[str]:
        for token in tokens:
            if token.type == "link_open":
                yield str(token.attrGet("href") or "")
            elif token.type == "image":
                yield str(token.attrGet("src") or "")
            if token.children:
                yield from walk(token.children)

    yield from walk(_PARSER.parse(path.read_text(encoding="utf-8")))


def broken_links(root: Path, files: list[Path]) -> list[str]:
    """``file: link (why)`` for every relative link that leads nowhere in ``root``."""
    broken = []
    for path in files:
        for href in _links(path):
            parts = urlsplit(href)
            if parts.scheme or parts.netloc or href.startswith("//"):
                continue  # absolute URLs are not this repository's business
            target = (path.parent / unquote(parts.path)).resolve() if parts.path else path
            where = f"{path.relative_to(root)}: {href}"
            if not target.is_relative_to(root.resolve()):
                broken.append(f"{where} (outside the repository)")
            elif not target.exists():
                broken.append(f"{where} (no such file)")
            elif parts.fragment and target.suffix == ".md":
                if unquote(parts.fragment) not in anchors(target):
                    broken.append(f"{where} (no such heading)")
    return broken


def test_nothing_cites_a_contract_outside_the_repository() -> None:
    assert forbidden_references(ROOT) == []


def test_every_relative_markdown_link_resolves() -> None:
    files = markdown_files(ROOT)
    assert ROOT / "README.md" in files and ROOT / "docs" / "api.md" in files
    assert broken_links(ROOT, files) == []


def test_the_checks_catch_what_they_look_for(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "app").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# Title\n\n## Data path\n\n## Data path\n")
    (tmp_path / "README.md").write_text(
        "See [ok](docs/a.md#data-path-1), [top](#intro), [gone](docs/missing.md),\n"
        "[heading](docs/a.md#nowhere), [out](../shared/SPEC.md) and [web](https://x.org/y).\n"
        "\n# Intro\n"
    )
    (tmp_path / "app" / "m.py").write_text('"""Rules (SPEC §5)."""\n')

    assert forbidden_references(tmp_path) == [
        "README.md:2: [heading](docs/a.md#nowhere), [out](../shared/SPEC.md) and"
        " [web](https://x.org/y).",
        'app/m.py:1: """Rules (SPEC §5)."""',
    ]
    assert broken_links(tmp_path, markdown_files(tmp_path)) == [
        "README.md: docs/missing.md (no such file)",
        "README.md: docs/a.md#nowhere (no such heading)",
        "README.md: ../shared/SPEC.md (outside the repository)",
    ]


@pytest.mark.parametrize(
    ("heading", "slug"),
    [
        ("ETag and If-Match", "etag-and-if-match"),
        (
            "The fallback: serving the YAML before the import",
            "the-fallback-serving-the-yaml-before-the-import",
        ),
        ("1. Export Fence's configuration", "1-export-fences-configuration"),
        ("bucket_audit", "bucket_audit"),
    ],
)
def test_heading_anchors_follow_github(heading: str, slug: str) -> None:
    assert _slug(heading) == slug
