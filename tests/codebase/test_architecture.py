"""The layering rules of ARCHITECTURE.md hold, read from the source itself.

Every module of the package is parsed (``ast``), and every import in it —
at the top, inside a function, under ``TYPE_CHECKING`` — counts. Nothing is
imported or run, so these tests take well under a second.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from ..conftest import REPO

PACKAGE = REPO / "mailcli"

# The command-line layer: the only modules that may use typer, rich or click.
CLI_LAYER = ("mailcli.app", "mailcli.context", "mailcli.output", "mailcli.commands", "mailcli.__main__",
             "mailcli.console")
CLI_LIBRARIES = ("typer", "rich", "click")

SQL_CALLS = {"execute", "executemany", "executescript"}
SQL_TEXT = re.compile(
    r"^\s*(SELECT\s|INSERT\s+(OR\s+\w+\s+)?INTO\s|UPDATE\s+\w+\s+SET\s|DELETE\s+FROM\s|REPLACE\s+INTO\s"
    r"|CREATE\s+(TEMP\s+|TEMPORARY\s+|UNIQUE\s+)?(TABLE|INDEX|VIEW|TRIGGER)\s|DROP\s+(TABLE|INDEX|VIEW|TRIGGER)\s"
    r"|ALTER\s+TABLE\s|PRAGMA\s|WITH\s+\w+.*\bAS\s*\(|VACUUM\b|ATTACH\s|BEGIN\b|SAVEPOINT\s|RELEASE\s)")

# Modules outside mailcli/store that may hold SQL, each with the reason.
# Keep this empty unless a module cannot call a named store function.
SQL_ALLOWED: dict[str, str] = {}


@dataclass(frozen=True)
class Import:
    module: str   # the importing module
    target: str   # the imported module (or the package, for a name that is not a module)
    line: int


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def _modules() -> dict[str, tuple[Path, ast.Module]]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        found[_module_name(path)] = (path, ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
    return found


@cache
def _imports() -> tuple[Import, ...]:
    return tuple(_walk_imports())


def _walk_imports() -> Iterator[Import]:
    modules = _modules()
    for name, (path, tree) in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield Import(name, alias.name, node.lineno)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    source = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    source = node.module or ""
                for alias in node.names:
                    # ``from mailcli import clock`` imports the module mailcli.clock.
                    submodule = f"{source}.{alias.name}"
                    yield Import(name, submodule if submodule in modules else source, node.lineno)


def _within(name: str, prefixes: tuple[str, ...] | str) -> bool:
    prefixes = (prefixes,) if isinstance(prefixes, str) else prefixes
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _where(found: list[Import]) -> list[str]:
    return [f"{i.module} (line {i.line}) imports {i.target}" for i in found]


def test_the_analysis_sees_the_imports_it_checks() -> None:
    # A parser that missed relative or lazy imports would pass every rule below.
    found = {(i.module, i.target) for i in _imports()}
    assert ("mailcli.store.imports", "mailcli.importrows") in found            # from ..importrows import
    assert ("mailcli.commands.send", "typer") in found
    assert ("mailcli.app", "mailcli.output") in found
    assert len(_modules()) > 100


def test_the_core_never_imports_the_command_line_layer() -> None:
    found = [i for i in _imports()
             if not _within(i.module, CLI_LAYER)
             and (_within(i.target, CLI_LAYER) or _within(i.target, CLI_LIBRARIES))]
    assert not found, "the core imports the command line layer: " + "; ".join(_where(found))


def test_render_store_and_privacy_never_import_send() -> None:
    found = [i for i in _imports()
             if _within(i.module, ("mailcli.render", "mailcli.store", "mailcli.privacy"))
             and _within(i.target, "mailcli.send")]
    assert not found, "; ".join(_where(found))


def test_nothing_imports_the_commands() -> None:
    # app.py loads a command's module by name when that command runs.
    found = [i for i in _imports() if not _within(i.module, "mailcli.commands")
             and _within(i.target, "mailcli.commands")]
    assert not found, "; ".join(_where(found))


def test_the_store_depends_on_nothing_above_it() -> None:
    # The store may use the small shared modules below it, never the code that
    # reads files, renders, sends, applies feedback or runs privacy requests.
    # importrows and segments are the row types and the parsed segment the store is handed;
    # durable is the folder fsync that the spool shares with ledgers, backups and restores;
    # interrupts holds a Ctrl-C back while a commit and its follow-up run.
    below = ("mailcli.store", "mailcli.errors", "mailcli.clock", "mailcli.tokens", "mailcli.locks",
             "mailcli.importrows", "mailcli.segments", "mailcli.durable", "mailcli.interrupts")
    found = [i for i in _imports() if _within(i.module, "mailcli.store")
             and _within(i.target, "mailcli") and i.target != "mailcli" and not _within(i.target, below)]
    assert not found, "; ".join(_where(found))


def _docstrings(tree: ast.Module) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def _sql_outside_the_store() -> list[str]:
    found = []
    for name, (path, tree) in _modules().items():
        if _within(name, "mailcli.store"):
            continue
        where = path.relative_to(REPO).as_posix()
        docstrings = _docstrings(tree)
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in SQL_CALLS):
                found.append(f"{where}:{node.lineno}: .{node.func.attr}(...)")
            elif (isinstance(node, ast.Constant) and isinstance(node.value, str)
                  and id(node) not in docstrings and SQL_TEXT.match(node.value)):
                found.append(f"{where}:{node.lineno}: {node.value.strip()[:40]!r}")
    return [f for f in found if f.partition(":")[0] not in SQL_ALLOWED]


def test_only_the_store_holds_sql() -> None:
    found = _sql_outside_the_store()
    assert not found, "SQL outside mailcli/store (move it into a named store function): " + "; ".join(found)


def test_the_sql_check_finds_sql() -> None:
    # The same check over the store finds its queries, so it would find them elsewhere.
    tree = ast.parse('conn.execute("SELECT id FROM lists WHERE name = ?", (n,))\n'
                     'Q = """\n    INSERT INTO events (kind) VALUES (?)"""\n')
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and n.func.attr in SQL_CALLS]  # type: ignore[attr-defined]
    texts = [n for n in ast.walk(tree) if isinstance(n, ast.Constant) and SQL_TEXT.match(str(n.value))]
    assert len(calls) == 1 and len(texts) == 2
    for path in SQL_ALLOWED:
        assert (REPO / path).is_file(), f"the SQL allow-list names {path}, which is gone"
