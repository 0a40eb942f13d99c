"""`mailcli demo` runs the whole flow against its own sink, with no project."""

from __future__ import annotations

import json

from tests.conftest import run_mailcli


def test_demo_runs_every_step_and_sends_each_contact_once() -> None:
    result = run_mailcli("--json", "demo", timeout=180)
    assert result.returncode == 0, result.stderr
    steps = json.loads(result.stdout)
    commands = [step["command"] for step in steps]
    assert any(c.startswith("mailcli import") for c in commands)
    assert any(c.startswith("mailcli lint") for c in commands)
    assert all(step["exit_code"] == 0 for step in steps), steps
    sent = next(s for s in steps if "--yes" in s["command"] and "--template" in s["command"])
    assert "0 failed" in sent["output"]
    again = next(s for s in steps if s["command"] == "mailcli send demo-issue --yes")
    assert "nothing left to send" in again["output"]
    last = steps[-1]
    assert "List-Unsubscribe-Post: List-Unsubscribe=One-Click" in last["output"]
    count = int(last["title"].split("received ")[1].split(" ")[0])
    assert f"{count} sent" in sent["output"]
