"""SPF record check: one record, valid syntax, at most 10 DNS-querying terms.

Receivers evaluate SPF with hard limits (RFC 7208 §4.6.4): more than 10 terms
that cause DNS lookups (include, a, mx, ptr, exists, redirect — counted through
every include) or more than 2 lookups that return nothing make the result
``permerror``, which DMARC treats as an SPF failure. Providers' includes nest, so
senders cross the limit without noticing; this module walks the whole tree the
way a receiver would (without an IP to match) and counts, and warns about
what receivers frown on (``ptr``, ``+all``, no terminal ``all``, a record
too long for one UDP answer).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mailcli.deliverability.check import Check
from mailcli.deliverability.dnsquery import DnsFailure, query, txt_strings

if TYPE_CHECKING:
    import dns.resolver

#: RFC 7208 §4.6.4 limits.
MAX_LOOKUPS = 10
MAX_VOID_LOOKUPS = 2
#: RFC 7208 §3.4: keep the record (and the answer) within one UDP packet.
MAX_RECORD_OCTETS = 450
#: Stop walking well past the limit: the verdict is already a failure.
_WALK_CAP = 3 * MAX_LOOKUPS

_MECHANISMS = frozenset({"all", "include", "a", "mx", "ptr", "ip4", "ip6", "exists"})
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]*")


@dataclass(frozen=True, slots=True)
class SpfReport:
    """What walking a domain's SPF tree found."""

    domain: str
    record: str | None
    lookups: int
    void_lookups: int
    errors: tuple[str, ...]
    warnings: tuple[str, ...]
    includes: tuple[str, ...]


@dataclass
class _Walk:
    resolver: dns.resolver.Resolver
    lookups: int = 0
    void: int = 0
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    includes: list[str] = field(default_factory=list)

    def spf_record(self, domain: str, *, count_void: bool) -> str | None:
        texts, lookup = txt_strings(self.resolver, domain)
        if lookup.empty and count_void:
            self.void += 1
        records = [t for t in texts if t.lower() == "v=spf1" or t.lower().startswith("v=spf1 ")]
        if len(records) > 1:
            self.errors.append(f"{domain} has {len(records)} SPF records; exactly one is allowed")
            return None
        return records[0] if records else None

    def void_if_empty(self, name: str, rdtypes: tuple[str, ...]) -> None:
        """Query ``name`` as a receiver would and count an empty answer as void."""
        if "%" in name:  # a macro is expanded per message; nothing to ask now
            return
        if all(query(self.resolver, name, rdtype).empty for rdtype in rdtypes):
            self.void += 1

    def walk(self, domain: str, record: str, stack: tuple[str, ...]) -> None:
        redirect: str | None = None
        seen_all = False
        for term in record.split()[1:]:
            if self.lookups > _WALK_CAP:
                return
            if seen_all:
                self.warnings.append(f"{domain}: '{term}' after 'all' is never evaluated")
                break
            parsed = self.parse(domain, term)
            if parsed is None:
                continue
            qualifier, name, rest = parsed
            if rest.startswith("=") and not qualifier:
                redirect = self.modifier(domain, name, rest[1:], redirect)
                continue
            if self.valid_mechanism(domain, term, name, rest):
                self.mechanism(domain, term, qualifier, name, rest, stack)
                seen_all = name == "all"
        if redirect is not None and not seen_all:
            self.lookups += 1
            self.follow(domain, redirect, "redirect", stack)

    def parse(self, domain: str, term: str) -> tuple[str, str, str] | None:
        """``(qualifier, name, rest)`` of a term, or None (an error noted) if it is not one."""
        qualifier = term[0] if term[0] in "+-~?" else ""
        body = term[len(qualifier) :]
        match = _NAME.match(body)
        if not match:
            self.errors.append(f"{domain}: invalid term '{term}'")
            return None
        return qualifier, match.group(0).lower(), body[match.end() :]

    def modifier(self, domain: str, name: str, value: str, redirect: str | None) -> str | None:
        """Check ``name=value``; the redirect target so far."""
        if name == "redirect":
            if redirect is not None:
                self.errors.append(f"{domain}: more than one redirect= modifier")
            return value
        if name == "exp" and not value:
            self.errors.append(f"{domain}: exp= needs a domain")
        return redirect  # unknown modifiers are ignored (RFC 7208 §6)

    def valid_mechanism(self, domain: str, term: str, name: str, rest: str) -> bool:
        if name not in _MECHANISMS:
            self.errors.append(f"{domain}: unknown mechanism '{term}'")
            return False
        if rest and not rest.startswith((":", "/")):
            self.errors.append(f"{domain}: invalid term '{term}'")
            return False
        return True

    def mechanism(self, domain: str, term: str, qualifier: str, name: str, rest: str,
                  stack: tuple[str, ...]) -> None:
        arg = rest[1:] if rest.startswith(":") else ""
        if name == "all":
            self.all_term(domain, term, qualifier, rest)
        elif name in ("ip4", "ip6"):
            self.ip_term(domain, term, name, arg)
        elif name in ("include", "exists"):
            self.lookups += 1
            if not arg:
                self.errors.append(f"{domain}: '{name}' needs a domain")
            elif name == "include":
                self.follow(domain, arg, "include", stack)
            else:
                self.void_if_empty(arg, ("A",))
        else:  # a, mx, ptr: the target defaults to the current domain
            self.lookups += 1
            self.host_term(domain, name, (arg or rest or "").split("/")[0] or domain)

    def all_term(self, domain: str, term: str, qualifier: str, rest: str) -> None:
        if rest:
            self.errors.append(f"{domain}: 'all' takes no argument")
        elif qualifier in ("", "+"):
            self.warnings.append(f"{domain}: '{term}' lets any server send as this domain")
        elif qualifier == "?":
            self.warnings.append(f"{domain}: '?all' is neutral; end with '~all' or '-all'")

    def ip_term(self, domain: str, term: str, name: str, arg: str) -> None:
        try:
            network = ipaddress.ip_network(arg, strict=False)
        except ValueError:
            self.errors.append(f"{domain}: invalid address in '{term}'")
            return
        if (name == "ip4") != (network.version == 4):
            self.errors.append(f"{domain}: '{term}' has the wrong address family")

    def host_term(self, domain: str, name: str, target: str) -> None:
        """``a``, ``mx`` or ``ptr`` at ``target``: look up what a receiver would."""
        if name == "ptr":
            self.warnings.append(f"{domain}: 'ptr' is slow and discouraged (RFC 7208 §5.5)")
        elif name == "a":
            self.void_if_empty(target, ("A", "AAAA"))
        elif "%" not in target:
            mx = query(self.resolver, target, "MX")
            if mx.empty:
                self.void += 1
            elif len(mx.records) > MAX_LOOKUPS:
                self.errors.append(f"{domain}: mx:{target} has more than 10 MX names")

    def follow(self, domain: str, target: str, how: str, stack: tuple[str, ...]) -> None:
        target = target.rstrip(".").lower()
        if "%" in target:  # macro: only known per message
            return
        if target in stack:
            self.errors.append(f"{domain}: {how}:{target} loops back")
            return
        self.includes.append(target)
        record = self.spf_record(target, count_void=True)
        if record is None:
            self.errors.append(f"{domain}: {how}:{target} has no SPF record (permerror)")
            return
        self.walk(target, record, (*stack, target))


