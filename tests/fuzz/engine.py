"""The fuzzing engine: where inputs come from, and the checks every surface shares.

A surface (``csv_surface``, ``config_surface``, ...) turns a stream of
choices into one input (``generate``) and checks what mailcli did with it
(``check``). The choices come from a ``Draw``, which has three sources:

* ``RandomDraw`` — a seeded ``random.Random``: the short, deterministic
  budget that runs inside ``make test`` (``tests/fuzz/test_fuzz.py``);
* ``HypothesisDraw`` — hypothesis' ``data()``, which shrinks a failing
  input to a small one;
* ``AtherisDraw`` — atheris' ``FuzzedDataProvider``: libFuzzer mutates the
  bytes behind the choices, guided by the coverage of mailcli's code.

The invariants (``Invariants``) hold for every input of every surface: no
traceback and no "unexpected" error, an exit code the README documents, a
refused input changes nothing, each call ends within a time and a memory
bound. Surfaces add their own: an accepted row reads back as the bytes it
was meant to be.
"""

from __future__ import annotations

import contextlib
import io
import os
import resource
import sqlite3
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

T = TypeVar("T")

# Every exit code the README documents.
DOCUMENTED = frozenset({0, 1, 2, 3, 4, 5, 130})


class Violation(AssertionError):
    """An input broke an invariant."""


class Draw(Protocol):
    def integer(self, low: int, high: int) -> int: ...
    def boolean(self) -> bool: ...
    def bytes(self, most: int) -> bytes: ...
    def text(self, most: int) -> str: ...


def choice(draw: Draw, options: Sequence[T]) -> T:
    return options[draw.integer(0, len(options) - 1)]


def chance(draw: Draw, percent: int) -> bool:
    return draw.integer(1, 100) <= percent


class RandomDraw:
    def __init__(self, seed: str) -> None:
        import random

        self.rng = random.Random(seed)

    def integer(self, low: int, high: int) -> int:
        return self.rng.randint(low, high)

    def boolean(self) -> bool:
        return self.rng.random() < 0.5

    def bytes(self, most: int) -> bytes:
        return self.rng.randbytes(self.rng.randint(0, most))

    def text(self, most: int) -> str:
        length = self.rng.randint(0, most)
        pools = ((0x20, 0x7E), (0xA0, 0x2FF), (0x0, 0x1F), (0x370, 0x52F), (0x2000, 0x206F), (0x4E00, 0x4E80),
                 (0x1F600, 0x1F64F), (0xFFF0, 0xFFFF))
        out = []
        for _ in range(length):
            low, high = pools[min(int(self.rng.expovariate(0.7)), len(pools) - 1)]
            out.append(chr(self.rng.randint(low, high)))
        return "".join(out)


class HypothesisDraw:
    def __init__(self, data: Any) -> None:
        from hypothesis import strategies as st

        self.data = data
        self.st = st

    def integer(self, low: int, high: int) -> int:
        return int(self.data.draw(self.st.integers(low, high)))

    def boolean(self) -> bool:
        return bool(self.data.draw(self.st.booleans()))

    def bytes(self, most: int) -> bytes:
        return bytes(self.data.draw(self.st.binary(max_size=most)))

    def text(self, most: int) -> str:
        return str(self.data.draw(self.st.text(self.st.characters(blacklist_categories=("Cs",)), max_size=most)))


class AtherisDraw:
    def __init__(self, provider: Any) -> None:
        self.provider = provider

    def integer(self, low: int, high: int) -> int:
        return int(self.provider.ConsumeIntInRange(low, high))

    def boolean(self) -> bool:
        return bool(self.provider.ConsumeBool())

    def bytes(self, most: int) -> bytes:
        return bytes(self.provider.ConsumeBytes(self.provider.ConsumeIntInRange(0, most)))

    def text(self, most: int) -> str:
        return str(self.provider.ConsumeUnicodeNoSurrogates(self.provider.ConsumeIntInRange(0, most)))


# --------------------------------------------------------------------- runs


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str
    seconds: float


@contextlib.contextmanager
def _captured() -> Iterator[tuple[io.StringIO, io.StringIO]]:
    out, err = io.StringIO(), io.StringIO()
    saved = sys.stdin, sys.stdout, sys.stderr
    sys.stdin, sys.stdout, sys.stderr = io.StringIO(""), out, err
    try:
        yield out, err
    finally:
        sys.stdin, sys.stdout, sys.stderr = saved


