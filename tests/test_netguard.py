"""The destination policy: every spelling of a refused address is refused, and the guarded
clients ask the policy on each new connection."""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.errors import DependencyUnavailable, InvalidInput
from app.netguard import DestinationRefused, NetGuard, guarded_transport, parse_ip
from app.registry.validation import validate_endpoint
from app.storage.gcs.apis import GoogleApis

LOOPBACK = ipaddress.ip_network("127.0.0.0/8")
LINK_LOCAL = ipaddress.ip_network("169.254.0.0/16")
PRIVATE = [ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")]


def _in(network: ipaddress.IPv4Network) -> st.SearchStrategy[ipaddress.IPv4Address]:
    first = int(network.network_address)
    return st.integers(first, first + network.num_addresses - 1).map(ipaddress.IPv4Address)


def _number(value: int, style: str) -> str:
    return {"dec": str(value), "oct": "0" + format(value, "o"), "hex": hex(value)}[style]


@st.composite
def v4_spelling(draw: st.DrawFn, address: ipaddress.IPv4Address) -> str:
    """One of the ways inet_aton (and so every resolver) reads ``address``."""
    octets = list(address.packed)
    parts_count = draw(st.integers(1, 4))
    head = octets[: parts_count - 1]
    rest = int.from_bytes(bytes(octets[parts_count - 1 :]), "big")
    numbers = [*head, rest]
    styles = st.sampled_from(["dec", "oct", "hex"])
    return ".".join(_number(n, draw(styles)) for n in numbers)


@st.composite
def v6_embedding(draw: st.DrawFn, address: ipaddress.IPv4Address) -> str:
    value = int(address)
    kind = draw(st.sampled_from(["mapped", "nat64", "6to4", "teredo", "compat", "mapped-dotted"]))
    if kind == "mapped":
        text = str(ipaddress.IPv6Address((0xFFFF << 32) | value))
    elif kind == "mapped-dotted":
        text = f"::ffff:{address}"
    elif kind == "nat64":
        text = str(ipaddress.IPv6Address((0x64FF9B << 96) | value))
    elif kind == "6to4":
        text = str(ipaddress.IPv6Address((0x2002 << 112) | (value << 80)))
    elif kind == "teredo":
        server = 0x08080808 << 64  # a public Teredo server; the client part is inverted
        text = str(ipaddress.IPv6Address((0x20010000 << 96) | server | (~value & 0xFFFFFFFF)))
    else:
        text = f"::{address}"
    if draw(st.booleans()):
        text = text.upper()
    return text


def endpoint(host: str, *, v6: bool = False, zone: bool = False, dot: bool = False) -> str:
    if v6:
        host = f"[{host}{'%25eth0' if zone else ''}]"
    elif dot:
        host += "."
    return f"http://{host}:9000"


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_link_local_is_refused_in_every_spelling_even_when_allow_listed(
    data: st.DataObject,
) -> None:
    address = data.draw(_in(LINK_LOCAL))
    if data.draw(st.booleans()):
        url = endpoint(data.draw(v4_spelling(address)), dot=data.draw(st.booleans()))
    else:
        url = endpoint(data.draw(v6_embedding(address)), v6=True, zone=data.draw(st.booleans()))
    with pytest.raises(InvalidInput, match="never allowed"):
        validate_endpoint(url, ["169.254.0.0/16", "0.0.0.0/0", "::/0"])


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_loopback_and_private_need_the_allow_list_in_every_spelling(data: st.DataObject) -> None:
    network = data.draw(st.sampled_from([LOOPBACK, *PRIVATE]))
    address = data.draw(_in(network))
    v4 = data.draw(st.booleans())
    if v4:
        url = endpoint(data.draw(v4_spelling(address)), dot=data.draw(st.booleans()))
    else:
        url = endpoint(data.draw(v6_embedding(address)), v6=True)
    # 8.8.8.8 is the Teredo relay of the tunnel spellings: a relay vouches for nothing.
    with pytest.raises(InvalidInput, match="ALLOWLIST"):
        validate_endpoint(url, ["8.8.8.8", "minio.example.org"])
    if v4:
        validate_endpoint(url, [str(network)])


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_spellings_read_as_the_system_resolver_reads_them(data: st.DataObject) -> None:
    address = data.draw(st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address))
    spelled = data.draw(v4_spelling(address))
    assert ipaddress.IPv4Address(socket.inet_aton(spelled)) == address
    assert parse_ip(spelled) == address