def analyse_spf(resolver: dns.resolver.Resolver, domain: str) -> SpfReport:
    """Walk the SPF tree of ``domain``; ``DnsFailure`` if DNS could not answer."""
    walk = _Walk(resolver)
    record = walk.spf_record(domain, count_void=False)
    if record is not None:
        if len(record.encode()) > MAX_RECORD_OCTETS:
            walk.warnings.append(
                f"the record is {len(record.encode())} octets; keep it under {MAX_RECORD_OCTETS}"
            )
        walk.walk(domain, record, (domain,))
        terms = [t.lstrip("+-~?").lower() for t in record.split()[1:]]
        if not any(t == "all" or t.startswith("redirect=") for t in terms):
            walk.warnings.append("no terminal 'all' (end the record with '-all' or '~all')")
    return SpfReport(
        domain=domain,
        record=record,
        lookups=walk.lookups,
        void_lookups=walk.void,
        errors=tuple(walk.errors),
        warnings=tuple(walk.warnings),
        includes=tuple(walk.includes),
    )


def suggested_spf(domain: str, smtp_host: str | None = None) -> str:
    """The record to publish when there is none: the domain's MX, plus the relay."""
    relay = ""
    if smtp_host and not _is_local(smtp_host) and not smtp_host.endswith(domain):
        relay = f" a:{smtp_host}"
    return f'{domain}. TXT "v=spf1 mx{relay} -all"'


def _is_local(host: str) -> bool:
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_spf(
    resolver: dns.resolver.Resolver,
    domain: str,
    *,
    smtp_host: str | None = None,
    name: str = "spf",
) -> Check:
    """The SPF verdict for ``domain`` with the record or change that fixes it."""
    try:
        report = analyse_spf(resolver, domain)
    except DnsFailure as exc:
        return Check(name, "error", f"{domain}: SPF lookup failed: {exc}", None, {"domain": domain})
    details = {
        "domain": domain,
        "record": report.record,
        "lookups": report.lookups,
        "void_lookups": report.void_lookups,
        "includes": list(report.includes),
        "errors": list(report.errors),
        "warnings": list(report.warnings),
    }
    if report.record is None:
        if report.errors:
            return Check(name, "fail", report.errors[0], "Merge them into one TXT record", details)
        return Check(
            name,
            "fail",
            f"{domain} has no SPF record",
            suggested_spf(domain, smtp_host)
            + "\n(add your mail provider's include: if it sends for you)",
            details,
        )
    plural = "" if report.lookups == 1 else "s"
    counts = f"{report.lookups} DNS lookup{plural}, {report.void_lookups} void"
    problems = list(report.errors)
    fixes: list[str] = []
    if report.lookups > MAX_LOOKUPS:
        problems.append(f"{report.lookups} DNS lookups (at most {MAX_LOOKUPS})")
        fixes.append(
            "Remove includes you no longer use, or replace them by the ip4:/ip6: ranges they list"
        )
    if report.void_lookups > MAX_VOID_LOOKUPS:
        problems.append(f"{report.void_lookups} void lookups (at most {MAX_VOID_LOOKUPS})")
        fixes.append("Remove terms that point at names without records")
    if problems:
        fixes.append(f'Current record: {domain}. TXT "{report.record}"')
        return Check(name, "fail", f"{domain}: " + "; ".join(problems), "\n".join(fixes), details)
    if report.warnings:
        return Check(
            name, "warn", f"{domain}: " + "; ".join(report.warnings) + f" ({counts})", None, details
        )
    return Check(name, "pass", f"{domain}: {report.record} ({counts})", None, details)
