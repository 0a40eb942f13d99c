"""Loops over constant data, unrolled when a template is compiled.

A newsletter's articles are usually a list written in the template (``{% set
articles = [...] %}`` or ``{% from "issue.jinja" import articles %}``), the
same for every recipient, yet Jinja runs the loop for every message: each
``article.title``, ``loop.index`` and ``article.category|upper`` is looked up,
filtered and escaped again per message. When the list is a constant, the loop
is replaced by one copy of its body per item, with the item and the ``loop``
fields written in as constants; Jinja's own constant folding then turns every
output that depends on them alone into plain text, and only what depends on
the recipient is left to run. Each copy is a scope of its own, as each
iteration is, so a ``{% set %}`` inside stays inside.

A loop is left as it is when anything could make that differ: a list that is
not a constant (or longer than ``MAX_ITEMS``), a filtered or recursive loop,
a target other than one name, a body that assigns the loop variable or
``loop``, or uses ``loop`` other than by reading its plain fields, or defines
macros or calls.
"""

from __future__ import annotations

import copy
from typing import Any

from jinja2 import nodes
from jinja2.visitor import NodeTransformer

MAX_ITEMS = 64
MAX_FOLDED = 4096  # characters of a string made with ``*`` from constants, written in when unrolling
_LOOP_FIELDS = ("index", "index0", "revindex", "revindex0", "first", "last", "length", "depth", "depth0")
_ASSIGNING = (nodes.Assign, nodes.AssignBlock, nodes.For, nodes.FromImport, nodes.Import, nodes.Macro, nodes.With)


def unroll_constant_loops(environment: Any, tree: nodes.Template) -> None:
    """Unroll, in place, every loop of ``tree`` over a constant list."""
    _statements(environment, tree.body, {})


# Complexity: one branch per Jinja statement that can bind a name.
def _assigned(node: nodes.Node) -> set[str]:
    """Every name a statement (or anything inside it) may bind."""
    names: set[str] = set()
    for child in [node, *node.find_all(_ASSIGNING)]:
        if isinstance(child, (nodes.Assign, nodes.AssignBlock, nodes.For)):
            names.update(n.name for n in child.target.find_all(nodes.Name))
            if isinstance(child.target, nodes.Name):
                names.add(child.target.name)
            if isinstance(child, nodes.For):
                names.add("loop")
        elif isinstance(child, nodes.FromImport):
            names.update(name if isinstance(name, str) else name[1] for name in child.names)
        elif isinstance(child, (nodes.Import, nodes.Macro)):
            names.add(child.target if isinstance(child, nodes.Import) else child.name)
        elif isinstance(child, nodes.With):
            for target in child.targets:
                names.update(n.name for n in target.find_all(nodes.Name))
                if isinstance(target, nodes.Name):
                    names.add(target.name)
    return names


def _constant(environment: Any, expression: nodes.Node) -> Any:
    """The value of an expression that needs no variables, else raise ``nodes.Impossible``."""
    if not isinstance(expression, nodes.Expr):
        raise nodes.Impossible()
    return expression.as_const(nodes.EvalContext(environment))


def _imported(environment: Any, node: nodes.FromImport) -> dict[str, Any]:
    """Names a ``{% from ... import ... %}`` of a template of constants binds, with their values."""
    if node.with_context or not isinstance(node.template, nodes.Const):
        return {}
    try:
        module = environment.get_template(node.template.value).module
    except Exception:  # noqa: BLE001 - it needs variables, or fails: leave it to the render
        return {}
    values = {}
    for name in node.names:
        source, alias = (name, name) if isinstance(name, str) else name
        value = getattr(module, source, None)
        if value is not None and not callable(value):
            values[alias] = value
    return values


def _statements(environment: Any, body: list[nodes.Node], known: dict[str, Any]) -> None:
    """Walk one list of statements in order, replacing loops over constants in place.

    ``known`` maps the names bound to constants so far; a statement that may
    bind a name (here or nested) forgets it.
    """
    known = dict(known)
    position = 0
    while position < len(body):
        node = body[position]
        if isinstance(node, nodes.For):
            copies = _unrolled(environment, node, known)
            if copies is not None:
                body[position : position + 1] = copies
                for scope in copies:
                    _statements(environment, scope.body, known)
                position += len(copies)
                continue
        _nested(environment, node, known)
        _learn(environment, node, known)
        position += 1


def _nested(environment: Any, node: nodes.Node, known: dict[str, Any]) -> None:
    """Walk the statements inside ``node`` with what is known there."""
    if isinstance(node, nodes.Block):
        _statements(environment, node.body, {})  # a block runs on its own
    elif isinstance(node, nodes.For):
        inner = {k: v for k, v in known.items() if k not in _assigned(node)}
        _statements(environment, node.body, inner)
        _statements(environment, node.else_, inner)
    elif isinstance(node, nodes.If):
        _statements(environment, node.body, known)
        for branch in node.elif_:
            _statements(environment, branch.body, known)
        _statements(environment, node.else_, known)
    elif isinstance(node, (nodes.Scope, nodes.With)):
        inner = {k: v for k, v in known.items() if k not in _assigned(node)}
        _statements(environment, node.body, inner)


def _learn(environment: Any, node: nodes.Node, known: dict[str, Any]) -> None:
    """What ``node`` binds: names it may bind are forgotten, constants it assigns known."""
    for name in _assigned(node):
        known.pop(name, None)
    if isinstance(node, nodes.Assign) and isinstance(node.target, nodes.Name):
        try:
            known[node.target.name] = _constant(environment, node.node)
        except nodes.Impossible:
            pass
    elif isinstance(node, nodes.FromImport):
        known.update(_imported(environment, node))


