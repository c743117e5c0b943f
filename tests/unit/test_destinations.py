"""The address rules every outbound connection on configured input goes through."""

from __future__ import annotations

import ipaddress

import pytest
import trio

from roost.runtime import destinations
from roost.runtime.destinations import DestinationNotAllowed, Policy, classify_error, describe_error, refusal


@pytest.mark.parametrize("address, why", [
    ("127.0.0.1", "loopback"), ("::1", "loopback"), ("::ffff:127.0.0.1", "loopback"),
    ("10.1.2.3", "private"), ("172.16.0.1", "private"), ("192.168.1.1", "private"), ("fd00::1", "private"),
    ("169.254.169.254", "metadata"), ("fd00:ec2::254", "metadata"), ("169.254.1.1", "link-local"),
    ("fe80::1", "link-local"), ("100.64.0.1", "CGNAT"), ("100.127.255.254", "CGNAT"),
    ("224.0.0.1", "multicast"), ("ff02::1", "multicast"), ("0.0.0.0", "unspecified"), ("::", "unspecified"),
    ("240.0.0.1", "reserved"),
])
def test_non_public_addresses_are_refused_by_default(address, why):
    reason = refusal(ipaddress.ip_address(address))
    assert reason is not None and why in reason


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "100.128.0.1", "2606:4700:4700::1111"])
def test_public_addresses_pass(address):
    assert refusal(ipaddress.ip_address(address)) is None


def test_the_policy_allows_named_hosts_and_ranges_only():
    policy = Policy.parse(["mail.lan", "10.0.0.0/8", "127.0.0.1"])
    assert policy.allows("mail.lan", ipaddress.ip_address("192.168.1.5")) is None
    assert policy.allows("MAIL.LAN.", ipaddress.ip_address("192.168.1.5")) is None
    assert policy.allows("other", ipaddress.ip_address("10.9.9.9")) is None
    assert policy.allows("other", ipaddress.ip_address("::ffff:127.0.0.1")) is None
    assert policy.allows("other", ipaddress.ip_address("127.0.0.2")) is not None
    assert policy.allows("other", ipaddress.ip_address("169.254.169.254")) is not None
    with pytest.raises(ValueError):
        Policy.parse(["a", " "])


def test_a_name_that_resolves_inside_is_refused_at_connect_and_says_how_to_allow_it():
    with destinations.installed(Policy()):
        with pytest.raises(DestinationNotAllowed, match="loopback.*ROOST_ALLOWED_DESTINATIONS=localhost"):
            destinations.connect_vetted("localhost", 9, 1)


async def test_httpx_connects_to_the_vetted_address_and_keeps_the_host_header():
    seen: list[bytes] = []
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]

    async def handle(stream: trio.SocketStream) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            data += await stream.receive_some(65536)
        seen.append(data)
        await stream.send_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, handle, listeners)
        with destinations.installed(Policy()):
            async with destinations.http_client(5) as client:
                with pytest.raises(Exception) as info:
                    await client.get(f"http://localhost:{port}/x")
            assert classify_error(info.value, "localhost").kind == "blocked"
        assert seen == []
        with destinations.installed(Policy.parse(["127.0.0.0/8"])):
            async with destinations.http_client(5) as client:
                assert (await client.get(f"http://localhost:{port}/x")).status_code == 204
        nursery.cancel_scope.cancel()
    assert b"host: localhost:" in seen[0].lower()


def test_errors_are_described_by_kind_without_their_text():
    assert describe_error(ConnectionRefusedError("server says: secret")) == "refused: the source refused the connection"
    assert describe_error(TimeoutError("x")).startswith("timeout:")
    assert describe_error(ValueError("10.0.0.7:5432 said no")) == "ValueError (details in the log)"
    assert classify_error(OSError("boom"), "h:1").kind == "unreachable"
