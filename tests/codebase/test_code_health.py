"""The code stays easy to change: branchy functions say why, nothing is dead.

* radon's cyclomatic complexity: a function (or class) ranked C or worse
  (more than 10 paths) carries a ``# Complexity:`` comment on the line above
  it (above its decorators) saying why it is not split — one branch per
  case of a format, a measured hot path, a protocol step read top to
  bottom. ``radon cc -n C mailcli`` lists the same functions.
* vulture's dead code: nothing it reports is left unexplained; what it
  cannot see used (framework hooks, names read by name) is listed in
  ``vulture_whitelist.py`` beside this file, each with the reason. The
  settings are ``[tool.vulture]`` in pyproject.toml, so ``vulture`` alone
  reports the same.

Both read the source in this process, in a few seconds; ``make lint`` runs
this file with ruff and mypy.
"""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path

from ..conftest import REPO

PACKAGE = REPO / "mailcli"
WHITELIST = Path(__file__).with_name("vulture_whitelist.py")  # named in [tool.vulture] paths
MARK = "# Complexity:"


@cache
def _complex_blocks() -> list[tuple[Path, int, str, int]]:
    from radon.complexity import cc_rank, cc_visit

    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for block in cc_visit(path.read_text(encoding="utf-8")):
            if cc_rank(block.complexity) >= "C":
                found.append((path, block.lineno, block.fullname, block.complexity))
    return found


def _says_why(lines: list[str], lineno: int) -> bool:
    """A ``# Complexity:`` comment right above the def (above its decorators)."""
    index = lineno - 2  # the line above the def, 0-based
    while index >= 0 and lines[index].lstrip().startswith("@"):
        index -= 1
    return index >= 0 and lines[index].strip().startswith(MARK) and len(lines[index].strip()) > len(MARK) + 10


def test_every_function_ranked_c_or_worse_says_why() -> None:
    unexplained = []
    for path, lineno, name, complexity in _complex_blocks():
        lines = path.read_text(encoding="utf-8").splitlines()
        if not _says_why(lines, lineno):
            unexplained.append(f"{path.relative_to(REPO)}:{lineno} {name} ({complexity})")
    assert not unexplained, (
        f"split these, or put a '{MARK} why' line above each: " + "; ".join(unexplained))


def test_nothing_is_ranked_worse_than_c() -> None:
    # More than 20 paths is past what a comment can excuse.
    worst = [f"{p.relative_to(REPO)}:{n} {name} ({c})" for p, n, name, c in _complex_blocks() if c > 20]
    assert not worst, "; ".join(worst)


def test_vulture_finds_no_unexplained_dead_code() -> None:
    from vulture import Vulture

    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]

    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["vulture"]
    vulture = Vulture(ignore_decorators=config["ignore_decorators"])
    vulture.scavenge([str(REPO / path) for path in config["paths"]])
    unused = [f"{Path(item.filename).relative_to(REPO)}:{item.first_lineno} {item.message}"
              for item in vulture.get_unused_code(min_confidence=config["min_confidence"])]
    assert not unused, "dead code (delete it, or add it to tests/vulture_whitelist.py with the reason): " + "; ".join(unused)


def test_every_whitelisted_name_still_exists() -> None:
    # Running the whitelist touches each module-level name it lists: one that
    # was renamed or deleted raises AttributeError here.
    spec = importlib.util.spec_from_file_location("vulture_whitelist", WHITELIST)
    assert spec is not None and spec.loader is not None
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
