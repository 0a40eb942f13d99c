"""DNS checks of doctor against a real DNS server on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mailcli.deliverability.check import Check
from mailcli.deliverability.dns_checks import (
    check_alignment,
    check_dkim,
    check_dmarc,
    check_mx,
    run_dns_checks,
)
from mailcli.deliverability.dnsquery import make_resolver, organizational_domain
from mailcli.deliverability.spf import check_spf
from tests.dkimkeys import private_pem, public_b64, weak_public_b64
from tests.dnsserver import DnsServer, txt


def _chain(depth: int) -> str:
    """SPF records l1 … l<depth>, each including the next: one lookup per level."""
    lines = [f"@ TXT {txt('v=spf1 include:l1.chain.example -all')}"]
    for level in range(1, depth):
        lines.append(f"l{level} TXT {txt(f'v=spf1 include:l{level + 1}.chain.example -all')}")
    lines.append(f"l{depth} TXT {txt('v=spf1 ip4:192.0.2.1 -all')}")
    return "\n".join(lines)


# name under syntax.example, its SPF record, doctor's verdict, words of the summary
SPF_SYNTAX = [
    ("unknown", "v=spf1 foo -all", "fail", "unknown mechanism 'foo'"),
    ("not-a-name", "v=spf1 9all", "fail", "invalid term '9all'"),
    ("junk", "v=spf1 mx$x -all", "fail", "invalid term 'mx$x'"),
    ("bad-ip", "v=spf1 ip4:192.0.2.999 -all", "fail", "invalid address in 'ip4:192.0.2.999'"),
    ("family", "v=spf1 ip6:192.0.2.1 -all", "fail", "'ip6:192.0.2.1' has the wrong address family"),
    ("bare-include", "v=spf1 include -all", "fail", "'include' needs a domain"),
    ("two-redirects", "v=spf1 redirect=good.example redirect=good.example", "fail", "more than one redirect="),
    ("empty-exp", "v=spf1 exp= -all", "fail", "exp= needs a domain"),
    ("all-arg", "v=spf1 all:x", "fail", "'all' takes no argument"),
    ("loop", "v=spf1 include:loop.syntax.example -all", "fail", "include:loop.syntax.example loops back"),
    ("mx-many", "v=spf1 mx:many.syntax.example -all", "fail", "mx:many.syntax.example has more than 10 MX names"),
    ("after-all", "v=spf1 -all mx", "warn", "'mx' after 'all' is never evaluated"),
    ("neutral", "v=spf1 ?all", "warn", "'?all' is neutral; end with '~all' or '-all'"),
    ("ptr", "v=spf1 ptr -all", "warn", "'ptr' is slow and discouraged"),
    ("long", "v=spf1 " + " ".join(f"ip4:192.0.2.{i}" for i in range(40)) + " -all", "warn", "keep it under 450"),
    ("redirect", "v=spf1 redirect=good.example", "pass", "(2 DNS lookups, 0 void)"),
    ("macros", "v=spf1 exists:%{i}.x.syntax.example include:%{d}.y.example a:%{d} -all", "pass", "(3 DNS lookups, 0 void)"),
]


@pytest.fixture(scope="module")
def dns_server() -> Iterator[DnsServer]:
    good_key = public_b64(private_pem(2048))
    zones = {
        "good.example": f"""
