"""The hand-built MIME writer: re-parsed by the standard library, byte rules, header safety.

Every message is parsed back with ``email.message_from_bytes(policy=default)``
and must show no defects, the same subject, names and bodies, and the wire
rules of RFC 5322/2045/2047: CRLF only, no line over 998 octets, encoded-words
of at most 75 characters, no encoded-word inside an address, a boundary that
appears nowhere in the bodies.
"""

from __future__ import annotations

import email
import email.policy
import html
import re
from datetime import datetime, timedelta, timezone
from email.message import EmailMessage
from email.utils import parsedate_to_datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailcli.errors import HeaderInjectionError
from mailcli.render import MessageSkeleton, check_header_value
from mailcli.render.encodedwords import ENCODED_WORD_MAX, encoded_words
from mailcli.render.mime import AddressError, ascii_address, ascii_domain
from mailcli.render.mimebody import (
    _has_long_line,
    encode_body,
    encode_html_body,
    quoted_printable,
    quoted_printable_text,
)

DATE = datetime(2026, 3, 14, 9, 26, 53, tzinfo=timezone.utc)
UNSUB = "<https://news.example.org/unsubscribe?t=AbCdEf0123456789>, <mailto:unsubscribe+AbCdEf0123456789@example.org?subject=unsubscribe%20AbCdEf0123456789>"
HTML = ("<!DOCTYPE html><html><head><style>@media (max-width: 600px) { td { padding: 0 !important; } }</style></head><body>"
        + '<table style="width: 600px;">' + "".join(f'<tr><td style="padding: 8px;color: #123456;">Row {i} &amp; more</td></tr>' for i in range(60))
        + "</table></body></html>")
TEXT = "Hello,\n\nthis is the text part.\n\n-- \nAcme, Keizersgracht 1\nhttps://news.example.org/unsubscribe?t=x\n"


def skeleton(**overrides: object) -> MessageSkeleton:
    options: dict[str, object] = dict(from_name="Acme Nieuws", from_address="news@acme.example", reply_to="hello@acme.example",
                                      list_id="news.acme.example", list_name="Acme nieuwsbrief", feedback_id="c1:news:acme:ACME1")
    options.update(overrides)
    return MessageSkeleton(**options)  # type: ignore[arg-type]


def build(sk: MessageSkeleton | None = None, **overrides: object) -> bytes:
    options: dict[str, object] = dict(to_address="ann@example.org", to_name="Ann Smith", subject="Spring news", text=TEXT,
                                      html=HTML, message_id="<c1.k1@acme.example>", date=DATE, list_unsubscribe=UNSUB)
    options.update(overrides)
    return (sk or skeleton()).build(**options)  # type: ignore[arg-type]


def content(part: EmailMessage) -> str:
    """A part's decoded text with LF line ends (the parser keeps the wire's CRLF)."""
    return str(part.get_content()).replace("\r\n", "\n")


def check_wire(data: bytes) -> EmailMessage:
    """The byte-level rules, then a defect-free parse; returns the parsed message."""
    assert b"\r\n" in data
    assert not re.search(rb"[^\r]\n|\r[^\n]", data), "bare CR or LF"
    assert data.endswith(b"\r\n")
    lines = data.split(b"\r\n")
    assert max(len(line) for line in lines) <= 998
    head, _, body = data.partition(b"\r\n\r\n")
    head_text = head.decode("ascii")  # headers are pure ASCII on the non-SMTPUTF8 path
    for line in head_text.split("\r\n"):
        words = re.findall(r"=\?[^?]+\?[qQbB]\?[^?]*\?=", line)
        for word in words:
            assert len(word) <= 75, word
        if words:
            assert len(line) <= 76, line
    # no encoded-word inside an addr-spec (RFC 2047 §5)
    for addr in re.findall(r"<([^<>]*)>", head_text):
        assert "=?" not in addr
    boundary = re.search(r'boundary="([^"]+)"', head_text).group(1)  # type: ignore[union-attr]
    parts = body.split(b"--" + boundary.encode())
    assert len(parts) == 4 and parts[-1] == b"--\r\n"
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert message.defects == []
    for part in message.walk():
        assert part.defects == [], part.defects
    for part in message.iter_parts():
        assert boundary not in part.get_content()
    assert isinstance(message, EmailMessage)
    return message


# ---------------------------------------------------------------------------
# Structure


