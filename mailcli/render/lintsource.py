"""Lint's checks on the Jinja sources, before anything renders: undefined or
misspelt variables in every file (with the nearest known name), so one run
lists them all, and ``|safe`` on contact data, which would let a contact's
value inject HTML (docs/guarantees.md#template-sandbox).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from jinja2 import meta, nodes

from .environment import display_path, make_environment, suggest
from .findings import ERROR, Finding
from .template import CompiledTemplate
from .values import TEMPLATE_VARIABLES, is_confirm_template

_DICT_METHODS = {"get", "items", "keys", "values"}
_GUARD_FILTERS = {"default", "d"}
_GUARD_TESTS = {"defined", "undefined", "none"}
_JINJA_NAMES = {"loop", "super", "self", "varargs", "kwargs", "caller"}


def _walk(node: nodes.Node, parent: nodes.Node | None = None) -> Iterator[tuple[nodes.Node, nodes.Node | None]]:
    yield node, parent
    for child in node.iter_child_nodes():
        yield from _walk(child, node)


def _guarded(node: nodes.Node, parent: nodes.Node | None) -> bool:
    if isinstance(parent, nodes.Filter) and parent.name in _GUARD_FILTERS and parent.node is node:
        return True
    return isinstance(parent, nodes.Test) and parent.name in _GUARD_TESTS and parent.node is node


def _assigned_names(tree: nodes.Template) -> set[str]:
    names: set[str] = set()
    for node, _ in _walk(tree):
        if isinstance(node, nodes.Name) and node.ctx in ("store", "param"):
            names.add(node.name)
        elif isinstance(node, nodes.FromImport):
            names.update(n if isinstance(n, str) else n[1] for n in node.names)
        elif isinstance(node, nodes.Import):
            names.add(node.target)
        elif isinstance(node, nodes.Macro):
            names.add(node.name)
    return names


class _Checker:
    """What the templates may name: the template variables and what they assign."""

    def __init__(self, known: Mapping[str, set[str]], assigned: set[str], allowed: set[str]) -> None:
        self.known = known
        self.assigned = assigned
        self.allowed = allowed

    def findings(self, file: str, tree: nodes.Template) -> Iterator[Finding]:
        undeclared = meta.find_undeclared_variables(tree) - self.allowed
        for node, parent in _walk(tree):
            found = None
            if isinstance(node, nodes.Name):
                found = self._undefined_name(file, node, parent, undeclared)
            elif isinstance(node, (nodes.Getattr, nodes.Getitem)):
                found = self._undefined_field(file, node, parent)
            elif isinstance(node, nodes.Filter):
                found = _unsafe_filter(file, node)
            if found is not None:
                yield found

    @staticmethod
    def _undefined_name(file: str, node: nodes.Name, parent: nodes.Node | None, undeclared: set[str]) -> Finding | None:
        if node.ctx != "load" or node.name not in undeclared or _guarded(node, parent):
            return None
        near = suggest(node.name, TEMPLATE_VARIABLES)
        hint = f" (did you mean {near}?)" if near else f"; templates see {', '.join(TEMPLATE_VARIABLES)}"
        return Finding(ERROR, "undefined-variable", file, node.lineno, f"undefined variable {node.name}{hint}")

    def _undefined_field(self, file: str, node: nodes.Getattr | nodes.Getitem, parent: nodes.Node | None,
                         ) -> Finding | None:
        """``base.attr`` (or ``base["attr"]``) where ``base`` has no such field."""
        if not isinstance(node.node, nodes.Name):
            return None
        if isinstance(node, nodes.Getattr):
            attr = node.attr
        elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
            attr = node.arg.value
        else:
            return None
        base = node.node.name
        fields = self.known.get(base)
        if fields is None or base in self.assigned or attr in fields or attr in _DICT_METHODS:
            return None
        if _guarded(node, parent):
            return None
        return Finding(ERROR, "undefined-variable", file, node.lineno, _field_message(base, attr, fields))


def _field_message(base: str, attr: str, fields: set[str]) -> str:
    near = suggest(attr, fields)
    if near:
        return f"undefined variable {base}.{attr} (did you mean {base}.{near}?)"
    if base == "contact":
        return (f"undefined variable contact.{attr}: the sample contact has no such field; "
                f"if it is a custom attribute every recipient has, lint with --data, "
                f"else write contact.{attr}|default('')")
    return f"undefined variable {base}.{attr}; {base} has {', '.join(sorted(fields))}"


def _unsafe_filter(file: str, node: nodes.Filter) -> Finding | None:
    if node.name != "safe" or node.node is None:
        return None
    if not any(isinstance(n, nodes.Name) and n.name == "contact" for n, _ in _walk(node.node)):
        return None
    return Finding(ERROR, "unsafe-filter", file, node.lineno,
                   "|safe on contact data would let a contact's value inject HTML; remove |safe")


def static_findings(template: CompiledTemplate, known: Mapping[str, set[str]]) -> list[Finding]:
    """Undefined variables and unsafe filters in every file the template reads."""
    env = make_environment(template.root, html=False)
    trees: dict[str, tuple[str, nodes.Template]] = {}
    for name, filename in template.files.items():
        with open(filename, encoding="utf-8") as handle:
            source = handle.read()
        trees[name] = (display_path(filename), env.parse(source, name, filename))
    assigned: set[str] = set()
    for _, tree in trees.values():
        assigned |= _assigned_names(tree)
    allowed = set(TEMPLATE_VARIABLES) | set(env.globals) | assigned | _JINJA_NAMES
    if is_confirm_template(template.name):
        allowed.add("confirm_url")
    checker = _Checker(known, assigned, allowed)
    return [finding for file, tree in trees.values() for finding in checker.findings(file, tree)]
