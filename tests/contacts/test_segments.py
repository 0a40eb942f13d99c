"""Segments: the expression language of `--where`, `--segment` and `[segments]`.

The property test runs random expressions over random contacts in a real
database, a SQLite file and a PostgreSQL server in turn, and compares what
the SQL selects with a Python evaluation of the same expression, written
here from the README's description of the language; injection attempts
must fail with a parse error that names the column, and leave the database
as it was.
"""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailcli.errors import ExitCode, UsageError
from mailcli.segments import All, Comparison, Literal, Node, Not, SegmentError, parse_segment
from mailcli.store.contacts import iter_contacts
from tests.conftest import Cli, Engine, set_smtp
from tests.sendhelpers import add_contacts, deliveries
from tests.smtpserver import SmtpServer

# -- the language in Python, as the README describes it ----------------------------

_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?")
_ISO = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})")
_DMY = re.compile(r"([0-9]{2})-([0-9]{2})-([0-9]{4})")
_COMPARE = {"=": lambda a, b: a == b, "!=": lambda a, b: a == b, "<": lambda a, b: a < b,
            "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b}


def _fold(text: str) -> str:
    """Case folded as the language compares text: A-Z only."""
    return text.translate(_ASCII_LOWER)


def _date(value: str) -> str | None:
    if m := _ISO.match(value):
        return f"{m[1]}-{m[2]}-{m[3]}"
    if m := _DMY.match(value):
        return f"{m[3]}-{m[2]}-{m[1]}"
    return None


def _field(contact: dict[str, Any], name: str) -> str | None:
    if name in ("email", "first_name", "last_name"):
        return str(contact[name])
    value = contact["attributes"].get(name)
    return None if value is None else str(value)


def _compares(value: str | None, op: str, literal: Literal) -> bool:
    if value is None:
        return False
    test = _COMPARE[op]
    if literal.kind == "number":
        return bool(_NUMBER.fullmatch(value)) and test(float(value), literal.value)
    if literal.kind == "date":
        day = _date(value)
        return day is not None and test(day, literal.value)
    return bool(test(_fold(value), _fold(str(literal.value))))


def holds(node: Node, contact: dict[str, Any]) -> bool:
    if isinstance(node, Not):
        return not holds(node.operand, contact)
    if isinstance(node, All):
        return all(holds(n, contact) for n in node.operands)
    if not isinstance(node, Comparison):
        return any(holds(n, contact) for n in node.operands)
    value = _field(contact, node.field)
    if node.op in ("empty", "notempty"):
        return (value is None or value == "") == (node.op == "empty")
    if node.op == "contains":
        return value is not None and _fold(node.literals[0].written) in _fold(value)
    if node.op in ("in", "notin"):
        return any(_compares(value, "=", lit) for lit in node.literals) == (node.op == "in")
    result = _compares(value, node.op, node.literals[0])
    return not result if node.op == "!=" else result


# -- random contacts and expressions ----------------------------------------------

VALUES = ["Utrecht", "utrecht", "UTRECHT", "Zoë", "ZOË", "", "3", "3.0", "-1", "10", "2.5", "007", "abc", "1e3",
          " 3", "3 ", "0x10", "--3", "3-4", ".5", "5.", "-0", "2025-01-05", "05-01-2025", "2025-01-05 10:00:00",
          "2025-13-45", "5-1-2025", "O'Brien", "a%b_c", "Amsterdam", "Ab_", "AB[",
          "1" * 400, "-" + "9" * 320, "0." + "0" * 400 + "1", "0." + "0" * 323 + "5"]  # beyond a double: inf, 0, 5e-324
FIELDS = ["city", "rating", "joined", "first_name", "email", "nickname"]

contacts_strategy = st.lists(
    st.fixed_dictionaries({
        "first_name": st.sampled_from(VALUES),
        "attributes": st.dictionaries(st.sampled_from(["city", "rating", "joined"]), st.sampled_from(VALUES)),
    }), min_size=1, max_size=12)


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


literals = st.one_of(
    st.sampled_from(VALUES).map(_quote),
    st.sampled_from(["3", "-1", "2.5", "0", "10", "3.0", "007"]),
    st.sampled_from(["2025-01-05", "2024-12-31", "2026-01-01"]),
)


@st.composite
def comparisons(draw: Any) -> str:
    field = draw(st.sampled_from(FIELDS))
    kind = draw(st.sampled_from(["op", "op", "op", "in", "not in", "contains", "is empty", "is not empty"]))
    if kind == "op":
        return f"{field} {draw(st.sampled_from(['=', '!=', '<', '<=', '>', '>=']))} {draw(literals)}"
    if kind in ("in", "not in"):
        return f"{field} {kind} ({', '.join(draw(st.lists(literals, min_size=1, max_size=3)))})"
    if kind == "contains":
        return f"{field} contains {draw(literals)}"
    return f"{field} {kind}"


expressions = st.recursive(
    comparisons(),
    lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from([" and ", " or ", " AND ", " Or "]), inner).map("".join),
        inner.map(lambda e: f"not ({e})"),
        inner.map(lambda e: f"({e})"),
    ),
    max_leaves=6,
)