def test_structure_and_order_of_parts() -> None:
    message = check_wire(build())
    assert message.get_content_type() == "multipart/alternative"
    parts = list(message.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert all(p.get_content_charset() == "utf-8" for p in parts)
    assert content(parts[0]) == TEXT
    assert content(parts[1]) == HTML + "\n"
    assert message["MIME-Version"] == "1.0"


def test_headers_appear_once_and_carry_what_the_list_rules_need() -> None:
    data = build()
    head = data.split(b"\r\n\r\n")[0].decode()
    names = [line.split(":")[0].lower() for line in head.split("\r\n") if not line.startswith(" ")]
    for single in ("from", "to", "subject", "date", "message-id", "mime-version", "reply-to", "list-id",
                   "list-unsubscribe", "list-unsubscribe-post", "precedence", "feedback-id", "content-type"):
        assert names.count(single) == 1, single
    assert "bcc" not in names and "cc" not in names and "return-path" not in names
    message = check_wire(data)
    assert parsedate_to_datetime(message["Date"]) == DATE
    assert message["Message-ID"] == "<c1.k1@acme.example>"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["List-Unsubscribe"].startswith("<https://news.example.org/unsubscribe?t=")
    assert message["List-Id"] == "Acme nieuwsbrief <news.acme.example>"
    assert message["Precedence"] == "bulk"
    assert message["Reply-To"].addresses[0].addr_spec == "hello@acme.example"
    assert message["From"].addresses[0].display_name == "Acme Nieuws"
    assert message["To"].addresses[0].addr_spec == "ann@example.org"


def test_no_list_unsubscribe_no_one_click() -> None:
    message = check_wire(build(list_unsubscribe=None))
    assert message["List-Unsubscribe"] is None and message["List-Unsubscribe-Post"] is None


def test_long_html_lines_are_encoded_and_ascii_text_stays_7bit() -> None:
    html = "<p>" + "x" * 5000 + "</p>"
    message = check_wire(build(html=html))
    text_part, html_part = message.iter_parts()
    assert text_part["Content-Transfer-Encoding"] == "7bit"
    assert html_part["Content-Transfer-Encoding"] == "quoted-printable"
    assert content(html_part) == html + "\n"


@pytest.mark.parametrize(("body", "cte"), [
    ("plain ascii\nshort lines\n", "7bit"),
    ("één ding, café, Straße\n" * 5, "quoted-printable"),
    ("x" * 1200 + "\n", "quoted-printable"),
    ("山田太郎さん、こんにちは。今月のニュースです。\n" * 20, "base64"),
    ("trailing spaces   \nand\ttabs\t\n" + "é", "quoted-printable"),
])
def test_transfer_encoding_is_chosen_by_content(body: str, cte: str) -> None:
    chosen, encoded = encode_body(body)
    assert chosen == cte
    assert all(len(line) <= (998 if cte == "7bit" else 76) for line in encoded.split(b"\r\n"))
    message = check_wire(build(text=body))
    assert content(next(message.iter_parts())) == (body if body.endswith("\n") else body + "\n")


# Lines of HTML and text as they come out of templates: attributes full of
# "=", escapes of every width near the 76-character soft-break point,
# blanks at line ends, controls, and long runs without a break.
_QP_TEXT = st.lists(
    st.one_of(
        st.text(alphabet=st.sampled_from(list('ab =="<>.\t é€\x00\x0c\x7f')), max_size=300),
        st.from_regex(r'<td style="[a-z:;# 0-9]{0,120}">[a-z ]{0,90}</td>', fullmatch=True),
        st.text(max_size=120),
    ),
    max_size=12,
).map(lambda lines: "\n".join(line.replace("\r", "").replace("\n", "") for line in lines) + "\n")


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(_QP_TEXT)
def test_quoted_printable_round_trips_and_keeps_every_rule(text: str) -> None:
    import binascii

    data = text.encode("utf-8")
    encoded = quoted_printable(data)
    assert encoded.endswith(b"\r\n")
    for line in encoded.split(b"\r\n"):
        assert len(line) <= 76  # RFC 2045 §6.7 rule 5
        assert all(0x20 <= octet < 0x7F or octet == 0x09 for octet in line)
        assert not line.endswith((b" ", b"\t"))  # rule 3: trailing blanks are escaped
        assert not re.search(rb"=(?![0-9A-F]{2}|$)", line)  # "=" only starts an escape or a soft break
    assert binascii.a2b_qp(encoded).replace(b"\r\n", b"\n") == data


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(_QP_TEXT)
def test_quoted_printable_of_text_is_the_same_bytes(text: str) -> None:
    assert quoted_printable_text(text) == quoted_printable(text.encode("utf-8"))


def test_html_part_is_7bit_with_character_references_where_html_reads_them() -> None:
    page = "<html><head><style>p { color: red; }</style></head><body><p>Zo\u00eb \u2192 caf\u00e9 \u201cnews\u201d</p></body></html>"
    cte, body = encode_html_body(page)
    assert cte == "7bit" and body.isascii()
    assert html.unescape(body.decode("ascii")).rstrip("\r\n") == page
    message = check_wire(build(html=page))
    assert html.unescape(content(list(message.iter_parts())[1])).rstrip("\n") == page
    # Inside <style> a reference is not read as a character, and U+0080..U+009F
    # references are read as other characters: such parts stay UTF-8.
    for kept in ('<style>p::before { content: "\u2192"; }</style><p>\u00e9</p>', "<p>caf\u00e9\x85</p>"):
        assert encode_html_body(kept)[0] != "7bit"
        assert content(list(check_wire(build(html=kept)).iter_parts())[1]) == kept + "\n"


def test_tag_names_are_compared_in_ascii_case_only() -> None:
    # A letter that only Unicode case folding makes an "s" or an "i" names no
    # raw-text element: its content is read with references, and the end tag
    # spelt that way does not close a real one.
    for page in ("<p>caf\u00e9</p><no\u017fcript>x</no\u017fcript>", "<p>caf\u00e9</p><pla\u0131ntext>x"):
        assert encode_html_body(page) == ("7bit", page.encode("ascii", "xmlcharrefreplace") + b"\r\n")
    assert encode_html_body("<style>a</\u017ftyle>\u00e9</style>")[0] == "quoted-printable"


_HTML_PIECES = st.sampled_from([
    "<p>", "</p>", "<style>", "</style>", "<STYLE>", "</Style >", "<\u017ftyle>", "<script>", "</script>", "<xmp>",
    "<iframe>", "<noembed>", "<noframes>", "<noscript>", "<plaintext>", "<stylesheet>", "<\u0131frame>", "<s", "<",
    "a", " ", "\n", "&#128;", "&#159;", "&#160;", "&#1", "&#12", "\u00e9", "\u2192", "\x80", "\x85", "\x9f", "\u00a0",
    "\u034f\u200c", "\U0001f600",
])


def _html_body_as_first_written(html: str, eightbit: bool) -> tuple[str, bytes]:
    """encode_html_body as first written: each condition checked on the page itself."""
    raw = re.compile(r"<(style|script|xmp|iframe|noembed|noframes|noscript|plaintext)\b", re.IGNORECASE | re.ASCII)

    def raw_text_is_ascii(page: str) -> bool:
        for match in raw.finditer(page):
            end = re.compile(rf"</{match.group(1)}", re.IGNORECASE | re.ASCII).search(page, match.end())
            if not page[match.end() : end.start() if end else len(page)].isascii():
                return False
        return True

    if not eightbit and not html.isascii() and not re.search("[\x80-\x9f]", html) and raw_text_is_ascii(html):
        html = html.encode("ascii", "xmlcharrefreplace").decode("ascii")
    return encode_body(html, eightbit=eightbit)


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_HTML_PIECES, max_size=30).map("".join), st.booleans())
def test_html_part_is_what_checking_the_page_itself_gives(page: str, eightbit: bool) -> None:
    # The checks look at the page in cheaper ways than they were first written: same bytes.
    assert encode_html_body(page, eightbit=eightbit) == _html_body_as_first_written(page, eightbit)


