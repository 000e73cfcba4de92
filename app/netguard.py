"""Where the registry may open connections: one policy for registration and for every connect.

Endpoints are chosen by admins, and names can be re-pointed after registration (DNS
rebinding), so the same check runs when an endpoint is registered and again on every new
connection the outbound clients open, over every address a name resolves to. Addresses are
canonicalised first: the system resolver also accepts shorthand (``127.1``), octal and hex
octets and dotless integers, and IPv6 can carry an IPv4 address (mapped, NAT64, 6to4, Teredo).

* link-local, cloud-metadata and unspecified addresses: refused always;
* loopback, private, unique-local, site-local, shared, reserved and multicast addresses:
  only when ``ENDPOINT_ALLOWLIST`` names the host, the address or a network holding it;
* everything else: allowed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import unicodedata
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import httpcore
import httpx
from aiohttp.abc import AbstractResolver, ResolveResult

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# ``(host, port) -> addresses``: the system resolver unless a test injects another.
Resolve = Callable[[str, int], Awaitable[Sequence[str]]]

RESOLVE_TIMEOUT = 5.0

METADATA_HOSTS = frozenset(
    {
        "metadata.google.internal",
        "metadata.goog",
        "metadata",
        "instance-data",
        "instance-data.ec2.internal",
    }
)
_ALWAYS_BLOCKED_NETS = tuple(
    ipaddress.ip_network(net)
    for net in (
        "0.0.0.0/8",  # "this host": connecting to it reaches the local machine
        "169.254.0.0/16",  # link-local, cloud metadata (169.254.169.254)
        "100.100.100.200/32",  # Alibaba Cloud metadata
        "::/128",
        "fe80::/10",  # link-local
        "fd00:ec2::254/128",  # AWS metadata over IPv6
    )
)
_NAT64_NETS = (ipaddress.ip_network("64:ff9b::/96"),)
_RESTRICTED_V6_NETS = (ipaddress.ip_network("64:ff9b:1::/48"), ipaddress.ip_network("fec0::/10"))
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
_PRIVATE_SUFFIXES = (".local", ".internal", ".localdomain", ".svc", ".cluster.local", ".localhost")
# One inet_aton part: hex, octal or decimal.
_AT0N_PART = re.compile(r"^(0x[0-9a-f]*|0[0-7]*|[1-9][0-9]*)$")


class DestinationRefused(OSError):
    """A connection target the policy refuses; an ``OSError`` so HTTP clients treat it as a
    failed connect (nothing is sent) and report it on their usual error path."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def normalise_host(host: str) -> str:
    """The host as a resolver sees it: lowercase ASCII, no brackets, no trailing dot."""
    name = unicodedata.normalize("NFKC", host.strip()).lower()
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    name = name.rstrip(".")
    if not name.isascii():
        try:
            name = name.encode("idna").decode("ascii")
        except UnicodeError:
            raise DestinationRefused(f"{host!r} is not a valid host name") from None
    return name


def _inet_aton(name: str) -> ipaddress.IPv4Address | None:
    parts = name.split(".")
    if not 1 <= len(parts) <= 4 or not all(_AT0N_PART.match(part) for part in parts):
        return None
    values = []
    for part in parts:
        if part.startswith("0x"):
            values.append(int(part[2:] or "0", 16))
        elif part.startswith("0") and len(part) > 1:
            values.append(int(part, 8))
        else:
            values.append(int(part))
    *head, last = values
    if any(value > 255 for value in head) or last >= 256 ** (5 - len(values)):
        return None
    number = last
    for index, value in enumerate(head):
        number |= value << (8 * (3 - index))
    return ipaddress.IPv4Address(number)


def parse_ip(host: str) -> IPAddress | None:
    """``host`` as an address if any resolver would read it as one, else ``None`` (a name)."""
    name = normalise_host(host)
    if ":" in name:
        try:
            return ipaddress.IPv6Address(name.split("%", 1)[0])
        except ValueError:
            return None
    try:
        return ipaddress.IPv4Address(name)
    except ValueError:
        pass
    address = _inet_aton(name)
    if address is None and name and name[0].isdigit():
        # Anything else the platform's inet_aton takes is an address too, never a name.
        try:
            address = ipaddress.IPv4Address(socket.inet_aton(name))
        except (OSError, ValueError):
            address = None
    return address


