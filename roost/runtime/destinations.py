"""Where roost may connect on a scout's (or an app's) say-so: the address rules in one place.

A scout names hosts (an IMAP server, a classifier's ``base_url``); left unchecked, that makes
roost a port scanner of its own network and a reader of cloud metadata. So every outbound
connection a plugin makes on configured input goes through here:

- ``refusal(address)`` says why an address is not a public one: loopback, private, link-local
  (cloud metadata at 169.254.169.254 among them), CGNAT (100.64.0.0/10), multicast, unspecified
  or otherwise reserved; None for a global unicast address.
- ``resolve_vetted(host, port)`` resolves a name and keeps only the addresses the policy allows;
  callers connect to *those addresses* (``connect_vetted`` for blocking sockets, ``VettedBackend``
  for httpx), so a name that resolves to a public address at check time and to 127.0.0.1 at
  connect time (DNS rebinding) still cannot get through. TLS keeps the host name for SNI and the
  certificate check.
- ``ROOST_ALLOWED_DESTINATIONS`` (``Settings.allowed_destinations``) lets named hosts, addresses
  or CIDR ranges through, for self-hosted mail and LLM servers: ``mail.lan,10.0.0.0/8,127.0.0.1``.

The policy is process-wide (``install`` is called by ``Services.build``); ``check_destination``
is what scout create/PATCH uses to answer 400 before anything is stored.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import ssl
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

import trio

from roost.errors import DestinationNotAllowed, RemoteError, RoostError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

SETTING = "ROOST_ALLOWED_DESTINATIONS"
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_METADATA = {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}


def refusal(address: IPAddress) -> str | None:
    """Why ``address`` is not a destination by default, or None when it is a public unicast address."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address in _METADATA:
        return "a cloud metadata address"
    if address.is_unspecified:
        return "the unspecified address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_multicast:
        return "a multicast address"
    if isinstance(address, ipaddress.IPv4Address) and address in _CGNAT:
        return "a CGNAT (100.64.0.0/10) address"
    if address.is_reserved:
        return "a reserved address"
    if address.is_private:
        return "a private address"
    if not address.is_global:
        return "a reserved address"
    return None


@dataclass(frozen=True)
class Policy:
    """Hosts and ranges let through although their addresses are not public."""

    hosts: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = field(default_factory=tuple)

    @classmethod
    def parse(cls, entries: Iterable[str]) -> Policy:
        """A policy from ``host``, address and CIDR entries (ValueError for an empty entry)."""
        hosts: set[str] = set()
        networks: list[IPNetwork] = []
        for raw in entries:
            entry = raw.strip()
            if not entry:
                raise ValueError(f"{SETTING}: empty entry")
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                hosts.add(entry.lower().rstrip("."))
        return cls(frozenset(hosts), tuple(networks))

    def allows(self, host: str, address: IPAddress) -> str | None:
        """None when ``host`` may be reached at ``address``; else the reason it may not."""
        if host.lower().rstrip(".") in self.hosts:
            return None
        if any(address in net for net in self.networks if net.version == address.version):
            return None
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            mapped = address.ipv4_mapped
            if any(mapped in net for net in self.networks if net.version == 4):
                return None
        return refusal(address)


_policy = Policy()


def install(policy: Policy) -> None:
    """Make ``policy`` the process's policy (``Services.build`` installs the one from the settings)."""
    global _policy
    _policy = policy


def current() -> Policy:
    return _policy


@contextlib.contextmanager
def installed(policy: Policy) -> Iterator[Policy]:
    """``policy`` for the length of a block, the previous one after (tests, one-off tools)."""
    before = _policy
    install(policy)
    try:
        yield policy
    finally:
        install(before)


def _refused(host: str, reasons: dict[str, str]) -> DestinationNotAllowed:
    detail = ", ".join(f"{addr} is {why}" for addr, why in sorted(reasons.items()))
    return DestinationNotAllowed(
        f"{host!r} is not an allowed destination ({detail}); roost does not connect to loopback, private, "
        f"link-local, CGNAT, multicast or metadata addresses unless {SETTING} names the host or its range "
        f"(e.g. {SETTING}={host if not _is_ip(host) else host + '/32'})")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
        return True
    except ValueError:
        return False


def vet(host: str, addresses: Iterable[str], policy: Policy | None = None) -> list[str]:
    """The addresses of ``host`` the policy allows, in order.

    Raises:
        DestinationNotAllowed: none of them is allowed.
    """
    policy = policy or _policy
    allowed: list[str] = []
    reasons: dict[str, str] = {}
    for text in addresses:
        address = ipaddress.ip_address(text.split("%", 1)[0])
        why = policy.allows(host, address)
        if why is None:
            allowed.append(text)
        else:
            reasons[text] = why
    if not allowed:
        raise _refused(host, reasons or {"(nothing)": "unresolvable"})
    return allowed


def _addresses(infos: list[Any]) -> list[str]:
    seen: list[str] = []
    for info in infos:
        addr = str(info[4][0])
        if addr not in seen:
            seen.append(addr)
    return seen


def resolve_vetted(host: str, port: int, policy: Policy | None = None) -> list[str]:
    """Resolve ``host`` (blocking) and keep the allowed addresses. Raises DestinationNotAllowed, OSError."""
    host = host.strip("[]")
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return vet(host, _addresses(infos), policy)


def connect_vetted(host: str, port: int, timeout: float | None, policy: Policy | None = None) -> socket.socket:
    """A blocking TCP socket to an allowed address of ``host`` (the first that answers).

    Raises:
        DestinationNotAllowed: every address of the host is refused by the policy.
        OSError: no allowed address could be reached.
    """
    last: OSError | None = None
    for address in resolve_vetted(host, port, policy):
        try:
            return socket.create_connection((address, port), timeout)
        except OSError as exc:
            last = exc
    assert last is not None
    raise last