def test_an_8bit_part_keeps_lines_within_998_octets() -> None:
    # 500 Cyrillic letters are 1,000 octets in UTF-8: such a line cannot go as it is.
    long_line, short_line = "\u0436" * 500, "\u0436" * 499
    for page, text in ((f"<p>{long_line}</p>", "Hi"), ("<p>Hi</p>", long_line)):
        check_wire(build(html=page, text=text, eightbit=True))
        assert encode_body(text if text != "Hi" else page, eightbit=True)[0] == "base64"
    assert encode_body(short_line, eightbit=True) == ("8bit", short_line.encode("utf-8") + b"\r\n")


@settings(max_examples=500)
@given(st.lists(st.sampled_from([0, 1, 40, 497, 498, 499, 500, 997, 998, 999, 1000, 1497, 1996, 1997, 3000]),
                max_size=12),
       st.sampled_from(["a", "\u00e9"]))
def test_a_long_line_is_found_wherever_it_is(lengths: list[int], letter: str) -> None:
    # Only blocks without a line break have their lines measured: same answer as measuring every line.
    text = "\n".join(letter * n for n in lengths)
    longest = max(lengths, default=0)
    assert _has_long_line(text, "\n") == (longest > 998)
    data = text.encode("utf-8")
    assert _has_long_line(data, b"\n") == (max(map(len, data.split(b"\n"))) > 998)


