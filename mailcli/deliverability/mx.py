"""Can a contact's domain receive mail at all? (``import --check-mx``)

Typos such as ``gmial.com`` or dead company domains make every send to them
bounce, which hurts the sender's reputation. One MX lookup per distinct domain,
run concurrently, catches most of them before a campaign:

- a null MX (RFC 7505) or a domain that does not exist: ``undeliverable``;
- no MX but an A/AAAA record: ``ok`` (implicit MX, RFC 5321 §5.1);
- timeout, SERVFAIL or no reachable nameserver: ``unknown`` — never treated as
  a hard failure, since the next run may well get an answer.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from mailcli.deliverability.dnsquery import DnsFailure, make_resolver, query

if TYPE_CHECKING:
    import dns.resolver

MxStatus = Literal["ok", "undeliverable", "unknown"]


@dataclass(frozen=True, slots=True)
class MxResult:
    """Whether one domain can receive mail, and why."""

    domain: str
    status: MxStatus
    reason: str
    hosts: tuple[str, ...] = ()

    @property
    def undeliverable(self) -> bool:
        """True only when DNS says for certain that the domain takes no mail."""
        return self.status == "undeliverable"


# Complexity: one verdict per DNS outcome: MX, null MX, A/AAAA fallback, NXDOMAIN, timeout.
def check_domain(resolver: dns.resolver.Resolver, domain: str) -> MxResult:
    """Classify one domain by its MX (then A/AAAA) records."""
    try:
        mx = query(resolver, domain, "MX")
        if mx.nxdomain:
            return MxResult(domain, "undeliverable", "domain does not exist")
        if mx.records:
            ordered = sorted(mx.records, key=lambda r: r.preference)
            hosts = tuple(r.exchange.to_text().rstrip(".").lower() for r in ordered)
            if all(host in ("", ".") for host in hosts):
                return MxResult(domain, "undeliverable", "null MX: the domain accepts no mail")
            return MxResult(domain, "ok", "MX " + ", ".join(h for h in hosts if h), hosts)
        for rdtype in ("A", "AAAA"):
            if not query(resolver, domain, rdtype).empty:
                return MxResult(domain, "ok", f"no MX; implicit MX via {rdtype}", (domain,))
        return MxResult(domain, "undeliverable", "no MX and no address record")
    except DnsFailure as exc:
        return MxResult(domain, "unknown", f"DNS did not answer ({exc}); retry later")


def check_domains(
    domains: Iterable[str],
    resolver: dns.resolver.Resolver | None = None,
    workers: int = 16,
) -> dict[str, MxResult]:
    """Check each distinct domain once, ``workers`` lookups at a time.

    Keys are the lower-cased domains. Without ``resolver`` the system resolver
    is used with a 5 s lifetime per lookup, so a dead DNS server costs seconds,
    not minutes. ``DnsFailure`` is raised only when no resolver can be made.
    """
    unique = sorted({d.strip().rstrip(".").lower() for d in domains if d and d.strip()})
    if not unique:
        return {}
    resolver = resolver or make_resolver()
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(unique)))) as pool:
        results = pool.map(lambda domain: check_domain(resolver, domain), unique)
        return {result.domain: result for result in results}