class _Substitute(NodeTransformer):
    """Write one item and its ``loop`` fields into a copy of a loop body."""

    def __init__(self, environment: Any, target: str, item: nodes.Const, fields: dict[str, Any]) -> None:
        self.environment = environment
        self.target = target
        self.item = item
        self.fields = fields
        self.nested = 0  # inside an inner loop, ``loop`` is that loop's

    def visit_For(self, node: nodes.For) -> nodes.Node:
        node.iter = self.visit(node.iter)
        self.nested += 1
        try:
            node.body = [self.visit(statement) for statement in node.body]
            node.else_ = [self.visit(statement) for statement in node.else_]
            if node.test is not None:
                node.test = self.visit(node.test)
        finally:
            self.nested -= 1
        return node

    def visit_Name(self, node: nodes.Name) -> nodes.Node:
        if node.name == self.target and node.ctx == "load":
            return nodes.Const(self.item.value, lineno=node.lineno, environment=self.environment)
        return node

    def visit_Getattr(self, node: nodes.Getattr) -> nodes.Node:
        if (not self.nested and isinstance(node.node, nodes.Name) and node.node.name == "loop"
                and node.attr in self.fields):
            return nodes.Const(self.fields[node.attr], lineno=node.lineno, environment=self.environment)
        return self.generic_visit(node)

    def visit_Mul(self, node: nodes.Mul) -> nodes.Node:
        """``"-" * article.title|length`` (an underline) made of the item alone
        is written in too: Jinja folds no ``*``, as the sandbox checks what it
        makes for size (``limits``), and that check cannot fail for a string
        of at most ``MAX_FOLDED`` characters."""
        self.generic_visit(node)
        try:
            eval_ctx = nodes.EvalContext(self.environment)
            left, right = node.left.as_const(eval_ctx), node.right.as_const(eval_ctx)
        except Exception:  # noqa: BLE001 - not made of constants alone (or failing): left to the render
            return node
        text, times = (left, right) if type(left) is str else (right, left)
        if type(text) is str and type(times) is int and len(text) * max(times, 0) <= MAX_FOLDED:
            return nodes.Const(text * times, lineno=node.lineno, environment=self.environment)
        return node


def _loop_used_plainly(body: list[nodes.Node]) -> bool:
    """``loop`` appears only as ``loop.<plain field>``."""
    fields = 0
    for statement in body:
        for getattr_ in statement.find_all(nodes.Getattr):
            if isinstance(getattr_.node, nodes.Name) and getattr_.node.name == "loop":
                if getattr_.attr not in _LOOP_FIELDS:
                    return False
                fields += 1
    names = sum(1 for statement in body for name in statement.find_all(nodes.Name) if name.name == "loop")
    return names == fields


def _unrolled(environment: Any, node: nodes.For, known: dict[str, Any]) -> list[nodes.Scope] | None:
    """One scope per item of a loop over a constant list, or None to leave the loop as it is."""
    items = _constant_items(environment, node, known)
    if items is None or not _body_unrollable(node):
        return None
    if not items:
        return [nodes.Scope(node.else_, lineno=node.lineno, environment=environment)] if node.else_ else []
    copies = []
    for index, item in enumerate(items):
        try:
            constant = nodes.Const.from_untrusted(item, lineno=node.lineno, environment=environment)
        except nodes.Impossible:
            return None
        copies.append(_copy(environment, node, constant, index, len(items)))
    return copies


def _constant_items(environment: Any, node: nodes.For, known: dict[str, Any]) -> list[Any] | tuple[Any, ...] | None:
    """The list a plain loop goes over, when it is a constant short enough to unroll."""
    if node.recursive or node.test is not None or not isinstance(node.target, nodes.Name):
        return None
    if isinstance(node.iter, nodes.Name) and node.iter.name in known:
        items = known[node.iter.name]
    else:
        try:
            items = _constant(environment, node.iter)
        except nodes.Impossible:
            return None
    if not isinstance(items, (list, tuple)) or len(items) > MAX_ITEMS:
        return None
    return items


def _body_unrollable(node: nodes.For) -> bool:
    """The body neither binds the loop's names, nor uses ``loop`` other than by
    its plain fields, nor defines macros or calls."""
    target = node.target.name  # type: ignore[attr-defined]
    body_assigns = set().union(*(_assigned(statement) for statement in node.body)) if node.body else set()
    if {target, "loop"} & body_assigns or not _loop_used_plainly(node.body):
        return False
    return not any(True for statement in node.body for _ in statement.find_all((nodes.Macro, nodes.CallBlock)))


def _copy(environment: Any, node: nodes.For, item: nodes.Const, index: int, length: int) -> nodes.Scope:
    """The loop body for one item, with the item and its ``loop`` fields written in."""
    fields = {
        "index": index + 1, "index0": index, "revindex": length - index, "revindex0": length - index - 1,
        "first": index == 0, "last": index == length - 1, "length": length, "depth": 1, "depth0": 0,
    }
    substitute = _Substitute(environment, node.target.name, item, fields)  # type: ignore[attr-defined]
    shared = {id(environment): environment}  # nodes refer to it; copy the nodes only
    body = [substitute.visit(copy.deepcopy(statement, dict(shared))) for statement in node.body]
    return nodes.Scope(body, lineno=node.lineno, environment=environment)
