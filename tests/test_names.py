"""Bounded path components derived from hostile file names, and atomic writes to long names."""

from __future__ import annotations

import os
from pathlib import Path

from blobwatch.atomic import write_text_atomic
from blobwatch.names import bounded_name


def test_short_names_are_kept_and_long_ones_cut_on_a_character_with_a_hash() -> None:
    assert bounded_name("csm_day040_blob", 40) == "csm_day040_blob"
    long = "é" * 100  # 200 bytes
    short = bounded_name(long, 40)
    assert len(short.encode()) <= 40 and short.startswith("é" * 13) and short[-13] == "-"
    assert bounded_name(long, 40) == short and bounded_name(long + "x", 40) != short


def test_a_name_with_bytes_that_are_not_utf8_becomes_valid_utf8() -> None:
    name = os.fsdecode(b"day\xff\xfe_blob")
    short = bounded_name(name, 40)
    assert short.startswith("day_blob-") and short.encode("utf-8")  # no lone surrogates


def test_an_atomic_write_to_a_250_byte_name_works(tmp_path: Path) -> None:
    target = tmp_path / ("n" * 246 + ".txt")
    write_text_atomic(target, "ok")
    assert target.read_text() == "ok" and [p.name for p in tmp_path.iterdir()] == [target.name]
