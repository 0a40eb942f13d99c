"""Fuzzing the configuration loader: ``mailcli.toml`` documents and values.

Inputs are the scaffolded ``mailcli.toml`` with keys set to odd values (NaN,
infinities, huge and negative numbers, wrong types, durations of billions of
years, unicode and control characters, unknown and unicode keys, tables where
values belong), the file's text mutated byte by byte, documents nested
thousands deep, and random bytes.

Each input is loaded by ``config show --json`` (exit 0 or 4), by ``privacy
purge --dry-run`` (which computes every retention cut-off) and by an import
(which writes the database). Besides the shared invariants: an accepted
configuration prints as strict JSON with every number finite and within the
range the README gives, the values set read back as set, and a refused one
leaves the database as it was.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import sys
from datetime import date, datetime, time, timezone
from pathlib import Path
from typing import Any

from tests.fuzz.engine import Draw, Invariants, Violation, chance, choice, dump, mutate

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

SCHEMA = {
    "project": ["name", "database"],
    "sender": ["from", "reply_to", "list_id", "postal_address", "bounce_address", "feedback_id"],
    "smtp": ["host", "port", "security", "username", "password_env", "timeout", "ca_file", "concurrency", "rate",
             "retry_window", "domain_concurrency"],
    "unsubscribe": ["url", "mailto", "secret_env"],
    "retention": ["unconfirmed", "unsubscribed", "bounced", "inactive", "send_log", "audit_log", "backups"],
    "dkim": ["domain", "selector", "private_key_env", "private_key_file"],
    "bounces": ["soft_limit", "imap_password_env"],
    "serve": ["host", "port"],
}
# Keys naming files: only harmless relative names are tried there.
PATHS = {("project", "database"), ("smtp", "ca_file"), ("dkim", "private_key_file")}
SAFE_NAMES = ["other.db", "missing.pem", "mailcli.toml", "sub dir/x.db", "ünï.db", ".", ""]
NUMBERS: list[Any] = [0, 1, -1, 2, 30, 64, 65, 587, 3600, 3601, 65535, 65536, 2**31, 2**63 - 1, -(2**63), 10**30,
                      0.0, -0.0, 0.5, 1e-300, 30.0, 3600.0, 3600.0001, 1e308, -1e308, math.nan, math.inf, -math.inf]
STRINGS = ["", " ", "30d", " 30d ", "0d", "0s", "24h", "25h", "100y", "101y", "1200mo", "99999999999y",
           "9" * 40 + "d", "-1d", "1.5d", "٣d", "30 days", "2m", "13mo", "20/s", "600/m", "3600/h", "1/h", "0",
           "0.5", "inf/s", "nan/s", "-1/s", "10000/s", "10001/s", "0.0001/s", "1e3/s", "20/d", "starttls", "tls",
           "none", "ssl", "localhost", "127.0.0.1", "::1", "smtp.example.org", "https://news.example.org/unsubscribe",
           "http://127.0.0.1:8025/u", "http://example.org/u", "https://x/u?q=1", "Acme <news@example.org>",
           "news@bücher.example", "a@b@c", "MAILCLI_X", "1BAD", "a\nb", "a\rb", "nul\x00", "\x1b[31mred",
           "\u202eevil", "x" * 5000, "news.example.org", "mail2025", "-bad-"]
KEYS_ODD = ["password", "secret", "private_key", "pass", "smtp_password", "ünïcode", "", " ", "a.b", "\x1b",
            "timeout ", "Port", "PORT", "retention", "𝓽𝓲𝓶𝓮𝓸𝓾𝓽"]

# What an accepted configuration may hold (the README's ranges).
RANGES = {("smtp", "port"): (1, 65535), ("smtp", "timeout"): (0, 3600), ("smtp", "concurrency"): (1, 64),
          ("smtp", "rate"): (0, 10_000), ("smtp", "retry_window"): (0, 86400),
          ("smtp", "domain_concurrency"): (0, 64), ("bounces", "soft_limit"): (1, 1000),
          ("serve", "port"): (1, 65535)}


class ConfigSurface:
    name = "config"

    def __init__(self, workdir: Path, invariants: Invariants | None = None) -> None:
        self.workdir = workdir
        self.invariants = invariants or Invariants(seconds=30, megabytes=400)
        self.base = workdir / "base"
        self.project = workdir / "project"
        run = self.invariants.run
        run(["init", str(self.base)], workdir, {0})
        (self.base / "people.csv").write_text("email,first_name\nann@example.org,Ann\n", encoding="utf-8")
        run(["import", "people.csv", "--list", "news", "--basis", "customer"], self.base, {0})
        self.text = (self.base / "mailcli.toml").read_text(encoding="utf-8")
        self.parsed = tomllib.loads(self.text)
        self.stats = {"documents": 0, "accepted": 0, "refused": 0, "values read back": 0}

    def summary(self) -> str:
        return ", ".join(f"{key} {value}" for key, value in self.stats.items())

    # ------------------------------------------------------------ generate

    def generate(self, draw: Draw) -> tuple[bytes, dict[tuple[str, str], Any]]:
        kind = draw.integer(0, 19)
        if kind < 13:
            document, edits = self._edited(draw)
            data = document.encode("utf-8")
            if chance(draw, 10):
                data = data.replace(b"\n", b"\r\n")
            if chance(draw, 5):
                data = b"\xef\xbb\xbf" + data
            return data, edits
        if kind < 17:
            return mutate(draw, self.text.encode("utf-8"), times=8), {}
        if kind < 18:
            depth = draw.integer(100, 3000)
            opening, closing = ("[", "]") if draw.boolean() else ("{a = ", "}")
            return f"{self.text}\n[extra]\nx = {opening * depth}1{closing * depth}\n".encode(), {}
        return draw.bytes(300), {}

    def _edited(self, draw: Draw) -> tuple[str, dict[tuple[str, str], Any]]:
        data: dict[str, Any] = {section: dict(values) for section, values in self.parsed.items()}
        edits: dict[tuple[str, str], Any] = {}
        for _ in range(1 if chance(draw, 60) else draw.integer(2, 5)):
            roll = draw.integer(1, 100)
            if roll <= 40:  # the numbers and durations
                section, key = choice(draw, [*RANGES, *((("retention", k)) for k in SCHEMA["retention"])])
            elif roll <= 80:
                section = choice(draw, list(SCHEMA))
                key = choice(draw, SCHEMA[section])
            elif roll <= 90:
                section = choice(draw, list(SCHEMA)) if draw.boolean() else choice(draw, KEYS_ODD + ["dkim"])
                key = choice(draw, KEYS_ODD) if draw.boolean() else draw.text(6)
            else:
                section, key = choice(draw, list(SCHEMA)), ""
            table = data.setdefault(section, {})
            if not isinstance(table, dict):
                continue
            if key == "" and roll > 90:
                data[section] = self._value(draw, (section, key))  # a value where a table belongs
                continue
            if chance(draw, 10):
                table.pop(key, None)
                edits[(section, key)] = None
                continue
            value = self._value(draw, (section, key))
            table[key] = value
            edits[(section, key)] = value
        return dumps(data), edits

    def _value(self, draw: Draw, where: tuple[str, str]) -> Any:
        if where in PATHS:
            return choice(draw, SAFE_NAMES)
        if draw.boolean():
            plausible = self._plausible(draw, where)
            if plausible is not None:
                return plausible
        roll = draw.integer(1, 100)
        if roll <= 35:
            return choice(draw, NUMBERS)
        if roll <= 70:
            return choice(draw, STRINGS)
        if roll <= 80:
            return draw.text(20)
        if roll <= 84:
            return draw.boolean()
        if roll <= 88:
            return [choice(draw, NUMBERS), choice(draw, STRINGS)]
        if roll <= 92:
            return {"nested": choice(draw, STRINGS)}
        if roll <= 96:
            return choice(draw, [datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc), date(1, 1, 1), time(12, 0),
                                 datetime(9999, 12, 31, 23, 59, 59)])
        return draw.integer(-(2**64), 2**64)

    def _plausible(self, draw: Draw, where: tuple[str, str]) -> Any:
        """A value of the right kind for the key, near or at the edges of its range."""
        section, key = where
        if where in RANGES and key != "rate" and key != "retry_window":
            low, high = RANGES[where]
            if key == "timeout":
                return choice(draw, [0.001, 1, 30, 59.5, 3600, 3600.0, float(draw.integer(1, 3600))])
            return choice(draw, [low, high, draw.integer(low, high), low - 1, high + 1])
        if key == "rate":
            unit = choice(draw, ["s", "m", "h"])
            return choice(draw, ["0", f"{draw.integer(0, 20000)}/{unit}", draw.integer(0, 12000),
                                 f"{draw.integer(0, 99)}.{draw.integer(0, 99)}/{unit}"])
        if key == "retry_window" or section == "retention":
            unit = choice(draw, ["s", "m", "h", "d", "w", "mo", "y"])
            return f"{draw.integer(0, 200) if draw.boolean() else draw.integer(0, 10**12)}{unit}"
        return None

    # ------------------------------------------------------------ check

    def check(self, case: tuple[bytes, dict[tuple[str, str], Any]]) -> None:
        data, edits = case
        self.stats["documents"] += 1
        if self.project.exists():
            shutil.rmtree(self.project)
        shutil.copytree(self.base, self.project)
        (self.project / "mailcli.toml").write_bytes(data)
        database = self.project / "mailcli.db"
        before = dump(database)
        files = _files(self.project)
        run = self.invariants.run
        shown = run(["--json", "config", "show"], self.project, {0, 4})
        if shown.code == 4:
            self.stats["refused"] += 1
            if "mailcli.toml" not in shown.stderr.splitlines()[0] and "Config" not in shown.stderr:
                raise Violation(f"a refused configuration does not name the file: {shown.stderr.strip()}")
        else:
            self.stats["accepted"] += 1
            self._accepted(shown.stdout, edits)
        # A database path naming a file that is not SQLite: an expected failure (exit 1).
        purge = run(["privacy", "purge", "--dry-run"], self.project, {0, 1, 4})
        if purge.code == 1 and not purge.stderr.startswith("Error: Cannot open database"):
            raise Violation(f"purge failed: {purge.stderr.strip()}")
        if (purge.code == 4) != (shown.code == 4):
            raise Violation(f"config show exited {shown.code} but purge {purge.code}: {purge.stderr.strip()}")
        imported = run(["import", "people.csv", "--list", "fuzz", "--basis", "customer"], self.project, {0, 1, 2, 4})
        if imported.code == 1 and not imported.stderr.startswith("Error: Cannot open database"):
            raise Violation(f"import failed: {imported.stderr.strip()}")
        if imported.code == 4:
            if dump(database) != before or _files(self.project) != files:
                raise Violation("a refused configuration changed the project")
        elif shown.code == 4:
            raise Violation(f"config show refused the configuration but import ran: exit {imported.code}")

    def _accepted(self, stdout: str, edits: dict[tuple[str, str], Any]) -> None:
        def refuse(constant: str) -> Any:
            raise Violation(f"config show --json printed {constant}, which is not JSON")

        view = json.loads(stdout, parse_constant=refuse)
        for (section, key), (low, high) in RANGES.items():
            value = view.get(section, {}).get(key)
            if key == "rate" and isinstance(value, str):  # shown as written: "20/s", "0"
                value = _per_second(value)
            elif key == "retry_window" and isinstance(value, str):  # "2m"
                value = _seconds(value)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
                raise Violation(f"{section}.{key} = {value!r} was accepted, outside {low}..{high}")
        for (section, key), value in edits.items():
            if section not in view or not isinstance(view[section], dict) or value is None:
                continue
            shown = view[section].get(key)
            want: Any = value
            if section == "retention" and isinstance(value, str):
                want = re.sub(r"\s", "", value)
            elif (section, key) == ("smtp", "timeout"):
                want, shown = float(value), float(shown) if isinstance(shown, (int, float)) else shown
            elif (section, key) == ("smtp", "retry_window") and isinstance(value, str):
                want, shown = _seconds(value), _seconds(shown) if isinstance(shown, str) else shown
            elif (section, key) in (("smtp", "port"), ("smtp", "concurrency"), ("bounces", "soft_limit"),
                                    ("serve", "port"), ("smtp", "domain_concurrency")):
                want = value
            else:
                continue
            if shown != want:
                raise Violation(f"{section}.{key} = {value!r} was accepted but reads back as {shown!r}")
            self.stats["values read back"] += 1


def _seconds(duration: str) -> float:
    match = re.fullmatch(r"\s*([0-9.]+)\s*(s|m|h|d|w|mo|y)\s*", duration)
    if match is None:
        raise Violation(f"a duration shown as {duration!r}")
    per = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "mo": 2592000, "y": 31536000}[match.group(2)]
    return float(match.group(1)) * per


def _per_second(rate: str) -> float:
    match = re.fullmatch(r"([0-9.e+-]+)(?:/(s|m|h))?", rate)
    if match is None:
        raise Violation(f"a rate shown as {rate!r}")
    return float(match.group(1)) / {"s": 1, "m": 60, "h": 3600}[match.group(2) or "s"]


def _files(folder: Path) -> list[str]:
    """The files of a project (SQLite's own -wal and -shm aside)."""
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(("-wal", "-shm")))


def dumps(data: dict[str, Any]) -> str:
    """A TOML document: top-level values first, then one table per section."""
    lines = [f"{_key(k)} = {_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for section, table in data.items():
        if isinstance(table, dict):
            lines.append(f"[{_key(section)}]")
            lines += [f"{_key(k)} = {_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def _key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _string(key)


def _string(text: str) -> str:
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(value)
