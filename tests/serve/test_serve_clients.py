"""`mailcli serve` cannot be turned against people: real client, valid tokens never limited,
one spelling per token, idle sockets do not stall it (a real server process, a real HTTP client)."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mailcli.feedback.clients import client_key
from tests.feedback.test_feedback_support import Seeded, seed
from tests.serve_support import Server, one_click

PEOPLE = [f"p{i}@example.org" for i in range(12)]  # some token among them has "-" or "_"
LIMIT = 30  # bad tokens a client may send in a minute


def _config(root: Path, old: str, new: str) -> None:
    path = root / "mailcli.toml"
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


@pytest.fixture
def seeded(project: Path) -> Seeded:
    return seed(project, PEOPLE)


@pytest.fixture
def served(project: Path, seeded: Seeded) -> Iterator[tuple[Server, Seeded]]:
    server = Server(project)
    try:
        yield server, seeded
    finally:
        server.stop()


def _bad(n: int) -> str:
    return f"{'A' * 30}{n:010d}"  # the right shape, a wrong MAC


def _exhaust(server: Server, headers: dict[str, str] | None = None) -> list[int]:
    return [one_click(server.url, _bad(i), headers=headers).status_code for i in range(LIMIT + 2)]


def test_bad_tokens_never_block_a_valid_one_from_the_same_client(served: tuple[Server, Seeded]) -> None:
    server, s = served
    codes = _exhaust(server)
    assert codes[:LIMIT] == [400] * LIMIT and codes[LIMIT:] == [429, 429]
    # The same client, now limited for bad tokens, unsubscribes at once.
    for email in PEOPLE[:2]:
        response = one_click(server.url, s.token(email))
        assert response.status_code == 200 and "unsubscribed" in response.text
        assert s.membership(email)[0] == "unsubscribed"
    assert httpx.get(server.url, params={"t": s.token(PEOPLE[2])}).status_code == 200
    assert httpx.get(server.url, params={"t": _bad(99)}).status_code == 429


def test_behind_a_trusted_proxy_limits_count_the_forwarded_client(served: tuple[Server, Seeded]) -> None:
    server, s = served
    # The README's nginx: every request comes from 127.0.0.1 and names the client in X-Forwarded-For.
    attacker = {"X-Forwarded-For": "198.51.100.7, 203.0.113.9"}  # what the client wrote, then what nginx added
    assert _exhaust(server, attacker)[LIMIT:] == [429, 429]
    # Another client behind the same proxy is not limited: neither for a bad token nor a good one.
    other = {"X-Forwarded-For": "203.0.113.10"}
    assert one_click(server.url, _bad(1), headers=other).status_code == 400
    assert one_click(server.url, s.token(PEOPLE[0]), headers=other).status_code == 200
    # Nor is the limited client itself, with a valid token.
    assert one_click(server.url, s.token(PEOPLE[1]), headers=attacker).status_code == 200
    assert {s.membership(p)[0] for p in PEOPLE[:2]} == {"unsubscribed"}
    # A new address written into the header by the client does not reset its budget.
    spoofed = {"X-Forwarded-For": "192.0.2.1, 203.0.113.9"}
    assert one_click(server.url, _bad(2), headers=spoofed).status_code == 429
    # RFC 7239 Forwarded works the same way.
    forwarded = {"Forwarded": 'for=192.0.2.44;proto=https, for="[2001:db8:cafe::17]:4711"'}
    assert _exhaust(server, forwarded)[LIMIT:] == [429, 429]
    same_64 = {"Forwarded": 'for="[2001:db8:cafe::99]"'}  # counted per /64
    assert one_click(server.url, _bad(3), headers=same_64).status_code == 429
    assert one_click(server.url, _bad(3), headers={"Forwarded": "for=192.0.2.45"}).status_code == 400


def test_headers_from_an_untrusted_peer_are_ignored(project: Path, seeded: Seeded) -> None:
    _config(project, 'trusted_proxies = ["127.0.0.1", "::1"]', 'trusted_proxies = ["10.0.0.0/8"]')
    server = Server(project)
    try:
        # Each request claims to come from someone else; the peer (127.0.0.1) is what counts.
        codes = [one_click(server.url, _bad(i), headers={"X-Forwarded-For": f"203.0.113.{i}"}).status_code
                 for i in range(LIMIT + 2)]
        assert codes[LIMIT:] == [429, 429]
        response = one_click(server.url, seeded.token(PEOPLE[0]), headers={"X-Forwarded-For": "203.0.113.200"})
        assert response.status_code == 200 and seeded.membership(PEOPLE[0])[0] == "unsubscribed"
    finally:
        server.stop()


def test_client_key_walks_the_chain_from_the_peer() -> None:
    import ipaddress

    proxies = (ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("10.0.0.0/8"))
    assert client_key({"REMOTE_ADDR": "203.0.113.1", "HTTP_X_FORWARDED_FOR": "192.0.2.1"}, proxies) == "203.0.113.1"
    assert client_key({"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "192.0.2.1, 10.1.2.3"}, proxies) == "192.0.2.1"
    assert client_key({"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "10.1.2.3"}, proxies) == "10.1.2.3"
    assert client_key({"REMOTE_ADDR": "127.0.0.1"}, proxies) == "127.0.0.1"
    assert client_key({"REMOTE_ADDR": "127.0.0.1", "HTTP_FORWARDED": "for=192.0.2.60:8080;by=x"}, proxies) == "192.0.2.60"
    assert client_key({"REMOTE_ADDR": "2001:db8::1"}, proxies) == "2001:db8::/64"
    assert client_key({"REMOTE_ADDR": "::ffff:192.0.2.9"}, proxies) == "192.0.2.9"


def _spellings(token: str) -> list[str]:
    swapped = token.replace("-", "+").replace("_", "/")
    return [
        token[:20] + "." + token[20:], token[:5] + "%" + token[5:], token + "==", token + "=",
        f" {token}", f"{token} ", f"\t{token}\n", token[:10] + " " + token[10:],
        swapped if swapped != token else token + "+",
        token.upper() if token.upper() != token else token.lower(),
    ]


def test_a_token_has_exactly_one_accepted_spelling(served: tuple[Server, Seeded]) -> None:
    server, s = served
    # One token with "-" or "_" in it (to swap for "+" or "/"), and one more.
    tokens = {email: s.token(email) for email in PEOPLE}
    chosen = sorted(tokens, key=lambda e: not set(tokens[e]) & set("-_"))[:2]
    assert set(tokens[chosen[0]]) & set("-_")
    before = s.counts()
    with httpx.Client() as client:
        for email in chosen:
            for altered in _spellings(tokens[email]):
                posted = client.post(server.url, params={"t": altered}, data={"List-Unsubscribe": "One-Click"})
                assert posted.status_code in (400, 429), (email, altered)
                assert client.get(server.url, params={"t": altered}).status_code in (400, 429), (email, altered)
    assert s.counts() == before
    assert all(s.membership(p)[0] == "subscribed" for p in PEOPLE)
    assert one_click(server.url, tokens[PEOPLE[0]]).status_code == 200


def test_parse_refuses_every_other_spelling() -> None:
    from mailcli.tokens import make_unsubscribe_token, parse_unsubscribe_token

    secret = b"s" * 32
    for n in range(40):
        token = make_unsubscribe_token(secret, f"{n:018x}", n + 1)
        assert parse_unsubscribe_token(secret, token) is not None
        for altered in _spellings(token):
            assert parse_unsubscribe_token(secret, altered) is None, altered


def test_idle_and_slow_connections_do_not_stall_serve(project: Path, seeded: Seeded) -> None:
    server = Server(project, "--threads", "1")
    sockets: list[socket.socket] = []
    try:
        for i in range(300):  # more than waitress' default limit of 100 connections
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            if i % 10 == 0:
                sock.sendall(b"POST /unsubscribe HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nList-")
            sockets.append(sock)
        start = time.monotonic()
        response = one_click(server.url, seeded.token(PEOPLE[0]), timeout=10)
        assert response.status_code == 200
        assert time.monotonic() - start < 5
        assert seeded.membership(PEOPLE[0])[0] == "unsubscribed"
    finally:
        for sock in sockets:
            sock.close()
        server.stop()


def _closed_by_server(sock: socket.socket, wait: float = 0.3) -> bool:
    """Whether the server has closed the connection (an end of file or a reset), waiting at most ``wait``."""
    sock.settimeout(wait)
    try:
        return sock.recv(1024) == b""
    except (TimeoutError, BlockingIOError):
        return False
    except OSError:
        return True


def _connect(source: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def test_a_client_flooding_connections_or_trickling_bytes_keeps_no_one_out(project: Path, seeded: Seeded) -> None:
    from mailcli.feedback.web import CONNECTIONS_PER_CLIENT

    # A request must be in whole 30 s after its first byte; 2 s here, so the test need not wait that long.
    server = Server(project, prelude="import mailcli.feedback.web as web\nweb.REQUEST_DEADLINE = 2")
    flood: list[socket.socket] = []
    proxied: list[socket.socket] = []
    try:
        # One client (not a trusted proxy) opens more connections than it may hold: the extra ones are closed at once.
        flood = [_connect("127.0.0.2", server.port) for _ in range(CONNECTIONS_PER_CLIENT + 10)]
        time.sleep(0.5)
        closed = [_closed_by_server(sock, 0) for sock in flood]
        assert closed == [False] * CONNECTIONS_PER_CLIENT + [True] * 10
        # Everyone else is served at once, also through the proxy.
        other = {"X-Forwarded-For": "203.0.113.5"}
        assert one_click(server.url, seeded.token(PEOPLE[0]), timeout=5, headers=other).status_code == 200
        # A byte now and then (request lines, blank lines) keeps no connection open past the deadline,
        # from a client or from the proxy, which the connection cap does not count.
        proxied = [_connect("127.0.0.1", server.port) for _ in range(5)]
        line = b"POST /unsubscribe HTTP/1.1\r\nHost: x\r\nX-a: " + b"a" * 100
        began = time.monotonic()
        for i in range(12):
            for sock, data in [(sock, line[i:i + 1]) for sock in flood[:CONNECTIONS_PER_CLIENT]] + \
                    [(sock, b"\r\n") for sock in proxied]:
                with contextlib.suppress(OSError):  # closed by now
                    sock.sendall(data)
            time.sleep(0.25)
        assert time.monotonic() - began > 2.5
        assert all(_closed_by_server(sock) for sock in flood[:CONNECTIONS_PER_CLIENT] + proxied)
        # Closed connections no longer count: that client is served again, a slow request included.
        with _connect("127.0.0.2", server.port) as slow:
            slow.sendall(b"GET /unsubscribe?t=" + seeded.token(PEOPLE[1]).encode())
            time.sleep(1)
            slow.sendall(b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            slow.settimeout(5)
            assert slow.recv(100).startswith(b"HTTP/1.1 200 ")
    finally:
        for sock in flood + proxied:
            sock.close()
        assert server.stop() == 0
    assert "Traceback" not in "".join(server.log)