class Invariants:
    """The checks every call of mailcli gets, and the bounds they use."""

    def __init__(self, *, seconds: float = 30.0, megabytes: int = 400) -> None:
        self.seconds = seconds
        self.megabytes = megabytes
        self.base_kib = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
        self.calls = 0
        self.codes: dict[int, int] = {}

    def run(self, args: Sequence[str], cwd: Path, allowed: frozenset[int] | set[int]) -> Outcome:
        """``mailcli ARGS`` in this process, as the console script runs it
        (``mailcli.app.main``), checked against the shared invariants."""
        from mailcli.app import main

        previous = os.getcwd()
        os.chdir(cwd)
        start = time.monotonic()
        try:
            with _captured() as (out, err):
                code = main(list(args))
        finally:
            os.chdir(previous)
        outcome = Outcome(code, out.getvalue(), err.getvalue(), time.monotonic() - start)
        self.calls += 1
        self.codes[code] = self.codes.get(code, 0) + 1
        self.check(outcome, args, allowed)
        return outcome

    def check(self, outcome: Outcome, args: Sequence[str], allowed: frozenset[int] | set[int]) -> None:
        shown = " ".join(args)[:200]
        if "Traceback" in outcome.stderr or "Error: unexpected" in outcome.stderr:
            raise Violation(f"mailcli {shown}: {outcome.stderr.strip()[-2000:]}")
        if outcome.code not in DOCUMENTED:
            raise Violation(f"mailcli {shown}: exit {outcome.code} is not a documented exit code")
        if outcome.code not in allowed:
            raise Violation(f"mailcli {shown}: exit {outcome.code}, expected one of {sorted(allowed)}:"
                            f" {outcome.stderr.strip()[-1000:]}")
        if outcome.code != 0:
            errors = [line for line in outcome.stderr.splitlines() if line.startswith("Error: ")]
            if len(errors) != 1:
                raise Violation(f"mailcli {shown}: exit {outcome.code} with {len(errors)} error lines:"
                                f" {outcome.stderr.strip()[-1000:]}")
        self.bounds(outcome.seconds, shown)

    def bounds(self, seconds: float, what: str) -> None:
        if seconds > self.seconds:
            raise Violation(f"{what}: took {seconds:.1f} s, over the bound of {self.seconds:.0f} s")
        peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                   resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
        grown = (peak - self.base_kib) / 1024
        if grown > self.megabytes:
            raise Violation(f"{what}: memory grew by {grown:.0f} MiB, over the bound of {self.megabytes} MiB")


def dump(database: Path) -> list[str]:
    """Every row of every table, as SQL: equal dumps, equal databases."""
    if not database.exists():
        return []
    conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


def mutate(draw: Draw, data: bytes, *, times: int = 3) -> bytes:
    """A few random edits: flipped, inserted, deleted or repeated bytes, a cut."""
    buffer = bytearray(data)
    specials = [b"\x00", b"\r", b"\n", b"\r\n", b'"', b",", b";", b"\t", b"\xff", b"\xef\xbb\xbf", b"\xc3",
                b"\xe9", b"\\", b"=", b"--", b"\x1b[31m", b"\xf0\x9f\x98", "\u2028".encode(), b"%", b"'"]
    for _ in range(draw.integer(1, times)):
        kind = draw.integer(0, 5)
        at = draw.integer(0, len(buffer))
        if kind == 0 and buffer:
            buffer[min(at, len(buffer) - 1)] = draw.integer(0, 255)
        elif kind == 1:
            buffer[at:at] = choice(draw, specials)
        elif kind == 2:
            del buffer[at:at + draw.integer(1, 16)]
        elif kind == 3 and buffer:
            start = draw.integer(0, len(buffer) - 1)
            buffer[at:at] = buffer[start:start + draw.integer(1, 64)] * draw.integer(1, 8)
        elif kind == 4:
            del buffer[at:]
        else:
            buffer[at:at] = draw.bytes(24)
    return bytes(buffer)


# ------------------------------------------------------------------ runners


class Surface(Protocol):
    name: str
    invariants: Invariants

    def generate(self, draw: Draw) -> Any: ...
    def check(self, case: Any) -> None: ...


@dataclass
class Report:
    surface: str
    engine: str
    inputs: int = 0
    seconds: float = 0.0
    failure: str | None = None

    details: str = ""

    def line(self) -> str:
        result = f"FAILED: {self.failure}" if self.failure else "no invariant broken"
        details = f" [{self.details}]" if self.details else ""
        return f"{self.surface}: {self.inputs} inputs in {self.seconds:.1f} s ({self.engine}){details}; {result}"


def run_random(surface: Surface, *, seed: str, examples: int | None = None, seconds: float | None = None,
               start: int = 0) -> Report:
    """Inputs from ``random.Random(f"{seed}:{index}")``: deterministic, and
    each one reproducible alone by its seed and index."""
    report = Report(surface.name, f"random, seed {seed!r}")
    began = time.monotonic()
    index = start
    while (examples is None or index < start + examples) and \
            (seconds is None or time.monotonic() - began < seconds):
        case = surface.generate(RandomDraw(f"{seed}:{index}"))
        try:
            surface.check(case)
        except Violation as exc:
            report.failure = (f"{exc}\n  input {index} of seed {seed!r}; again with: python -m tests.fuzz"
                              f" {surface.name} --engine random --seed {seed} --start {index} --examples 1")
            break
        finally:
            report.inputs += 1
        index += 1
    report.seconds = time.monotonic() - began
    report.details = _details(surface)
    return report


def _details(surface: Surface) -> str:
    summary = getattr(surface, "summary", None)
    return str(summary()) if summary else ""


def run_hypothesis(surface: Surface, *, seconds: float, database: Path | None = None) -> Report:
    """Inputs from hypothesis, in rounds until the time is up; a failure is
    shrunk to a small input before it is reported."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    from hypothesis.database import DirectoryBasedExampleDatabase

    report = Report(surface.name, "hypothesis")
    began = time.monotonic()

    @settings(max_examples=50, deadline=None, derandomize=False, print_blob=True,
              suppress_health_check=list(HealthCheck),
              database=DirectoryBasedExampleDatabase(str(database)) if database else None)
    @given(st.data())
    def one(data: Any) -> None:
        report.inputs += 1
        surface.check(surface.generate(HypothesisDraw(data)))

    while time.monotonic() - began < seconds:
        try:
            one()
        except Violation as exc:
            report.failure = str(exc)
            break
    report.seconds = time.monotonic() - began
    report.details = _details(surface)
    return report
