"""``blobwatch monitor`` and ``blobwatch catalog ...`` on the command line."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from astropy.io import fits
from astropy.table import Table
from regions import Regions

from blobwatch.cli import main
from handmade_model import write_handmade_model
from monitor_support import simulate_inbox, webhook_server


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("cli")
    sim = root / "sim"
    _, truth = simulate_inbox(sim, n_days=4, size=256, new_blob_day=3, n_existing=3, seed=23)
    inbox = root / "inbox"
    inbox.mkdir()
    for path in sim.glob("*.fits"):
        shutil.copy(path, inbox / path.name)
    (inbox / "broken_blob.fits").write_bytes(b"SIMPLE  =                    T" + b" " * 100)
    model = write_handmade_model(root / "handmade.pt")
    return {"root": root, "sim": sim, "inbox": inbox, "model": model, "truth": truth}


def test_monitor_and_catalog_commands(
    setup: dict, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = setup["root"]
    monkeypatch.delenv("BLOBWATCH_DB", raising=False)
    monkeypatch.delenv("BLOBWATCH_NOTIFY", raising=False)
    monkeypatch.delenv("BLOBWATCH_CONFIG", raising=False)
    reports = root / "reports"
    common = ["--reports", str(reports)]
    assert main(["catalog", "import", str(setup["sim"] / "truth_blobs.ecsv"), *common]) == 0
    assert "imported 3 blobs (simulator-truth)" in capsys.readouterr().out

    with webhook_server() as hook:
        code = main(
            [
                "monitor",
                str(setup["inbox"]),
                *common,
                "--model",
                str(setup["model"]),
                "--min-references",
                "3",
                "--notify",
                hook.url,
                "--no-progress",
                "--base-url",
                "http://review.example:8000/",
            ]
        )
        out = capsys.readouterr().out
        assert code == 1  # the broken file was rejected
        assert "broken_blob.fits" in out and "rejected" in out
        assert "csm_day003_blob.fits" in out and "1 processed" in out and "1 rejected" in out
        assert len(hook.received) == 1 and "ALERT" in out
        message = hook.received[0]["message"]
        assert "    review: http://review.example:8000/candidates/1\n" in message
        assert f"catalog confirm ID --db sqlite:///{reports / 'blobwatch.db'}" in message
        # a second run: nothing new, exit 0, no second notification
        assert (
            main(
                [
                    "monitor",
                    str(setup["inbox"]),
                    *common,
                    "--model",
                    str(setup["model"]),
                    "--min-references",
                    "3",
                    "--notify",
                    hook.url,
                ]
            )
            == 0
        )
        assert "0 processed" in capsys.readouterr().out and len(hook.received) == 1
    assert (reports / "blobwatch.db").is_file() and (reports / "index.html").is_file()

    assert main(["catalog", "list", *common]) == 0
    listing = capsys.readouterr().out.splitlines()[1:]
    ids = [int(line.split()[0]) for line in listing]
    assert ids and all("new" in line for line in listing)
    truth = setup["truth"]
    best = min(
        listing,
        key=lambda line: abs(float(line.split()[2]) - truth["x"]) + abs(float(line.split()[3]) - truth["y"]),
    )
    best_id = int(best.split()[0])

    assert main(["catalog", "confirm", str(best_id), "--reviewer", "Ada", *common]) == 0
    assert f"candidate {best_id} confirmed as blob 4" in capsys.readouterr().out
    others = [i for i in ids if i != best_id]
    for cid in others:
        assert main(["catalog", "reject", str(cid), "--reason", "residual of a known blob", *common]) == 0
    capsys.readouterr()
    assert main(["catalog", "list", "--status", "rejected", *common]) == 0
    assert capsys.readouterr().out.count("residual of a known blob") == len(others)
    assert main(["catalog", "confirm", str(best_id), *common]) == 2
    assert "already confirmed" in capsys.readouterr().err

    out_file = root / "export" / "blobs.ecsv"
    assert main(["catalog", "export", str(out_file), *common]) == 0
    table = Table.read(out_file, format="ascii.ecsv")
    assert len(table) == 4 and table["source"][-1] == "confirmed"
    with fits.open(root / "export" / "blobs_mask1014.fits") as hdul:
        assert hdul["DQ"].data.shape == (1014, 1014)
    assert main(["catalog", "list", "--blobs", *common]) == 0
    assert "confirmed" in capsys.readouterr().out
    reg = root / "export" / "blobs.reg"
    assert main(["catalog", "export", str(reg), "--format", "reg", *common]) == 0
    circles = Regions.read(str(reg), format="ds9")
    assert [(r.center.x, r.center.y, r.radius) for r in circles] == [
        pytest.approx((row["x"], row["y"], row["radius"])) for row in table
    ]
    assert [r.meta["text"] for r in circles] == [f"blob {i}" for i in table["id"]]
    bpx = root / "export" / "blobs_bpx.fits"
    assert main(["catalog", "export", str(bpx), "--format", "bpixtab", *common]) == 0
    assert capsys.readouterr().out.split() == [str(reg), str(bpx)]
    with fits.open(bpx) as hdul:
        assert hdul[0].header["FILETYPE"] == "BAD PIXELS" and set(hdul["BPIXTAB"].data["BLOB"]) == {
            1,
            2,
            3,
            4,
        }


@pytest.fixture
def in_empty_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in an empty working folder, without $BLOBWATCH_DB or a config file."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BLOBWATCH_DB", raising=False)
    monkeypatch.delenv("BLOBWATCH_CONFIG", raising=False)
    return tmp_path


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["monitor", "/no/such/inbox"], "inbox folder not found"),
        (["monitor", ".", "--db", "nonsense://"], "not a database URL"),
        (["monitor", ".", "--min-references", "40"], "--min-references 40 must be between"),
        (["monitor", ".", "--notify", "nonsense-scheme://x"], "not a valid apprise URL"),
        (["monitor", ".", "--model", "/no/model.pt"], "model file not found"),
        (["monitor", ".", "--watch", "0"], "--watch 0 must be a positive number"),
        (["monitor", ".", "--base-url", "review.example"], "--base-url 'review.example': must be an http"),
        (["catalog", "import", "/no/file.ecsv"], "file not found"),
        (["catalog", "reject", "99", "--reason", "x"], "candidate 99 does not exist"),
        (["catalog", "list", "--status", "maybe"], "--status 'maybe' must be one of"),
        # psycopg is not a dependency: "driver not installed" (or, if installed, "cannot open")
        (["catalog", "list", "--db", "postgresql://u@127.0.0.1:9/x"], "--db postgresql://u@127.0.0.1:9/x: "),
        (["catalog", "export", "/proc/blobs.ecsv"], "/proc/blobs.ecsv: cannot write the file"),
    ],
)
def test_bad_usage_is_one_line_and_exit_2(
    argv: list[str], message: str, in_empty_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from blobwatch.monitor.db import open_database

    tmp_path = in_empty_folder
    open_database(f"sqlite:///{tmp_path / 'r' / 'blobwatch.db'}")  # the default database exists
    assert main([*argv, "--reports", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "argv",
    [
        ["catalog", "export", "out.ecsv"],
        ["catalog", "list"],
        ["catalog", "confirm", "1"],
        ["catalog", "reject", "1", "--reason", "dip"],
        ["serve", "--port", "8123"],
    ],
)
@pytest.mark.parametrize("where", ["default", "--db", "$BLOBWATCH_DB", "not a blobwatch database"])
def test_only_monitor_and_import_create_a_database(
    argv: list[str],
    where: str,
    in_empty_folder: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Anything but monitor and catalog import names the database it looked for and exits 2."""
    import sqlite3

    tmp_path = in_empty_folder
    monkeypatch.setattr("uvicorn.run", lambda app, **kw: None)  # never serve for real
    path = tmp_path / "blobwatch-reports" / "blobwatch.db"  # the default of monitor and serve alike
    if where == "--db":
        path = tmp_path / "mistyped" / "blobwatch.db"
        argv = [*argv, "--db", f"sqlite:///{path}"]
    elif where == "$BLOBWATCH_DB":
        path = tmp_path / "mistyped.db"
        monkeypatch.setenv("BLOBWATCH_DB", f"sqlite:///{path}")
    elif where == "not a blobwatch database":
        path = tmp_path / "other.db"
        with sqlite3.connect(path) as conn:
            conn.execute("CREATE TABLE notes (text TEXT)")
        argv = [*argv, "--db", f"sqlite:///{path}"]
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"database sqlite:///{path}: " in err and len(err.strip().splitlines()) == 1
    assert ("not a blobwatch database" if where == "not a blobwatch database" else "no such file") in err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing created