@ MX 10 mail
mail A 192.0.2.25
@ TXT {txt("v=spf1 mx ip4:192.0.2.0/24 -all")}
@ TXT {txt("google-site-verification=abc")}
sel._domainkey TXT {txt(f"v=DKIM1; k=rsa; p={good_key}")}
_dmarc TXT {txt("v=DMARC1; p=quarantine; adkim=r; rua=mailto:dmarc@good.example")}
news MX 10 mail.good.example.
weak._domainkey TXT {txt(f"v=DKIM1; k=rsa; p={weak_public_b64(1024)}")}
tiny._domainkey TXT {txt(f"v=DKIM1; k=rsa; p={weak_public_b64(512)}")}
revoked._domainkey TXT {txt("v=DKIM1; k=rsa; p=")}
ed._domainkey TXT {txt("v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=")}
testing._domainkey TXT {txt(f"v=DKIM1; t=y; p={good_key}")}
""",
        "bare.example": "@ A 192.0.2.1\n",
        # One SPF record published as two strings: must be read as one.
        "split.example": '@ MX 10 mx.good.example.\n@ TXT "v=spf1 ip4:192.0.2.0/24 " "include:good.example -all"\n',
        "chain.example": _chain(11),
        "short-chain.example": _chain(9).replace("chain.example", "short-chain.example"),
        "void.example": f"@ TXT {txt('v=spf1 a:n1.void.example a:n2.void.example mx:n3.void.example -all')}\n",
        "plusall.example": f"@ TXT {txt('v=spf1 +all')}\n",
        "noall.example": f"@ TXT {txt('v=spf1 ip4:192.0.2.1')}\n",
        "twospf.example": f"@ TXT {txt('v=spf1 -all')}\n@ TXT {txt('v=spf1 mx -all')}\n",
        "badinclude.example": f"@ TXT {txt('v=spf1 include:bare.example -all')}\n",
        "nullmx.example": "@ MX 0 .\n",
        "cnamemx.example": "@ MX 10 alias\nalias CNAME real\nreal A 192.0.2.9\n",
        "monitor.example": f"_dmarc TXT {txt('v=DMARC1; p=none')}\n",
        "tworecords.example": f"_dmarc TXT {txt('v=DMARC1; p=none')}\n_dmarc TXT {txt('v=DMARC1; p=reject')}\n",
        "external.example": f"_dmarc TXT {txt('v=DMARC1; p=reject; rua=mailto:reports@reports.example')}\n",
        "syntax.example": "\n".join(f"{name} TXT {txt(record)}" for name, record, *_ in SPF_SYNTAX)
        + "\n" + "\n".join(f"many MX 10 mx{i}.good.example." for i in range(11)) + "\n",
    }
    with DnsServer(zones, servfail=["broken.example"]) as server:
        yield server


@pytest.fixture(scope="module")
def resolver(dns_server: DnsServer):  # type: ignore[no-untyped-def]
    return make_resolver(dns_server.address)


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {check.name: check for check in checks}


# -- the two domains of the issue ---------------------------------------------


def test_well_configured_domain_passes_every_check(resolver) -> None:  # type: ignore[no-untyped-def]
    pem = private_pem(2048)
    checks = run_dns_checks(
        resolver,
        from_address="news@good.example",
        dkim_selector="sel",
        dkim_public_key=public_b64(pem),
    )
    assert [(c.name, c.verdict) for c in checks] == [
        ("mx", "pass"),
        ("spf", "pass"),
        ("dkim", "pass"),
        ("dmarc", "pass"),
        ("alignment", "pass"),
    ]
    assert "2048-bit" in by_name(checks)["dkim"].summary
    assert by_name(checks)["spf"].details["lookups"] == 1


def test_bare_domain_fails_naming_spf_and_dmarc_records_to_add(resolver) -> None:  # type: ignore[no-untyped-def]
    pem = private_pem(2048)
    checks = by_name(
        run_dns_checks(
            resolver,
            from_address="news@bare.example",
            dkim_selector="sel",
            dkim_public_key=public_b64(pem),
        )
    )
    assert checks["spf"].verdict == "fail"
    assert 'bare.example. TXT "v=spf1 mx -all"' in (checks["spf"].fix or "")
    assert checks["dmarc"].verdict == "fail"
    assert checks["dmarc"].fix == (
        '_dmarc.bare.example. TXT "v=DMARC1; p=none; rua=mailto:dmarc@bare.example"'
    )
    # The DKIM fix carries the real public key of the configured private key.
    assert checks["dkim"].verdict == "fail"
    assert checks["dkim"].fix == (
        f'sel._domainkey.bare.example. TXT "v=DKIM1; k=rsa; p={public_b64(pem)}"'
    )
    assert checks["alignment"].verdict == "fail"
    assert checks["mx"].verdict == "warn"  # no MX, but an A record: implicit MX


# -- SPF -----------------------------------------------------------------------


def test_split_multi_string_spf_record_is_joined(resolver) -> None:  # type: ignore[no-untyped-def]
    check = check_spf(resolver, "split.example")
    assert check.verdict == "pass", check.summary
    assert check.details["record"] == "v=spf1 ip4:192.0.2.0/24 include:good.example -all"
    # include:good.example (1) + its mx (1)
    assert check.details["lookups"] == 2


def test_spf_include_chain_over_ten_lookups_fails(resolver) -> None:  # type: ignore[no-untyped-def]
    check = check_spf(resolver, "chain.example")
    assert check.verdict == "fail"
    assert check.details["lookups"] == 11
    assert "11 DNS lookups (at most 10)" in check.summary
    assert check.fix and "ip4:/ip6:" in check.fix


def test_spf_chain_of_nine_lookups_passes(resolver) -> None:  # type: ignore[no-untyped-def]
    check = check_spf(resolver, "short-chain.example")
    assert check.verdict == "pass", check.summary
    assert check.details["lookups"] == 9


def test_spf_more_than_two_void_lookups_fails(resolver) -> None:  # type: ignore[no-untyped-def]
    check = check_spf(resolver, "void.example")
    assert check.verdict == "fail"
    assert check.details["void_lookups"] == 3
    assert "3 void lookups" in check.summary


@pytest.mark.parametrize(
    ("domain", "words"),
    [("plusall.example", "lets any server send"), ("noall.example", "no terminal 'all'")],
)
def test_spf_permissive_or_open_records_warn(resolver, domain: str, words: str) -> None:  # type: ignore[no-untyped-def]
    check = check_spf(resolver, domain)
    assert check.verdict == "warn"
    assert words in check.summary


def test_two_spf_records_fail(resolver) -> None:  # type: ignore[no-untyped-def]
    check = check_spf(resolver, "twospf.example")
    assert check.verdict == "fail"
    assert "2 SPF records" in check.summary


def test_include_of_domain_without_spf_fails(resolver) -> None:  # type: ignore[no-untyped-def]
    check = check_spf(resolver, "badinclude.example")
    assert check.verdict == "fail"
    assert "include:bare.example has no SPF record" in check.summary


@pytest.mark.parametrize(("name", "verdict", "words"), [(n, v, w) for n, _, v, w in SPF_SYNTAX],
                         ids=[n for n, *_ in SPF_SYNTAX])
def test_spf_record_mistakes_are_named(resolver, name: str, verdict: str, words: str) -> None:  # type: ignore[no-untyped-def]
    check = check_spf(resolver, f"{name}.syntax.example")
    assert (check.verdict, words in check.summary) == (verdict, True), check.summary


# -- DKIM ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("selector", "verdict", "words"),
    [
        ("weak", "warn", "1024-bit RSA key"),
        ("tiny", "fail", "512-bit RSA key"),
        ("revoked", "fail", "revoked"),
        ("missing", "fail", "no DKIM key at missing._domainkey.good.example"),
        ("ed", "pass", "ed25519"),
        ("testing", "warn", "t=y"),
    ],
)
def test_dkim_key_verdicts(resolver, selector: str, verdict: str, words: str) -> None:  # type: ignore[no-untyped-def]
    check = check_dkim(resolver, "good.example", selector)
    assert check.verdict == verdict
    assert words in check.summary


def test_dkim_key_not_matching_configured_private_key_fails(resolver) -> None:  # type: ignore[no-untyped-def]
    other = public_b64(private_pem(1024))
    check = check_dkim(resolver, "good.example", "sel", public_key=other)
    assert check.verdict == "fail"
    assert "not the one mailcli signs with" in check.summary
    assert check.fix and other in check.fix


# -- MX ------------------------------------------------------------------------


def test_null_mx_of_sender_domain_fails(resolver) -> None:  # type: ignore[no-untyped-def]
    check = check_mx(resolver, "nullmx.example")
    assert check.verdict == "fail"
    assert "null MX" in check.summary
    assert check.fix and "MX 10" in check.fix


def test_mx_target_that_is_a_cname_fails(resolver) -> None:  # type: ignore[no-untyped-def]
    check = check_mx(resolver, "cnamemx.example")
    assert check.verdict == "fail"
    assert "alias.cnamemx.example is a CNAME" in check.summary


def test_servfail_is_an_error_not_a_failure(resolver) -> None:  # type: ignore[no-untyped-def]
    checks = run_dns_checks(resolver, from_address="a@broken.example", dkim_selector="sel")
    assert {c.name: c.verdict for c in checks}["mx"] == "error"
    assert by_name(checks)["spf"].verdict == "error"


def test_unreachable_nameserver_is_an_error(dns_server: DnsServer) -> None:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # Nothing listens on that port any more: the lookup times out (short lifetime).
    dead = make_resolver(f"127.0.0.1:{port}", lifetime=0.5)
    check = check_mx(dead, "good.example")
    assert check.verdict == "error"


# -- DMARC and alignment ---------------------------------------------------------


def test_dmarc_p_none_without_rua_warns(resolver) -> None:  # type: ignore[no-untyped-def]
    check, policy = check_dmarc(resolver, "monitor.example")
    assert check.verdict == "warn"
    assert "p=none" in check.summary and "no rua=" in check.summary
    assert policy is not None and policy.adkim == "r"


def test_two_dmarc_records_fail(resolver) -> None:  # type: ignore[no-untyped-def]
    check, _ = check_dmarc(resolver, "tworecords.example")
    assert check.verdict == "fail"


def test_dmarc_falls_back_to_organisational_domain(resolver) -> None:  # type: ignore[no-untyped-def]
    check, _ = check_dmarc(resolver, "news.good.example")
    assert check.verdict == "pass"
    assert check.details["found_at"] == "_dmarc.good.example"


def test_external_rua_without_authorisation_warns(resolver) -> None:  # type: ignore[no-untyped-def]
    check, _ = check_dmarc(resolver, "external.example")
    assert check.verdict == "warn"
    assert "external.example._report._dmarc.reports.example" in check.summary


def test_alignment_reports_which_identifier_aligns() -> None:
    relaxed = check_alignment(
        "news.good.example",
        dkim_domain="good.example",
        envelope_domain="bounces.other.example",
        policy=None,
        dkim_ok=True,
        spf_ok=True,
    )
    assert relaxed.verdict == "pass"
    assert "DKIM d=good.example aligns" in relaxed.summary
    assert "SPF bounces.other.example does not align" in relaxed.summary

    neither = check_alignment(
        "good.example",
        dkim_domain="esp.example",
        envelope_domain="esp.example",
        policy=None,
        dkim_ok=True,
        spf_ok=True,
    )
    assert neither.verdict == "fail"
    assert neither.fix and 'domain = "good.example"' in neither.fix


def test_organisational_domain_heuristic() -> None:
    assert organizational_domain("mail.news.acme.nl") == "acme.nl"
    assert organizational_domain("news.acme.co.uk") == "acme.co.uk"
