"""The lawful basis of a membership: import asks for it, send leaves out members without one.

Real files, a real SQLite database, the real CLI and a real SMTP server on 127.0.0.1.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from tests.conftest import Cli, migrate_until, set_smtp
from tests.smtpserver import SmtpServer

PLAIN = "email,first_name\nann@example.org,Ann\nbob@example.org,Bob\n"


def _rows(project: Path, sql: str, *args: object) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(project / "mailcli.db")
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def _bases(project: Path) -> dict[str, tuple[str, str]]:
    """email -> (membership status, basis) in list news."""
    return {str(e): (str(s), str(b)) for e, s, b in _rows(
        project, "SELECT c.email, m.status, m.basis FROM memberships m JOIN contacts c ON c.id = m.contact_id")}


def test_a_file_without_consent_evidence_is_refused_and_nothing_is_imported(project: Path, cli: Cli) -> None:
    (project / "fair.csv").write_text(PLAIN, encoding="utf-8")
    before = _rows(project, "SELECT count(*) FROM contacts")
    result = cli("import", "fair.csv", "--list", "news")
    assert result.exit_code == 2, result.output
    error = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(error) == 1
    for option in ("--basis consent --consent-source", "--basis customer", "--status unconfirmed", "fair.csv",
                   "nothing was imported"):
        assert option in error[0]
    assert "Traceback" not in result.output
    assert _rows(project, "SELECT count(*) FROM contacts") == before
    assert _rows(project, "SELECT count(*) FROM lists") == [(0,)]
    # --basis consent alone is no evidence either: it needs to say where they agreed.
    alone = cli("import", "fair.csv", "--list", "news", "--basis", "consent")
    assert alone.exit_code == 2 and "--consent-source" in alone.stderr
    assert _rows(project, "SELECT count(*) FROM memberships") == [(0,)]


def test_the_file_is_accepted_with_each_way_of_stating_the_basis(project: Path, cli: Cli) -> None:
    (project / "fair.csv").write_text(PLAIN, encoding="utf-8")
    (project / "shop.csv").write_text("email\ncid@example.org\n", encoding="utf-8")
    (project / "ask.csv").write_text("email\ndee@example.org\n", encoding="utf-8")
    fair = cli("--json", "import", "fair.csv", "--list", "news", "--basis", "consent",
               "--consent-source", "paper form, fair 2024")
    assert fair.exit_code == 0, fair.output
    assert json.loads(fair.stdout)["basis"] == "consent"
    assert cli("import", "shop.csv", "--list", "news", "--basis", "customer").exit_code == 0
    assert cli("import", "ask.csv", "--list", "news", "--status", "unconfirmed").exit_code == 0
    assert _bases(project) == {"ann@example.org": ("subscribed", "consent"),
                               "bob@example.org": ("subscribed", "consent"),
                               "cid@example.org": ("subscribed", "customer"),
                               "dee@example.org": ("unconfirmed", "none")}
    (source,) = _rows(project, "SELECT consent_source FROM memberships m JOIN contacts c ON c.id = m.contact_id"
                               " WHERE c.email = 'bob@example.org'")
    assert source == ("paper form, fair 2024 (fair.csv line 3)",)
    shown = cli("contacts", "show", "cid@example.org")
    assert "basis customer" in shown.stdout


def test_a_file_with_opt_in_times_imports_as_before_and_a_row_without_one_has_no_basis(
        project: Path, cli: Cli) -> None:
    (project / "export.csv").write_text(
        "Email Address,First Name,OPTIN_TIME\nann@example.org,Ann,2024-03-01 10:00:00\nbob@example.org,Bob,\n",
        encoding="utf-8")
    result = cli("--json", "import", "export.csv", "--list", "news")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["no_basis"] == 1
    assert "a send leaves them out" in result.stderr
    assert _bases(project) == {"ann@example.org": ("subscribed", "consent"),
                               "bob@example.org": ("subscribed", "none")}
    listed = json.loads(cli("lists", "--json").stdout)[0]
    assert (listed["subscribed"], listed["held_back_by"]["no_basis"]) == (1, 1)
    assert "1 no basis" in cli("lists").stdout
    assert cli("contacts", "--list", "news", "--status", "no_basis", "--json").stdout.count("bob@example.org") == 1


def test_send_leaves_out_members_without_a_basis_counts_them_and_says_why(project: Path, cli: Cli) -> None:
    (project / "export.csv").write_text(
        "Email Address,OPTIN_TIME\nann@example.org,2024-03-01 10:00:00\nbob@example.org,\n"
        "cid@example.org,2024-03-02 10:00:00\n", encoding="utf-8")
    assert cli("import", "export.csv", "--list", "news").exit_code == 0
    with SmtpServer() as server:
        set_smtp(project, "127.0.0.1", server.port)
        result = cli("--json", "send", "spring", "--template", "newsletter", "--list", "news", "--yes")
        assert result.exit_code == 0, result.output
        data = json.loads(result.stdout)
        assert (data["sent"], data["no_basis"]) == (2, 1)
        assert "1 member(s) of list news left out: no lawful basis recorded" in result.stderr
        assert "--basis customer" in result.stderr and "reconfirm --list news" in result.stderr
        assert sorted(server.recipients()) == ["ann@example.org", "cid@example.org"]


def _database_before_the_basis(project: Path) -> None:
    """The project's database as a version before the basis was recorded left it:
    two memberships with evidence from their file (an opt-in time, an IP
    network), two without (the time of the import, nothing else)."""
    db = project / "mailcli.db"
    db.unlink()
    conn = sqlite3.connect(db, isolation_level=None)
    migrate_until(conn, "m013_membership_basis")
    conn.execute("INSERT INTO lists (id, name, created_at) VALUES (1, 'news', '2025-01-01T00:00:00Z')")
    now = "2025-06-01T12:00:00Z"
    rows = [("ann@example.org", "2024-03-01T10:00:00Z", None), ("bob@example.org", now, None),
            ("cid@example.org", now, "192.0.2.0/24"), ("dee@example.org", now, None)]
    for n, (email, consent_at, ip) in enumerate(rows, 1):
        conn.execute("INSERT INTO contacts (id, uid, email, email_key, created_at, updated_at, last_activity_at)"
                     " VALUES (?, ?, ?, ?, ?, ?, ?)", (n, f"{n:018x}", email, email, now, now, now))
        conn.execute("INSERT INTO memberships (contact_id, list_id, status, consent_source, consent_method,"
                     " consent_at, consent_ip, confirmed_at, created_at, updated_at)"
                     " VALUES (?, 1, 'subscribed', 'old.csv line 2', 'import', ?, ?, ?, ?, ?)",
                     (n, consent_at, ip, consent_at, now, now))
    conn.close()


def test_an_upgraded_database_keeps_evidence_and_never_promotes_rows_without_it(project: Path, cli: Cli) -> None:
    _database_before_the_basis(project)
    listed = json.loads(cli("lists", "--json").stdout)[0]  # the first command migrates
    assert (listed["subscribed"], listed["held_back_by"]["no_basis"]) == (2, 2)
    assert _bases(project) == {"ann@example.org": ("subscribed", "consent"),
                               "bob@example.org": ("subscribed", "none"),
                               "cid@example.org": ("subscribed", "consent"),
                               "dee@example.org": ("subscribed", "none")}
    # Stating the basis with the file they came from: only the members
    # without one change, and the file's line is recorded as the evidence.
    (project / "old.csv").write_text("email\nbob@example.org\nann@example.org\n", encoding="utf-8")
    stated = cli("--json", "import", "old.csv", "--list", "news", "--basis", "consent",
                 "--consent-source", "sign-up sheet 2023")
    assert stated.exit_code == 0, stated.output
    assert json.loads(stated.stdout)["basis_stated"] == 1
    assert _bases(project)["bob@example.org"] == ("subscribed", "consent")
    (ann, bob) = _rows(project, "SELECT consent_source FROM memberships ORDER BY contact_id LIMIT 2")
    assert ann == ("old.csv line 2",) and bob == ("sign-up sheet 2023 (old.csv line 2)",)


def test_a_send_that_would_reach_nobody_for_want_of_a_basis_is_refused_and_changes_nothing(
        project: Path, cli: Cli) -> None:
    _database_before_the_basis(project)
    conn = sqlite3.connect(project / "mailcli.db")
    conn.execute("UPDATE memberships SET consent_ip = NULL, consent_at = created_at")
    conn.commit()
    conn.close()
    with SmtpServer() as server:
        set_smtp(project, "127.0.0.1", server.port)
        result = cli("send", "spring", "--template", "newsletter", "--list", "news", "--yes")
        assert result.exit_code == 1, result.output
        assert "Nobody on list 'news' can be mailed: its 4 subscribed member(s) have no lawful basis" in result.stderr
        assert "--basis consent" in result.stderr and "reconfirm --list news" in result.stderr
        assert server.messages == []
    assert _rows(project, "SELECT count(*) FROM campaigns") == [(0,)]
