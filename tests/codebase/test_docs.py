"""The documentation keeps its word: the tests it cites exist, its example runs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from ..conftest import REPO

CITED = re.compile(r"`((?:\w+/)*test_\w+\.py)(?:::(test_\w+))?`")


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


def _block_after(text: str, marker: str, language: str) -> str:
    start = text.index(f"```{language}\n", text.index(marker)) + len(language) + 4
    return text[start:text.index("```", start)]


def test_the_readme_python_example_runs_and_prints_what_it_says(tmp_path: Path) -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    code = _block_after(readme, "## Python API", "python")
    printed = _block_after(readme, "## Python API", "text")
    (tmp_path / "members.csv").write_text(
        "email,first_name\nann@example.org,Ann\nbob@example.org,Bob\nnot-an-address,Nobody\n", encoding="utf-8")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == printed
    assert (tmp_path / "newsletter" / "mailcli.db").is_file()


def test_every_name_the_package_exports_is_there() -> None:
    import mailcli

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    listed = readme[readme.index("The package exports"):]
    listed = listed[:listed.index("\n\n")]
    for name in mailcli.__all__:
        assert callable(getattr(mailcli, name)) or name == "__version__", name
        assert name == "__version__" or f"`{name}`" in listed or name in ("MailcliError", "ExitCode"), name


def test_every_link_to_a_guarantee_finds_its_paragraph() -> None:
    text = (REPO / "docs" / "guarantees.md").read_text(encoding="utf-8")
    anchors = {re.sub(r"[^a-z0-9 -]", "", title.lower()).replace(" ", "-")
               for title in re.findall(r"^## (.+)$", text, flags=re.M)}
    files = [*(REPO / "mailcli").rglob("*.py"), *(REPO / "docs").glob("*.md"), *REPO.glob("*.md")]
    broken = [f"{path.relative_to(REPO)}: #{anchor}" for path in files
              for anchor in re.findall(r"guarantees\.md#([\w-]+)", path.read_text(encoding="utf-8"))
              if anchor not in anchors]
    assert not broken, f"links to docs/guarantees.md that find no paragraph: {broken}"
