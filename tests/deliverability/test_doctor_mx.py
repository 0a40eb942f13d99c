"""``check_domains`` (import --check-mx) against a real DNS server on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mailcli.deliverability.dnsquery import make_resolver
from mailcli.deliverability.mx import check_domains
from tests.dnsserver import DnsServer


@pytest.fixture(scope="module")
def dns_server() -> Iterator[DnsServer]:
    zones = {
        "gmail.example": "@ MX 5 mx1\n@ MX 10 mx2\nmx1 A 192.0.2.1\nmx2 A 192.0.2.2\n",
        "nullmx.example": "@ MX 0 .\n",
        "webonly.example": "@ AAAA 2001:db8::1\n",
        "nothing.example": "www A 192.0.2.3\n",
        # An authoritative zone for the typo'd name's parent, so it is NXDOMAIN.
        "example": "gmail A 192.0.2.4\n",
    }
    with DnsServer(zones, servfail=["flaky.example"]) as server:
        yield server


def test_classifies_each_domain_once(dns_server: DnsServer) -> None:
    resolver = make_resolver(dns_server.address)
    domains = [
        "gmail.example",
        "GMAIL.example",
        "gmial.example",
        "nullmx.example",
        "webonly.example",
        "nothing.example",
        "flaky.example",
        "gmail.example",
    ]
    results = check_domains(domains, resolver=resolver, workers=4)
    status = {domain: result.status for domain, result in results.items()}
    assert status == {
        "gmail.example": "ok",
        "gmial.example": "undeliverable",
        "nullmx.example": "undeliverable",
        "webonly.example": "ok",
        "nothing.example": "undeliverable",
        "flaky.example": "unknown",
    }
    assert results["gmail.example"].hosts == ("mx1.gmail.example", "mx2.gmail.example")
    assert "null MX" in results["nullmx.example"].reason
    assert "does not exist" in results["gmial.example"].reason
    assert "implicit MX" in results["webonly.example"].reason
    assert not results["flaky.example"].undeliverable  # a DNS error is never hard
    # Cached: each distinct domain was asked for its MX once.
    mx_queries = [name for name, rdtype in dns_server.queries if rdtype == "MX"]
    assert mx_queries.count("gmail.example.") == 1


def test_no_domains_needs_no_resolver() -> None:
    assert check_domains([]) == {}
