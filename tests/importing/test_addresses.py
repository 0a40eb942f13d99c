"""Address normalisation: examples from the standards and hypothesis properties."""

from __future__ import annotations

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from mailcli import addresses
from mailcli.addresses import AddressError, NormalisedAddress, mask_address, normalise_address


@pytest.mark.parametrize(
    ("raw", "address", "key"),
    [
        (" Alice@Example.NL ", "Alice@example.nl", "alice@example.nl"),
        ("alice@example.nl", "alice@example.nl", "alice@example.nl"),
        ("a@straße.de", "a@xn--strae-oqa.de", "a@xn--strae-oqa.de"),  # IDNA2008, not strasse.de
        ("Jan@Bücher.Example", "Jan@xn--bcher-kva.example", "jan@xn--bcher-kva.example"),
        ("a@XN--STRAE-OQA.DE", "a@xn--strae-oqa.de", "a@xn--strae-oqa.de"),
        ("\u00a0bob@example.org\u200b", "bob@example.org", "bob@example.org"),
        ("\tbob@example.org ", "bob@example.org", "bob@example.org"),
        ("o'brien+news@example.ie", "o'brien+news@example.ie", "o'brien+news@example.ie"),
        ("Ünï@bücher.example", "Ünï@xn--bcher-kva.example", "ünï@xn--bcher-kva.example"),
    ],
)
def test_normalises(raw: str, address: str, key: str) -> None:
    assert normalise_address(raw) == NormalisedAddress(address, key)


@pytest.mark.parametrize(
    "raw",
    [
        "alice@example.org)<bob@example.org>",  # CVE-2023-27043
        "Alice <alice@example.org>",
        "alice@example.org (Alice)",
        "alice@example.org, bob@example.org",
        "alice@example.org bob@example.org",
        '"alice smith"@example.org',
        "alice@[192.0.2.1]",
        "alice@example.org\r\nBcc: x@example.org",
        "alice@example.org\n",
        "ali\x00ce@example.org",
        "alice",
        "alice@",
        "@example.org",
        "alice@@example.org",
        "alice..smith@example.org",
        "alice@example",
        "alice@localhost",
        "alice@example.test",
        "alice@exa_mple.org",
        "alice@-example.org",
        "alice@example.123",
        "alice@xn--zz.org",  # looks like Punycode but is not
        "",
        "   ",
        "x" * 65 + "@example.org",  # a local part over 64 octets
        "a@" + ".".join(["b" * 63] * 4) + ".org",  # a domain over 255 octets
        "é" * 33 + "@example.org",  # 66 octets in UTF-8
    ],
)
def test_rejects(raw: str) -> None:
    with pytest.raises(AddressError) as info:
        normalise_address(raw)
    assert info.value.reason
    assert "\n" not in info.value.reason


def test_limits_are_inclusive() -> None:
    local = "x" * 64
    assert normalise_address(f"{local}@example.org").address == f"{local}@example.org"
    # 64 + 1 + 189 = 254 octets: exactly a 256-octet path with the brackets.
    domain = ".".join(["d" * 60] * 3) + ".ee.org"
    assert len(local) + 1 + len(domain) == 254
    assert normalise_address(f"{local}@{domain}").address == f"{local}@{domain}"
    with pytest.raises(AddressError):
        normalise_address(f"{local}@a{domain}")


def test_mask() -> None:
    assert mask_address("alice@example.nl") == "a***@example.nl"
    assert mask_address("nonsense") == "***"


# ---------------------------------------------------------------- properties

IDN_DOMAINS = ["bücher.example", "straße.de", "café.fr", "münchen.de", "ÄÖÜ.at", "xn--bcher-kva.example"]
ascii_emails = st.emails()
idn_emails = st.builds(
    lambda local, domain: f"{local}@{domain}",
    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,20}[A-Za-z0-9]", fullmatch=True),
    st.sampled_from(IDN_DOMAINS),
)
candidate = st.one_of(ascii_emails, idn_emails)
spaces = st.text(alphabet=" \t\u00a0\u2003\u3000\u200b\ufeff", max_size=4)


def _try(raw: str) -> NormalisedAddress | str:
    try:
        return normalise_address(raw)
    except AddressError as exc:
        return f"error: {exc.reason}"


@settings(max_examples=300)
@given(candidate)
def test_idempotent(raw: str) -> None:
    first = _try(raw)
    assume(isinstance(first, NormalisedAddress))
    assert isinstance(first, NormalisedAddress)
    assert normalise_address(first.address) == first


@settings(max_examples=300)
@given(candidate)
def test_key_ignores_case(raw: str) -> None:
    first = _try(raw)
    assume(isinstance(first, NormalisedAddress))
    assert isinstance(first, NormalisedAddress)
    # ASCII letters only: str.upper() maps "ß" to "SS", which is another name.
    flip = "".join(ch.swapcase() if ch.isascii() else ch for ch in raw)
    upper = "".join(ch.upper() if ch.isascii() else ch for ch in raw)
    assert normalise_address(flip).key == first.key
    assert normalise_address(upper).key == first.key


@settings(max_examples=300)
@given(st.one_of(candidate, st.text(max_size=40)), spaces, spaces)
def test_surrounding_whitespace_is_ignored(raw: str, before: str, after: str) -> None:
    assert _try(before + raw + after) == _try(raw)


@settings(max_examples=500)
@given(st.one_of(candidate, st.text(max_size=60)))
@example("a@b.org\r\nBcc: c@d.org")
@example("a@b.org\x00")
def test_output_is_safe_and_ascii_domain(raw: str) -> None:
    result = _try(raw)  # anything other than AddressError would propagate
    if isinstance(result, NormalisedAddress):
        assert not any(ch in result.address for ch in "\r\n\x00")
        assert result.domain.isascii()
        assert result.domain == result.domain.lower()
        assert result.key == result.address.lower()
    if any(ch in raw for ch in "\r\n\x00"):
        assert isinstance(result, str)


@settings(max_examples=500)
@given(st.one_of(ascii_emails, st.from_regex(r"[a-zA-Z0-9._%+-]{1,12}@[a-zA-Z0-9.-]{1,20}", fullmatch=True)))
def test_fast_path_agrees_with_email_validator(raw: str) -> None:
    """Whatever the regex fast path accepts, email-validator accepts identically."""
    result = _try(raw)
    if isinstance(result, NormalisedAddress):
        local, domain = addresses._validate(raw)
        assert result.address == f"{local}@{domain}"
