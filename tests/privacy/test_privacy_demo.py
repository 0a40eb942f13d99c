"""``mailcli demo`` shows the privacy half of the flow: export, purge and the audit log."""

from __future__ import annotations

import json
import stat
import zipfile
from pathlib import Path

from tests.conftest import Cli


def test_demo_exports_a_person_and_runs_the_retention_policy(tmp_path: Path, cli: Cli) -> None:
    result = cli("--json", "demo", "--keep", str(tmp_path / "kept"))
    assert result.exit_code == 0, result.output
    steps = json.loads(result.stdout)

    def step(prefix: str) -> dict[str, object]:
        return next(s for s in steps if str(s["command"]).startswith(prefix))

    assert step("mailcli privacy export anna.devries@example.nl")["exit_code"] == 0
    dry = step("mailcli privacy purge --dry-run")
    assert dry["exit_code"] == 0 and "send_log" in str(dry["output"]) and "nothing was changed" in str(dry["output"])
    [real] = [s for s in steps if s["command"] == "mailcli privacy purge"]
    assert real["exit_code"] == 0 and "Purge done" in str(real["output"])
    assert "privacy export" in str(step("mailcli privacy audit")["output"])
    [archive] = (tmp_path / "kept" / "demo-project" / "exports").glob("*.zip")
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600
    with zipfile.ZipFile(archive) as z:
        assert json.loads(z.read("subject.json"))["profile"]["provided_by_subject"]["email"] == "anna.devries@example.nl"
