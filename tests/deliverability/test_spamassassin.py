"""The newsletter `mailcli init` scaffolds, as delivered, through SpamAssassin.

A real message: `mailcli send` to a real SMTP server on 127.0.0.1, the bytes
it received scored by Debian's `spamassassin` with local tests only (`-L`:
no DNS, no network).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import Cli, set_smtp
from tests.smtpserver import SmtpServer

pytestmark = pytest.mark.skipif(
    shutil.which("spamassassin") is None,
    reason="spamassassin is not installed (Debian package spamassassin, installed by .ci/system-packages)")


def score(message: bytes) -> tuple[float, dict[str, float]]:
    """SpamAssassin's total and the points of each rule that hit."""
    proc = subprocess.run(["spamassassin", "-L", "-t"], input=message, capture_output=True, timeout=120)
    report = proc.stdout.decode("utf-8", "replace")
    total = re.search(r"Content analysis details:\s+\((-?[\d.]+) points", report)
    assert total is not None, proc.stderr.decode("utf-8", "replace")[-2000:]
    details = report[total.end():]
    rules = {m.group(2): float(m.group(1)) for m in re.finditer(r"^\s*(-?\d+\.\d+)\s+([A-Z0-9_]+)\s", details, re.M)}
    return float(total.group(1)), rules


def test_the_scaffolded_newsletter_has_no_low_contrast_text_and_scores_clean(project: Path, cli: Cli) -> None:
    (project / "c.csv").write_text("email,first_name\nanna@example.net,Anna\n", encoding="utf-8")
    assert cli("import", "c.csv", "--list", "news", "--basis", "customer").exit_code == 0
    with SmtpServer() as server:
        set_smtp(project, "127.0.0.1", server.port)
        result = cli("send", "first", "--template", "newsletter", "--list", "news", "--yes")
        assert result.exit_code == 0, result.output
        server.wait_for(1)
        delivered = server.messages[0].data
    total, rules = score(delivered)
    # The preheader was hidden with its colour set to the background's, which
    # is what HTML_FONT_LOW_CONTRAST looks for (+0.7, a score of -0.3).
    assert "HTML_FONT_LOW_CONTRAST" not in rules
    assert [rule for rule, points in rules.items() if points > 0] == []
    assert total <= -1.0, rules
    assert b"class=3D\"preheader\"" in delivered or b'class="preheader"' in delivered
