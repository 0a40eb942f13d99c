"""Decoding contact files line by line: UTF-8 where a line is UTF-8, cp1252 where not."""

from __future__ import annotations

import codecs
import io
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailcli.importer.decoding import (
    HOLD_BYTES,
    MAX_LINE_BYTES,
    LineTooLong,
    decode_windows_1252,
    line_decoder,
    line_numbers,
    open_text,
)


def reference(data: bytes, utf8_file: bool) -> tuple[str, list[int]]:
    """What the decoder must give: each line decoded by itself, and the
    offsets of the lines decoded otherwise than the file's encoding."""
    parts, logged, offset = [], [], 0
    for line in data.splitlines(keepends=True):
        try:
            text, utf8 = line.decode("utf-8"), True
        except UnicodeDecodeError:
            text, utf8 = decode_windows_1252(line), False
        if not line.isascii() and utf8 != utf8_file:
            logged.append(offset)
        parts.append(text)
        offset += len(line)
    text = "".join(parts)
    return text[1:] if text.startswith("\ufeff") else text, logged


def decode_in_chunks(data: bytes, sizes: list[int], utf8_file: bool) -> tuple[str, list[int]]:
    decoder, log = line_decoder("utf-8" if utf8_file else "cp1252", per_line=True)
    out, position = [], 0
    for size in sizes:
        out.append(decoder.decode(data[position:position + size]))
        position += size
    out.append(decoder.decode(data[position:], final=True))
    return "".join(out), log.offsets


lines = st.one_of(
    st.text(st.characters(max_codepoint=0x7F, blacklist_characters="\r\n"), max_size=30).map(str.encode),
    st.text(st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)), max_size=30).map(str.encode),
    st.text(st.sampled_from("abc éëïöüßÉ€ÀÃ©\xa0’"), max_size=30).map(lambda t: t.encode("cp1252")),
    st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"").replace(b"\r", b"")),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(lines, st.sampled_from([b"\n", b"\r\n", b"\r"])), max_size=40),
       st.lists(st.integers(1, 64), max_size=30), st.booleans(), st.booleans())
def test_chunks_decode_as_whole_lines(records: list[tuple[bytes, bytes]], sizes: list[int], utf8_file: bool,
                                      bom: bool) -> None:
    data = (codecs.BOM_UTF8 if bom else b"") + b"".join(line + end for line, end in records)
    assert decode_in_chunks(data, sizes, utf8_file) == reference(data, utf8_file)


def test_through_the_text_wrapper_lines_keep_their_own_encoding() -> None:
    data = "a,José\n".encode() + "b,José\r\n".encode("cp1252") + "c,Zoë\rd,x".encode()
    text, log = open_text(io.BytesIO(data), "utf-8", per_line=True)
    assert text.read() == "a,José\nb,José\r\nc,Zoë\rd,x"
    assert log.count == 1 and log.offsets == [8]


def test_a_line_longer_than_the_hold_is_decided_by_its_start(tmp_path: Path) -> None:
    long_cp1252 = b"x," + b"a" * (HOLD_BYTES + 10) + "é".encode("cp1252") + b"\n"
    long_utf8 = b"y," + "é".encode() * (HOLD_BYTES // 2 + 10) + b"\n"
    data = b"h\n" + long_cp1252 + long_utf8 + "z,é\n".encode("cp1252")
    text, log = open_text(io.BytesIO(data), "utf-8", per_line=True)
    lines = text.read().split("\n")
    assert lines[1].endswith("é") and lines[2] == "y," + "é" * (HOLD_BYTES // 2 + 10) and lines[3] == "z,é"
    path = tmp_path / "t.csv"
    path.write_bytes(data)
    assert line_numbers(path, log.offsets) == [2, 4]


@pytest.mark.parametrize("per_line", [True, False])
def test_a_line_over_the_bound_stops_reading_with_its_offset(per_line: bool) -> None:
    data = b"email\nann@example.org\n" + b"x" * (MAX_LINE_BYTES + 1)
    text, _ = open_text(io.BytesIO(data), "utf-8", per_line=per_line)
    with pytest.raises(LineTooLong) as info:
        text.read()
    assert info.value.offset == len(b"email\nann@example.org\n")


def test_line_numbers_count_crlf_lf_and_lone_cr(tmp_path: Path) -> None:
    data = b"a\r\nb\nc\rd\r\n\ne"
    path = tmp_path / "t.csv"
    path.write_bytes(data)
    assert line_numbers(path, [0, 3, 5, 7, 10, 11]) == [1, 2, 3, 4, 5, 6]
