"""From one CSV record to a staged row, a reject or an opt-out.

Every record becomes one of:

* a :data:`~mailcli.importrows.StagedRow`: the address normalised
  (:func:`mailcli.addresses.normalise_pair`), names stripped (and cleaned of
  control characters), the consent time and network
  (:mod:`mailcli.importer.values`), the other columns as a compact JSON
  object of attributes — the tuple the store stages, built without a dict
  or a row object in between;
* a :class:`~mailcli.importrows.RowReject` with the reason and the cells as
  they were: a missing or invalid address, more fields than the header, a
  field over 64 KiB or a NUL byte (cells are data: nothing in them is
  evaluated, and these are none), a consent time that cannot be read or lies
  in the future — never silently replaced by the import time;
* an :class:`~mailcli.importrows.OptOut` when an unsubscribed or cleaned
  column is filled in, whatever the row's other cells hold;
* or nothing, for a blank record (``;;;`` left by Excel)

(docs/guarantees.md#every-row-counted).

This runs once per record of a file of millions, so the plan is bound to
local variables of a closure once per file, and the common case runs
without a function call it can do without (benchmarks/README.md, "The row
parser").
"""

from __future__ import annotations

from collections.abc import Callable
from json.encoder import encode_basestring

from mailcli.addresses import AddressError, normalise_pair
from mailcli.importer.columns import ColumnPlan
from mailcli.importer.values import (
    DATES,
    OCTETS,
    PLAIN_TIME,
    cut_cell,
    known_date,
    parse_consent_time,
    truncate_ip,
)
from mailcli.importrows import MAX_FIELD_CHARS, OptOut, RowReject, StagedRow, clean_name

Parsed = StagedRow | RowReject | OptOut | None
RowParser = Callable[[int, list[str]], Parsed]
Reject = Callable[[int, str, list[str]], RowReject]


def rejecter(headers: tuple[str, ...]) -> Reject:
    """``reject(line, reason, cells)``: a RowReject with the cells by header."""

    def reject(line: int, reason: str, row: list[str]) -> RowReject:
        raw: dict[str, str] = {}
        for i, cell in enumerate(row):
            name = headers[i] if i < len(headers) else f"column_{i + 1}"
            if name in raw:  # a repeated header: keep every cell, in order
                name = f"{name} ({i + 1})"
            raw[name] = cut_cell(cell)
        return RowReject(line, reason, raw)

    return reject


def row_parser(plan: ColumnPlan, now_limit: str) -> RowParser:
    """The function that turns ``(line, cells)`` into what the record is.

    ``now_limit`` is the latest consent time accepted (ISO-8601 UTC).
    """
    reject = rejecter(plan.headers)
    parse: RowParser = _contact_parser(plan, now_limit, reject)
    if plan.last_name_prefix is not None and plan.last_name is not None:
        parse = _with_last_name_prefix(parse, plan.last_name_prefix, plan.last_name, reject)
    if plan.cleaned or plan.opted_out:
        parse = _with_opt_outs(parse, plan)
    return parse


def _contact_parser(plan: ColumnPlan, now_limit: str, reject: Reject) -> RowParser:
    width = len(plan.headers)
    email_at = plan.email
    first_at, last_at, name_at = plan.first_name, plan.last_name, plan.name
    consent_time, consent_ip = plan.consent_time, plan.consent_ip
    normalise, quote, clean = normalise_pair, encode_basestring, clean_name
    consent_at_of, network_of = parse_consent_time, truncate_ip
    plain_time, dates, is_date, octets = PLAIN_TIME, DATES, known_date, OCTETS
    # Attribute names are identifiers (columns.attribute_name): only the
    # values need JSON quoting. One attribute column (a city, a customer
    # number) is common: its object is built without a list and a join.
    json_keys = [(f'"{name}":', index) for name, index in plan.attributes]
    single = (json_keys[0][1], "{" + json_keys[0][0]) if len(json_keys) == 1 else None

    # The hot path: complexity over 15 because each branch is a column kind,
    # inline to spare a call per row (benchmarks/README.md, "The row parser").
    def parse(line: int, row: list[str]) -> Parsed:
        if len(row) != width:
            fitted = _fit(line, row, width, reject)
            if type(fitted) is not list:
                return fitted  # type: ignore[return-value]
            row = fitted
        joined = "".join(row)
        if (len(joined) > MAX_FIELD_CHARS or "\x00" in joined) and (problem := _cell_problem(row, joined)):
            return reject(line, problem, row)
        try:
            email, key = normalise(row[email_at])
        except AddressError as exc:
            return _no_address(line, row, row[email_at], exc, joined, reject)
        first = last = None
        if first_at is not None:
            first = row[first_at].strip()
            if not first.isprintable():
                first = clean(first)
        if last_at is not None:
            last = row[last_at].strip()
            if not last.isprintable():
                last = clean(last)
        if name_at is not None and (full := clean(row[name_at])):
            if full.count(",") == 1:
                first, last = _last_comma_first(full)
            else:
                first, _, rest = full.partition(" ")
                last = rest.strip()
        consent_at = None
        for index in consent_time:
            value = row[index].strip()
            if value:
                # The common shape, "2023-04-01 10:12:33" (UTC), without a
                # call; parse_consent_time reads the others the same way.
                if len(value) == 19 and plain_time(value) is not None and (dates.get(day := value[:10]) or is_date(day)):
                    consent_at = f"{day}T{value[11:]}Z"
                else:
                    try:
                        consent_at = consent_at_of(value)
                    except ValueError:
                        return reject(line, f"bad consent time {value!r}", row)
                if consent_at > now_limit:
                    return reject(line, f"consent time in the future {value!r}", row)
                break
        ip = None
        for index in consent_ip:
            value = row[index].strip()
            if value:
                quad = value.split(".")  # a dotted IPv4 address without a call; truncate_ip reads the rest
                if len(quad) == 4 and quad[0] in octets and quad[1] in octets and quad[2] in octets \
                        and quad[3] in octets:
                    ip = f"{quad[0]}.{quad[1]}.{quad[2]}.0/24"
                else:
                    try:
                        ip = network_of(value)
                    except ValueError:
                        return reject(line, f"bad consent IP address {value!r}", row)
                break
        spelled = email if email != key else None  # see StagedRow
        if single is not None:
            value = row[single[0]].strip()
            return (line, spelled, key, first or None, last or None,
                    single[1] + quote(value) + "}" if value else "{}", consent_at, ip)
        parts = [prefix + quote(value) for prefix, index in json_keys if (value := row[index].strip())]
        return (line, spelled, key, first or None, last or None,
                "{" + ",".join(parts) + "}" if parts else "{}", consent_at, ip)

    return parse


