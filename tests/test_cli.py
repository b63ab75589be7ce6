"""Tests for the command line: instant help for every subcommand, and ``blobwatch difference``."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import numpy as np
import pytest
from astropy.io import fits

from blobwatch.cli import build_parser, main

HEAVY = ("torch", "matplotlib", "astropy", "scipy", "sklearn")


def _subcommands() -> list[str]:
    parser = build_parser()
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return sorted(name for action in actions for name in action.choices)


def _run(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "blobwatch.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        **kwargs,
    )


def test_parser_building_imports_no_heavy_library():
    code = (
        "import sys, json\n"
        "from blobwatch.cli import build_parser\n"
        "build_parser().format_help()\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_top_level_help():
    result = _run("--help")
    assert result.returncode == 0, result.stderr
    assert "usage: blobwatch" in result.stdout
    for name in _subcommands():
        assert name in result.stdout


def test_subcommands_are_discovered():
    names = _subcommands()
    assert "difference" in names and "demo" in names


@pytest.mark.parametrize("name", _subcommands())
def test_every_subcommand_help_is_instant(name):
    code = (
        "import sys, json\n"
        "from blobwatch.cli import main\n"
        "try:\n"
        f"    main([{name!r}, '--help'])\n"
        "except SystemExit as exc:\n"
        "    code = exc.code\n"
        "else:\n"
        "    code = 'no exit'\n"
        f"print(json.dumps([code, [m for m in {HEAVY!r} if m in sys.modules]]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    code_, heavy = json.loads(out.stdout.strip().splitlines()[-1])
    assert code_ == 0
    assert heavy == [], f"'blobwatch {name} --help' imported {heavy}"
    assert f"usage: blobwatch {name}" in out.stdout


# ------------------------------------------------------------------- blobwatch difference


def _write(path, data, mjd, filt="F153M"):
    header = fits.Header()
    header["EXPSTART"] = mjd
    header["FILTER"] = filt
    fits.PrimaryHDU(data.astype(np.float32), header).writeto(path)
    return path


def _sequence(tmp_path, n=6, size=256):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size]
    pattern = 1.0 - 0.1 * np.exp(-((yy - 80.0) ** 2 + (xx - 60.0) ** 2) / 18.0)
    paths = []
    for day in range(n):
        data = pattern + 0.002 * rng.standard_normal((size, size))
        paths.append(_write(tmp_path / f"day{day:02d}.fits", data, 60000.0 + day))
    return paths


def test_difference_command_writes_fits_and_summary(tmp_path, capsys):
    paths = _sequence(tmp_path)
    out = tmp_path / "out" / "diff.fits"
    code = main(["difference", str(paths[-1]), "--references", *map(str, paths[:-1]), "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "registered-median" in printed and "offsets:" in printed and str(out) in printed
    with fits.open(out) as hdul:
        assert hdul[0].header["NREF"] == 5
        assert hdul[0].header["REF05"] == "day04.fits"
        assert hdul[0].data.shape == (256, 256)


def test_difference_command_reads_a_list_file_and_no_register(tmp_path, capsys):
    paths = _sequence(tmp_path)
    listing = tmp_path / "refs.txt"
    listing.write_text("# references\n" + "\n".join(p.name for p in paths[:-1]) + "\n")
    out = tmp_path / "diff.fits"
    assert main(["difference", str(paths[-1]), "-r", f"@{listing}", "-o", str(out), "--no-register"]) == 0
    assert "method:     median" in capsys.readouterr().out
    with fits.open(out) as hdul:
        assert hdul[0].header["DIFFMETH"] == "median"
        assert hdul[0].header["REFDY01"] == 0.0


def test_difference_command_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    paths = _sequence(tmp_path)
    bad = tmp_path / "bad.fits"
    bad.write_text("not fits")
    args = [
        "difference",
        str(paths[-1]),
        "--references",
        *map(str, paths[:-2]),
        str(bad),
        "--out",
        str(tmp_path / "d.fits"),
    ]
    assert main(args) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [f"blobwatch: error: {bad}: not a FITS file"]
    assert not (tmp_path / "d.fits").exists()


def test_difference_command_with_a_non_ascii_newline_file_name(tmp_path, capsys):
    from urllib.parse import unquote

    paths = _sequence(tmp_path)
    current = paths[-1].rename(tmp_path / "día\n05.fits")
    out = tmp_path / "diff.fits"
    assert main(["difference", str(current), "--references", *map(str, paths[:-1]), "--out", str(out)]) == 0
    with fits.open(out) as hdul:
        assert unquote(hdul[0].header["CURFILE"]) == current.name
    capsys.readouterr()
    bad = tmp_path / "bad\x1b[2J\nname.fits"
    bad.write_text("not fits")
    assert main(["difference", str(bad), "--references", str(bad), "--out", str(tmp_path / "d.fits")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [f"blobwatch: error: {tmp_path}/bad\\x1b[2J\\nname.fits: not a FITS file"]


def test_an_output_that_cannot_be_written_is_one_line_and_exit_2(tmp_path, capsys):
    paths = _sequence(tmp_path)
    folder = tmp_path / "folder"
    folder.mkdir()
    args = ["difference", str(paths[-1]), "--references", *map(str, paths[:-1]), "--out", str(folder)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert (
        err.strip().splitlines()[-1] == f"blobwatch: error: {folder}: cannot write the file (Is a directory)"
    )
    assert "Traceback" not in err
    assert list(folder.iterdir()) == [] and not list(tmp_path.glob(".*.tmp"))  # no temporary file left


def test_difference_command_too_few_references(tmp_path, capsys):
    paths = _sequence(tmp_path, n=4)
    args = [
        "difference",
        str(paths[-1]),
        "--references",
        *map(str, paths[:-1]),
        "--out",
        str(tmp_path / "d.fits"),
    ]
    assert main(args) == 2
    assert "3 references given; at least 5 are required" in capsys.readouterr().err


def test_console_script_exit_code_on_bad_input(tmp_path):
    bad = tmp_path / "bad.fits"
    bad.write_text("not fits")
    result = _run("difference", str(bad), "--references", str(bad), "--out", str(tmp_path / "d.fits"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == f"blobwatch: error: {bad}: not a FITS file"


@pytest.mark.parametrize(
    "flag, value",
    [
        ("--pedestal-sigma", "inf"),
        ("--pedestal-sigma", "-0.1"),
        ("--distractor-fraction", "1.5"),
        ("--distractor-fraction", "nan"),
    ],
)
def test_make_dataset_rejects_bad_nuisance_settings_before_writing(tmp_path, capsys, flag, value):
    out = tmp_path / "ds"
    with pytest.raises(SystemExit) as exc:
        main(["make-dataset", str(out), flag, value])
    assert exc.value.code == 2
    assert flag in capsys.readouterr().err
    assert not out.exists()


def test_difference_command_refuses_garbage_with_one_line_and_exit_2(tmp_path, capsys):
    paths = _sequence(tmp_path)
    zero = _write(tmp_path / "zero.fits", np.zeros((256, 256)), 60010.0)
    out = tmp_path / "d.fits"
    assert main(["difference", str(zero), "--references", *map(str, paths), "--out", str(out)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [f"blobwatch: error: {zero}: median level 0 is not that of a blob image (0.5-2)"]
    assert not out.exists()


@pytest.mark.parametrize("command", ["difference", "detect", "detect-npy"])
def test_a_fifo_given_to_a_command_is_one_line_and_exit_2(tmp_path, capsys, command):
    import os

    fifo = tmp_path / ("pipe.npy" if command == "detect-npy" else "pipe.fits")
    os.mkfifo(fifo)
    args = {
        "difference": ["difference", str(fifo), "--references", str(fifo), "--out", str(tmp_path / "d.fits")],
        "detect": ["detect", str(fifo)],
        "detect-npy": ["detect", str(fifo)],
    }[command]
    assert main(args) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"blobwatch: error: {fifo}: not a regular file (a FIFO)"
    ]


def test_difference_command_names_the_current_image_when_its_shape_is_wrong(tmp_path, capsys):
    paths = _sequence(tmp_path)
    rng = np.random.default_rng(1)
    wide = _write(tmp_path / "wide.fits", 1 + 0.002 * rng.standard_normal((256, 300)), 60010.0)
    assert (
        main(["difference", str(wide), "--references", *map(str, paths), "--out", str(tmp_path / "d.fits")])
        == 2
    )
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [f"blobwatch: error: {wide}: shape 256x300 does not match the references (256x256)"]
