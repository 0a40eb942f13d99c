"""DNS checks of the sender domain: MX, SPF, DKIM key, DMARC and alignment.

MX and the DKIM key are checked here, SPF in ``spf``, DMARC and alignment in
``dmarc``; ``run_dns_checks`` runs them all in reading order.

Since 2024 Gmail and Yahoo junk or reject bulk mail whose From domain lacks
SPF, DKIM, a DMARC record and alignment between them.
Each function here returns ``Check`` verdicts that carry the exact record to add
when something is missing. Lookups that DNS could not answer (timeout,
SERVFAIL) give ``error``, not ``fail``: the domain may be fine.

Organisational domains (relaxed alignment) use a last-two-labels heuristic with
a short list of two-label public suffixes; no public-suffix library is
installed (see ``dnsquery.organizational_domain``).
"""

from __future__ import annotations

import base64
import ipaddress
from typing import TYPE_CHECKING

from mailcli.deliverability.check import Check, Verdict
from mailcli.deliverability.dmarc import DmarcPolicy, aligns, check_alignment, check_dmarc
from mailcli.deliverability.dnsquery import DnsFailure, domain_of, parse_tags, query, txt_strings
from mailcli.deliverability.spf import check_spf

if TYPE_CHECKING:
    import dns.resolver

# ---------------------------------------------------------------------------
# MX: sorted by preference; a CNAME, IP literal or null MX target fails


# Complexity: one verdict per DNS outcome (none, null MX, NXDOMAIN, timeout), each with its fix.
def check_mx(resolver: dns.resolver.Resolver, domain: str, *, role: str = "From") -> Check:
    """MX of a sending domain: replies and bounces must be deliverable to it."""
    name = "mx" if role == "From" else f"mx ({role.lower()})"
    add_mx = f"{domain}. MX 10 mail.{domain}.  (your mail server's name)"
    try:
        lookup = query(resolver, domain, "MX")
    except DnsFailure as exc:
        return Check(name, "error", f"{domain}: MX lookup failed: {exc}", None, {"domain": domain})
    if lookup.nxdomain:
        return Check(name, "fail", f"{domain} does not exist in DNS", add_mx, {"domain": domain})
    records = sorted(lookup.records, key=lambda r: (r.preference, r.exchange.to_text()))
    hosts = [(r.preference, r.exchange.to_text().rstrip(".").lower()) for r in records]
    details: dict[str, object] = {"domain": domain, "mx": [{"preference": p, "exchange": h} for p, h in hosts]}
    if any(host in ("", ".") for _, host in hosts):
        return Check(
            name,
            "fail",
            f"{domain} publishes a null MX (RFC 7505): it accepts no mail, so "
            f"{role} replies and bounces are lost and receivers may reject it",
            f"Remove the null MX ({domain}. MX 0 .) and add: {add_mx}",
            details,
        )
    try:
        if not hosts:
            return _implicit_mx(resolver, domain, name, add_mx, details)
        problems = _target_problems(resolver, [host for _, host in hosts[:5]])  # the ones senders use
    except DnsFailure as exc:
        return Check(name, "error", f"{domain}: {exc}", None, details)
    if problems:
        return Check(
            name,
            "fail",
            f"{domain}: " + "; ".join(problems),
            "Point each MX at a host name with its own A/AAAA record",
            details,
        )
    listed = ", ".join(f"{p} {h}" for p, h in hosts)
    return Check(name, "pass", f"{domain}: MX {listed}", None, details)


def _implicit_mx(resolver: dns.resolver.Resolver, domain: str, name: str, add_mx: str,
                 details: dict[str, object]) -> Check:
    """No MX: mail goes to the domain's own address, if it has one (RFC 5321 §5.1)."""
    try:
        has_address = any(not query(resolver, domain, t).empty for t in ("A", "AAAA"))
    except DnsFailure as exc:
        raise DnsFailure(f"lookup failed: {exc}") from None
    if has_address:
        return Check(name, "warn", f"{domain} has no MX; mail goes to its A/AAAA address (implicit MX)",
                     None, details)
    return Check(name, "fail", f"{domain} has no MX and no address", add_mx, details)