# Dutch surname prefixes, written after the first name in "Vries, Lies de".
_PREFIX_WORDS = frozenset({"van", "de", "der", "den", "het", "'t", "ter", "ten", "te", "in", "op", "von", "la", "le"})


def _last_comma_first(full: str) -> tuple[str, str]:
    """``Berg, Jan`` → (``Jan``, ``Berg``): a name written last name first, as
    many Dutch systems export it; the prefix the Dutch write after the first
    name joins the last name (``Vries, Lies de`` → ``Lies`` / ``de Vries``)."""
    last, _, first = full.partition(",")
    last, words = last.strip(), first.split()
    cut = len(words)
    while cut > 1 and words[cut - 1] in _PREFIX_WORDS:
        cut -= 1
    if cut < len(words) and last:
        last = " ".join([*words[cut:], last])
    return " ".join(words[:cut]), last


def _fit(line: int, row: list[str], width: int, reject: Reject) -> list[str] | RowReject | None:
    """A record with more or fewer fields than the header: padded, or cut
    when the extra fields are empty; else rejected (or nothing, if blank)."""
    if len(row) > width:
        if any(cell.strip() for cell in row[width:]):
            return reject(line, f"{len(row)} fields but the header has {width}", row)
        return row[:width]
    if not any(cell.strip() for cell in row):
        return None  # a blank record (";;;" left by Excel) is no row
    return row + [""] * (width - len(row))


def _cell_problem(row: list[str], joined: str) -> str | None:
    """Why a record whose text is long or holds a NUL byte is rejected, if it is."""
    if len(joined) > MAX_FIELD_CHARS and max(map(len, row)) > MAX_FIELD_CHARS:
        return f"field longer than {MAX_FIELD_CHARS // 1024} KiB"
    if "\x00" in joined:
        return "NUL byte in row"
    return None


def _no_address(line: int, row: list[str], cell: str, exc: AddressError, joined: str, reject: Reject
                ) -> RowReject | None:
    """A record whose address cell does not hold one: rejected, or nothing if blank."""
    if cell.strip():
        return reject(line, f"invalid email address: {exc.reason}", row)
    if not joined.strip():
        return None
    return reject(line, "missing email address", row)


def _with_last_name_prefix(parse: RowParser, prefix_at: int, last_at: int, reject: Reject) -> RowParser:
    """``parse`` with the Dutch name prefix (``van der``) put in front of the last name."""

    def parse_with_prefix(line: int, row: list[str]) -> Parsed:
        if prefix_at < len(row) and last_at < len(row) and (prefix := " ".join(row[prefix_at].split())):
            joined = row.copy()
            last = joined[last_at].strip()
            joined[last_at] = f"{prefix} {last}" if last else prefix
            result = parse(line, joined)
            if type(result) is RowReject:  # the rejects file shows the cells as they were
                return reject(line, result.reason, row)
            return result
        return parse(line, row)

    return parse_with_prefix


def _with_opt_outs(parse: RowParser, plan: ColumnPlan) -> RowParser:
    """``parse`` with the rows whose unsubscribed or cleaned column is filled
    in as opt-outs. Checked first: a cell that would reject a subscription (a
    bad consent time, say) must not lose a person's opt-out."""
    left = [(index, "bounced") for index in plan.cleaned] + [(index, "unsubscribed") for index in plan.opted_out]
    email_at = plan.email

    def parse_or_opt_out(line: int, row: list[str]) -> Parsed:
        kind = value = ""
        for index, each in left:
            if index < len(row) and (value := row[index].strip()):
                kind = each
                break
        if not kind:
            return parse(line, row)
        try:
            _, key = normalise_pair(row[email_at]) if email_at < len(row) else ("", "")
        except AddressError:
            key = ""
        if not key:
            return parse(line, row)  # rejected there, with the reason
        try:
            at: str | None = parse_consent_time(value)
        except ValueError:
            at = None
        return OptOut(line, key, kind, at)

    return parse_or_opt_out
