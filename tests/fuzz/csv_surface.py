"""Fuzzing the CSV reader end to end: ``mailcli import`` of generated contact files.

Three kinds of input:

* **model** files: a table of known cells written with a random delimiter,
  quoting, line end, encoding (UTF-8 with or without BOM, UTF-16, cp1252,
  or UTF-8 and cp1252 mixed line by line), huge fields, many columns and
  BOMs inside cells. Besides the shared invariants, every row must come out
  as meant: an accepted row reads back with the very text of its cells, a
  rejected one is in the rejects file with its cells (cut over the field
  limit), the counts add up and the lines read as cp1252 are the ones named;
* **mutated** model files: bytes flipped, cut, repeated, quotes and NULs
  put in — only the shared invariants;
* **random bytes**, with or without a header line in front.

Some files are imported twice, read in this process and by the two worker
processes that read big files, and both results must be the same.
"""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.fuzz.engine import Draw, Invariants, Violation, chance, choice, dump, mutate

MAX_FIELD_CHARS = 64 * 1024
EMAIL_HEADERS = ["email", "Email Address", "E-mailadres", "e-mail", "MAIL", "\ufeffemail", " Email "]
FIRST_HEADERS = ["first_name", "First Name", "Voornaam", "FNAME"]
LAST_HEADERS = ["last_name", "Last Name", "Achternaam", "LNAME"]
EXTRA_HEADERS = ["City", "Member Rating", "Plaats", "notes", "=cmd|' /C calc'!A0", "Straße", "日本語", "",
                 "2nd phone", "lists", "status", "city", "Notes ", "sep=;", "\ufeffBOM", "a,b", 'say "hi"']
DOMAINS = ["example.org", "EXAMPLE.NET", "bücher.example", "xn--bcher-kva.example", "sub.ex-ample.co.uk"]
LOCALS = ["u", "Ann.Smith", "o'neil", "x+tag", "ÄÖ", "用户", "a_b-c", "\"quoted local\""]
INVALID = ["", " ", "not an address", "a@@b.example", "@example.org", "x" * 70 + "@example.org",
           "a@example.org\nBcc: x@example.net", "a b@example.org", "<a@example.org>", "a@example.org, b@example.org",
           "a@-bad-.example", "a@" + "b" * 64 + ".example", "mailto:a@example.org", "a@example.org\x00"]
CELLS = ["", "  padded  ", 'quote"inside', "comma,inside", "semi;colon", "tab\tinside", "pipe|inside", "new\nline",
         "cr\rline", "crlf\r\nline", "=1+2", "+31 6 1234", "-minus", "@at", "José", "Zoë", "€ 5", "Ã©", "日本",
         "😀", "\u200b", "\x1b[31mred", "\ufeffbom", "sep=;", "\u2028sep", "ÉÀ\xa0x", "\\", "'", "  ", "\x85"]


@dataclass
class Case:
    data: bytes
    args: list[str]
    model: Model | None = None
    parallel: bool = False
    description: str = ""


@dataclass
class Model:
    headers: list[str]
    rows: list[list[str]]
    lines: list[int]  # physical start line of each row
    exact: bool  # the file decodes to the text written (see _expected_reencoded)
    reencoded: list[int]  # the lines the import must name as read otherwise than the file's encoding


def physical_lines(text: str) -> int:
    return text.count("\n") + text.count("\r") - text.count("\r\n")