def embedded_addresses(address: IPAddress) -> list[IPAddress]:
    """``address`` and every IPv4 address it carries (mapped, compatible, NAT64, 6to4, Teredo)."""
    found: list[IPAddress] = [address]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            found.append(address.ipv4_mapped)
        if address.sixtofour is not None:
            found.append(address.sixtofour)
        if address.teredo is not None:
            found.extend(address.teredo)
        low32 = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if any(address in net for net in _NAT64_NETS):
            found.append(low32)
        if address in _IPV4_COMPATIBLE and int(address) > 1:
            found.append(low32)
    return found


def is_always_blocked(address: IPAddress) -> bool:
    return any(
        addr in net
        for addr in embedded_addresses(address)
        for net in _ALWAYS_BLOCKED_NETS
        if addr.version == net.version
    )


def is_restricted(address: IPAddress) -> bool:
    """Not a public unicast address: needs the allow-list."""
    for addr in embedded_addresses(address):
        if (
            not addr.is_global
            or addr.is_multicast
            or addr.is_reserved
            or addr.is_loopback
            or addr.is_private
        ):
            return True
        if isinstance(addr, ipaddress.IPv6Address) and (
            addr.is_site_local or any(addr in net for net in _RESTRICTED_V6_NETS)
        ):
            return True
    return False


def is_internal_name(name: str) -> bool:
    return name == "localhost" or "." not in name or name.endswith(_PRIVATE_SUFFIXES)


def _has_port(entry: str) -> bool:
    if entry.startswith("["):
        return "]:" in entry
    return entry.count(":") == 1


class NetGuard:
    """The destination policy plus the resolver it checks names with.

    ``resolve`` is the seam tests use instead of DNS. Clients built by ``trusting`` share it.
    """

    def __init__(
        self,
        allowlist: Iterable[str] = (),
        *,
        resolve: Resolve | None = None,
        timeout: float = RESOLVE_TIMEOUT,
    ) -> None:
        self.allowlist = [entry.strip().lower() for entry in allowlist if entry.strip()]
        self.resolve: Resolve = resolve or system_resolve
        self.timeout = timeout
        self._parent: NetGuard | None = None

    def trusting(self, *urls: str | None) -> NetGuard:
        """The same policy with the hosts of operator-configured ``urls`` allow-listed."""
        hosts = []
        for url in urls:
            if url:
                host = httpx.URL(url).host
                if host:
                    hosts.append(host)
        child = NetGuard([*self.allowlist, *hosts], timeout=self.timeout)
        child._parent = self
        return child

    def _resolver(self) -> Resolve:
        return self._parent._resolver() if self._parent is not None else self.resolve

    def allowlisted(self, host: str, port: int | None, address: IPAddress | None = None) -> bool:
        for entry in self.allowlist:
            entry_host, _, entry_port = (
                entry.rpartition(":") if _has_port(entry) else (entry, "", "")
            )
            if entry_port and (port is None or str(port) != entry_port):
                continue
            if address is not None:
                try:
                    network = ipaddress.ip_network(entry_host.strip("[]"), strict=False)
                except ValueError:
                    pass
                else:
                    # Only the address itself (or the IPv4 address it maps): a tunnel address
                    # also carries a relay's address, which must not vouch for it.
                    mapped = getattr(address, "ipv4_mapped", None)
                    if any(a is not None and a in network for a in (address, mapped)):
                        return True
                    continue
            if entry_host == host:
                return True
        return False

    def check_address(
        self, address: IPAddress, host: str, port: int | None, *, name_allowed: bool = False
    ) -> None:
        """Refuse ``address`` (``host``'s, or ``host`` itself when it is a literal)."""
        subject = host if host == str(address) else f"{host} resolves to {address}, which"
        if is_always_blocked(address):
            raise DestinationRefused(
                f"{subject} is a link-local, unspecified or cloud metadata address, never allowed"
            )
        if is_restricted(address) and not (name_allowed or self.allowlisted(host, port, address)):
            raise DestinationRefused(
                f"{subject} is a loopback, private or cluster-internal address; add it to"
                " BUCKET_REGISTRY_ENDPOINT_ALLOWLIST to allow it"
            )

    def check_literal(self, host: str, port: int | None) -> IPAddress | None:
        """What can be decided without DNS: the address itself, or a name's shape."""
        name = normalise_host(host)
        if not name:
            raise DestinationRefused("a host is required")
        if name in METADATA_HOSTS:
            raise DestinationRefused(f"{name} is a cloud metadata address, which is never allowed")
        address = parse_ip(name)
        if address is not None:
            self.check_address(address, str(address), port)
        elif is_internal_name(name) and not self.allowlisted(name, port):
            raise DestinationRefused(
                f"{name} is a loopback, private or cluster-internal address; add it to"
                " BUCKET_REGISTRY_ENDPOINT_ALLOWLIST to allow it"
            )
        return address

    async def addresses(self, host: str, port: int) -> list[str]:
        """The addresses of ``host`` that may be connected to; refuses if any may not.

        Every address is checked, not only the first: a client may try them all in turn.
        """
        address = self.check_literal(host, port)
        if address is not None:
            return [str(address)]
        name = normalise_host(host)
        try:
            answers = await asyncio.wait_for(self._resolver()(name, port), self.timeout)
        except TimeoutError:
            raise OSError(f"resolving {name} timed out") from None
        name_allowed = self.allowlisted(name, port)
        checked: list[str] = []
        for answer in answers:
            resolved = parse_ip(answer)
            if resolved is None:
                raise DestinationRefused(f"{name} resolved to something that is not an address")
            self.check_address(resolved, name, port, name_allowed=name_allowed)
            checked.append(str(resolved))
        if not checked:
            raise OSError(f"{name} has no addresses")
        return checked

    async def check_url(self, url: str) -> list[str]:
        parsed = httpx.URL(url)
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        return await self.addresses(parsed.host, port)


