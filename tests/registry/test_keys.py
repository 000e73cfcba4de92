"""Object keys and prefixes (docs/authorization.md)."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from app.errors import InvalidInput
from app.registry.keys import MAX_KEY_BYTES, validate_key, validate_prefix

CONTROL = [chr(c) for c in range(0x20)] + ["\x7f"] + [chr(c) for c in range(0x80, 0xA0)]
# Printable text without '/', for building segments.
SEGMENT_CHARS = st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="/")
segment = st.text(SEGMENT_CHARS, min_size=1, max_size=20).filter(lambda s: s not in (".", ".."))
good_keys = (
    st.lists(segment, min_size=1, max_size=8)
    .map("/".join)
    .filter(lambda key: len(key.encode()) <= MAX_KEY_BYTES)
)


def violates_rules(key: str) -> bool:
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        return True
    return (
        not key
        or size > MAX_KEY_BYTES
        or key.startswith("/")
        or any(ch in CONTROL for ch in key)
        or any(part in (".", "..") for part in key.split("/"))
    )


@pytest.mark.parametrize(
    "key",
    [
        "a",
        "dir/file.bam",
        "with space/and+plus%percent~tilde",
        "ünïcødé/файл/文件",
        "trailing/",
        "a//b",
        "..hidden/.x/x.",
        "k" * MAX_KEY_BYTES,
    ],
)
def test_accepts_ordinary_keys(key: str) -> None:
    assert validate_key(key) == key


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("", "key must not be empty"),
        ("/abs", "key must not start with '/'"),
        (".", "key must not contain a '.' path segment"),
        ("a/./b", "key must not contain a '.' path segment"),
        ("..", "key must not contain a '..' path segment"),
        ("a/../b", "key must not contain a '..' path segment"),
        ("a/..", "key must not contain a '..' path segment"),
        ("a\nb", "key contains control character U+000A at position 1"),
        ("a\x7f", "key contains control character U+007F at position 1"),
        ("\x85x", "key contains control character U+0085 at position 0"),
        ("k" * (MAX_KEY_BYTES + 1), "key is 1025 bytes in UTF-8; at most 1024 are allowed"),
        ("é" * 513, "key is 1026 bytes in UTF-8; at most 1024 are allowed"),
        ("a\ud800", "key is not valid Unicode (unpaired surrogate)"),
    ],
)
def test_rejects_with_a_precise_message(key: str, message: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        validate_key(key)
    assert caught.value.message == message


@given(st.text(max_size=300))
@example("")
@example("/")
@example("a/..")
@example("\ud800")
def test_any_text_is_either_accepted_unchanged_or_rejected_as_invalid_input(key: str) -> None:
    try:
        assert validate_key(key) == key
    except InvalidInput:
        assert violates_rules(key)
    else:
        assert not violates_rules(key)


@given(good_keys)
def test_keys_built_from_ordinary_segments_are_accepted(key: str) -> None:
    assert validate_key(key) == key


@given(good_keys, st.sampled_from(CONTROL), st.data())
def test_a_control_character_anywhere_is_rejected(
    key: str, control: str, data: st.DataObject
) -> None:
    position = data.draw(st.integers(0, len(key)))
    with pytest.raises(InvalidInput, match="control character"):
        validate_key(key[:position] + control + key[position:])


@given(good_keys, st.sampled_from([".", ".."]), st.data())
def test_a_dot_segment_anywhere_is_rejected(key: str, dots: str, data: st.DataObject) -> None:
    parts = key.split("/")
    position = data.draw(st.integers(0, len(parts)))
    with pytest.raises(InvalidInput, match="path segment"):
        validate_key("/".join([*parts[:position], dots, *parts[position:]]))


@given(good_keys)
def test_prefix_is_a_valid_key_ending_in_slash(key: str) -> None:
    prefix = key if key.endswith("/") else key + "/"
    if len(prefix.encode()) <= MAX_KEY_BYTES:
        assert validate_prefix(prefix) == prefix
    if not key.endswith("/"):
        with pytest.raises(InvalidInput, match="prefix must end with '/'"):
            validate_prefix(key)


@given(st.text(max_size=100))
def test_prefix_rules_include_the_key_rules(prefix: str) -> None:
    try:
        validate_prefix(prefix)
    except InvalidInput:
        assert violates_rules(prefix) or not prefix.endswith("/")
    else:
        assert not violates_rules(prefix) and prefix.endswith("/")


@pytest.mark.parametrize(
    ("prefix", "message"),
    [
        ("", "prefix must not be empty"),
        ("/", "prefix must not start with '/'"),
        ("incoming", "prefix must end with '/'"),
        ("../", "prefix must not contain a '..' path segment"),
        ("in\tcoming/", "prefix contains control character U+0009 at position 2"),
    ],
)
def test_rejects_bad_prefixes(prefix: str, message: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        validate_prefix(prefix)
    assert caught.value.message == message