def test_each_message_carries_its_own_date() -> None:
    # One skeleton builds a campaign's messages; the Date written last is kept for the next.
    from email.utils import format_datetime
    from zoneinfo import ZoneInfo

    sk = skeleton()
    amsterdam = ZoneInfo("Europe/Amsterdam")
    moments = [DATE, DATE, DATE + timedelta(seconds=1), DATE, DATE.astimezone(timezone(timedelta(hours=2))),
               DATE.astimezone(amsterdam), DATE.replace(tzinfo=None), DATE.replace(microsecond=5), DATE,
               datetime(2026, 10, 25, 2, 30, fold=1, tzinfo=amsterdam), datetime(2026, 10, 25, 2, 30, tzinfo=amsterdam)]
    for moment in moments:
        head = build(sk, date=moment).split(b"\r\n\r\n")[0].decode("ascii")
        expected = format_datetime(moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc))
        assert f"\r\nDate: {expected}\r\n" in head


def _encoded_words_as_first_written(text: str, first_room: int) -> list[str]:
    """encoded_words as first written: each candidate word encoded in full to measure it."""
    import base64

    def q(piece: str) -> str:
        safe = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!*+-/"
        return "".join(c if c in safe else "_" if c == " " else "".join(f"={b:02X}" for b in c.encode("utf-8"))
                       for c in piece)

    use_b = sum(1 for char in text if ord(char) > 127) * 3 > len(text)

    def size(piece: str) -> int:
        return 12 + 4 * ((len(piece.encode("utf-8")) + 2) // 3) if use_b else 12 + len(q(piece))

    def word(piece: str) -> str:
        if use_b:
            return "=?utf-8?b?" + base64.b64encode(piece.encode("utf-8")).decode("ascii") + "?="
        return "=?utf-8?q?" + q(piece) + "?="

    words = text.split(" ")
    out: list[str] = []
    room, current = min(max(first_room, 24), ENCODED_WORD_MAX), ""
    for segment in [words[0]] + [" " + w for w in words[1:]]:
        if size(current + segment) <= room:
            current += segment
            continue
        if current:
            out.append(word(current))
            current, room = "", ENCODED_WORD_MAX
        if size(segment) <= room:
            current = segment
            continue
        for char in segment:
            if current and size(current + char) > room:
                out.append(word(current))
                current, room = "", ENCODED_WORD_MAX
            current += char
    if current or not out:
        out.append(word(current))
    return out


_HEADER_TEXT = st.text(alphabet=st.sampled_from(list("aZ09 _=?!*+-/,.'\"\t") + ["\u00e9", "\u00eb", "\u0142", "\u2014",
                                                                                  "\u0416", "\u4e2d", "\U0001f600"]),
                       max_size=120)


@settings(max_examples=500)
@given(_HEADER_TEXT, st.integers(min_value=-5, max_value=90))
def test_encoded_words_are_what_encoding_each_candidate_gives(text: str, first_room: int) -> None:
    # Word sizes are added up instead of encoding the words so far again: same words.
    assert encoded_words(text, first_room) == _encoded_words_as_first_written(text, first_room)


def test_quoted_printable_matches_the_standard_library_on_plain_html() -> None:
    import binascii

    html = "".join(f'<p style="margin:0;color:#333">Row {n} of the digest, {"x" * (n % 90)}</p>' for n in range(300))
    data = (html + "\n") * 3
    assert quoted_printable(data.encode()) == binascii.b2a_qp(
        data.replace("\n", "\r\n").encode(), quotetabs=False, istext=True, header=False)


def test_boundary_is_random_and_absent_from_bodies() -> None:
    boundaries = set()
    for _ in range(50):
        data = build(text="--=_mc looks like a boundary\n--=_mc0123\n")
        boundaries.add(re.search(rb'boundary="([^"]+)"', data).group(1))  # type: ignore[union-attr]
    assert len(boundaries) == 50


# ---------------------------------------------------------------------------
# Names, subjects, addresses


def test_idn_domains_become_idna2008_a_labels() -> None:
    message = check_wire(build(to_address="x@bücher.example", to_name="Zoë"))
    assert message["To"].addresses[0].addr_spec == "x@xn--bcher-kva.example"
    assert b"x@xn--bcher-kva.example" in build(to_address="x@bücher.example")
    assert ascii_domain("straße.de") == "xn--strae-oqa.de"  # IDNA2008, not strasse.de (IDNA2003)
    assert ascii_address("Ann@Example.ORG") == "Ann@example.org"
    sk = skeleton(from_address="nieuws@bücher.example", reply_to="antwoord@straße.de")
    message = check_wire(build(sk))
    assert message["From"].addresses[0].domain == "xn--bcher-kva.example"
    assert message["Reply-To"].addresses[0].domain == "xn--strae-oqa.de"


@pytest.mark.parametrize("address", ["no-at-sign", "a b@example.org", '"q"@example.org', "x@-bad-.example", "x@",
                                     "zoë ü@example.org", "zoë..x@example.org"])
def test_addresses_a_header_cannot_carry_are_refused(address: str) -> None:
    with pytest.raises(AddressError):
        build(to_address=address)


def test_a_non_ascii_local_part_is_written_as_utf8_for_smtputf8() -> None:
    # RFC 6532: only such a To header makes the header bytes UTF-8; the
    # transport sends the message only with SMTPUTF8 (or fails it, saying why).
    raw = build(to_address="zoë@bücher.example", to_name="Zoë")
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert "<zoë@xn--bcher-kva.example>".encode() in head  # the name stays an encoded-word
    message = email.message_from_string(raw.decode("utf-8"), policy=email.policy.SMTPUTF8)
    assert message["To"].addresses[0].addr_spec == "zoë@xn--bcher-kva.example" and not message.defects
    assert build(to_address="ann@example.org").isascii()
    with pytest.raises(AddressError):
        MessageSkeleton(from_name="", from_address="zoë@example.org", reply_to=None, list_id=None)


NAMES = [
    "Zoë Ærøskøbing-Øster van der Wàlls de la Très Longue Famille",
    "O'Brien, Pat",
    'Jane "JJ" Doe',
    "=?utf-8?q?not_an_encoded_word?=",
    "山田 太郎",
    "Dr. A. B. Smith (Acme)",
    "A" * 120,
    "Émile",
]


@pytest.mark.parametrize("name", NAMES)
def test_display_names_round_trip(name: str) -> None:
    message = check_wire(build(to_name=name, subject=f"Hallo {name}"))
    assert message["To"].addresses[0].display_name == name
    assert message["Subject"] == f"Hallo {name}"


def test_long_non_latin_names_are_split_between_words() -> None:
    # RFC 2047 readers drop the space between encoded-words; the standard
    # library keeps it. Splitting only at spaces, with the space inside the
    # next word, gives every word intact to both (the stdlib shows a double space).
    name = "Анна Петровна Иванова-Смирнова Александровна"
    data = build(to_name=name)
    message = check_wire(data)
    assert " ".join(message["To"].addresses[0].display_name.split()) == name
    words = re.findall(rb"=\?utf-8\?b\?([^?]+)\?=", data.split(b"\r\n\r\n")[0].split(b"Subject:")[0])
    import base64
    decoded = [base64.b64decode(w).decode("utf-8") for w in words]
    assert "".join(decoded) == name
    assert all(not w.endswith(" ") for w in decoded[:-1])


def test_subject_folding_keeps_text_exact() -> None:
    subject = "A rather long ASCII subject line that goes on and on well past the seventy-eight column fold point, twice over"
    data = build(subject=subject)
    header = re.search(rb"\r\nSubject:.*?\r\n(?! )", data, re.DOTALL).group(0)  # type: ignore[union-attr]
    lines = header.strip(b"\r\n").split(b"\r\n")
    assert len(lines) == 2 and all(len(line) <= 78 for line in lines)
    assert check_wire(data)["Subject"] == subject


_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), min_size=1, max_size=90
).map(lambda s: " ".join(s.split())).filter(bool)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(subject=_text, name=_text, body=st.text(max_size=400), local=st.from_regex(r"[a-z0-9][a-z0-9._+-]{0,20}", fullmatch=True),
       domain=st.sampled_from(["example.org", "bücher.example", "straße.de", "例え.jp", "xn--bcher-kva.example", "ÉCOLE.fr"]))