async def check_destination(host: str, port: int, *, timeout_s: float = 3.0) -> None:
    """Refuse (DestinationNotAllowed) a host that is, or resolves only to, an address the policy refuses.

    For saving a config: a name that does not resolve now passes (the connect-time check still
    applies), and so does a name whose look-up takes longer than ``timeout_s``.
    """
    host = host.strip("[]")
    if _is_ip(host):
        vet(host, [host])
        return
    with trio.move_on_after(timeout_s):
        try:
            infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError:
            return
        vet(host, _addresses(infos))


class VettedBackend:
    """An httpcore network backend that connects only to vetted addresses of the request's host.

    TLS is started by httpcore with the URL's host name (SNI and certificate check stay right);
    the TCP connection goes to the address vetted here, so a DNS answer cannot change in between.
    """

    def __init__(self, policy: Policy | None = None):
        from httpcore._backends.auto import AutoBackend

        self._auto = AutoBackend()  # trio or asyncio, whichever runs
        self._policy = policy

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,  # noqa: ASYNC109 - httpcore's
                          local_address: str | None = None, socket_options: Any = None) -> Any:
        with trio.fail_after(timeout) if timeout else contextlib.nullcontext():
            addresses = await trio.to_thread.run_sync(resolve_vetted, host, port, self._policy,
                                                      abandon_on_cancel=True)
        last: Exception | None = None
        for address in addresses:
            try:
                return await self._auto.connect_tcp(address, port, timeout=timeout, local_address=local_address,
                                                    socket_options=socket_options)
            except Exception as exc:  # noqa: BLE001 - httpcore's ConnectError/ConnectTimeout: try the next address
                last = exc
        assert last is not None
        raise last

    async def connect_unix_socket(self, *args: Any, **kwargs: Any) -> Any:
        raise DestinationNotAllowed("unix sockets are not a destination")

    async def sleep(self, seconds: float) -> None:
        await self._auto.sleep(seconds)


def http_client(timeout: float | None, policy: Policy | None = None) -> Any:
    """An ``httpx.AsyncClient`` whose connections go only to vetted addresses (no proxies from the environment)."""
    import httpcore
    import httpx

    transport = httpx.AsyncHTTPTransport()
    # httpx 0.28 takes no network backend; its pool is swapped for one that has ours (pinned <0.29).
    transport._pool = httpcore.AsyncConnectionPool(ssl_context=httpx.create_ssl_context(),
                                                   network_backend=VettedBackend(policy))
    return httpx.AsyncClient(transport=transport, timeout=timeout, trust_env=False)


# --- Errors from the remote side, by kind -------------------------------------------------------
# What a server answers is not echoed into ``last_error`` (it reaches the API): the kind and our own
# words about it are. The detail stays in the log.

def _chain(exc: BaseException, limit: int = 20) -> list[BaseException]:
    """``exc`` and what caused it (``__cause__``, ``__context__``, exception groups' members)."""
    found: list[BaseException] = []
    todo = [exc]
    while todo and len(found) < limit:
        e = todo.pop(0)
        if any(e is f for f in found):
            continue
        found.append(e)
        if isinstance(e, BaseExceptionGroup):
            todo.extend(e.exceptions)
        todo.extend(x for x in (e.__cause__, e.__context__) if x is not None)
    return found


def classify_error(exc: BaseException, where: str) -> RemoteError:
    """``exc`` (raised while talking to ``where``, e.g. ``"imap.example.com:993"``) as a RemoteError.

    The first cause in the chain of a known kind decides (httpx and trio wrap the OS error).
    """
    import httpx  # imported here: the blocking IMAP code needs no httpx

    chain = _chain(exc)
    for e in chain:
        if isinstance(e, RemoteError):
            return e
        if isinstance(e, DestinationNotAllowed):
            return RemoteError("blocked", str(e))
    for e in chain:
        if isinstance(e, trio.TooSlowError | TimeoutError | httpx.TimeoutException):
            return RemoteError("timeout", f"{where} did not answer in time")
        if isinstance(e, ssl.SSLError | ssl.CertificateError):
            return RemoteError("tls", f"TLS with {where} failed ({type(e).__name__})")
        if isinstance(e, ConnectionRefusedError):
            return RemoteError("refused", f"{where} refused the connection")
        if isinstance(e, socket.gaierror):
            return RemoteError("unreachable", f"{where}: the host name does not resolve")
    if any(isinstance(e, OSError | httpx.TransportError) for e in chain):
        return RemoteError("unreachable", f"cannot reach {where} ({type(exc).__name__})")
    return RemoteError("bad_answer", f"{where} answered something unexpected ({type(exc).__name__})")


def describe_error(exc: BaseException) -> str:
    """The text recorded as ``last_error``: a RemoteError's kind and message; else only our own words.

    Another exception's text may hold what a server said, so only its type is kept.
    """
    if isinstance(exc, RemoteError):
        return str(exc)
    if isinstance(exc, DestinationNotAllowed):
        return f"blocked: {exc}"
    if isinstance(exc, RoostError):
        return f"{type(exc).__name__}: {exc.message}"
    if getattr(exc, "safe_to_show", False):  # e.g. TriageUnavailable: the plugin's own words
        return f"{type(exc).__name__}: {exc}"
    if any(isinstance(e, OSError | trio.TooSlowError) for e in _chain(exc)):
        return str(classify_error(exc, "the source"))
    return f"{type(exc).__name__} (details in the log)"
