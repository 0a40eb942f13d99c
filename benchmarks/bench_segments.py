"""Segments: how long a `--where` expression takes over many contacts,
against the hand-written SQL a person would write for the same question.

Builds a database of contacts with a few attributes (in memory), then, in
interleaved rounds, counts the contacts each expression matches through
``mailcli.store.segments`` (the SQL that `send --where`, `contacts --where`
and `lists --where` run) and through the shortest hand-written query that
gives the same count. Prints the medians and their ratio (segment ÷
hand-written): the ratio is what the generated SQL costs for being right
about missing values, numbers, dates and case.

    .venv/bin/python benchmarks/bench_segments.py [--contacts N] [--rounds R]
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import statistics
import time

from mailcli.segments import parse_segment
from mailcli.store.segments import segment_filter

# expression, and the hand-written query that counts the same contacts
CASES = [
    ("city = 'Utrecht'", "lower(json_extract(attributes, '$.city')) = 'utrecht'"),
    ("member_rating >= 3", "CAST(json_extract(attributes, '$.member_rating') AS INTEGER) >= 3"),
    ("signup_date >= 2025-06-01", "json_extract(attributes, '$.signup_date') >= '2025-06-01'"),
    ("city = 'Utrecht' and member_rating >= 3",
     "lower(json_extract(attributes, '$.city')) = 'utrecht'"
     " AND CAST(json_extract(attributes, '$.member_rating') AS INTEGER) >= 3"),
    ("phone is empty", "coalesce(json_extract(attributes, '$.phone'), '') = ''"),
]


def build(n: int) -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE contacts (id INTEGER PRIMARY KEY, email TEXT, first_name TEXT, last_name TEXT,"
                 " attributes TEXT)")
    rnd = random.Random(1)
    cities = ["Utrecht", "utrecht", "Amsterdam", "Rotterdam", "Den Haag"]
    conn.executemany("INSERT INTO contacts VALUES (?, ?, ?, ?, ?)", (
        (i, f"p{i}@example.org", "First", "Last", json.dumps({
            "city": rnd.choice(cities), "member_rating": str(rnd.randint(1, 5)),
            "signup_date": f"2025-{rnd.randint(1, 12):02d}-{rnd.randint(1, 28):02d}",
            "phone": rnd.choice(["", "0612345678"]), "company": "Acme BV"}))
        for i in range(n)))
    return conn


def timed(conn: sqlite3.Connection, where: str, params: list[object]) -> tuple[float, int]:
    started = time.perf_counter()
    count = conn.execute(f"SELECT count(*) FROM contacts c WHERE {where}", params).fetchone()[0]  # noqa: S608
    return time.perf_counter() - started, int(count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contacts", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    conn = build(args.contacts)
    print(f"{args.contacts:,} contacts, {args.rounds} interleaved rounds; medians")
    for text, plain in CASES:
        sql, params = segment_filter(conn, parse_segment(text))
        ours, theirs = [], []
        for _ in range(args.rounds):
            seconds, count = timed(conn, sql, params)
            ours.append(seconds)
            seconds, expected = timed(conn, plain, [])
            theirs.append(seconds)
            assert count == expected, (text, count, expected)
        a, b = statistics.median(ours), statistics.median(theirs)
        print(f"  {text:42} {count:>8,} match  segment {a * 1000:6.0f} ms  hand-written {b * 1000:6.0f} ms"
              f"  ratio {a / b:4.2f} (rounds {', '.join(f'{x / y:.2f}' for x, y in zip(ours, theirs, strict=True))})")


if __name__ == "__main__":
    main()