def test_round_trip_many_messages(subject: str, name: str, body: str, local: str, domain: str) -> None:
    if ".." in local or local.endswith("."):
        local = "a"
    body = re.sub(r"[\x00-\x08\x0b-\x1f\x7f\u2028\u2029\x85]", "", body)
    data = build(to_address=f"{local}@{domain}", to_name=name, subject=subject, text=body + "\nend\n",
                 html=f"<p>{body}</p>" * 3, date=DATE + timedelta(seconds=len(body)))
    message = check_wire(data)
    assert message["Subject"] == subject
    to = message["To"].addresses[0]
    # The stdlib keeps the space between encoded-words in a phrase (RFC 2047
    # §6.2 drops it), so a word too long for one encoded-word gains a space here.
    assert "".join(to.display_name.split()) == "".join(name.split())
    assert to.addr_spec == f"{local}@{ascii_domain(domain)}"
    assert to.addr_spec.isascii()
    text_part, html_part = message.iter_parts()
    assert content(text_part) == (body + "\nend\n").replace("\r\n", "\n").replace("\r", "\n")
    # Non-ASCII characters of the HTML part may travel as character references.
    expected = (f"<p>{body}</p>" * 3).replace("\r\n", "\n").replace("\r", "\n") + "\n"
    assert html.unescape(content(html_part)) == html.unescape(expected)


