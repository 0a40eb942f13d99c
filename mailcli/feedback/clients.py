"""Who is asking: the real client of a request, and the budget of bad tokens per client.

``serve`` runs behind a reverse proxy, so the peer of every connection is the
proxy itself (127.0.0.1 for the README's nginx). A limit keyed to the peer
would let anyone who sends bad tokens block every unsubscribe that passes
through the same proxy. The real client is therefore read from the proxy's
headers, but only when the peer is one of ``[serve] trusted_proxies``:

* ``X-Forwarded-For`` (or, without it, RFC 7239 ``Forwarded: for=``) lists the
  addresses a request passed through, the nearest last. Walking from the
  peer leftwards, every trusted proxy is skipped; the first address that is
  not a trusted proxy is the client. Addresses a client wrote into the header
  itself stand left of what its proxy appended, so they are never reached
  while the proxy appends (nginx's ``$proxy_add_x_forwarded_for``).
* From any other peer, the headers are ignored: the peer is the client.

IPv6 clients are counted per /64, the block one subscriber line usually
gets, so rotating addresses inside it does not reset the budget.

Only requests with a bad token ever count; a valid token is never limited
(``serve`` checks the token first), because one mailbox provider sends the
one-click requests of many people from few addresses.
"""

from __future__ import annotations

import ipaddress
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

_FORWARDED_FOR = re.compile(r'(?:^|;)\s*for\s*=\s*("(?:[^"\\]|\\.)*"|[^;,\s]*)', re.IGNORECASE)


def _address(text: str) -> Address | None:
    """An IP address from a header entry: ``1.2.3.4``, ``1.2.3.4:80``, ``[::1]:80``, ``::1``."""
    value = text.strip().strip('"').strip()
    if value.startswith("["):
        value = value[1:].partition("]")[0]
    elif value.count(":") == 1:  # IPv4 with a port
        value = value.partition(":")[0]
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        return None


def _forwarded_for(header: str) -> list[str]:
    """The ``for=`` values of an RFC 7239 ``Forwarded`` header, in order."""
    found = []
    for element in header.split(","):
        match = _FORWARDED_FOR.search(element.strip())
        if match:
            found.append(match.group(1).replace('\\"', '"'))
    return found


def _trusted(address: Address | None, proxies: Iterable[Network]) -> bool:
    return address is not None and any(address in network for network in proxies)


def _key(address: Address | None, text: str) -> str:
    if address is None:
        return text.strip()[:64] or "unknown"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def client_key(environ: Mapping[str, Any], proxies: Iterable[Network]) -> str:
    """The real client of a WSGI request, as the key its limits are counted under."""
    address, text = _client(environ, proxies)
    return _key(address, text)


def peer_key(peer: str, proxies: Iterable[Network]) -> str | None:
    """The key a connection's peer is counted under, as for ``client_key``;
    None for a trusted proxy, whose connections carry many clients."""
    address = _address(peer)
    if _trusted(address, tuple(proxies)):
        return None
    return _key(address, peer)


def client_ip(environ: Mapping[str, Any], proxies: Iterable[Network]) -> str | None:
    """The real client's IP address, found as for ``client_key`` (None when it is not one)."""
    address, _ = _client(environ, proxies)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address) if address is not None else None


def _client(environ: Mapping[str, Any], proxies: Iterable[Network]) -> tuple[Address | None, str]:
    trusted = tuple(proxies)
    peer = str(environ.get("REMOTE_ADDR", ""))
    peer_address = _address(peer)
    if not _trusted(peer_address, trusted):
        return peer_address, peer
    xff = environ.get("HTTP_X_FORWARDED_FOR")
    if xff:
        chain = [part for part in str(xff).split(",") if part.strip()]
    else:
        chain = _forwarded_for(str(environ.get("HTTP_FORWARDED", "")))
    if not chain:
        return peer_address, peer
    for entry in reversed(chain):
        address = _address(entry)
        if not _trusted(address, trusted):
            return address, entry
    first = chain[0]
    return _address(first), first


class FailureLimiter:
    """Per-client budget of bad tokens in a sliding window (default 30 a minute).

    Only clients that keep presenting bad tokens are answered 429 for a
    while. The table is bounded, oldest client first out.
    """

    def __init__(self, limit: int = 30, window: float = 60.0, *, max_clients: int = 10_000,
                 now: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window = window
        self.max_clients = max_clients
        self._now = now
        self._lock = threading.Lock()
        self._hits: OrderedDict[str, list[float]] = OrderedDict()

    def _recent(self, client: str, moment: float) -> list[float]:
        return [t for t in self._hits.get(client, []) if moment - t < self.window]

    def blocked(self, client: str) -> bool:
        with self._lock:
            return len(self._recent(client, self._now())) >= self.limit

    def failed(self, client: str) -> None:
        with self._lock:
            moment = self._now()
            hits = self._recent(client, moment)
            hits.append(moment)
            self._hits[client] = hits
            self._hits.move_to_end(client)
            while len(self._hits) > self.max_clients:
                self._hits.popitem(last=False)
