"""Long fuzzing runs: ``python -m tests.fuzz [SURFACE...] --seconds N`` (``make fuzz``).

Each surface runs for ``--seconds`` with the best engine at hand: atheris
(coverage-guided libFuzzer, in a process of its own per surface) where it is
installed, else hypothesis. ``--engine random --seed S --start I --examples 1``
repeats one input of the seeded budget that ``make test`` runs.

Runs are isolated like the test suite: a temporary HOME and working folder,
no MAILCLI_* variables, no colour. Corpora and crashes of atheris runs are
kept in ``.fuzz/`` (ignored by git), so a later run starts from them.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.fuzz.engine import Report, Surface, run_hypothesis, run_random

SURFACES = {
    "csv": ("tests.fuzz.csv_surface", "CsvSurface"),
    "config": ("tests.fuzz.config_surface", "ConfigSurface"),
    "feedback": ("tests.fuzz.feedback_surface", "FeedbackSurface"),
    "serve": ("tests.fuzz.serve_surface", "ServeSurface"),
}
REPO = Path(__file__).resolve().parents[2]
KEEP = REPO / ".fuzz"


def isolate() -> Path:
    """A temporary working folder and HOME, and an environment like the tests'."""
    work = Path(tempfile.mkdtemp(prefix="mailcli-fuzz-"))
    (work / "home").mkdir()
    for name in list(os.environ):
        if name.startswith("MAILCLI_"):
            del os.environ[name]
    os.environ.update(HOME=str(work / "home"), NO_COLOR="1", COLUMNS="120")
    os.chdir(work)
    return work


def make_surface(name: str, work: Path, **options: Any) -> Surface:
    module, cls = SURFACES[name]
    folder = work / name
    folder.mkdir(parents=True, exist_ok=True)
    return getattr(importlib.import_module(module), cls)(folder, **options)  # type: ignore[no-any-return]


def atheris_installed() -> bool:
    try:
        import atheris  # noqa: F401
    except ImportError:
        return False
    return True


def run_atheris(name: str, seconds: float) -> Report:
    """libFuzzer over one surface in a child process (atheris ends its process)."""
    corpus, crashes = KEEP / "corpus" / name, KEEP / "crashes" / name
    corpus.mkdir(parents=True, exist_ok=True)
    crashes.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "tests.fuzz", name, "--engine", "atheris-child", "--seconds", str(seconds)],
        cwd=REPO, capture_output=True, text=True, timeout=seconds + 600)
    report = Report(name, "atheris (libFuzzer, coverage-guided)", seconds=time.monotonic() - began)
    runs = re.search(r"Done (\d+) runs", proc.stderr) or re.search(r"number_of_executed_units: (\d+)", proc.stderr)
    report.inputs = int(runs.group(1)) if runs else 0
    coverage = re.findall(r"cov: (\d+) ft: (\d+) corp: (\d+)", proc.stderr)
    if coverage:
        edges, features, corpus_size = coverage[-1]
        report.details = f"coverage {edges} edges, {features} features, corpus {corpus_size} inputs"
    if proc.returncode != 0:
        broken = re.findall(r"^\S*(?:Violation|Error): .*$", proc.stderr, re.M)
        tail = "\n".join(proc.stderr.strip().splitlines()[-12:])
        report.failure = f"exit {proc.returncode}; crash inputs in {crashes}\n{broken[-1] if broken else ''}\n{tail}"
    return report


def atheris_child(name: str, seconds: float) -> None:
    import atheris

    with atheris.instrument_imports(include=["mailcli", "email", "tomllib", "csv", "waitress", "flufl"]):
        import mailcli.app  # noqa: F401 - instrumented before any surface imports it
        import mailcli.feedback.ingest  # noqa: F401
        import mailcli.feedback.web  # noqa: F401
        import mailcli.importer  # noqa: F401
        import mailcli.importer.decoding  # noqa: F401
    from tests.fuzz.engine import AtherisDraw

    # The server, too, in this process: libFuzzer then sees its coverage.
    surface = make_surface(name, isolate(), **({"in_process": True} if name == "serve" else {}))

    def one_input(data: bytes) -> None:
        surface.check(surface.generate(AtherisDraw(atheris.FuzzedDataProvider(data))))


    # -len_control=0: the harnesses draw many choices from an input, so long
    # inputs are useful at once, not only after libFuzzer has grown them slowly.
    argv = [sys.argv[0], str(KEEP / "corpus" / name), f"-max_total_time={int(seconds)}", "-rss_limit_mb=3072",
            "-timeout=300", f"-artifact_prefix={KEEP / 'crashes' / name}/", "-print_final_stats=1",
            "-max_len=16384", "-len_control=0"]
    atheris.Setup(argv, one_input)
    atheris.Fuzz()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__.splitlines()[0])
    parser.add_argument("surfaces", nargs="*", choices=[*SURFACES, []], help="default: all four")
    parser.add_argument("--seconds", type=float, default=300, help="per surface (default 300)")
    parser.add_argument("--engine", default="auto", choices=["auto", "atheris", "hypothesis", "random",
                                                              "atheris-child"])
    parser.add_argument("--seed", default="make-test", help="random engine: the seed")
    parser.add_argument("--start", type=int, default=0, help="random engine: the first input's index")
    parser.add_argument("--examples", type=int, default=None, help="random engine: how many inputs")
    args = parser.parse_args(argv)
    names = args.surfaces or list(SURFACES)
    if args.engine == "atheris-child":
        atheris_child(names[0], args.seconds)
        return 0
    engine = args.engine
    if engine == "auto":
        engine = "atheris" if atheris_installed() else "hypothesis"
        if engine == "hypothesis":
            print("atheris is not installed (pip install atheris): fuzzing with hypothesis", file=sys.stderr)
    reports: list[Report] = []
    for name in names:
        if engine == "atheris":
            report = run_atheris(name, args.seconds)
        else:
            surface: Any = make_surface(name, isolate())
            if engine == "hypothesis":
                report = run_hypothesis(surface, seconds=args.seconds, database=KEEP / "hypothesis")
            else:
                report = run_random(surface, seed=args.seed, start=args.start, examples=args.examples,
                                    seconds=None if args.examples else args.seconds)
            closer = getattr(surface, "close", None)
            if closer:
                closer()
        print(report.line(), flush=True)
        reports.append(report)
    return 1 if any(r.failure for r in reports) else 0


if __name__ == "__main__":
    sys.exit(main())