@pytest.fixture
def store(tmp_path: Path, engine: Engine) -> Any:
    """A database on each engine; on PostgreSQL one whose text sorts the Dutch way (not by bytes),
    which the segments' text comparisons must not follow."""
    if engine.pg is not None:
        engine.pg.name = engine.pg.server.create_database(icu_locale="nl-NL")
    opened = engine.open_store(tmp_path / "segments.db")
    yield opened
    opened.close()


@settings(max_examples=400, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(people=contacts_strategy, text=expressions)
def test_sql_selects_exactly_the_contacts_python_evaluation_selects(store: Any, people: list[dict[str, Any]],
                                                                   text: str) -> None:
    _check_against_python(store, people, text)


def _check_against_python(store: Any, people: list[dict[str, Any]], text: str) -> None:
    conn = store.conn
    with store.transaction():
        conn.execute("DELETE FROM contacts")
        for i, person in enumerate(people):
            person["email"] = f"p{i}@example.org"
            person["last_name"] = ""
            conn.execute(
                "INSERT INTO contacts (uid, email, email_key, first_name, attributes, created_at, updated_at,"
                " last_activity_at) VALUES (?, ?, ?, ?, ?, '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z',"
                " '2026-01-01T00:00:00Z')",
                (f"u{i}", person["email"], person["email"], person["first_name"], json.dumps(person["attributes"])))
    segment = parse_segment(text)
    chosen = sorted(row.email for row in iter_contacts(store, segment=segment))
    expected = sorted(p["email"] for p in people if holds(segment.tree, p))
    assert chosen == expected, (text, people)


# Pairs that a language's collation orders otherwise than their characters'
# code points (accents, case, punctuation), and numbers beyond a double.
ORDERINGS = ["city < 'zoz'", "city > 'Zoë'", "city >= 'AB['", "city < 'ab_'", "city <= 'a-b'",
             "rating > 99999999", "rating < -1", "rating = 0", "rating > 0", "joined >= 2025-01-05"]
ORDERED = [{"city": c, "rating": r, "joined": j} for c, r, j in [
    ("ZOË", "1" * 400, "2025-01-05"), ("zoë", "-" + "9" * 320, "05-01-2025x"), ("Zoz", "0." + "0" * 400 + "1", ""),
    ("ab_", "0." + "0" * 323 + "5", "2025-1-05"), ("AB[", "-0", "2025-01-05 10:00"), ("a-b", "1.0", "31-12-2024"),
    ("ab", "1e400", "abc")]]


def test_text_compares_by_code_point_and_numbers_as_doubles_whatever_the_database(store: Any) -> None:
    for text in ORDERINGS:
        people = [{"first_name": "", "attributes": attributes} for attributes in ORDERED]
        _check_against_python(store, people, text)


def test_the_examples_of_the_readme_select_what_they_say(store: Any) -> None:
    conn = store.conn
    rows = [("ann@example.org", {"city": "Utrecht", "member_rating": "4", "signup_date": "2025-03-01"}),
            ("bob@example.org", {"city": "utrecht", "member_rating": "2", "signup_date": "15-06-2025"}),
            ("cy@example.org", {"city": "Amsterdam", "member_rating": "5", "signup_date": "2024-12-31 10:00:00"}),
            ("dee@example.org", {"member_rating": "3"}),
            ("eve@example.org", {"city": "Utrecht", "member_rating": "abc", "signup_date": "2026-01-05"})]
    with store.transaction():
        for i, (address, attributes) in enumerate(rows):
            conn.execute("INSERT INTO contacts (uid, email, email_key, attributes, created_at, updated_at,"
                         " last_activity_at) VALUES (?, ?, ?, ?, '', '', '')",
                         (f"u{i}", address, address, json.dumps(attributes)))

    def names(text: str) -> list[str]:
        return [row.email.split("@")[0] for row in iter_contacts(store, segment=parse_segment(text))]

    assert names("city = 'Utrecht' and member_rating >= 3") == ["ann"]
    assert names("member_rating >= 3") == ["ann", "cy", "dee"]  # "abc" is not a number: no match
    assert names("member_rating != 3") == ["ann", "bob", "cy", "eve"]  # the opposite of =, missing included
    assert names("signup_date >= 2025-01-01") == ["ann", "bob", "eve"]  # 15-06-2025 is a date too
    assert names("city is empty") == ["dee"]
    assert names("not city in ('utrecht', 'AMSTERDAM')") == ["dee"]
    assert names("email contains 'E@EXAMPLE'") == ["dee", "eve"]
    assert names("(city = 'Amsterdam' or member_rating < 3) and signup_date is not empty") == ["bob", "cy"]


def test_an_address_compared_with_email_is_normalised_as_every_address_is(store: Any) -> None:
    from mailcli.addresses import normalise_pair

    conn = store.conn
    with store.transaction():
        for i, typed in enumerate(["jan@müller.de", "Anna@Example.org"]):
            address, key = normalise_pair(typed)  # as an import stores it: jan@xn--mller-kva.de
            conn.execute("INSERT INTO contacts (uid, email, email_key, attributes, created_at, updated_at,"
                         " last_activity_at) VALUES (?, ?, ?, '{}', '', '', '')", (f"u{i}", address, key))

    def names(text: str) -> list[str]:
        return [row.email.split("@")[0] for row in iter_contacts(store, segment=parse_segment(text))]

    assert names("email = 'jan@müller.de'") == ["jan"]
    assert names("email = 'JAN@MÜLLER.DE'") == ["jan"]
    assert names("email in ('nobody@example.org', ' jan@müller.de ')") == ["jan"]
    assert names("email not in ('jan@müller.de')") == ["Anna"]
    assert names("email != 'jan@xn--mller-kva.de'") == ["Anna"]
    assert names("email = 'anna@example.org'") == ["Anna"]
    assert names("email = 'jan@müller'") == []  # no address: compared as the text it is
    assert names("email contains 'müller'") == []  # contains compares text as stored


# -- errors and injection ----------------------------------------------------------


@pytest.mark.parametrize(("text", "column", "words"), [
    ("city = Utrecht", 8, "expected 'text', a number or a date after =, found 'Utrecht'"),
    ("city = 'Utrecht", 8, "never closed"),
    ("(city = 'x'", 12, "expected ) to close the ( at column 1"),
    ("city = 'x' and", 15, "expected a field name, found the end"),
    ("city == 'x'", 7, "expected 'text', a number or a date after =, found '='"),
    ("signup >= 2026-02-30", 11, "2026-02-30 is not a date"),
    ("last_changed >= 05-01-2023", 17, "write the date 05-01-2023 as 2023-01-05 (year-month-day, unquoted)"),
    ("signup in ('x', 5/1/2023)", 17, "write the date 5/1/2023 as 2023-01-05"),
    ("signup < 2023-1-5", 10, "write the date 2023-1-5 as 2023-01-05"),
    ("signup < 31-02-2023", 10, "31-02-2023 is not a date; write dates as 2026-01-31"),
    ("city is full", 9, "expected empty after is"),
    ("city in 'a'", 9, "expected ( after in"),
    ("member_rating ≥ 3", 15, "unexpected character '≥'"),
    ("", 1, "the expression is empty"),
])
def test_a_mistake_is_named_with_its_column(text: str, column: int, words: str) -> None:
    with pytest.raises(SegmentError) as caught:
        parse_segment(text)
    assert caught.value.column == column
    assert words in str(caught.value)
    assert str(caught.value).startswith(f"--where, column {column}: ")


INJECTIONS = [
    ("city = 'x'; DROP TABLE contacts; --", 11),
    ("city = 'x' or 1=1", 15),
    ("city = '' OR ''=''", 14),
    ("city = 'x' -- comment", 12),
    ("city = 'x' /* */", 12),
    ("city) OR (1", 5),
    ("json_extract(attributes, '$.x') = 1", 13),
    ("city = 'x' union select email from contacts", 12),
    ("city = (select email from contacts)", 8),
    ("c.status = 'active'", 2),
    ("city = 'x'\x00", 11),
    ("city = `x`", 8),
]


@pytest.mark.parametrize(("text", "column"), INJECTIONS)
def test_injection_attempts_are_parse_errors(text: str, column: int) -> None:
    with pytest.raises(SegmentError) as caught:
        parse_segment(text)
    assert caught.value.column == column
    assert isinstance(caught.value, UsageError) and caught.value.exit_code == ExitCode.USAGE


def test_sql_inside_quotes_is_only_text(store: Any) -> None:
    conn = store.conn
    with store.transaction():
        conn.execute("INSERT INTO contacts (uid, email, email_key, attributes, created_at, updated_at,"
                     " last_activity_at) VALUES ('u', 'a@example.org', 'a@example.org', ?, '', '', '')",
                     (json.dumps({"city": "x'; DROP TABLE contacts; --"}),))
    text = "city = 'x''; DROP TABLE contacts; --' or city contains '%' or city = '\"'"
    assert [row.email for row in iter_contacts(store, segment=parse_segment(text))] == ["a@example.org"]
    assert conn.execute("SELECT count(*) FROM contacts").fetchone()[0] == 1


def test_a_long_chain_and_deep_nesting_stay_within_sqlite(store: Any) -> None:
    chain = " or ".join(f"city = 'c{i}'" for i in range(400))
    assert list(iter_contacts(store, segment=parse_segment(chain))) == []
    with pytest.raises(SegmentError, match="nested more than 50 deep"):
        parse_segment("(" * 60 + "city = 'x'" + ")" * 60)


# -- through the command line ------------------------------------------------------

CITIZENS = [
    {"email": "ann@example.org", "first_name": "Ann", "city": "Utrecht", "member_rating": "4"},
    {"email": "bob@example.org", "first_name": "Bob", "city": "utrecht", "member_rating": "2"},
    {"email": "cy@example.org", "first_name": "Cy", "city": "Amsterdam", "member_rating": "5"},
    {"email": "dee@example.org", "first_name": "Dee", "city": "Utrecht", "member_rating": "3"},
]


def _add_segments(project: Path, text: str) -> None:
    path = project / "mailcli.toml"
    path.write_text(path.read_text(encoding="utf-8") + "\n[segments]\n" + text, encoding="utf-8")


def test_contacts_and_lists_use_the_same_language(project: Path, cli: Cli, engine: Engine) -> None:
    engine.use(project)
    add_contacts(engine.location(project), "news", CITIZENS)
    _add_segments(project, "utrecht = \"city = 'Utrecht' and member_rating >= 3\"\n")
    found = cli("contacts", "--where", "city = 'Utrecht' and member_rating >= 3", "--json")
    assert found.exit_code == 0, found.output
    assert [c["email"] for c in json.loads(found.stdout)] == ["ann@example.org", "dee@example.org"]
    named = cli("contacts", "--segment", "utrecht", "--list", "news", "--json")
    assert [c["email"] for c in json.loads(named.stdout)] == ["ann@example.org", "dee@example.org"]
    counts = cli("lists", "--segment", "utrecht", "--json")
    assert counts.exit_code == 0, counts.output
    assert json.loads(counts.stdout)[0]["subscribed"] == 2
    assert json.loads(cli("lists", "--where", "member_rating < 3", "--json").stdout)[0]["subscribed"] == 1
    assert json.loads(cli("lists", "--json").stdout)[0]["subscribed"] == 4
    none = cli("contacts", "--where", "city = 'Rotterdam'")
    assert none.exit_code == 0 and "No contacts match the segment city = 'Rotterdam'" in none.stderr


def test_bad_expressions_on_the_command_line_and_in_the_config(project: Path, cli: Cli) -> None:
    add_contacts(project / "mailcli.db", "news", CITIZENS)
    before = (project / "mailcli.db").read_bytes()
    for text, column in INJECTIONS[:3]:
        result = cli("contacts", "--where", text)
        assert result.exit_code == ExitCode.USAGE, result.output
        assert f"Error: --where, column {column}: " in result.stderr and "Traceback" not in result.stderr
    typo = cli("contacts", "--where", "member_ratng >= 3")
    assert typo.exit_code == ExitCode.USAGE
    assert "column 1: no contact has a field 'member_ratng' (did you mean member_rating?)" in typo.stderr
    unknown = cli("send", "spring", "--template", "newsletter", "--list", "news", "--segment", "utrech", "--yes")
    assert unknown.exit_code == ExitCode.USAGE and "No segment named 'utrech'" in unknown.stderr
    assert cli("report", "--json").stdout.strip() == "[]"
    _add_segments(project, "utrecht = \"city = Utrecht\"\n")
    broken = cli("lists")
    assert broken.exit_code == ExitCode.CONFIG, broken.output
    assert "mailcli.toml: segments.utrecht, column 8: expected 'text', a number or a date" in broken.stderr
    conn = sqlite3.connect(project / "mailcli.db")
    assert conn.execute("SELECT count(*) FROM contacts").fetchone()[0] == 4
    conn.close()
    assert before  # the database file was there all along


def test_a_named_segment_with_a_field_no_contact_has_is_a_mistake_of_the_config(project: Path, cli: Cli) -> None:
    add_contacts(project / "mailcli.db", "news", CITIZENS)
    _add_segments(project, "s = \"member_ratng >= 3\"\n")
    for args in (["contacts", "--segment", "s"], ["lists", "--segment", "s"],
                 ["send", "spring", "--template", "newsletter", "--list", "news", "--segment", "s", "--yes"]):
        result = cli(*args)
        assert result.exit_code == ExitCode.CONFIG, result.output
        assert result.stderr.splitlines()[0] == ("Error: mailcli.toml: segments.s, column 1: no contact has a field"
                                                 " 'member_ratng' (did you mean member_rating?)")
    typed = cli("contacts", "--where", "member_ratng >= 3")
    assert typed.exit_code == ExitCode.USAGE and typed.stderr.startswith("Error: --where, column 1: ")
    assert cli("report", "--json").stdout.strip() == "[]"


def test_a_campaign_goes_to_its_segment_and_resumes_with_the_frozen_audience(project: Path, cli: Cli,
                                                                             engine: Engine) -> None:
    engine.use(project)
    db = engine.location(project)
    add_contacts(db, "news", CITIZENS)
    _add_segments(project, "utrecht = \"city = 'Utrecht' and member_rating >= 3\"\n")
    with SmtpServer() as server:
        set_smtp(project, "127.0.0.1", server.port)
        first = cli("send", "spring", "--template", "newsletter", "--list", "news", "--segment", "utrecht", "--yes")
        assert first.exit_code == 0, first.output
        assert sorted(server.recipients()) == ["ann@example.org", "dee@example.org"]
        # Bob moves up; a plain rerun keeps the frozen audience, --include-new applies the segment again.
        assert cli("contacts", "set", "bob@example.org", "member_rating=5").exit_code == 0
        assert "nothing left to send" in cli("send", "spring", "--yes").stderr
        other = cli("send", "spring", "--where", "city = 'Amsterdam'", "--yes")
        assert other.exit_code == ExitCode.USAGE and "was started for segment" in other.stderr
        more = cli("send", "spring", "--include-new", "--yes")
        assert more.exit_code == 0, more.output
        assert sorted(server.recipients()) == ["ann@example.org", "bob@example.org", "dee@example.org"]
        assert set(deliveries(db, "spring")) == {"ann@example.org", "bob@example.org", "dee@example.org"}
    listed = json.loads(cli("campaigns", "--json").stdout)
    assert listed[0]["segment"] == "utrecht" and listed[0]["where"] == "city = 'Utrecht' and member_rating >= 3"


def test_erasing_someone_named_in_a_segment_takes_the_address_out_of_the_campaign(project: Path, cli: Cli,
                                                                                 engine: Engine) -> None:
    engine.use(project)
    add_contacts(engine.location(project), "news", CITIZENS)
    with SmtpServer() as server:
        set_smtp(project, "127.0.0.1", server.port)
        sent = cli("send", "one", "--template", "newsletter", "--list", "news", "--where",
                   "email in ('Ann@Example.org', 'bob@example.org')", "--yes")
        assert sent.exit_code == 0, sent.output
        assert sorted(server.recipients()) == ["ann@example.org", "bob@example.org"]
    assert cli("privacy", "erase", "ann@example.org", "--yes").exit_code == 0
    assert json.loads(cli("campaigns", "--json").stdout)[0]["where"] == "email in ('[erased]', 'bob@example.org')"
    assert engine.rows(project, "SELECT segment_where FROM campaigns") == [("email in ('[erased]', 'bob@example.org')",)]
    for path in project.glob("mailcli.db*"):  # a SQLite file keeps no trace either
        if path.is_file():
            assert b"ann@example" not in path.read_bytes().lower(), path


def test_the_question_on_a_terminal_names_the_segment(project: Path) -> None:
    from tests.terminal import Terminal

    add_contacts(project / "mailcli.db", "news", CITIZENS)
    with SmtpServer() as server:
        set_smtp(project, "127.0.0.1", server.port)
        term = Terminal("send", "spring", "--template", "newsletter", "--list", "news", "--where",
                        "member_rating >= 4", cwd=project)
        question = term.read_until("[y/N]:")
        assert "Send 2 message(s) of campaign spring (template newsletter, segment member_rating >= 4)" in question
        term.type("n\n")
        assert term.wait() != 0
        assert server.messages == []
