"""The fuzz harnesses of tests/fuzz, on a short seeded budget: the same inputs every run.

Each surface gets a few seconds of inputs from ``random.Random("make-test:N")``;
``make fuzz`` runs the same harnesses for minutes or hours, coverage-guided
with atheris where it is installed. A failure names the input's seed and
index and the command that repeats it alone.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fuzz.engine import run_random

# Inputs per surface: a few seconds each on a quiet machine.
BUDGET = {"csv": 40, "config": 60, "feedback": 12, "serve": 300}


@pytest.mark.parametrize("name", list(BUDGET))
def test_every_input_gets_an_honest_answer(name: str, tmp_path: Path) -> None:
    from tests.fuzz.__main__ import make_surface

    surface = make_surface(name, tmp_path)
    try:
        report = run_random(surface, seed="make-test", examples=BUDGET[name])
    finally:
        closer = getattr(surface, "close", None)
        if closer is not None:
            closer()
    assert report.failure is None, report.line()
    assert report.inputs == BUDGET[name]