class CsvSurface:
    name = "csv"

    def __init__(self, workdir: Path, invariants: Invariants | None = None) -> None:
        self.workdir = workdir
        self.invariants = invariants or Invariants(seconds=60, megabytes=600)
        self.base = workdir / "base"
        self.project = workdir / "project"
        run = self.invariants.run
        run(["init", str(self.base)], workdir, {0})
        (self.base / "seed.csv").write_text("email,first_name\nann@example.org,Ann\nbob@example.org,Bob\n"
                                            "carl@example.org,Carl\n", encoding="utf-8")
        run(["import", "seed.csv", "--list", "news", "--basis", "customer"], self.base, {0})
        run(["unsubscribe", "carl@example.org"], self.base, {0})
        self.stats = {"model": 0, "round trips": 0, "rows compared": 0, "mutated": 0, "random bytes": 0,
                      "read by two workers": 0, "refused": 0}

    # ------------------------------------------------------------ generate

    def generate(self, draw: Draw) -> Case:
        kind = draw.integer(0, 9)
        if kind <= 5:
            return self._model_case(draw)
        if kind <= 8:
            case = self._model_case(draw)
            return Case(mutate(draw, case.data, times=6), [a for a in case.args if a != "--strict"],
                        description="mutated " + case.description)
        head = choice(draw, [b"", b"email\n", b"email,first_name\r\n", b"\xef\xbb\xbfemail;naam\n", b"sep=|\n"])
        return Case(head + draw.bytes(400), ["--rejects", "rejects.csv"], description="random bytes")

    def _model_case(self, draw: Draw) -> Case:
        from mailcli.importer import plan_columns

        headers = [choice(draw, EMAIL_HEADERS)]
        if chance(draw, 70):
            headers.append(choice(draw, FIRST_HEADERS))
        if chance(draw, 50):
            headers.append(choice(draw, LAST_HEADERS))
        extra = draw.integer(0, 200) if chance(draw, 5) else draw.integer(0, 3)
        for i in range(extra):
            name = choice(draw, EXTRA_HEADERS) if chance(draw, 70) else draw.text(8)
            headers.append(name if i < 3 else f"{name}{i}")
        order = list(range(len(headers)))
        for i in range(len(order) - 1, 0, -1):
            j = draw.integer(0, i)
            order[i], order[j] = order[j], order[i]
        headers = [headers[i] for i in order]
        try:
            plan = plan_columns([h.strip().lstrip("\ufeff") for h in headers], None, "x")
        except Exception:  # noqa: BLE001 - no usable email column: the file is refused, which is checked too
            plan = None
        if plan is not None and (plan.consent_time or plan.consent_ip or plan.opted_out or plan.cleaned
                                 or plan.last_name_prefix is not None or plan.name is not None):
            plan = None  # a cell that is read as a time, an IP or an opt-out: not a plain round trip
        rows = []
        for i in range(draw.integer(0, 25)):
            row = []
            for column in range(len(headers)):
                if plan is not None and column == plan.email:
                    row.append(self._email(draw, i))
                else:
                    row.append(self._cell(draw))
            rows.append(row)
        delimiter = choice(draw, [",", ";", "\t", "|"])
        quoting = choice(draw, [csv.QUOTE_MINIMAL, csv.QUOTE_ALL])
        ending = choice(draw, ["\n", "\r\n", "\r\n", "\n", "\r"]) if chance(draw, 90) else "\r"
        buffer = io.StringIO()
        # Written with CRLF, so that a cell holding either is quoted (the csv
        # module quotes only the characters of the terminator it writes).
        writer = csv.writer(buffer, delimiter=delimiter, quoting=quoting, lineterminator="\r\n")
        records = []
        for record in [headers, *rows]:
            buffer.seek(0)
            buffer.truncate()
            writer.writerow(record)
            records.append(buffer.getvalue()[:-2] + ending)
        encoding = choice(draw, ["utf-8", "utf-8", "utf-8-sig", "cp1252", "mixed", "mixed", "utf-16", "cp1252-mixed"])
        encoded, data = self._encode(draw, records, encoding)
        args = ["--rejects", "rejects.csv"]
        if chance(draw, 40):
            args += ["--delimiter", "tab" if delimiter == "\t" else delimiter]
        single = {e for _, e in encoded}
        if len(single) == 1 and chance(draw, 30):
            args += ["--encoding", single.pop()]
        if chance(draw, 20):
            args.append("--strict")
        lines, line = [], 1 + physical_lines(records[0])
        for record in records[1:]:
            lines.append(line)
            line += physical_lines(record)
        model = None
        if plan is not None:
            exact, reencoded = True, []
            if encoding != "utf-16" and "--encoding" not in args:
                exact, reencoded = self._expected_reencoded(data, encoded)
            model = Model(headers, rows, lines, exact, reencoded)
        return Case(data, args, model, parallel=chance(draw, 8) and len(data) > 200,
                    description=f"model {encoding} {delimiter!r} {len(rows)} rows {len(headers)} columns")

    def _email(self, draw: Draw, i: int) -> str:
        if chance(draw, 15):
            return choice(draw, INVALID)
        local = choice(draw, LOCALS)
        local = f"{local[:-1]}{i}\"" if local.startswith('"') else f"{local}{i}"
        address = f"{local}@{choice(draw, DOMAINS)}"
        if chance(draw, 20):
            address = address.upper() if chance(draw, 50) else f"  {address}\t"
        return address

    def _cell(self, draw: Draw) -> str:
        roll = draw.integer(1, 100)
        if roll <= 50:
            return choice(draw, CELLS)
        if roll <= 90:
            return draw.text(12)
        if roll <= 97:
            return choice(draw, CELLS) + draw.text(4) + choice(draw, CELLS)
        if roll <= 99:
            if chance(draw, 3):  # a field of megabytes: rejected, and cut in the rejects file
                return "y" * draw.integer(1, 3 * 1024 * 1024)
            return "x" * draw.integer(MAX_FIELD_CHARS - 2, MAX_FIELD_CHARS + 2)
        return "A\x00B"

    def _encode(self, draw: Draw, records: list[str], encoding: str) -> tuple[list[tuple[str, str]], bytes]:
        """Each record's text and encoding, and the file's bytes."""
        out: list[tuple[str, str]] = []
        parts = []
        for index, record in enumerate(records):
            codec = encoding
            if encoding == "mixed":
                codec = "cp1252" if index and chance(draw, 25) else "utf-8"
            elif encoding == "cp1252-mixed":
                codec = "utf-8" if index and chance(draw, 25) else "cp1252"
            elif encoding in ("utf-8-sig", "utf-16"):
                codec = encoding if index == 0 else {"utf-8-sig": "utf-8", "utf-16": "utf-16-le"}[encoding]
            try:
                encoded = record.encode(codec)
            except UnicodeEncodeError:
                if encoding.startswith("utf-16"):
                    encoded, codec = record.encode(codec, "surrogatepass"), codec
                else:
                    codec = "utf-8"
                    encoded = record.encode(codec)
            out.append((record, codec))
            parts.append(encoded)
        return out, b"".join(parts)

    def _expected_reencoded(self, data: bytes, encoded: list[tuple[str, str]]) -> tuple[bool, list[int]]:
        """Whether the file's lines decode to the text written, and the lines
        the import must name as read otherwise than the file's encoding.

        Each line is UTF-8 if it is valid UTF-8, else cp1252: cp1252 text that
        happens to be valid UTF-8 ("Ã©") is read as UTF-8, by design, and then
        the round trip is not expected to hold.
        """
        from mailcli.importer import HEAD_BYTES, detect_encoding
        from mailcli.importer.decoding import decode_windows_1252

        try:
            primary = detect_encoding(data[:HEAD_BYTES], "x", complete=len(data) <= HEAD_BYTES)
        except Exception:  # noqa: BLE001 - a file that looks binary is refused; checked with the refusal
            return False, []
        body = data[3:] if data.startswith(b"\xef\xbb\xbf") else data
        expected, decoded, line = [], [], 1
        for raw in body.splitlines(keepends=True):
            utf8 = _valid_utf8(raw)
            if not raw.isascii() and utf8 != primary.startswith("utf-8"):
                expected.append(line)
            text = raw.decode("utf-8") if utf8 else decode_windows_1252(raw)
            decoded.append(text)
            line += physical_lines(text)
        written = "".join(text for text, _ in encoded)
        return "".join(decoded) in (written, written.lstrip("\ufeff")), expected

    # ------------------------------------------------------------ check

    def summary(self) -> str:
        return ", ".join(f"{key} {value}" for key, value in self.stats.items())

    def check(self, case: Case) -> None:
        kind = case.description.split()[0]
        self.stats[{"model": "model", "mutated": "mutated"}.get(kind, "random bytes")] += 1
        outcomes = []
        for parallel in ([False, True] if case.parallel else [False]):
            outcomes.append(self._import(case, parallel))
        if len(outcomes) == 2 and outcomes[0] != outcomes[1]:
            raise Violation(f"{case.description}: read by two workers the import differs from one reader:"
                            f" {_first_difference(outcomes[0], outcomes[1])}")

    def _import(self, case: Case, parallel: bool) -> tuple[Any, ...]:
        from mailcli.importer import feed as importfeed

        if self.project.exists():
            shutil.rmtree(self.project)
        shutil.copytree(self.base, self.project)
        path = self.project / "contacts.csv"
        path.write_bytes(case.data)
        database = self.project / "mailcli.db"
        before = dump(database)
        allowed = {0, 2, 3} if "--strict" in case.args else {0, 2}
        saved = importfeed.PARALLEL_MIN_BYTES
        importfeed.PARALLEL_MIN_BYTES = 0 if parallel else saved
        real_batches = importfeed.ImportFeed.batches
        used: list[bool] = []

        def batches(feed: Any, *args: Any) -> Any:
            result = real_batches(feed, *args)
            used.append(feed.workers_used)
            return result

        importfeed.ImportFeed.batches = batches  # type: ignore[method-assign]
        try:
            outcome = self.invariants.run(["--json", "import", "contacts.csv", "--list", "fuzz", "--basis", "customer",
                                           *case.args],
                                          self.project, allowed)
        finally:
            importfeed.PARALLEL_MIN_BYTES = saved
            importfeed.ImportFeed.batches = real_batches  # type: ignore[method-assign]
        self.stats["read by two workers"] += any(used)
        self.stats["refused"] += outcome.code == 2
        after = dump(database)
        rejects = self.project / "rejects.csv"
        if outcome.code == 2:
            if after != before:
                raise Violation(f"{case.description}: refused (exit 2) but the database changed")
            if rejects.exists():
                raise Violation(f"{case.description}: refused (exit 2) but a rejects file was written")
            if case.model is not None and not _looks_binary(case.data):
                raise Violation(f"{case.description}: a well-formed file was refused: {outcome.stderr.strip()}")
            return (outcome.code, outcome.stderr.replace(str(self.project), "P"))
        summary = json.loads(outcome.stdout)
        written = rejects.read_bytes() if rejects.exists() else b""
        if summary["rejected"] and not written:
            raise Violation(f"{case.description}: {summary['rejected']} rejected rows but no rejects file")
        rejected_rows = _read_rejects(written) if written else []
        if len(rejected_rows) != (summary["rejected"] + 1 if written else 0):
            raise Violation(f"{case.description}: {summary['rejected']} rejected but {len(rejected_rows) - 1}"
                            " rows in the rejects file")
        if case.model is not None and case.model.exact and not parallel:
            self._round_trip(case, summary, rejected_rows)
            self.stats["round trips"] += 1
            self.stats["rows compared"] += len(case.model.rows)
        summary.pop("file", None)
        return (outcome.code, summary, _contacts(database), written)

    def _round_trip(self, case: Case, summary: dict[str, Any], rejected_rows: list[list[str]]) -> None:
        from mailcli.addresses import AddressError, normalise_address
        from mailcli.cells import neutralise
        from mailcli.importer import plan_columns

        model = case.model
        assert model is not None
        headers = [h.strip().lstrip("\ufeff") for h in model.headers]
        plan = plan_columns(headers, None, "x")
        accepted: dict[str, tuple[str, str, str, dict[str, str]]] = {}
        rejected: dict[int, list[str]] = {}
        for line, row in zip(model.lines, model.rows, strict=True):
            if not any(cell.strip() for cell in row):
                continue
            cells = [_cut(cell) for cell in row]
            if "\x00" in "".join(row) or max(map(len, row)) > MAX_FIELD_CHARS:
                rejected[line] = cells
                continue
            try:
                address = normalise_address(row[plan.email])
            except AddressError:
                rejected[line] = cells
                continue
            if address.key in accepted:
                raise Violation(f"{case.description}: the model repeats {address.key!r}")
            first = _name(row[plan.first_name]) if plan.first_name is not None else ""
            last = _name(row[plan.last_name]) if plan.last_name is not None else ""
            attributes = {name: row[i].strip() for name, i in plan.attributes if row[i].strip()}
            accepted[address.key] = (address.address, first, last, attributes)
        if summary["imported"] != len(accepted) or summary["rejected"] != len(rejected):
            raise Violation(f"{case.description}: imported {summary['imported']}, rejected {summary['rejected']};"
                            f" expected {len(accepted)} and {len(rejected)}")
        conn = sqlite3.connect(f"file:{self.project / 'mailcli.db'}?mode=ro", uri=True)
        try:
            stored = {key: (email, first or "", last or "", json.loads(attributes))
                      for key, email, first, last, attributes in
                      conn.execute("SELECT c.email_key, c.email, c.first_name, c.last_name, c.attributes"
                                   " FROM contacts c JOIN memberships m ON m.contact_id = c.id"
                                   " JOIN lists l ON l.id = m.list_id WHERE l.name = 'fuzz'")}
        finally:
            conn.close()
        if stored != accepted:
            raise Violation(f"{case.description}: rows do not read back as written: {_first_difference(stored, accepted)}")
        width = len(model.headers)
        got = {int(row[width]): row[:width] for row in rejected_rows[1:]}
        want = {line: [neutralise(cell) for cell in cells] for line, cells in rejected.items()}
        if got != want:
            raise Violation(f"{case.description}: the rejects file is not the rejected rows as they were:"
                            f" {_first_difference(got, want)}")
        if summary["reencoded_lines"] != model.reencoded[:1000] or summary["reencoded"] != len(model.reencoded):
            raise Violation(f"{case.description}: reencoded lines {summary['reencoded_lines']},"
                            f" expected {model.reencoded}")