def _target_problems(resolver: dns.resolver.Resolver, hosts: list[str]) -> list[str]:
    """What is wrong with these MX targets: an IP address, no address, a CNAME."""
    problems: list[str] = []
    for host in hosts:
        try:
            ipaddress.ip_address(host)
            problems.append(f"MX target {host} is an IP address, not a host name")
            continue
        except ValueError:
            pass
        try:
            target = query(resolver, host, "A")
            if target.empty:
                target = query(resolver, host, "AAAA")
        except DnsFailure as exc:
            raise DnsFailure(f"lookup of MX {host} failed: {exc}") from None
        if target.empty:
            problems.append(f"MX target {host} has no address")
        elif target.canonical and target.canonical != host:
            problems.append(f"MX target {host} is a CNAME (RFC 2181 §10.3)")
    return problems


# ---------------------------------------------------------------------------
# DKIM key: present, not revoked, not in testing mode, and long enough


def rsa_key_bits(p_value: str) -> int:
    """Bit length of the RSA key in a DKIM ``p=`` value (SPKI or bare RSAPublicKey)."""
    from dkim.crypto import parse_public_key

    der = base64.b64decode("".join(p_value.split()), validate=True)
    return int(parse_public_key(der)["modulus"]).bit_length()


def dkim_record_hint(domain: str, selector: str, public_key: str | None) -> str:
    """The TXT record to publish for ``selector``; ``<public key>`` when unknown."""
    key = public_key or "<public key>"
    return f'{selector}._domainkey.{domain}. TXT "v=DKIM1; k=rsa; p={key}"'


# Complexity: one verdict per way a published key can be missing, broken or weak.
def check_dkim(
    resolver: dns.resolver.Resolver,
    domain: str,
    selector: str,
    *,
    public_key: str | None = None,
) -> Check:
    """The key at ``<selector>._domainkey.<domain>``: present, usable, long enough.

    ``public_key`` (base64 ``p=`` derived from the configured private key) makes
    the fix text exact and lets the check catch a published key that does not
    match the one mailcli signs with.
    """
    name = "dkim"
    fqdn = f"{selector}._domainkey.{domain}"
    fix = dkim_record_hint(domain, selector, public_key)
    details: dict[str, object] = {"domain": domain, "selector": selector, "name": fqdn}
    try:
        texts, _ = txt_strings(resolver, fqdn)
    except DnsFailure as exc:
        return Check(name, "error", f"{fqdn}: lookup failed: {exc}", None, details)
    records = [t for t in texts if "p=" in t.replace(" ", "") or t.lstrip().startswith("v=DKIM1")]
    if len(records) != 1:
        summary = f"{fqdn} has {len(records)} DKIM records; publish one" if records else f"no DKIM key at {fqdn}"
        return Check(name, "fail", summary, fix, details)
    tags = parse_tags(records[0])
    key_type = tags.get("k", "rsa").lower()
    details.update(record=records[0], k=key_type)
    problem = _record_problem(fqdn, tags)
    if problem:
        return Check(name, "fail", problem, fix, details)
    p_value = "".join(tags["p"].split())
    verdict, summary, notes = _key_strength(fqdn, key_type, p_value, details)
    if verdict == "fail":
        return Check(name, "fail", summary, fix, details)
    if public_key and p_value != "".join(public_key.split()):
        return Check(name, "fail", f"{fqdn}: the published key is not the one mailcli signs with ([dkim] private key)",
                     fix, details)
    if "y" in [flag.strip() for flag in tags.get("t", "").split(":")]:
        verdict = "warn"
        notes.insert(0, "t=y (testing mode: receivers may ignore the signature)")
    if notes:
        summary += "; " + "; ".join(notes)
    return Check(name, verdict, summary, None, details)


