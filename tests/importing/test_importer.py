"""The CSV reader: detection, column mapping, values, rejects, and dialect properties."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailcli.errors import ExitCode, InputFileError, PartialError, UsageError
from mailcli.importer import (
    ImportRow,
    RejectsFile,
    RowReject,
    attribute_name,
    detect_format,
    header_key,
    open_csv,
    parse_consent_time,
    parse_map_options,
    truncate_ip,
)
from mailcli.importer.decoding import line_numbers

DATA = Path(__file__).parent.parent / "data"


def read(path: Path, **options: object) -> tuple[list[ImportRow], list[RowReject]]:
    with open_csv(path, **options) as source:  # type: ignore[arg-type]
        rows = list(source.rows())
    return [r for r in rows if isinstance(r, ImportRow)], [r for r in rows if isinstance(r, RowReject)]


# ------------------------------------------------------------- real-world files


def test_mailchimp_export() -> None:
    with open_csv(DATA / "mailchimp_export.csv") as source:
        assert source.format.delimiter == ","
        assert source.format.encoding == "utf-8"
        rows = list(source.rows())
    good = [r for r in rows if isinstance(r, ImportRow)]
    bad = [r for r in rows if isinstance(r, RowReject)]
    assert [r.email for r in good] == [
        "anna.dejong@example.nl",
        "Bram.Visser@example.com",
        "chloé@xn--bcher-kva.example",
        "daan@example.org",
    ]
    anna = good[0]
    assert (anna.first_name, anna.last_name) == ("Anna", "de Jong")
    # CONFIRM_TIME (double opt-in) is preferred over OPTIN_TIME; IP truncated to /24.
    assert anna.consent_at == "2023-03-30T09:16:40Z"
    assert anna.consent_ip == "81.204.17.0/24"
    assert anna.attributes["member_rating"] == "4"
    assert anna.attributes["timezone"] == "Europe/Amsterdam"
    assert anna.attributes["tags"] == '"Klanten","Nieuwsbrief"'
    assert "optin_time" not in anna.attributes and "confirm_ip" not in anna.attributes
    bram = good[1]
    assert bram.key == "bram.visser@example.com"
    assert bram.consent_at == "2022-12-01T18:40:00Z"  # no CONFIRM_TIME: falls back to OPTIN_TIME
    assert bram.consent_ip == "2a02:a45f:1234::/48"
    assert good[3].attributes["notes"] == "Notitie:\ntwee regels"
    assert good[3].consent_at is None
    assert [(r.line, r.reason.split(":")[0]) for r in bad] == [(7, "invalid email address")]


def test_dutch_excel_semicolon_cp1252() -> None:
    with open_csv(DATA / "dutch_excel.csv") as source:
        assert (source.format.encoding, source.format.delimiter) == ("cp1252", ";")
        rows = list(source.rows())
    good = [r for r in rows if isinstance(r, ImportRow)]
    assert good[0].first_name == "José" and good[0].last_name == "Peña"
    assert good[0].attributes == {"woonplaats": "Utrecht", "opmerking": "Betaalde € 25,00"}
    assert good[1].email == "Zoe.Janssen@example.nl" and good[1].first_name == "Zoë"
    assert good[2].attributes["opmerking"] == "Koffie; thee"
    assert good[2].last_name == "Brontë-Smit"
    rejects = [r for r in rows if isinstance(r, RowReject)]
    assert [r.line for r in rejects] == [5]
    assert rejects[0].raw["E-mailadres"] == "ongeldig@"
    assert len(rows) == 4  # the trailing ";;;;" record holds no data and is no row


def test_bom_crlf_and_quoted_newlines_keep_physical_line_numbers() -> None:
    with open_csv(DATA / "bom_crlf_quoted.csv") as source:
        assert source.format.encoding == "utf-8-sig"
        assert source.plan.headers[0] == "email"  # no BOM glued to the first header
        rows = list(source.rows())
    assert [(r.line, r.email) for r in rows] == [  # type: ignore[union-attr]
        (2, "ada@example.org"),
        (4, "grace@example.org"),
        (6, "linus@example.org"),
    ]
    assert rows[0].attributes["address"] == "12 St James's Square\r\nLondon"  # type: ignore[union-attr]


def test_utf16_tab_separated() -> None:
    good, bad = read(DATA / "utf16_excel.txt")
    assert [(r.email, r.last_name, r.attributes["city"]) for r in good] == [
        ("sophie@example.be", "Dubois", "Liège"),
        ("lars@example.dk", "Østergaard", "Århus"),
    ]
    assert bad == []


def test_every_kind_of_bad_row_is_rejected_with_line_and_reason() -> None:
    good, bad = read(DATA / "bad_rows.csv")
    assert [r.email for r in good] == ["good@example.org"]
    reasons = {r.line: r.reason for r in bad}
    assert reasons[3].startswith("invalid email address")
    assert reasons[4] == "missing email address"
    assert reasons[5].startswith("invalid email address")  # alice@...)<bob@...>
    assert reasons[6].startswith("invalid email address")  # display name
    assert "control character" in reasons[7]  # quoted CR/LF inside the address
    assert reasons[9] == "bad consent time 'yesterday'"
    assert reasons[10].startswith("consent time in the future")
    assert reasons[11] == "bad consent IP address '999.1.1.1'"
    assert reasons[12] == "6 fields but the header has 5"
    assert reasons[13] == "NUL byte in row"
    assert reasons[14].startswith("invalid email address")
    assert reasons[15].startswith("invalid email address")  # reserved .test domain
    assert len(bad) == 12
    assert bad[0].raw == {"email": "not-an-address", "first_name": "No", "last_name": "At",
                          "optin_time": "", "optin_ip": ""}


def test_oversized_field_rejects_the_row_only(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    path.write_text(
        "email,notes\n" f"a@example.org,{'x' * 70_000}\n" "b@example.org,fine\n", encoding="utf-8"
    )
    good, bad = read(path)
    assert [r.email for r in good] == ["b@example.org"]
    assert [(r.line, r.reason) for r in bad] == [(2, "field longer than 64 KiB")]


def test_unclosed_quote_beyond_the_field_limit_is_one_reject(tmp_path: Path) -> None:
    path = tmp_path / "broken.csv"
    body = "email,notes\na@example.org,\"never closed\n" + "c@example.org,x\n" * 90_000
    path.write_text(body, encoding="utf-8")
    good, bad = read(path)
    assert bad and bad[0].line == 2
    assert all(r.line > 2 for r in good)


# ------------------------------------------------------------------- bad files


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="nope.csv: no such file") as info:
        open_csv(tmp_path / "nope.csv")
    assert info.value.exit_code == ExitCode.USAGE


def test_binary_file(tmp_path: Path) -> None:
    path = tmp_path / "photo.csv"
    path.write_bytes(bytes(range(256)) * 64)
    with pytest.raises(InputFileError, match="photo.csv: binary file"):
        open_csv(path)


def test_spreadsheet_file(tmp_path: Path) -> None:
    path = tmp_path / "contacts.xlsx"
    path.write_bytes(b"PK\x03\x04" + b"\x14\x00\x06\x00" * 100)
    with pytest.raises(InputFileError, match="spreadsheet") as info:
        open_csv(path)
    assert info.value.hint and "CSV" in info.value.hint


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_text("\n\n", encoding="utf-8")
    with pytest.raises(InputFileError, match="empty"):
        open_csv(path)


def test_no_email_column_lists_headers_and_suggests_map() -> None:
    with pytest.raises(InputFileError) as info:
        open_csv(DATA / "no_email.csv")
    assert "no email column" in info.value.message
    assert "Naam, Telefoon" in info.value.message
    assert info.value.hint and "--map" in info.value.hint


def test_cp1252_line_after_the_sample_is_read_as_cp1252_and_named(tmp_path: Path) -> None:
    path = tmp_path / "mixed.csv"
    lines = ["email,city"] + [f"user{i}@example.org,Amsterdam" for i in range(5000)]
    lines.insert(4001, "late@example.org,M\xfcnchen")  # written below as cp1252
    text = "\n".join(lines) + "\n"
    path.write_bytes(text.encode("cp1252"))
    assert path.stat().st_size > 64 * 1024
    with open_csv(path) as source:
        assert source.format.encoding == "utf-8"
        rows = list(source.rows())
        count, offsets = source.reencoded
    late = [r for r in rows if r.email == "late@example.org"]  # type: ignore[union-attr]
    assert late[0].attributes == {"city": "München"}  # type: ignore[union-attr]
    assert count == 1 and line_numbers(path, offsets) == [4002]
    # Told the encoding, the whole file is decoded that way, strictly.
    with open_csv(path, encoding="utf-8") as source:
        with pytest.raises(InputFileError, match=r"mixed.csv: line 4002: cannot be decoded as utf-8") as info:
            list(source.rows())
    assert info.value.hint and "--encoding" in info.value.hint
    good, bad = read(path, encoding="cp1252")
    assert len(good) == 5001 and not bad


def test_encoding_and_delimiter_overrides(tmp_path: Path) -> None:
    path = tmp_path / "pipes.csv"
    path.write_bytes("email|plaats\nj@example.nl|Jülich\n".encode("latin-1"))
    good, _ = read(path, encoding="latin-1", delimiter="|")
    assert good[0].attributes == {"plaats": "Jülich"}
    with pytest.raises(UsageError, match="--encoding"):
        open_csv(path, encoding="klingon")
    with pytest.raises(UsageError, match="--delimiter"):
        open_csv(path, delimiter="ab")


def test_excel_sep_line(tmp_path: Path) -> None:
    path = tmp_path / "sep.csv"
    path.write_text("sep=;\nemail;plaats\na@example.nl;Delft, NL\n", encoding="utf-8")
    good, _ = read(path)
    assert [(r.line, r.attributes) for r in good] == [(3, {"plaats": "Delft, NL"})]


@pytest.mark.parametrize("complete", [True, False])
def test_a_first_header_named_sep_is_a_column_not_excels_sep_line(tmp_path: Path, complete: bool) -> None:
    # "sep=;" followed by more on its line was taken for Excel's sep line:
    # the header line was skipped and the first contact read as the header.
    path = tmp_path / "sep.csv"
    rows = "".join(f"x{i},u{i}@example.org\n" for i in range(1 if complete else 5000))
    path.write_text("sep=;,email\n" + rows, encoding="utf-8")
    good, bad = read(path)
    assert (good[0].line, good[0].email, good[0].attributes) == (2, "u0@example.org", {"sep": "x0"})
    assert not bad


def test_semicolons_detected_when_the_first_record_is_longer_than_the_sample(tmp_path: Path) -> None:
    # Only the header fitted in the 64 KiB sample, which counted as "no
    # record agrees" for ";" as much as for "|" (inside the last header
    # name), and "|" split the header into more fields: no email column.
    path = tmp_path / "wide.csv"
    path.write_text("E-mailadres;Naam;Opmerking;Status|a|b|c|d|e\n"
                    f"ann@example.nl;Ann;{'x' * 70_000};kort\nbob@example.nl;Bob;kort;kort\n", encoding="utf-8")
    with open_csv(path) as source:
        assert source.format.delimiter == ";"
        rows = list(source.rows())
    assert [r.email for r in rows if isinstance(r, ImportRow)] == ["bob@example.nl"]


def test_a_one_column_file_is_not_split_at_a_comma_inside_a_cell(tmp_path: Path) -> None:
    # With one column no delimiter splits the header, and "," was taken:
    # "a@example.org, b@example.org" came out as two cells in the rejects file.
    path = tmp_path / "one.csv"
    path.write_text("email\nann@example.org\na@example.org, b@example.org\n", encoding="utf-8")
    good, bad = read(path)
    assert [r.email for r in good] == ["ann@example.org"]
    assert [(r.line, r.raw) for r in bad] == [(3, {"email": "a@example.org, b@example.org"})]


def test_headerless_list_of_addresses(tmp_path: Path) -> None:
    path = tmp_path / "plain.txt"
    path.write_text("a@example.org\nB@Example.org\n\nnot an address\n", encoding="utf-8")
    good, bad = read(path)
    assert [(r.line, r.key) for r in good] == [(1, "a@example.org"), (2, "b@example.org")]
    assert [r.line for r in bad] == [4]


# ---------------------------------------------------------------- columns


@pytest.mark.parametrize(
    ("header", "field"),
    [
        ("email", "email"), ("E-mail", "email"), ("Email Address", "email"), ("MAIL", "email"),
        ("E-mailadres", "email"), ("emailadres", "email"), ("e_mail", "email"), ("E-mail 1 - Value", "email"),
        ("first_name", "first_name"), ("First Name", "first_name"), ("Voornaam", "first_name"),
        ("last_name", "last_name"), ("Last Name", "last_name"), ("ACHTERNAAM", "last_name"),
    ],
)
def test_header_aliases(tmp_path: Path, header: str, field: str) -> None:
    path = tmp_path / "h.csv"
    other = "Email" if field != "email" else "x"
    path.write_text(f"{other},{header}\nq@example.org,a@example.org\n", encoding="utf-8")
    with open_csv(path) as source:
        assert getattr(source.plan, field) == 1


def test_a_dutch_name_prefix_joins_the_last_name(tmp_path: Path) -> None:
    path = tmp_path / "leden.csv"
    path.write_text("E-mailadres;Voornaam;Tussenvoegsel;Achternaam;Plaats\n"
                    "jan@example.nl;Jan;van der;Berg;Delft\n"
                    "els@example.nl;Els; ;Smit;Gouda\n"
                    "bad-address;Piet;de;Vries;Ede\n", encoding="utf-8")
    with open_csv(path) as source:
        jan, els, bad = source.rows()
    assert (jan.first_name, jan.last_name, jan.attributes) == ("Jan", "van der Berg", {"plaats": "Delft"})
    assert els.last_name == "Smit"
    assert isinstance(bad, RowReject) and bad.raw["Achternaam"] == "Vries"  # the cells as in the file
    # Without a last name column there is nothing to join: it is an attribute.
    path.write_text("email,tussenvoegsel\nann@example.org,de\n", encoding="utf-8")
    with open_csv(path) as source:
        (ann,) = source.rows()
    assert ann.attributes == {"tussenvoegsel": "de"}


def test_name_column_is_split_into_first_and_last_name_and_is_no_attribute(tmp_path: Path) -> None:
    # The whole name used to be kept as a "name" attribute as well.
    path = tmp_path / "n.csv"
    path.write_text("Naam,E-mail,Plaats\nJan van der Berg,jan@example.nl,Delft\nCher,cher@example.org,\n",
                    encoding="utf-8")
    good, _ = read(path)
    assert (good[0].first_name, good[0].last_name, good[0].attributes) == ("Jan", "van der Berg", {"plaats": "Delft"})
    assert (good[1].first_name, good[1].last_name, good[1].attributes) == ("Cher", None, {})
    # Beside first and last name columns, a name column feeds no field: it is an attribute.
    path.write_text("email,first_name,last_name,name\nann@example.org,Ann,Smit,Ann Smit\n", encoding="utf-8")
    (ann,), _ = read(path)
    assert (ann.first_name, ann.last_name, ann.attributes) == ("Ann", "Smit", {"name": "Ann Smit"})


def test_map_overrides_and_attribute_names(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text(
        "Contact,Werk e-mail,Roepnaam,2FA code,Status,BSN,Status\n"
        "x,w@example.org,Wim,123,vip,999,dup\n",
        encoding="utf-8",
    )
    mapping = parse_map_options(["werk e-mail=email", "Roepnaam=first-name", "BSN=ignore", "Contact=Source System"])
    good, _ = read(path, mapping=mapping)
    row = good[0]
    assert row.email == "w@example.org" and row.first_name == "Wim"
    assert row.attributes == {"source_system": "x", "col_2fa_code": "123", "status_2": "vip", "status_3": "dup"}
    with pytest.raises(InputFileError, match="--map names a column"):
        open_csv(path, mapping=parse_map_options(["Nope=email"]))
    with pytest.raises(UsageError, match="expected"):
        parse_map_options(["no equals sign"])


def test_header_helpers() -> None:
    assert header_key(" E-Mail Adres ") == "emailadres"
    assert attribute_name("Member Rating") == "member_rating"
    assert attribute_name("Woonplaats (huidige)") == "woonplaats_huidige"
    assert attribute_name("Prénom") == "prenom"
    assert attribute_name("!!!") == "column"


# ------------------------------------------------------------------ values


@pytest.mark.parametrize(
    ("text", "iso"),
    [
        ("2023-04-01 10:12:33", "2023-04-01T10:12:33Z"),  # Mailchimp
        ("2023-04-01T10:12:33Z", "2023-04-01T10:12:33Z"),
        ("2023-04-01T12:12:33+02:00", "2023-04-01T10:12:33Z"),
        ("2023-04-01", "2023-04-01T00:00:00Z"),
        ("01-04-2023 10:12", "2023-04-01T10:12:00Z"),  # Dutch Excel, day first
        ("1-4-2023", "2023-04-01T00:00:00Z"),
        ("01/04/2023 10:12:59", "2023-04-01T10:12:59Z"),
        ("31.12.2022 23.59", "2022-12-31T23:59:00Z"),
    ],
)
def test_consent_times(text: str, iso: str) -> None:
    assert parse_consent_time(text) == iso


@pytest.mark.parametrize("text", ["", "yesterday", "04/13/2023", "2023-13-01", "1680343953"])
def test_unreadable_consent_times(text: str) -> None:
    with pytest.raises(ValueError):
        parse_consent_time(text)


def test_ip_truncation() -> None:
    assert truncate_ip("192.0.2.57") == "192.0.2.0/24"
    assert truncate_ip(" 2001:db8:1:2::5 ") == "2001:db8:1::/48"
    with pytest.raises(ValueError):
        truncate_ip("192.0.2")


# ------------------------------------------------------- dialect properties

SAFE = "abcXYZ019 éëïöüßàÉ"  # cp1252 letters all >= 0xC0: never valid UTF-8 by accident
TRICKY = ',;\t|"\n'
cells = st.text(alphabet=SAFE + TRICKY, max_size=12)
headers = st.lists(
    st.from_regex(r"[A-Za-z][A-Za-z0-9 _]{0,10}", fullmatch=True), min_size=2, max_size=6, unique=True
)
ENCODINGS = ["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "cp1252"]


@st.composite
def tables(draw: st.DrawFn) -> tuple[list[str], list[list[str]]]:
    header = draw(headers)
    rows = draw(st.lists(st.lists(cells, min_size=len(header), max_size=len(header)), max_size=15))
    return header, rows


def _write(table: tuple[list[str], list[list[str]]], delimiter: str, terminator: str) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=delimiter, lineterminator=terminator)
    writer.writerow(table[0])
    writer.writerows(table[1])
    return buffer.getvalue()


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(tables(), st.sampled_from([",", ";", "\t", "|"]), st.sampled_from(ENCODINGS), st.sampled_from(["\r\n", "\n"]))
def test_detection_returns_the_writers_dialect(
    table: tuple[list[str], list[list[str]]], delimiter: str, encoding: str, terminator: str
) -> None:
    data = _write(table, delimiter, terminator).encode(encoding)
    fmt = detect_format(data, "t.csv", complete=True)
    assert fmt.delimiter == delimiter
    back = list(csv.reader(io.StringIO(data.decode(fmt.encoding).lstrip("\ufeff"), newline=""),
                           delimiter=fmt.delimiter))
    assert back == [table[0], *table[1]]


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.tuples(st.from_regex(r"[a-z]{1,8}", fullmatch=True), cells), min_size=1, max_size=12),
    st.sampled_from([",", ";", "\t", "|"]),
    st.sampled_from(ENCODINGS),
)
def test_rows_carry_physical_start_lines(
    tmp_path_factory: pytest.TempPathFactory, records: list[tuple[str, str]], delimiter: str, encoding: str
) -> None:
    rows = [[f"{local}{i}@example.org", note] for i, (local, note) in enumerate(records)]
    text = _write((["email", "notes"], rows), delimiter, "\r\n")
    path = tmp_path_factory.mktemp("lines") / "t.csv"
    path.write_bytes(text.encode(encoding))
    # Expected start line of each record: one past the newlines before it.
    expected, line = [], 2
    for row in rows:
        expected.append(line)
        one = io.StringIO()
        csv.writer(one, delimiter=delimiter, lineterminator="\r\n").writerow(row)
        line += one.getvalue().count("\n")
    with open_csv(path) as source:
        got = list(source.rows())
    assert [r.line for r in got] == expected
    assert [r.attributes.get("notes", "") for r in got] == [n.strip() for _, n in rows]  # type: ignore[union-attr]


# Few dates, so that they repeat and the reader remembers them (its fast
# path), with times valid and not, ASCII digits and not.
timestamps = st.builds(
    lambda date, sep, h, mi, s: f"{date}{sep}{h}:{mi}:{s}",
    st.sampled_from(["2023-04-01", "2024-02-29", "2023-02-29", "2023-13-01", "2023-04-0١", "2023/04/01"]),
    st.sampled_from([" ", "T", "_"]), st.sampled_from(["00", "09", "23", "24", "7 ", "٣٣"]),
    st.sampled_from(["00", "59", "60", "5a"]), st.sampled_from(["00", "30", "59", "60", "５5"]))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(timestamps | st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=20),
                      min_size=1, max_size=30))
def test_consent_time_fast_path_agrees_with_the_parser(tmp_path: Path, values: list[str]) -> None:
    # The reader checks the common shape inline; it must give what
    # parse_consent_time gives (or reject what it refuses), also once the
    # dates seen are remembered (the second read).
    path = tmp_path / "times.csv"
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Email Address", "OPTIN_TIME", "CITY"])
        writer.writerows([f"p{i}@example.org", value, "Delft"] for i, value in enumerate(values))
    for _ in range(2):
        with open_csv(path, now_limit="2030-01-01T00:00:00Z") as source:
            got = {row[0]: row for row in source.staged_rows()}
        for i, value in enumerate(values):
            row = got[i + 2]
            try:
                expected = parse_consent_time(value) if value.strip() else None
            except ValueError:
                expected = "reject"
            if expected not in (None, "reject") and expected > "2030-01-01T00:00:00Z":
                expected = "reject"
            if expected == "reject":
                assert isinstance(row, RowReject), (value, row)
            else:
                assert not isinstance(row, RowReject), (value, row)
                assert row[6] == expected and row[5] == '{"city":"Delft"}', (value, row)


# Dotted quads of numbers valid and not (leading zeros, out of range, other
# digits, signs, spaces), and anything else.
quads = st.builds(lambda *parts: ".".join(parts), *[st.sampled_from(
    ["0", "1", "7", "01", "00", "99", "255", "256", "1000", "-1", "+1", " 2", "٣", "１", "", "a"])] * 4)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(quads | st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=20),
                      min_size=1, max_size=30))
def test_consent_ip_fast_path_agrees_with_truncate_ip(tmp_path: Path, values: list[str]) -> None:
    # The reader reads a dotted IPv4 address inline; it must give what
    # truncate_ip gives, and reject what it refuses.
    path = tmp_path / "ips.csv"
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Email Address", "OPTIN_IP", "CITY"])
        writer.writerows([f"p{i}@example.org", value, "Delft"] for i, value in enumerate(values))
    with open_csv(path) as source:
        got = {row[0]: row for row in source.staged_rows()}
    for i, value in enumerate(values):
        row = got[i + 2]
        try:
            expected = truncate_ip(value) if value.strip() else None
        except ValueError:
            assert isinstance(row, RowReject), (value, row)
        else:
            assert not isinstance(row, RowReject), (value, row)
            assert row[7] == expected and row[5] == '{"city":"Delft"}', (value, row)


def test_a_rejects_file_that_cannot_be_put_in_place_leaves_no_temporary_file(tmp_path: Path) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    target = folder / "rejected.csv"
    rejects = RejectsFile(target, ("email",), ",")
    rejects.write(RowReject(2, "invalid email address", {"email": "x"}))
    target.mkdir()  # made by someone else while the import ran
    with pytest.raises(PartialError) as caught:
        rejects.commit()
    assert caught.value.exit_code == ExitCode.PARTIAL
    assert "the rejected rows could not be written" in caught.value.message
    assert [p.name for p in folder.iterdir()] == ["rejected.csv"]
