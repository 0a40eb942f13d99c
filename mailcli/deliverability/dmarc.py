"""DMARC of the From domain, and whether DKIM or SPF aligns with it.

A receiver applies the From domain's DMARC policy to mail that neither a
DKIM signature nor the envelope (SPF) domain aligns with: the record must
exist, say what to do (``p=``) and where reports go (``rua=``), and one of
the two identifiers must be the From domain or, relaxed, share its
organisational domain. DMARCbis records (``np=``, no ``pct``/``rf``/``ri``)
are read too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from mailcli.deliverability.check import Check, Verdict
from mailcli.deliverability.dnsquery import (
    DnsFailure,
    domain_of,
    organizational_domain,
    parse_tags,
    txt_strings,
)

if TYPE_CHECKING:
    import dns.resolver

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


def _find_records(resolver: dns.resolver.Resolver, domain: str) -> tuple[str, list[str]]:
    """Where the record was looked up last and what was there: the domain, else its organisational domain."""
    found_at = f"_dmarc.{domain}"
    records = _dmarc_records(resolver, found_at)
    org = organizational_domain(domain)
    if not records and org != domain:
        found_at = f"_dmarc.{org}"
        records = _dmarc_records(resolver, found_at)
    return found_at, records


# Complexity: one verdict per DNS outcome and per policy; read top to bottom like the RFC.
def check_dmarc(resolver: dns.resolver.Resolver, domain: str) -> tuple[Check, DmarcPolicy | None]:
    """The DMARC record of the From domain (or its organisational domain)."""
    name = "dmarc"
    fix = f'_dmarc.{domain}. TXT "v=DMARC1; p=none; rua=mailto:dmarc@{domain}"'
    try:
        found_at, records = _find_records(resolver, domain)
    except DnsFailure as exc:
        return Check(name, "error", f"_dmarc.{domain}: lookup failed: {exc}", None, {}), None
    details: dict[str, object] = {"domain": domain}
    if not records:
        return Check(name, "fail", f"no DMARC record at _dmarc.{domain}", fix, details), None
    if len(records) > 1:
        return Check(name, "fail", f"{found_at} has {len(records)} DMARC records; publish one", fix, details), None
    tags = parse_tags(records[0])
    details.update(record=records[0], found_at=found_at, tags=tags)
    for key in ("p", "sp", "np", "adkim", "aspf", "rua"):
        details[key] = tags.get(key)
    removed = [key for key in ("pct", "rf", "ri") if key in tags]
    if removed:
        details["removed_tags"] = removed  # DMARCbis drops them; receivers ignore them
    policy, failures, warnings = _policy_findings(tags)
    rua = tags.get("rua", "")
    warnings += _report_findings(resolver, domain, rua)
    aligned = DmarcPolicy(found_at, tags.get("adkim", "r").lower(), tags.get("aspf", "r").lower())
    if failures:
        return Check(name, "fail", f"{found_at}: " + "; ".join(failures), fix, details), aligned
    summary = f"{found_at}: p={policy}" + (f", rua={rua}" if rua else "")
    if warnings:
        return Check(name, "warn", summary + "; " + "; ".join(warnings), None, details), aligned
    return Check(name, "pass", summary, None, details), aligned


def _policy_findings(tags: dict[str, str]) -> tuple[str, list[str], list[str]]:
    """``(policy, failures, warnings)`` of the policy tags: p, sp, np, adkim, aspf."""
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
    return policy, failures, warnings


def _report_findings(resolver: dns.resolver.Resolver, domain: str, rua: str) -> list[str]:
    """Warnings about where reports go: nowhere, or to a domain that has not agreed to take them."""
    if not rua:
        return [f"no rua= (add rua=mailto:dmarc@{domain} to receive reports)"]
    try:
        return _external_rua_warnings(resolver, domain, rua)
    except DnsFailure as exc:
        return [f"could not check rua authorisation: {exc}"]


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


def aligns(identifier: str, from_domain: str, mode: str) -> bool:
    """DMARC identifier alignment: strict = identical, relaxed = same org domain."""
    identifier, from_domain = identifier.lower(), from_domain.lower()
    if mode == "s":
        return identifier == from_domain
    return organizational_domain(identifier) == organizational_domain(from_domain)


# Complexity: one verdict per way DKIM and SPF can align or not, relaxed and strict.
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
    summary = _alignment_summary(from_domain, dkim_domain, dkim_aligned, envelope_domain, spf_aligned)
    if dkim_aligned and dkim_ok:
        return Check("alignment", "pass", summary, None, details)
    if spf_aligned and spf_ok:
        summary += " (only SPF aligns; forwarding breaks SPF, sign with DKIM too)"
        return Check("alignment", "warn", summary, None, details)
    if "error" in (dkim_verdict, spf_verdict):
        return Check("alignment", "error", summary + "; cannot tell: a DNS lookup above failed", None, details)
    if dkim_aligned or spf_aligned:
        return Check("alignment", "fail", summary + "; but that identifier's own check failed",
                     "Fix the SPF or DKIM check above: the domains already align", details)
    fix = (
        f'Sign with d={from_domain}: set [dkim] domain = "{from_domain}" and publish its key, '
        f"or send with a bounce address @{from_domain} ([sender] bounce_address)"
    )
    return Check("alignment", "fail", summary, fix, details)


def _alignment_summary(from_domain: str, dkim_domain: str | None, dkim_aligned: bool, envelope_domain: str,
                       spf_aligned: bool) -> str:
    """``From example.org: DKIM d=example.org aligns, SPF bounce.example.net does not align``"""
    dkim_part = (f"DKIM d={dkim_domain} {'aligns' if dkim_aligned else 'does not align'}" if dkim_domain
                 else "no DKIM domain known")
    return f"From {from_domain}: {dkim_part}, SPF {envelope_domain} {'aligns' if spf_aligned else 'does not align'}"
