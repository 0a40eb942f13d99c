"""The documentation keeps its word: every test it cites exists."""

from __future__ import annotations

import re

from .conftest import REPO

CITED = re.compile(r"`(test_\w+\.py)(?:::(test_\w+))?`")


def test_every_guarantee_names_tests_that_exist() -> None:
    text = (REPO / "docs" / "guarantees.md").read_text(encoding="utf-8")
    sections = re.split(r"^## ", text, flags=re.M)[1:]
    assert len(sections) >= 20
    missing = []
    for section in sections:
        title = section.splitlines()[0]
        cited = CITED.findall(section)
        assert cited, f"guarantee {title!r} names no test"
        for file, name in cited:
            path = REPO / "tests" / file
            if not path.is_file() or (name and not re.search(rf"^def {name}\(", path.read_text(encoding="utf-8"),
                                                             flags=re.M)):
                missing.append(f"{title}: {file}::{name}")
    assert not missing, f"docs/guarantees.md cites tests that do not exist: {missing}"