async def system_resolve(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def refusal_in(exc: BaseException | None) -> DestinationRefused | None:
    """The policy refusal somewhere in an SDK's chain of wrapped exceptions, if any."""
    seen = 0
    while exc is not None and seen < 20:
        if isinstance(exc, DestinationRefused):
            return exc
        for attr in ("os_error", "original_error"):
            inner = getattr(exc, attr, None)
            if isinstance(inner, DestinationRefused):
                return inner
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


class GuardedResolver(AbstractResolver):
    """aiohttp resolver (botocore's S3/STS clients): the guard decides each new connection's
    addresses, so the connection goes to exactly the addresses that were checked."""

    def __init__(self, guard: NetGuard) -> None:
        self.guard = guard

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results: list[ResolveResult] = []
        for address in await self.guard.addresses(host, port):
            v6 = ":" in address
            results.append(
                {
                    "hostname": host,
                    "host": address,
                    "port": port,
                    "family": socket.AF_INET6 if v6 else socket.AF_INET,
                    "proto": 0,
                    "flags": socket.AI_NUMERICHOST,
                }
            )
        return results

    async def close(self) -> None:
        """Nothing to release."""


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore network backend: TCP connects go only to addresses the guard checked; TLS
    still verifies the original host name (httpcore passes it as ``server_hostname``)."""

    def __init__(self, guard: NetGuard, inner: httpcore.AsyncNetworkBackend) -> None:
        self.guard = guard
        self.inner = inner

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            addresses = await self.guard.addresses(host, port)
        except DestinationRefused as exc:
            raise httpcore.ConnectError(exc.message) from exc
        except OSError as exc:
            # A name that does not resolve is a failed connection, as httpcore's own backend
            # reports it; raw, it would escape httpx's errors and every caller's handling.
            raise httpcore.ConnectError(f"{host} could not be resolved") from exc
        last: Exception | None = None
        for address in addresses:
            try:
                return await self.inner.connect_tcp(
                    address, port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None
        raise last

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are not a storage destination")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


def guarded_transport(guard: NetGuard, **kwargs: Any) -> httpx.AsyncHTTPTransport:
    """An httpx transport whose every new connection passes ``guard``."""
    transport = httpx.AsyncHTTPTransport(**kwargs)
    pool = transport._pool
    # httpx exposes no network-backend argument; the pool reads this attribute for every
    # connection it opens (tests/test_netguard.py proves the hook runs on each one).
    pool._network_backend = _GuardedBackend(guard, pool._network_backend)
    return transport