def test_monitor_and_serve_share_the_default_database(
    in_empty_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``serve`` without --db opens the database ``monitor`` made without --db."""
    import argparse

    from blobwatch.cli.monitor import locations

    tmp_path = in_empty_folder
    seen: dict = {}
    monkeypatch.setattr("blobwatch.web.app.create_app", lambda url, reports, **kw: seen.update(url=url))
    monkeypatch.setattr("uvicorn.run", lambda app, **kw: None)
    assert main(["serve"]) == 0
    monitor_args = argparse.Namespace(db=None, reports=None, config=None)
    assert (
        seen["url"]
        == locations(monitor_args)[0]
        == f"sqlite:///{tmp_path / 'blobwatch-reports' / 'blobwatch.db'}"
    )


def test_demo_folder_is_emptied_only_if_a_demo_wrote_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from blobwatch.cli.demo import _prepare_outdir
    from blobwatch.errors import InputError

    mine = tmp_path / "notes"
    mine.mkdir()
    (mine / "thesis.tex").write_text("precious")
    with pytest.raises(InputError, match="not written by 'blobwatch demo'"):
        _prepare_outdir(mine)
    assert (mine / "thesis.tex").exists()
    out = tmp_path / "demo"
    _prepare_outdir(out)
    assert capsys.readouterr().out == ""  # a new folder replaces nothing
    (out / "inbox").mkdir()
    (out / "inbox" / "old.fits").write_bytes(b"x")
    (out / "blobwatch.db").write_bytes(b"x")
    _prepare_outdir(out)
    assert sorted(p.name for p in out.iterdir()) == [".blobwatch-demo"]
    assert f"replacing the output of an earlier demo in {out}: its files" in capsys.readouterr().out


def test_demo_says_which_review_decisions_it_replaces(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from blobwatch.cli.demo import _prepare_outdir
    from blobwatch.monitor.db import Candidate, Image, Run, open_database

    out = tmp_path / "demo"
    _prepare_outdir(out)
    with open_database(f"sqlite:///{out / 'blobwatch.db'}").begin() as s:
        s.add_all([Image(id=i, path=f"/in/{i}.fits", sha256=str(i) * 64, status="processed") for i in (1, 2)])
        s.add(Run(id=1, image_id=2, blobwatch_version="t"))
        s.add_all(
            [
                Candidate(
                    run_id=1,
                    image_id=2,
                    x=x,
                    y=5.0,
                    probability=0.9,
                    status=status,
                    reviewed_by=None if status == "new" else "Ada",
                )
                for x, status in ((5.0, "confirmed"), (50.0, "rejected"), (90.0, "new"))
            ]
        )
    _prepare_outdir(out)
    said = capsys.readouterr().out
    assert "its database with 2 images and 2 review decision(s)" in said and "are lost" in said
    assert not (out / "blobwatch.db").exists()


@pytest.mark.slow
def test_demo_alerts_on_day_40_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``make demo``: several minutes on 2 cores."""
    from blobwatch.modelfile import shipped_model_path

    if not shipped_model_path().is_file():
        pytest.skip("the shipped model is not there yet")
    assert main(["demo", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    assert "-> PASS" in out and "1 notification(s) received" in out


def test_confirm_of_a_candidate_linked_to_a_confirmed_one_is_refused_or_recorded_as_its_blob(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from blobwatch.monitor.db import Blob, Candidate, Image, Run, open_database

    monkeypatch.delenv("BLOBWATCH_CONFIG", raising=False)
    url = f"sqlite:///{tmp_path / 'bw.db'}"
    with open_database(url).begin() as s:
        s.add_all(
            [
                Image(id=i, path=f"/in/{i}.fits", sha256=str(i) * 64, status="processed", mjd=60000.0 + i)
                for i in (1, 2)
            ]
        )
        s.add_all([Run(id=i, image_id=i, blobwatch_version="t") for i in (1, 2)])
        s.add_all(
            [
                Candidate(id=1, run_id=1, image_id=1, x=50.0, y=60.0, probability=0.9, status="confirmed"),
                Candidate(
                    id=2, run_id=2, image_id=2, x=50.6, y=60.0, probability=0.2, status="linked", linked_to=1
                ),
            ]
        )
        s.add(Blob(id=7, x=50.0, y=60.0, radius=6.0, depth=0.1, source="confirmed", candidate_id=1))
    common = ["--db", url, "--reports", str(tmp_path / "r"), "--reviewer", "Ada"]
    assert main(["catalog", "confirm", "2", *common]) == 2
    err = capsys.readouterr().err
    assert (
        "candidate 2 is catalog blob 7 again" in err and "--same-as 7" in err and len(err.splitlines()) == 1
    )
    assert main(["catalog", "confirm", "2", "--same-as", "7", *common]) == 0
    assert "candidate 2 recorded as catalog blob 7 seen again; nothing added" in capsys.readouterr().out
    with open_database(url)() as s:
        assert [b.id for b in s.query(Blob)] == [7]
        assert (s.get(Candidate, 2).status, s.get(Candidate, 2).known_blob_id) == ("known", 7)


def test_a_command_on_an_existing_or_foreign_database_prints_no_alembic_lines(tmp_path: Path) -> None:
    """In a real process (no pytest log capture): stderr is empty on success, one line on refusal."""
    import sqlite3
    import subprocess
    import sys

    from blobwatch.monitor.db import open_database

    good, other = tmp_path / "bw.db", tmp_path / "other.db"
    open_database(f"sqlite:///{good}")
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE notes (text TEXT)")
    env = {
        k: v for k, v in os.environ.items() if k != "BLOBWATCH_CONFIG"
    }  # and no blobwatch.toml in tmp_path

    def run(db: Path) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "blobwatch.cli", "catalog", "list", "--db", f"sqlite:///{db}"],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
            cwd=tmp_path,
        )

    ok = run(good)
    assert ok.returncode == 0 and ok.stderr == ""
    refused = run(other)
    assert refused.returncode == 2 and refused.stderr.splitlines() == [
        f"blobwatch: error: database sqlite:///{other}: not a blobwatch database (it has no blobwatch tables); "
        "give the right one with --db or $BLOBWATCH_DB, or create one with 'blobwatch monitor' or "
        "'blobwatch catalog import'"
    ]


LOG_LINE = r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} - blobwatch\.[a-z_.]+ - (DEBUG|INFO|WARNING|ERROR) - "


def test_an_empty_inbox_says_so_and_exits_0(
    in_empty_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import re

    inbox = in_empty_folder / "inbox"
    (inbox / "notes").mkdir(parents=True)
    (inbox / "notes" / "README.txt").write_text("not an image")
    log_file = in_empty_folder / "logs" / "monitor.log"
    log_file.parent.mkdir()
    assert main(["monitor", str(inbox), "--no-progress", "--log-file", str(log_file)]) == 0
    err = capsys.readouterr().err
    warning = [line for line in err.splitlines() if "no FITS files" in line]
    assert len(warning) == 1 and re.match(LOG_LINE.replace("[a-z_.]+", r"monitor\.runner"), warning[0])
    assert f" - WARNING - {inbox}: the inbox holds no FITS files" in warning[0]
    assert warning[0] in log_file.read_text().splitlines()  # the same line in the log file


def test_log_options_after_the_subcommand(
    setup: dict, in_empty_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import re

    log_file = in_empty_folder / "import.log"
    truth = str(setup["sim"] / "truth_blobs.ecsv")
    assert main(["catalog", "import", truth, "--log-file", str(log_file)]) == 0
    (line,) = [ln for ln in log_file.read_text().splitlines() if "imported 3 blobs" in ln]
    assert re.match(LOG_LINE, line) and " - blobwatch.monitor.catalog - INFO - " in line
    capsys.readouterr()
    assert main(["catalog", "import", truth, "-q", "--log-file", str(log_file)]) == 0
    assert " - INFO - " not in capsys.readouterr().err
    assert len(log_file.read_text().splitlines()) == 1  # appended nothing: quiet
    assert main(["catalog", "list", "-v"]) == 0 and main(["-q", "catalog", "list"]) == 0
    with pytest.raises(SystemExit) as exc:
        main(["catalog", "list", "-v", "-q"])
    assert exc.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "usage", "problem"),
    [
        (["catalog", "list", "--bogus"], "usage: blobwatch catalog list", "unrecognized arguments: --bogus"),
        (["monitor", "inbox", "extra"], "usage: blobwatch monitor", "unrecognized arguments: extra"),
        (["monitor"], "usage: blobwatch monitor", "the following arguments are required: INBOX"),
        (
            ["catalog", "export", "x", "--format", "csv"],
            "usage: blobwatch catalog export",
            "invalid choice: 'csv'",
        ),
    ],
)
def test_an_argparse_mistake_shows_the_subcommands_usage(
    argv: list[str], usage: str, problem: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.startswith(usage) and problem in err
