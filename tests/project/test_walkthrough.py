"""docs/walkthrough.md is the real output of docs/walkthrough.py, and still current."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ..conftest import REPO


def _steps(text: str) -> list[str]:
    """The commands, exit codes and headings: what must not drift from the script."""
    return [line for line in text.splitlines() if line.startswith(("$ ", "[exit ", "## "))]


def test_the_walkthrough_runs_every_step_and_the_committed_one_is_current(tmp_path: Path) -> None:
    fresh = tmp_path / "walkthrough.md"
    proc = subprocess.run([sys.executable, str(REPO / "docs" / "walkthrough.py"), "-o", str(fresh)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr  # every step ended as the transcript expects
    text = fresh.read_text(encoding="utf-8")
    assert "Traceback" not in text and str(tmp_path) not in text
    committed = (REPO / "docs" / "walkthrough.md").read_text(encoding="utf-8")
    assert _steps(text) == _steps(committed), "docs/walkthrough.md is stale: run make walkthrough"
