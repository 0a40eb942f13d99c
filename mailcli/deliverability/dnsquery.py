"""DNS lookups for the deliverability checks, through one explicit resolver.

Every query goes through a ``dns.resolver.Resolver`` with a total lifetime of a
few seconds, so a cron or CI run of ``doctor`` or
``import --check-mx`` never hangs on a dead nameserver. Lookups are reduced to
three outcomes the checks care about: records, "no such data" (NXDOMAIN or
NoAnswer, which SPF counts as a void lookup), and ``DnsFailure`` (timeout,
SERVFAIL, no reachable nameserver), which callers turn into an ERROR verdict,
never a FAIL: the domain may well be fine.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mailcli.errors import UsageError

if TYPE_CHECKING:
    import dns.resolver

#: Total seconds one lookup may take, retries included.
DEFAULT_LIFETIME = 5.0


class DnsFailure(Exception):
    """A lookup that could not be answered (timeout, SERVFAIL, no nameserver)."""


@dataclass(frozen=True, slots=True)
class Lookup:
    """The answer to one query: the records, or why there are none."""

    name: str
    rdtype: str
    records: tuple[Any, ...]
    nxdomain: bool = False
    #: The name the answer was found at after following CNAMEs.
    canonical: str = ""

    @property
    def empty(self) -> bool:
        """True for NXDOMAIN and NoAnswer alike (an SPF "void lookup")."""
        return not self.records


def parse_nameserver(text: str) -> tuple[str, int]:
    """Split ``HOST[:PORT]`` (or ``[IPv6]:PORT``) into an IP address and port.

    A host name is resolved once through the system resolver, because
    dnspython talks to nameservers by address.
    """
    text = text.strip()
    host, port = text, 53
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise UsageError(f"--nameserver {text}: missing ']'")
        host, rest = text[1:end], text[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise UsageError(f"--nameserver {text}: expected [ADDRESS]:PORT")
            port = _port(text, rest[1:])
    elif text.count(":") == 1:
        host, port_text = text.split(":")
        port = _port(text, port_text)
    if not host:
        raise UsageError(f"--nameserver {text}: no host given")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        try:
            host = str(socket.getaddrinfo(host, None)[0][4][0])
        except (OSError, IndexError) as exc:
            raise UsageError(f"--nameserver {text}: cannot resolve {host}") from exc
    return str(host), port


def _port(text: str, value: str) -> int:
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise UsageError(f"--nameserver {text}: port must be a number from 1 to 65535")
    return int(value)


def make_resolver(
    nameserver: str | None = None, lifetime: float = DEFAULT_LIFETIME
) -> dns.resolver.Resolver:
    """A resolver with a bounded lifetime: the system's, or one nameserver.

    Raises ``DnsFailure`` when there is no system resolver configuration.
    """
    import dns.resolver

    if nameserver:
        host, port = parse_nameserver(nameserver)
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [host]
        resolver.port = port
    else:
        try:
            resolver = dns.resolver.Resolver()
        except dns.resolver.NoResolverConfiguration as exc:
            raise DnsFailure("no system resolver configured; pass --nameserver") from exc
    resolver.lifetime = lifetime
    resolver.timeout = min(2.0, lifetime)
    # EDNS lets 2048-bit DKIM keys and long SPF records come back over UDP
    # instead of forcing a TCP retry on every truncated answer.
    resolver.use_edns(0, 0, 1232)
    # A shared cache: SPF includes and MX checks of many contacts repeat names.
    resolver.cache = dns.resolver.Cache()
    return resolver


def query(resolver: dns.resolver.Resolver, name: str, rdtype: str) -> Lookup:
    """Look up one name and type; ``DnsFailure`` when DNS could not answer."""
    import dns.exception
    import dns.name
    import dns.resolver

    try:
        answer = resolver.resolve(name, rdtype, search=False)
    except dns.resolver.NXDOMAIN:
        return Lookup(name, rdtype, (), nxdomain=True)
    except dns.resolver.NoAnswer:
        return Lookup(name, rdtype, ())
    except dns.resolver.NoNameservers as exc:
        raise DnsFailure(f"{name} {rdtype}: no nameserver answered (SERVFAIL or refused)") from exc
    except dns.resolver.LifetimeTimeout as exc:
        raise DnsFailure(f"{name} {rdtype}: DNS timeout") from exc
    except (dns.name.LabelTooLong, dns.name.EmptyLabel, dns.name.NameTooLong):
        # A name that cannot exist in DNS (e.g. a typo'd domain) has no records.
        return Lookup(name, rdtype, (), nxdomain=True)
    except dns.exception.DNSException as exc:
        raise DnsFailure(f"{name} {rdtype}: {exc}") from exc
    canonical = answer.canonical_name.to_text().rstrip(".").lower()
    return Lookup(name, rdtype, tuple(answer), canonical=canonical)


def txt_strings(resolver: dns.resolver.Resolver, name: str) -> tuple[list[str], Lookup]:
    """TXT records at ``name``, each one's strings joined without separators, as
    SPF, DKIM and DMARC read a record split into several strings."""
    lookup = query(resolver, name, "TXT")
    texts = [b"".join(rdata.strings).decode("utf-8", "replace") for rdata in lookup.records]
    return texts, lookup


def domain_of(address: str) -> str:
    """The lower-cased domain of an address (the part after the last ``@``)."""
    return address.rpartition("@")[2].strip().strip(">").rstrip(".").lower()


#: Public suffixes with two labels that senders in our audience meet. No
#: public-suffix library is installed, so the organisational domain is the last
#: two labels, or three under one of these.
_TWO_LABEL_SUFFIXES = frozenset(
    {
        "co.uk", "org.uk", "ac.uk", "gov.uk", "me.uk", "ltd.uk", "plc.uk",
        "com.au", "net.au", "org.au", "co.nz", "co.jp", "co.za", "com.br",
        "com.tr", "com.mx", "com.cn", "co.in", "co.il", "co.kr", "com.pl",
        "com.es", "com.pt", "co.at", "or.at", "gv.at", "com.gr", "com.cy",
    }
)  # fmt: skip


def organizational_domain(domain: str) -> str:
    """The organisational domain (RFC 7489 §3.2) by a last-two-labels heuristic."""
    labels = domain.lower().rstrip(".").split(".")
    if len(labels) >= 3 and ".".join(labels[-2:]) in _TWO_LABEL_SUFFIXES:
        return ".".join(labels[-3:])
    return ".".join(labels[-2:])


def parse_tags(text: str) -> dict[str, str]:
    """Tag=value pairs of a DKIM or DMARC record; later duplicates are ignored."""
    tags: dict[str, str] = {}
    for part in text.split(";"):
        key, sep, value = part.partition("=")
        key = key.strip().lower()
        if sep and key and key not in tags:
            tags[key] = value.strip()
    return tags
