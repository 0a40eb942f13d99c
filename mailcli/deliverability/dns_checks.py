"""DNS checks of the sender domain: MX, SPF, DKIM key, DMARC and alignment.

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
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mailcli.deliverability.check import Check, Verdict
from mailcli.deliverability.dnsquery import (
    DnsFailure,
    domain_of,
    organizational_domain,
    query,
    txt_strings,
)
from mailcli.deliverability.spf import check_spf

if TYPE_CHECKING:
    import dns.resolver

# ---------------------------------------------------------------------------
# MX: sorted by preference; a CNAME, IP literal or null MX target fails


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
    details = {"domain": domain, "mx": [{"preference": p, "exchange": h} for p, h in hosts]}
    if any(host in ("", ".") for _, host in hosts):
        return Check(
            name,
            "fail",
            f"{domain} publishes a null MX (RFC 7505): it accepts no mail, so "
            f"{role} replies and bounces are lost and receivers may reject it",
            f"Remove the null MX ({domain}. MX 0 .) and add: {add_mx}",
            details,
        )
    if not hosts:
        try:
            has_address = any(not query(resolver, domain, t).empty for t in ("A", "AAAA"))
        except DnsFailure as exc:
            return Check(name, "error", f"{domain}: lookup failed: {exc}", None, details)
        if has_address:
            return Check(
                name,
                "warn",
                f"{domain} has no MX; mail goes to its A/AAAA address (implicit MX)",
                None,
                details,
            )
        return Check(name, "fail", f"{domain} has no MX and no address", add_mx, details)
    problems: list[str] = []
    for _, host in hosts[:5]:  # the first few are what senders actually use
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
            return Check(
                name, "error", f"{domain}: lookup of MX {host} failed: {exc}", None, details
            )
        if target.empty:
            problems.append(f"MX target {host} has no address")
        elif target.canonical and target.canonical != host:
            problems.append(f"MX target {host} is a CNAME (RFC 2181 §10.3)")
    listed = ", ".join(f"{p} {h}" for p, h in hosts)
    if problems:
        return Check(
            name,
            "fail",
            f"{domain}: " + "; ".join(problems),
            "Point each MX at a host name with its own A/AAAA record",
            details,
        )
    return Check(name, "pass", f"{domain}: MX {listed}", None, details)


# ---------------------------------------------------------------------------
# DKIM key: present, not revoked, not in testing mode, and long enough


def parse_tags(text: str) -> dict[str, str]:
    """Tag=value pairs of a DKIM or DMARC record; later duplicates are ignored."""
    tags: dict[str, str] = {}
    for part in text.split(";"):
        key, sep, value = part.partition("=")
        key = key.strip().lower()
        if sep and key and key not in tags:
            tags[key] = value.strip()
    return tags


def rsa_key_bits(p_value: str) -> int:
    """Bit length of the RSA key in a DKIM ``p=`` value (SPKI or bare RSAPublicKey)."""
    from dkim.crypto import parse_public_key

    der = base64.b64decode("".join(p_value.split()), validate=True)
    return int(parse_public_key(der)["modulus"]).bit_length()


def dkim_record_hint(domain: str, selector: str, public_key: str | None) -> str:
    """The TXT record to publish for ``selector``; ``<public key>`` when unknown."""
    key = public_key or "<public key>"
    return f'{selector}._domainkey.{domain}. TXT "v=DKIM1; k=rsa; p={key}"'


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
    if not records:
        return Check(name, "fail", f"no DKIM key at {fqdn}", fix, details)
    if len(records) > 1:
        return Check(
            name, "fail", f"{fqdn} has {len(records)} DKIM records; publish one", fix, details
        )
    tags = parse_tags(records[0])
    details["record"] = records[0]
    key_type = tags.get("k", "rsa").lower()
    details["k"] = key_type
    if "v" in tags and tags["v"] != "DKIM1":
        return Check(name, "fail", f"{fqdn}: v={tags['v']} (must be DKIM1)", fix, details)
    if "p" not in tags:
        return Check(name, "fail", f"{fqdn}: no p= tag", fix, details)
    p_value = "".join(tags["p"].split())
    if not p_value:
        return Check(name, "fail", f"{fqdn}: empty p= (the key is revoked)", fix, details)
    notes: list[str] = []
    verdict: Verdict = "pass"
    if "y" in [flag.strip() for flag in tags.get("t", "").split(":")]:
        verdict = "warn"
        notes.append("t=y (testing mode: receivers may ignore the signature)")
    if key_type == "ed25519":
        summary = f"{fqdn}: ed25519 key"
    elif key_type == "rsa":
        try:
            bits = rsa_key_bits(p_value)
        except Exception as exc:  # binascii.Error, or dkimpy's own ASN.1/key errors
            return Check(name, "fail", f"{fqdn}: p= is not a valid RSA key ({exc})", fix, details)
        details["bits"] = bits
        summary = f"{fqdn}: {bits}-bit RSA key"
        if bits < 1024:
            return Check(
                name, "fail", f"{summary}; receivers reject keys under 1024 bits", fix, details
            )
        if bits < 2048:
            verdict = "warn"
            notes.append("use a 2048-bit key (RFC 8301)")
    else:
        return Check(name, "fail", f"{fqdn}: unknown key type k={key_type}", fix, details)
    if public_key and p_value != "".join(public_key.split()):
        return Check(
            name,
            "fail",
            f"{fqdn}: the published key is not the one mailcli signs with ([dkim] private key)",
            fix,
            details,
        )
    if notes:
        summary += "; " + "; ".join(notes)
    return Check(name, verdict, summary, None, details)


# ---------------------------------------------------------------------------
# DMARC: one record, its policy and report addresses (DMARCbis tags too)

_POLICIES = ("none", "quarantine", "reject")


@dataclass(frozen=True, slots=True)
class DmarcPolicy:
    """The parts of a DMARC record the alignment check needs."""

    found_at: str
    adkim: str
    aspf: str


def _dmarc_records(resolver: dns.resolver.Resolver, name: str) -> list[str]:
    texts, _ = txt_strings(resolver, name)
    return [t for t in texts if t.replace(" ", "").upper().startswith("V=DMARC1")]


def check_dmarc(resolver: dns.resolver.Resolver, domain: str) -> tuple[Check, DmarcPolicy | None]:
    """The DMARC record of the From domain (or its organisational domain)."""
    name = "dmarc"
    fix = f'_dmarc.{domain}. TXT "v=DMARC1; p=none; rua=mailto:dmarc@{domain}"'
    try:
        found_at = f"_dmarc.{domain}"
        records = _dmarc_records(resolver, found_at)
        org = organizational_domain(domain)
        if not records and org != domain:
            found_at = f"_dmarc.{org}"
            records = _dmarc_records(resolver, found_at)
    except DnsFailure as exc:
        return Check(name, "error", f"_dmarc.{domain}: lookup failed: {exc}", None, {}), None
    details: dict[str, object] = {"domain": domain}
    if not records:
        return Check(name, "fail", f"no DMARC record at _dmarc.{domain}", fix, details), None
    if len(records) > 1:
        return (
            Check(
                name,
                "fail",
                f"{found_at} has {len(records)} DMARC records; publish one",
                fix,
                details,
            ),
            None,
        )
    tags = parse_tags(records[0])
    details.update(record=records[0], found_at=found_at, tags=tags)
    for key in ("p", "sp", "np", "adkim", "aspf", "rua"):
        details[key] = tags.get(key)
    failures: list[str] = []
    warnings: list[str] = []
    policy = tags.get("p", "").lower()
    if not policy:
        warnings.append("no p= (treated as none)")
        policy = "none"
    elif policy not in _POLICIES:
        failures.append(f"p={policy} is not none, quarantine or reject")
    for key in ("sp", "np"):
        if key in tags and tags[key].lower() not in _POLICIES:
            failures.append(f"{key}={tags[key]} is not none, quarantine or reject")
    for key in ("adkim", "aspf"):
        if tags.get(key, "r").lower() not in ("r", "s"):
            failures.append(f"{key}={tags[key]} must be r or s")
    if policy == "none":
        warnings.append("p=none only monitors; move to quarantine once reports look clean")
    rua = tags.get("rua", "")
    if not rua:
        warnings.append(f"no rua= (add rua=mailto:dmarc@{domain} to receive reports)")
    else:
        try:
            warnings.extend(_external_rua_warnings(resolver, domain, rua))
        except DnsFailure as exc:
            warnings.append(f"could not check rua authorisation: {exc}")
    removed = [key for key in ("pct", "rf", "ri") if key in tags]
    if removed:
        details["removed_tags"] = removed  # DMARCbis drops them; receivers ignore them
    summary = f"{found_at}: p={policy}" + (f", rua={rua}" if rua else "")
    aligned = DmarcPolicy(found_at, tags.get("adkim", "r").lower(), tags.get("aspf", "r").lower())
    if failures:
        return Check(name, "fail", f"{found_at}: " + "; ".join(failures), fix, details), aligned
    if warnings:
        return Check(name, "warn", summary + "; " + "; ".join(warnings), None, details), aligned
    return Check(name, "pass", summary, None, details), aligned


def _external_rua_warnings(resolver: dns.resolver.Resolver, domain: str, rua: str) -> list[str]:
    """RFC 7489 §7.1: a report address in another domain must authorise us."""
    warnings: list[str] = []
    for uri in rua.split(","):
        uri = uri.strip()
        if not uri.lower().startswith("mailto:"):
            continue
        dest = domain_of(uri[len("mailto:") :].split("!")[0])
        if not dest or organizational_domain(dest) == organizational_domain(domain):
            continue
        if not _dmarc_records(resolver, f"{domain}._report._dmarc.{dest}"):
            warnings.append(
                f"{dest} has not authorised reports for {domain} "
                f'({domain}._report._dmarc.{dest} TXT "v=DMARC1")'
            )
    return warnings


# ---------------------------------------------------------------------------
# Alignment: DKIM d= or the MAIL FROM domain matches the From domain


def aligns(identifier: str, from_domain: str, mode: str) -> bool:
    """DMARC identifier alignment: strict = identical, relaxed = same org domain."""
    identifier, from_domain = identifier.lower(), from_domain.lower()
    if mode == "s":
        return identifier == from_domain
    return organizational_domain(identifier) == organizational_domain(from_domain)


def check_alignment(
    from_domain: str,
    *,
    dkim_domain: str | None,
    envelope_domain: str,
    policy: DmarcPolicy | None,
    dkim_ok: bool,
    spf_ok: bool,
    dkim_verdict: Verdict = "pass",
    spf_verdict: Verdict = "pass",
) -> Check:
    """Does DKIM ``d=`` or the envelope (SPF) domain align with the From domain?"""
    adkim = policy.adkim if policy else "r"
    aspf = policy.aspf if policy else "r"
    dkim_aligned = bool(dkim_domain) and aligns(dkim_domain or "", from_domain, adkim)
    spf_aligned = aligns(envelope_domain, from_domain, aspf)
    details = {
        "from_domain": from_domain,
        "dkim_domain": dkim_domain,
        "envelope_domain": envelope_domain,
        "adkim": adkim,
        "aspf": aspf,
        "dkim_aligned": dkim_aligned and dkim_ok,
        "spf_aligned": spf_aligned and spf_ok,
        "heuristic": "organisational domain = last two labels (no public-suffix list)",
    }
    parts = []
    if dkim_domain:
        parts.append(f"DKIM d={dkim_domain} {'aligns' if dkim_aligned else 'does not align'}")
    else:
        parts.append("no DKIM domain known")
    parts.append(f"SPF {envelope_domain} {'aligns' if spf_aligned else 'does not align'}")
    summary = f"From {from_domain}: " + ", ".join(parts)
    if (dkim_aligned and dkim_ok) or (spf_aligned and spf_ok):
        verdict: Verdict = "pass" if dkim_aligned and dkim_ok else "warn"
        if verdict == "warn":
            summary += " (only SPF aligns; forwarding breaks SPF, sign with DKIM too)"
        return Check("alignment", verdict, summary, None, details)
    if "error" in (dkim_verdict, spf_verdict):
        summary += "; cannot tell: a DNS lookup above failed"
        return Check("alignment", "error", summary, None, details)
    if dkim_aligned or spf_aligned:
        summary += "; but that identifier's own check failed"
        fix = "Fix the SPF or DKIM check above: the domains already align"
        return Check("alignment", "fail", summary, fix, details)
    fix = (
        f'Sign with d={from_domain}: set [dkim] domain = "{from_domain}" and publish its key, '
        f"or send with a bounce address @{from_domain} ([sender] bounce_address)"
    )
    return Check("alignment", "fail", summary, fix, details)


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