@pytest.mark.parametrize(
    "url",
    [
        "http://127.1",
        "http://169.254.43518",
        "http://0251.0376.0251.0376",
        "http://0x7f.1",
        "http://2130706433",
        "http://0.0.0.0",
        "http://0",
        "http://[::]",
        "http://[::1]",
        "http://[fe80::1%25eth0]",
        "http://[fd00:ec2::254]",
        "http://[fc00::1]",
        "http://[fd12:3456::1]",
        "http://[fec0::1]",
        "http://[64:ff9b::a9fe:a9fe]",
        "http://[2002:a9fe:a9fe::]",
        "http://[::ffff:7f00:1]",
        "http://100.64.0.1",
        "http://\uff11\uff12\uff17.\uff10.\uff10.\uff11",  # full-width digits, NFKC 127.0.0.1
        "http://localhost.",
        "http://metadata.google.internal.",
        "http://224.0.0.1",
    ],
)
def test_known_bypasses_are_refused(url: str) -> None:
    with pytest.raises(InvalidInput, match="endpoint: "):
        validate_endpoint(url, [])


def test_public_addresses_and_names_pass() -> None:
    for url in ("https://8.8.8.8", "https://[2606:4700::1111]", "https://s3.example.org"):
        assert validate_endpoint(url, []) == url


class _Resolver:
    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.calls: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        if host not in self.answers:
            raise socket.gaierror(socket.EAI_NONAME, "unknown")
        return self.answers[host]


async def test_every_resolved_address_is_checked() -> None:
    guard = NetGuard(resolve=_Resolver({"mixed.test": ["93.184.216.34", "127.0.0.1"]}))
    with pytest.raises(DestinationRefused, match="loopback"):
        await guard.check_url("https://mixed.test")
    guard.resolve = _Resolver({"meta.test": ["169.254.169.254"]})
    with pytest.raises(DestinationRefused, match="metadata"):
        await NetGuard(["meta.test"], resolve=guard.resolve).check_url("https://meta.test")


class _CountingServer:
    """An HTTP server on loopback counting the TCP connections it accepts."""

    def __init__(self) -> None:
        counter = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # one request per connection

            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            do_POST = do_GET

            def log_message(self, *args: object) -> None:
                pass

        class Server(ThreadingHTTPServer):
            def get_request(self):  # type: ignore[no-untyped-def]
                counter.connections += 1
                return super().get_request()

        self.connections = 0
        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> _CountingServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def listener() -> Iterator[_CountingServer]:
    with _CountingServer() as server:
        yield server


async def test_guarded_httpx_asks_the_policy_on_every_new_connection(listener) -> None:
    resolver = _Resolver({"store.test": ["127.0.0.1"]})
    guard = NetGuard([f"127.0.0.1:{listener.port}"], resolve=resolver)
    async with httpx.AsyncClient(transport=guarded_transport(guard), trust_env=False) as http:
        for _ in range(3):
            assert (await http.get(f"http://store.test:{listener.port}/")).status_code == 200
        assert listener.connections == 3
        assert resolver.calls == ["store.test"] * 3
        # Re-pointed at an address the policy refuses: no connection is opened.
        resolver.answers["store.test"] = ["10.1.2.3"]
        with pytest.raises(httpx.ConnectError, match="private"):
            await http.get(f"http://store.test:{listener.port}/")
        # The allow-list names loopback only on the listener's port.
        with pytest.raises(httpx.ConnectError, match="ALLOWLIST"):
            await http.get("http://127.0.0.1:1/")
    assert listener.connections == 3


async def test_a_name_that_does_not_resolve_is_a_connect_error() -> None:
    guard = NetGuard(resolve=_Resolver({}))
    async with httpx.AsyncClient(transport=guarded_transport(guard), trust_env=False) as http:
        with pytest.raises(httpx.ConnectError, match="could not be resolved"):
            await http.get("https://nowhere.test/")


async def test_google_api_calls_are_guarded(listener) -> None:
    resolver = _Resolver({"iam.test": ["127.0.0.1"]})
    guard = NetGuard(resolve=resolver)
    apis = GoogleApis(
        iam_endpoint=f"http://iam.test:{listener.port}",
        storage_endpoint=f"http://iam.test:{listener.port}",
        netguard=guard.trusting("http://elsewhere.test"),
        max_attempts=1,
    )

    class Tokens:
        async def token(self, *, force_refresh: bool = False) -> str:
            return "t"

    with pytest.raises(DependencyUnavailable, match=r"not contacted: iam\.test"):
        await apis.sign_blob("sa@p.iam.gserviceaccount.com", b"x", Tokens())
    assert resolver.calls == ["iam.test"]
    assert listener.connections == 0