def _looks_binary(data: bytes) -> bool:
    """What the import refuses as a binary file: over 1% control bytes in its
    first 64 KiB (a text file in UTF-16 aside)."""
    from mailcli.errors import InputFileError
    from mailcli.importer import HEAD_BYTES, detect_encoding

    try:
        detect_encoding(data[:HEAD_BYTES], "x", complete=len(data) <= HEAD_BYTES)
    except InputFileError as exc:
        return "binary" in exc.message
    return False


def _contacts(database: Path) -> list[tuple[Any, ...]]:
    """The imported list as a person sees it (no uids or times, which differ by run)."""
    conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        return conn.execute(
            "SELECT c.email_key, c.email, c.first_name, c.last_name, c.attributes, c.status, m.status,"
            " m.consent_source, m.consent_method, m.consent_ip FROM contacts c"
            " JOIN memberships m ON m.contact_id = c.id JOIN lists l ON l.id = m.list_id"
            " ORDER BY c.email_key, l.name").fetchall()
    finally:
        conn.close()


def _valid_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _name(value: str) -> str:
    """A name as stored: stripped, and with anything unprintable (a line break,
    a control character) made a space, runs of spaces one."""
    value = value.strip()
    if not value.isprintable():
        value = re.sub(r"\s+", " ", "".join(ch if ch.isprintable() else " " for ch in value)).strip()
    return value


def _cut(cell: str) -> str:
    return cell if len(cell) <= MAX_FIELD_CHARS else f"{cell[:1000]}…[cut: {len(cell)} characters]"


def _read_rejects(written: bytes) -> list[list[str]]:
    """The rejects file's rows, read with the delimiter whose header ends in line and reason."""
    text = written.decode("utf-8-sig")
    for candidate in (",", ";", "\t", "|"):
        rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=candidate))
        if rows and rows[0][-2:] == ["line", "reason"]:
            return rows
    raise Violation(f"the rejects file has no header ending in line and reason: {text[:300]!r}")


def _first_difference(a: Any, b: Any) -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=repr):
            if a.get(key) != b.get(key):
                return f"{key!r}: {a.get(key)!r:.300} != {b.get(key)!r:.300}"
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        for x, y in zip(a, b, strict=False):
            if x != y:
                return _first_difference(x, y)
        return f"lengths {len(a)} and {len(b)}"
    return f"{a!r:.300} != {b!r:.300}"
