"""Property tests for the rules that keep input safe: bucket names, endpoints, and which
bindings a key falls under."""

from __future__ import annotations

import ipaddress
import string
import uuid

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from app.errors import InvalidInput
from app.registry.records import BindingRecord, Op, Provider
from app.registry.validation import validate_bucket_name, validate_endpoint

S3_ALPHABET = string.ascii_lowercase + string.digits + ".-"


@given(st.text(alphabet=S3_ALPHABET, min_size=3, max_size=63))
def test_s3_names_accepted_only_when_all_rules_hold(name: str) -> None:
    try:
        validate_bucket_name(name, Provider.AWS)
        accepted = True
    except InvalidInput:
        accepted = False
    looks_like_ip = False
    try:
        ipaddress.ip_address(name)
        looks_like_ip = True
    except ValueError:
        pass
    expected = (
        name[0].isalnum()
        and name[-1].isalnum()
        and ".." not in name
        and not looks_like_ip
        and not name.startswith(("xn--", "sthree-", "amzn-s3-demo-"))
        and not name.endswith(("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3"))
    )
    assert accepted == expected


@given(st.text(min_size=0, max_size=80))
def test_any_name_with_characters_outside_the_alphabet_is_refused(name: str) -> None:
    assume(any(ch not in S3_ALPHABET for ch in name) or not 3 <= len(name) <= 63)
    with pytest.raises(InvalidInput):
        validate_bucket_name(name, Provider.MINIO)


@given(st.text(alphabet=string.ascii_lowercase + string.digits + "-_.", min_size=3, max_size=63))
def test_gcs_names_never_contain_google(name: str) -> None:
    try:
        validate_bucket_name(name, Provider.GCP)
    except InvalidInput:
        return
    assert "google" not in name and not name.startswith("goog")
    assert name[0].isalnum() and name[-1].isalnum()


link_local_v4 = st.integers(0, 2**16 - 1).map(
    lambda n: ipaddress.IPv4Address((169 << 24) | (254 << 16) | n)
)
link_local_v6 = st.integers(0, 2**64 - 1).map(lambda n: ipaddress.IPv6Address((0xFE80 << 112) | n))


@given(
    st.one_of(link_local_v4, link_local_v6),
    st.sampled_from(["http", "https"]),
    st.integers(1, 65535),
)
def test_link_local_endpoints_are_refused_even_when_allowlisted(address, scheme, port) -> None:
    host = f"[{address}]" if address.version == 6 else str(address)
    with pytest.raises(InvalidInput):
        validate_endpoint(f"{scheme}://{host}:{port}", ["0.0.0.0/0", "::/0", str(address)])


private_v4 = st.one_of(
    st.integers(0, 2**24 - 1).map(lambda n: ipaddress.IPv4Address((10 << 24) | n)),
    st.integers(0, 2**20 - 1).map(lambda n: ipaddress.IPv4Address((172 << 24) | (16 << 16) | n)),
    st.integers(0, 2**16 - 1).map(lambda n: ipaddress.IPv4Address((192 << 24) | (168 << 16) | n)),
    st.integers(0, 2**24 - 1).map(lambda n: ipaddress.IPv4Address((127 << 24) | n)),
)


@given(private_v4)
def test_private_endpoints_need_the_allowlist(address) -> None:
    url = f"http://{address}:9000"
    with pytest.raises(InvalidInput):
        validate_endpoint(url, [])
    assert validate_endpoint(url, [f"{address}/32"]) == url


@given(st.text(max_size=20), st.sampled_from("@?#"), st.text(max_size=20))
def test_endpoints_with_userinfo_query_or_fragment_are_refused(
    before: str, marker: str, after: str
) -> None:
    with pytest.raises(InvalidInput):
        validate_endpoint(f"https://{before}{marker}{after}minio.example.org", [])
    with pytest.raises(InvalidInput):
        validate_endpoint(f"https://minio.example.org/{before}{marker}{after}", [])


segment = st.text(
    alphabet=string.ascii_letters + string.digits + "-_.*?$[]", min_size=1, max_size=8
)
prefixes = st.lists(segment, min_size=1, max_size=3).map(lambda parts: "/".join(parts) + "/")
keys = st.lists(segment, min_size=1, max_size=4).map("/".join)


def binding(prefix: str, ops: set[Op]) -> BindingRecord:
    return BindingRecord(uuid.uuid4(), uuid.uuid4(), None, prefix, "/programs/P", frozenset(ops))


@given(prefixes, keys, st.sampled_from(list(Op)))
def test_a_prefix_binding_covers_exactly_the_keys_under_it(prefix: str, key: str, op: Op) -> None:
    # Wildcard characters in prefixes and keys are literal: '*', '?' and '$' widen nothing.
    assert binding(prefix, {op}).covers(prefix + key, op)
    assert binding(prefix, {op}).covers(key, op) == key.startswith(prefix)
    other_ops = set(Op) - {op}
    assert not binding(prefix, other_ops).covers(prefix + key, op)


@given(keys, st.sampled_from(list(Op)))
def test_a_whole_bucket_binding_covers_every_key(key: str, op: Op) -> None:
    assert binding("", {op}).covers(key, op)


def test_wildcards_in_prefixes_do_not_match_other_keys() -> None:
    star = binding("data*/", {Op.READ})
    assert not star.covers("dataset/x", Op.READ)
    assert star.covers("data*/x", Op.READ)
    assert not binding("a?/", {Op.READ}).covers("ab/x", Op.READ)