# ---------------------------------------------------------------------------
# Header injection


VECTORS = ["x\r\nBcc: evil@x", "x\nBcc: evil@x", "x\rBcc: evil@x", "x\x00y", "x\u2028Bcc: evil@x", "x\u2029y", "x\x85y",
           "x\x1by", "x\x7fy", "x\x0by"]


@pytest.mark.parametrize("value", VECTORS)
def test_check_header_value_refuses_line_breaks_and_controls(value: str) -> None:
    with pytest.raises(HeaderInjectionError, match="^Subject header value contains"):
        check_header_value("Subject", value)


def test_check_header_value_allows_ordinary_text() -> None:
    for value in ("Hello\tworld", "Zoë — één ❤", "a" * 2000, ""):
        assert check_header_value("Subject", value) == value


@pytest.mark.parametrize("value", ["x\r\nBcc: evil@x", "x\x00", "x\u2028Bcc: evil@x"])
@pytest.mark.parametrize("field", ["subject", "to_name", "to_address", "message_id", "list_unsubscribe"])
def test_every_per_message_header_path_refuses_injection(field: str, value: str) -> None:
    expected = {"subject": "Subject", "to_name": "To", "to_address": "To", "message_id": "Message-ID",
                "list_unsubscribe": "List-Unsubscribe"}[field]
    with pytest.raises(HeaderInjectionError) as caught:
        build(**{field: value if field != "to_address" else f"ann{value}@example.org"})
    assert caught.value.message.startswith(expected)


@pytest.mark.parametrize("value", ["x\r\nBcc: evil@x", "x\x00", "x\u2028Bcc: evil@x"])
@pytest.mark.parametrize("field", ["from_name", "from_address", "reply_to", "list_id", "list_name", "feedback_id", "extra"])
def test_every_campaign_header_path_refuses_injection(field: str, value: str) -> None:
    expected = {"from_name": "From", "from_address": "From", "reply_to": "Reply-To", "list_id": "List-Id",
                "list_name": "List-Id", "feedback_id": "Feedback-ID", "extra": "X-Campaign"}[field]
    if field == "extra":
        overrides: dict[str, object] = {"extra": {"X-Campaign": value}}
    elif field in ("from_address", "reply_to"):
        overrides = {field: f"a{value}@example.org"}
    else:
        overrides = {field: value}
    with pytest.raises(HeaderInjectionError) as caught:
        skeleton(**overrides)
    assert caught.value.message.startswith(expected)


def test_extra_headers_cannot_replace_owned_ones() -> None:
    for name in ("Bcc", "To", "Subject", "Content-Type", "Bad Name"):
        with pytest.raises(HeaderInjectionError):
            skeleton(extra={name: "x"})
    message = check_wire(build(skeleton(extra={"X-Campaign": "spring 2026 ünïcode"})))
    assert message["X-Campaign"] == "spring 2026 ünïcode"
