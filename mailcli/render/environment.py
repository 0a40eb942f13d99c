"""The Jinja environments templates run in, and Jinja errors as ``TemplateError``.

Two sandboxes (docs/guarantees.md#template-sandbox): one with HTML autoescaping for
``message.html``, one without for ``message.txt`` and ``subject.txt`` (escaping
a plain-text part would show ``&amp;`` to readers). Both are
``ImmutableSandboxedEnvironment`` with ``StrictUndefined``: an undefined or
misspelt variable is an error, never an empty string, and a template cannot
reach Python internals (``''.__class__`` raises ``SecurityError``) or mutate
the data it is given.

Templates load only from the project's ``templates/`` folder: names with
``..``, absolute paths or backslashes are refused, and a symlink pointing out
of the folder is treated as missing. Every Jinja failure becomes a
``TemplateError`` whose message starts with ``file:line``.
"""

from __future__ import annotations

import difflib
import functools
import os
import re
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from datetime import date, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from jinja2 import (
    ChainableUndefined,
    FileSystemLoader,
    StrictUndefined,
    Template,
    TemplateNotFound,
    Undefined,
    nodes,
    pass_context,
)
from jinja2.exceptions import SecurityError, TemplateSyntaxError, UndefinedError
from jinja2.runtime import LoopContext
from jinja2.sandbox import ImmutableSandboxedEnvironment
from markupsafe import Markup
from markupsafe import escape as _escape

from mailcli.errors import MailcliError, TemplateError

from . import limits

# A template folder or file name: plain path segments, no "..", no leading "/".
_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\- ]*$")

Transform = Callable[[str, str], str]


def check_template_path(name: str) -> str:
    """Refuse template names that could leave the templates folder."""
    if not name or "\\" in name or name.startswith("/") or "\x00" in name:
        raise TemplateError(f"Invalid template path {name!r}: use a name inside templates/")
    for part in name.split("/"):
        if part in ("", ".", "..") or not _SEGMENT.match(part):
            raise TemplateError(
                f"Invalid template path {name!r}: '..' and unusual characters are not allowed",
                hint="templates, layouts and partials live inside the project's templates/ folder",
            )
    return name


class ConfinedLoader(FileSystemLoader):
    """A ``FileSystemLoader`` that cannot be talked out of its folder.

    ``transform(name, source)`` lets lint add markers to the source without a
    second copy of the loading rules.
    """

    def __init__(self, root: Path, transform: Transform | None = None) -> None:
        super().__init__(str(root), encoding="utf-8", followlinks=False)
        self.root = root
        self._real_root = os.path.realpath(root)
        self._transform = transform

    def get_source(self, environment: Any, template: str) -> tuple[str, str, Callable[[], bool]]:
        check_template_path(template)
        source, filename, uptodate = super().get_source(environment, template)
        real = os.path.realpath(filename)
        if not real.startswith(self._real_root + os.sep):
            raise TemplateNotFound(template)
        if self._transform is not None:
            source = self._transform(template, source)
        return source, filename, uptodate