def _record_problem(fqdn: str, tags: dict[str, str]) -> str | None:
    """Why the record publishes no usable key, if it does not."""
    if "v" in tags and tags["v"] != "DKIM1":
        return f"{fqdn}: v={tags['v']} (must be DKIM1)"
    if "p" not in tags:
        return f"{fqdn}: no p= tag"
    if not "".join(tags["p"].split()):
        return f"{fqdn}: empty p= (the key is revoked)"
    return None


def _key_strength(fqdn: str, key_type: str, p_value: str, details: dict[str, object]
                  ) -> tuple[Verdict, str, list[str]]:
    """``(verdict, summary, notes)`` of the key itself: its type and, for RSA, its length."""
    if key_type == "ed25519":
        return "pass", f"{fqdn}: ed25519 key", []
    if key_type != "rsa":
        return "fail", f"{fqdn}: unknown key type k={key_type}", []
    try:
        bits = rsa_key_bits(p_value)
    except Exception as exc:  # binascii.Error, or dkimpy's own ASN.1/key errors
        return "fail", f"{fqdn}: p= is not a valid RSA key ({exc})", []
    details["bits"] = bits
    summary = f"{fqdn}: {bits}-bit RSA key"
    if bits < 1024:
        return "fail", f"{summary}; receivers reject keys under 1024 bits", []
    if bits < 2048:
        return "warn", summary, ["use a 2048-bit key (RFC 8301)"]
    return "pass", summary, []


# ---------------------------------------------------------------------------
# All DNS checks of one configuration


def run_dns_checks(
    resolver: dns.resolver.Resolver,
    *,
    from_address: str,
    bounce_address: str | None = None,
    dkim_domain: str | None = None,
    dkim_selector: str | None = None,
    dkim_public_key: str | None = None,
    smtp_host: str | None = None,
) -> list[Check]:
    """MX, SPF, DKIM, DMARC and alignment for a sender, in reading order."""
    from_domain = domain_of(from_address)
    envelope_domain = domain_of(bounce_address) if bounce_address else from_domain
    checks = [check_mx(resolver, from_domain)]
    if checks[0].verdict == "error":
        # DNS does not answer for this domain: every other lookup would wait
        # out its own timeout too, so report them as not run.
        skipped = f"not checked: DNS did not answer for {from_domain}"
        names = ["spf", "dkim", "dmarc", "alignment"]
        return checks + [Check(name, "error", skipped, None, {}) for name in names]
    if envelope_domain != from_domain:
        checks.append(check_mx(resolver, envelope_domain, role="Bounce"))
    spf = check_spf(resolver, envelope_domain, smtp_host=smtp_host)
    checks.append(spf)
    if envelope_domain != from_domain:
        checks.append(check_spf(resolver, from_domain, smtp_host=smtp_host, name="spf (from)"))
    dkim_domain = (dkim_domain or from_domain).lower()
    if dkim_selector:
        dkim = check_dkim(resolver, dkim_domain, dkim_selector, public_key=dkim_public_key)
    else:
        dkim = Check(
            "dkim",
            "fail",
            f"no DKIM selector known for {dkim_domain}",
            "Configure [dkim] domain, selector and private_key_env, or pass "
            "--dkim-selector SELECTOR if your mail provider signs for you",
            {"domain": dkim_domain},
        )
    checks.append(dkim)
    dmarc, policy = check_dmarc(resolver, from_domain)
    checks.append(dmarc)
    checks.append(
        check_alignment(
            from_domain,
            dkim_domain=dkim_domain if dkim_selector else None,
            envelope_domain=envelope_domain,
            policy=policy,
            dkim_ok=dkim.ok,
            spf_ok=spf.ok,
            dkim_verdict=dkim.verdict,
            spf_verdict=spf.verdict,
        )
    )
    return checks


__all__ = [
    "Check",
    "DmarcPolicy",
    "aligns",
    "check_alignment",
    "check_dkim",
    "check_dmarc",
    "check_mx",
    "run_dns_checks",
]
