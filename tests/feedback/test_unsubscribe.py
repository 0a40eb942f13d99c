"""`mailcli unsubscribe EMAIL [--list L]`: the manual opt-out."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import Cli
from tests.feedback.test_feedback_support import seed


def test_unsubscribe_all_marketing(project: Path, cli: Cli) -> None:
    s = seed(project, ["ann@example.org"], lists=("news", "events"))
    result = cli("unsubscribe", "Ann@Example.org")
    assert result.exit_code == 0, result.output
    assert "Unsubscribed Ann@Example.org from all marketing" in result.stderr
    assert s.membership("ann@example.org", "news")[::2] == ("unsubscribed", "cli")
    assert s.membership("ann@example.org", "events")[0] == "unsubscribed"
    assert s.suppressions("ann@example.org") == {"*": "unsubscribed"}

    again = cli("unsubscribe", "ann@example.org", "--json")
    assert again.exit_code == 0
    assert json.loads(again.stdout) == {"email": "ann@example.org", "scope": "*", "known": True, "changed": False}


def test_unsubscribe_one_list(project: Path, cli: Cli) -> None:
    s = seed(project, ["ann@example.org"], lists=("news", "events"))
    result = cli("unsubscribe", "ann@example.org", "--list", "events", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["scope"] == "events"
    assert s.membership("ann@example.org", "events")[0] == "unsubscribed"
    assert s.membership("ann@example.org", "news")[0] == "subscribed"
    assert s.suppressions("ann@example.org") == {"events": "unsubscribed"}


def test_unknown_address_is_suppressed_and_said_so(project: Path, cli: Cli) -> None:
    s = seed(project, [])
    result = cli("unsubscribe", "zoe@example.org")
    assert result.exit_code == 0, result.output
    assert "not in the database" in result.stderr and "never add it" in result.stderr
    assert s.suppressions("zoe@example.org") == {"*": "unsubscribed"}


def test_bad_address_and_unknown_list(project: Path, cli: Cli) -> None:
    seed(project, ["ann@example.org"])
    bad = cli("unsubscribe", "not-an-address")
    assert bad.exit_code == 2 and "not-an-address" in bad.stderr and "Traceback" not in bad.output
    missing = cli("unsubscribe", "ann@example.org", "--list", "nope")
    assert missing.exit_code == 1 and "No list named 'nope'" in missing.stderr