def _remembering(function: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``function`` remembering what it returned for short strings.

    The cache holds at most 4,096 strings of under 256 characters and starts
    over when full; anything else goes to ``function`` every time. Only for
    pure functions of their one argument.
    """
    cache: dict[str, Any] = {}

    def remembered(value: Any) -> Any:
        if value.__class__ is str and len(value) < 256:
            try:
                return cache[value]
            except KeyError:
                if len(cache) >= 4096:
                    cache.clear()
                result = cache[value] = function(value)
                return result
        return function(value)

    return remembered


def _cached_escape() -> Callable[[Any], Markup]:
    """``markupsafe.escape`` remembering the short strings it has escaped.

    A personalised newsletter writes the same few contact fields dozens of
    times per message (``{{ contact.city }}`` in every section), and each
    autoescaped output builds a new ``Markup``, a large share of the Jinja
    time (benchmarks/README.md). ``Markup`` is an immutable ``str``, so one
    escaped copy serves every later use of the same text.
    """
    return _remembering(_escape)


# A template that is nothing but text and ``{{ name }}`` / ``{{ name.attr }}``
# outputs: (autoescape, pieces), each piece literal text or a (name, attr or
# None) field. The compiled module carries it as a constant (see
# MailEnvironment._generate), so it survives every way Jinja caches templates.
FlatPlan = tuple[bool, tuple[str | tuple[str, str | None], ...]]
_FLAT_NAME = "__mailcli_flat__"


def flat_plan(tree: nodes.Template, autoescape: bool) -> FlatPlan | None:
    """The plan of a template made only of text and plain field outputs, else None."""
    pieces: list[str | tuple[str, str | None]] = []
    for statement in tree.body:
        if type(statement) is not nodes.Output:
            return None  # control flow, blocks, extends, includes, macros, set...
        for child in statement.nodes:
            kind = type(child)
            if kind is nodes.TemplateData:
                pieces.append(child.data)  # type: ignore[attr-defined]
            elif kind is nodes.Name and child.ctx == "load":  # type: ignore[attr-defined]
                pieces.append((child.name, None))  # type: ignore[attr-defined]
            elif kind is nodes.Getattr and type(child.node) is nodes.Name:  # type: ignore[attr-defined]
                pieces.append((child.node.name, child.attr))  # type: ignore[attr-defined]
            else:
                return None  # filters, calls, tests, operators, literals...
    return autoescape, tuple(pieces)


class FlatRender:
    """Renders a :data:`FlatPlan`: each distinct field is looked up and
    converted once and written into its places, instead of once per place
    through the compiled template's generator.

    A personalised newsletter repeats its few fields dozens of times (a
    handful of distinct fields in well over a hundred outputs): this does the
    same work as Jinja in a fraction of the time (benchmarks/README.md). It
    looks names up where Jinja does (the
    variables, then the template globals), fields through the environment's
    ``getattr`` (the sandbox) and converts with ``escape`` or ``str`` as the
    compiled code would. Anything unusual (a missing name, an undefined field,
    an error) returns None, and the caller renders through Jinja, which
    produces the output or the error exactly as before.
    """

    def __init__(self, environment: MailEnvironment, plan: FlatPlan) -> None:
        autoescape, pieces = plan
        self._getattr = environment.getattr
        self._convert: Callable[[Any], str] = environment.fast_escape if autoescape else str
        self._parts: list[str] = [p if isinstance(p, str) else "" for p in pieces]
        places: dict[tuple[str, str | None], list[int]] = {}
        for index, piece in enumerate(pieces):
            if not isinstance(piece, str):
                places.setdefault(piece, []).append(index)
        self._fields = [(name, attr, tuple(at)) for (name, attr), at in places.items()]

    def __call__(self, variables: dict[str, Any], globals: Mapping[str, Any]) -> str | None:
        parts = self._parts.copy()
        try:
            for name, attr, places in self._fields:
                value = variables[name] if name in variables else globals[name]
                if attr is not None:
                    value = self._getattr(value, attr)
                if isinstance(value, Undefined):
                    return None
                text = self._convert(value)
                for index in places:
                    parts[index] = text
        except Exception:  # noqa: BLE001 - Jinja renders it again and reports the error properly
            return None
        return "".join(parts)


class MailTemplate(Template):
    """A template whose autoescaped output goes through ``_cached_escape``,
    and which renders through :class:`FlatRender` when its plan allows.

    Compiled template code calls the ``escape`` of its own module namespace;
    this replaces that one name when the namespace is made. Should a Jinja
    release rename the hook, templates still render, with the plain escape.
    """

    _flat: FlatRender | None = None

    @classmethod
    def _from_namespace(cls, environment: Any, namespace: MutableMapping[str, Any], globals: Any) -> Any:
        if namespace.get("escape") is _escape:
            namespace["escape"] = environment.fast_escape
        template: MailTemplate = super()._from_namespace(environment, namespace, globals)  # type: ignore[misc, assignment]
        plan = namespace.get(_FLAT_NAME)
        if plan is not None and isinstance(environment, MailEnvironment) and environment.finalize is None:
            template._flat = FlatRender(environment, plan)
        return template

    @property
    def renders_flat(self) -> bool:
        """Whether this template renders by filling in its fields, without
        Jinja's generated code (it is only text and plain field outputs)."""
        return self._flat is not None

    def render(self, *args: Any, **kwargs: Any) -> str:
        flat = self._flat
        if flat is not None and len(args) == 1 and not kwargs and type(args[0]) is dict:
            text = flat(args[0], self.globals)
            if text is not None:
                return text
        started = limits.start()
        try:
            return super().render(*args, **kwargs)
        except limits.RenderLimit as exc:
            exc.filename = exc.filename or self.filename  # the output's join runs outside its frames
            raise
        finally:
            if started:
                limits.stop()


def _sized_filter(function: Callable[..., Any]) -> Callable[..., Any]:
    """A filter whose numeric arguments (a width) are checked against the size limit first."""
    def sized(*args: Any, **kwargs: Any) -> Any:
        limits.check_arguments(args[1:], kwargs)
        return function(*args, **kwargs)

    for attribute in ("jinja_pass_arg",):  # keep how Jinja passes the environment or context
        if hasattr(function, attribute):
            setattr(sized, attribute, getattr(function, attribute))
    return sized


def _cached_urlencode(urlencode: Callable[[Any], str]) -> Callable[[Any], str]:
    """Jinja's ``urlencode`` remembering the strings it has quoted.

    Tracking links quote the same values (the address, the campaign, an
    article's category) in every item of a loop and in every message; quoting
    goes through ``urllib.parse`` each time.
    """
    return _remembering(urlencode)


# What a template may read of the ``loop`` variable: plain values, read
# without the sandbox's checks (they are properties of Jinja's own class).
_LOOP_FIELDS = frozenset(
    {"index", "index0", "revindex", "revindex0", "first", "last", "length", "depth", "depth0",
     "previtem", "nextitem"}
)


class MailEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox, with ``contact.city`` looking up the key first.

    Template data are plain dicts, never objects with methods. Jinja tries
    the attribute first and the key only after an AttributeError, which made
    every ``contact.x`` raise and catch an exception in the sandbox, a large
    share of the render time (benchmarks/README.md). Looking the key up first
    is also what users mean: a CSV column called ``items`` or ``keys`` yields
    the value, not a dict method. Anything that is not a plain dict goes
    through the sandbox as before.
    """

    template_class = MailTemplate
    # ``*`` and ``**`` are checked for the size of what they would make
    # (mailcli.render.limits); the other operators cannot outgrow their operands.
    intercepted_binops = frozenset({"*", "**"})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fast_escape = _cached_escape()
        self.filters["urlencode"] = _cached_urlencode(self.filters["urlencode"])
        for name in ("center", "indent", "wordwrap", "truncate"):
            self.filters[name] = _sized_filter(self.filters[name])
        self.globals["range"] = limits.bounded_range
        self.concat = limits.bounded_concat  # type: ignore[method-assign, assignment]
        self.filters["date"] = _date_filter

    def make_globals(self, d: MutableMapping[str, Any] | None) -> MutableMapping[str, Any]:
        """A template's globals as a plain dict: the environment's, then its own.

        Jinja gives every template a ``ChainMap`` over the environment's
        globals, so that globals added to the environment later still show.
        Every render then copies it into the context and takes the set of its
        keys, and every ``{% import %}`` compares those keys with the imported
        template's, all through ``ChainMap``'s Python-level iteration: about a
        fifth of the CPU time of building a newsletter (benchmarks/README.md).
        The environment's globals are complete once ``__init__`` has run, so
        a copy holds the same names and values, and a template's own globals
        (``get_template(globals=...)``) still reach only that template.
        """
        return {**self.globals, **(d or {})}

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        limits.check_binop(operator, left, right)
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 - Jinja's signature
        if isinstance(getattr(__obj, "__self__", None), str):  # 'x'.center(10**9), 'x'.zfill(...)
            limits.check_arguments(args, kwargs)
        return super().call(__context, __obj, *args, **kwargs)

    def _generate(self, source: nodes.Template, name: str | None, filename: str | None,
                  defer_init: bool = False) -> str:
        from .unroll import unroll_constant_loops

        unroll_constant_loops(self, source)
        code = super()._generate(source, name, filename, defer_init=defer_init)
        autoescape = self.autoescape(name) if callable(self.autoescape) else bool(self.autoescape)
        plan = flat_plan(source, autoescape)
        if plan is not None:
            code += f"\n{_FLAT_NAME} = {plan!r}\n"
        return code

    def getattr(self, obj: Any, attribute: str) -> Any:
        kind = type(obj)
        if kind is dict:
            try:
                return obj[attribute]
            except KeyError:
                pass
        elif kind is LoopContext and attribute in _LOOP_FIELDS:
            return getattr(obj, attribute)
        return super().getattr(obj, attribute)


@pass_context
def _date_filter(context: Any, value: Any, form: str = "long") -> str:
    """``{{ now|date("long") }}``: a date as the recipient's language writes it
    (Babel; ``short``, ``medium``, ``long``, ``full`` or a CLDR pattern such as
    ``d MMMM``)."""
    if not isinstance(value, date):
        raise TypeError(f"date expects a date or a time, not {type(value).__name__}")
    language = context.get("language")
    day = value.date() if isinstance(value, datetime) else value
    return _written_date(day, str(form), language if isinstance(language, str) else "en")


@functools.lru_cache(maxsize=512)
def _written_date(day: date, form: str, language: str) -> str:
    """``locales.format_date``, kept per day: a newsletter writes the same date
    into every message, and importing the function on every call made the
    filter five times slower (benchmarks/README.md)."""
    from ..locales import format_date

    return format_date(day, form, language)


def make_environment(
    root: Path, *, html: bool, transform: Transform | None = None, strict: bool = True
) -> ImmutableSandboxedEnvironment:
    """A sandbox for one kind of output: ``html=True`` escapes, otherwise not.

    ``strict=False`` (lint only) renders undefined variables as empty, so the
    remaining checks can still run on a template with a misspelt name.
    """
    return MailEnvironment(
        loader=ConfinedLoader(root, transform),
        autoescape=html,
        undefined=StrictUndefined if strict else ChainableUndefined,
        # Block tags on their own line leave no blank line behind: matters for
        # the text part, harmless for HTML.
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
        auto_reload=False,
    )


def display_path(path: str | os.PathLike[str]) -> str:
    """A path as users should see it: relative to the working folder when inside it."""
    text = os.fspath(path)
    try:
        rel = os.path.relpath(text)
    except ValueError:
        return text
    return text if rel.startswith("..") else rel


def template_location(tb: TracebackType | None, root: Path) -> tuple[str, int] | None:
    """The innermost template frame of a rewritten Jinja traceback."""
    real_root = os.path.realpath(root) + os.sep
    found: tuple[str, int] | None = None
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if filename and os.path.realpath(filename).startswith(real_root):
            found = (filename, tb.tb_lineno)
        tb = tb.tb_next
    return found


_ATTR_MISSING = re.compile(r"has no attribute '([^']*)'")
_NAME_UNDEFINED = re.compile(r"^'([^']*)' is undefined")
_KEY_MISSING = re.compile(r"has no element '?([^']*?)'?$")


def suggest(name: str, known: Iterable[str]) -> str | None:
    """The nearest known name, for "did you mean" hints."""
    matches = difflib.get_close_matches(name, list(known), n=1, cutoff=0.75)
    return matches[0] if matches else None


def _source_line(filename: str, line: int) -> str:
    try:
        with open(filename, encoding="utf-8") as handle:
            for number, text in enumerate(handle, 1):
                if number == line:
                    return text
    except OSError:
        pass
    return ""


def undefined_name(exc: UndefinedError, line_text: str) -> tuple[str, str | None]:
    """``(dotted name, parent)`` of the undefined variable, e.g. ``contact.frist_name``."""
    message = str(exc)
    match = _NAME_UNDEFINED.match(message)
    if match:
        return match.group(1), None
    match = _ATTR_MISSING.search(message) or _KEY_MISSING.search(message)
    if match:
        attr = match.group(1)
        # Recover the full dotted name from the template line, so the message
        # says contact.frist_name rather than "dict object".
        escaped = re.escape(attr)
        dotted = re.search(rf"([A-Za-z_][\w.]*)\.{escaped}\b", line_text)
        if dotted:
            return f"{dotted.group(1)}.{attr}", dotted.group(1)
        dotted = re.search(rf"([A-Za-z_][\w.]*)\[['\"]{escaped}['\"]\]", line_text)
        if dotted:
            return f"{dotted.group(1)}.{attr}", dotted.group(1)
        return attr, None
    return message, None


# Complexity: one branch per kind of Jinja error, each turned into its own file:line message.
def translate(exc: BaseException, root: Path, variables: dict[str, Any] | None = None) -> MailcliError:
    """Turn any failure inside Jinja into a one-line ``TemplateError`` with ``file:line``."""
    if isinstance(exc, MailcliError):
        return exc
    if isinstance(exc, TemplateSyntaxError):
        where = f"{display_path(exc.filename)}:{exc.lineno}" if exc.filename else f"{exc.name or 'template'}:{exc.lineno}"
        return TemplateError(f"{where}: {exc.message}")
    location = template_location(exc.__traceback__, root)
    where = f"{display_path(location[0])}:{location[1]}" if location else "template"
    if isinstance(exc, TemplateNotFound):
        return TemplateError(f"{where}: template {exc.name!r} not found in {display_path(root)}")
    if isinstance(exc, SecurityError):
        return TemplateError(
            f"{where}: not allowed in a template: {exc}",
            hint="templates run in a sandbox and can only read the data they are given",
        )
    if isinstance(exc, limits.RenderLimit):
        if location is None and exc.filename:
            where = display_path(exc.filename)
        return TemplateError(f"{where}: {exc}",
                             hint="a loop or a value that grows without bound; the limits are [render] timeout"
                                  " and max_size_mb in mailcli.toml")
    if isinstance(exc, UndefinedError):
        line_text = _source_line(location[0], location[1]) if location else ""
        name, parent = undefined_name(exc, line_text)
        near = _nearest(name, parent, variables) if variables is not None else None
        suffix = f" (did you mean {near}?)" if near else ""
        return TemplateError(f"{where}: undefined variable {name}{suffix}")
    return TemplateError(f"{where}: {type(exc).__name__}: {exc}")


def _nearest(name: str, parent: str | None, variables: dict[str, Any]) -> str | None:
    """The known variable (or field of ``parent``) nearest to an undefined ``name``."""
    if parent is None:
        return suggest(name, variables) if "." not in name else None
    base = variables.get(parent.split(".")[0])
    if isinstance(base, Mapping) and "." not in parent:
        close = suggest(name.rsplit(".", 1)[-1], base.keys())
        return f"{parent}.{close}" if close else None
    return None
