"""One configuration (`blobwatch.config`): blobwatch.toml, the environment and the command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from blobwatch.cli import main
from blobwatch.config import config_file, load_config, resolve
from blobwatch.errors import BlobwatchError, InputError

ENV = (
    "BLOBWATCH_CONFIG",
    "BLOBWATCH_DB",
    "BLOBWATCH_REPORTS",
    "BLOBWATCH_NOTIFY",
    "BLOBWATCH_BASE_URL",
    "BLOBWATCH_THRESHOLD",
    "BLOBWATCH_MODEL",
    "BLOBWATCH_DETECTOR",
    "BLOBWATCH_FCN_MODEL",
)
TOML = """db = "sqlite:////data/file.db"
reports = "/data/reports"
base_url = "http://quicklook.example.org:8000/"
notify = ["json://file.example/hook"]
threshold = 0.4
references = 20
min_references = 4
model = "/data/model.pt"
"""


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working folder and no blobwatch variable in the environment."""
    monkeypatch.chdir(tmp_path)
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def test_command_line_beats_environment_beats_file_beats_default(folder: Path) -> None:
    (folder / "blobwatch.toml").write_text(TOML)
    env = {
        "BLOBWATCH_NOTIFY": "json://env.example/a, json://env.example/b json://env.example/a",
        "BLOBWATCH_THRESHOLD": "0.6",
    }
    found = resolve({"threshold": 0.7, "references": None, "notify": []}, env=env)
    assert (found["threshold"].value, found["threshold"].source) == (0.7, "--threshold")
    assert found["notify"].value == ["json://env.example/a", "json://env.example/b"]
    assert found["notify"].source == "$BLOBWATCH_NOTIFY"
    assert (found["references"].value, found["references"].source) == (20, str(folder / "blobwatch.toml"))
    assert found["base_url"].value == "http://quicklook.example.org:8000"
    assert found["db"].value == "sqlite:////data/file.db" and found["model"].value == "/data/model.pt"
    (folder / "blobwatch.toml").unlink()
    default = resolve({}, env={})
    assert {k: s.source for k, s in default.items()} == dict.fromkeys(default, "default")
    assert default["db"].value == f"sqlite:///{folder / 'blobwatch-reports' / 'blobwatch.db'}"
    assert (default["references"].value, default["min_references"].value, default["notify"].value) == (
        30,
        5,
        [],
    )
    # the default database follows the reports folder wherever that comes from
    assert resolve({}, env={"BLOBWATCH_REPORTS": "/srv/r"})["db"].value == "sqlite:////srv/r/blobwatch.db"


def test_the_config_file_is_given_named_or_in_the_working_folder(folder: Path) -> None:
    assert config_file(env={}) is None
    (folder / "blobwatch.toml").write_text("")
    assert config_file(env={}) == folder / "blobwatch.toml"
    (folder / "team.toml").write_text("")
    assert config_file(env={"BLOBWATCH_CONFIG": "team.toml"}) == Path("team.toml")
    assert config_file("team.toml", env={"BLOBWATCH_CONFIG": "x.toml"}) == Path("team.toml")  # --config first
    for given, env in (("missing.toml", {}), (None, {"BLOBWATCH_CONFIG": "missing.toml"})):
        with pytest.raises(InputError, match=r"missing\.toml: config file not found"):
            config_file(given, env=env)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("db = \n", "not a valid TOML config file"),
        ('colour = "red"\n', "unknown key 'colour'"),
        ("threshold = 1.5\n", "threshold = 1.5: must be a number between 0 and 1"),
        ('references = "many"\n', "references = 'many': must be a positive whole number"),
        (
            'notify = "json://x"\nbase_url = "quicklook:8000"\n',
            "base_url = 'quicklook:8000': must be an http",
        ),
        ("monitor = 3\n", "'monitor' must be a table"),
    ],
)
def test_a_bad_config_file_is_one_line_naming_it_for_every_command(
    folder: Path, content: str, problem: str, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = folder / "bad.toml"
    bad.write_text(content)
    with pytest.raises(InputError, match=r"bad\.toml: "):
        load_config(bad)
    for argv in (["catalog", "list"], ["detect", "diff.npy"], ["config", "show"]):
        assert main([*argv, "--config", str(bad)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"blobwatch: error: {bad}: ") and problem in err and len(err.splitlines()) == 1


def test_the_earlier_monitor_table_is_read_the_same(folder: Path) -> None:
    (folder / "blobwatch.toml").write_text(
        '[monitor]\nnotify = ["json://config.example/hook"]\ndb = "sqlite:///x.db"\n'
    )
    assert load_config(folder / "blobwatch.toml") == {
        "notify": ["json://config.example/hook"],
        "db": "sqlite:///x.db",
    }


def test_the_config_is_read_without_tomllib_as_on_python_3_10(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    import tomllib

    monkeypatch.setitem(sys.modules, "tomllib", None)  # as on 3.10: "import tomllib" fails
    monkeypatch.setitem(sys.modules, "tomli", tomllib)  # tomli, the package tomllib came from
    (folder / "c.toml").write_text('notify = ["json://config.example/hook"]\n')
    assert load_config(folder / "c.toml") == {"notify": ["json://config.example/hook"]}


def test_a_bad_environment_or_command_line_value_names_its_source(folder: Path) -> None:
    with pytest.raises(BlobwatchError, match=r"\$BLOBWATCH_THRESHOLD='high': must be a number"):
        resolve({}, env={"BLOBWATCH_THRESHOLD": "high"})
    with pytest.raises(BlobwatchError, match="--references 0: must be a positive whole number"):
        resolve({"references": 0}, env={})
    with pytest.raises(BlobwatchError, match=r"\$BLOBWATCH_DETECTOR='cnn': must be one of fcn, paper"):
        resolve({}, env={"BLOBWATCH_DETECTOR": "cnn"})


def test_the_detector_defaults_to_the_suite_winner_and_follows_the_config(folder: Path) -> None:
    assert resolve({}, env={})["detector"].value == "fcn"
    (folder / "blobwatch.toml").write_text('detector = "paper"\n')
    assert resolve({}, env={})["detector"].value == "paper"
    assert resolve({"detector": "fcn"}, env={})["detector"].source == "--detector"
    (folder / "blobwatch.toml").write_text('detector = "unet"\n')
    with pytest.raises(InputError, match="detector"):
        resolve({}, env={})


def test_config_show_prints_each_setting_and_its_source_without_secrets(
    folder: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (folder / "blobwatch.toml").write_text(
        TOML.replace('"sqlite:////data/file.db"', '"postgresql://ada:hunter2@db.example/bw"')
    )
    monkeypatch.setenv("BLOBWATCH_NOTIFY", "mailtos://alice:s3cret@mail.example.org")
    assert main(["config", "show", "--threshold", "0.55"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert out.splitlines()[0] == f"config file: {folder / 'blobwatch.toml'}"
    assert rows["threshold"].split() == ["threshold", "0.55", "(--threshold)"]
    assert rows["notify"].endswith("($BLOBWATCH_NOTIFY)") and "s3cret" not in out
    assert rows["db"].split()[1] == "postgresql://ada:***@db.example/bw" and "hunter2" not in out
    assert rows["references"].endswith(f"({folder / 'blobwatch.toml'})")
    assert list(rows) == [
        "db",
        "reports",
        "base_url",
        "notify",
        "threshold",
        "references",
        "min_references",
        "detector",
        "model",
        "fcn_model",
    ]
    assert rows["detector"].split() == ["detector", "fcn", "(default)"]


def test_commands_take_their_settings_from_the_config_file(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (folder / "inbox").mkdir()
    (folder / "blobwatch.toml").write_text('reports = "team-reports"\nmodel = "/no/such/model.pt"\n')
    assert main(["monitor", "inbox"]) == 2
    assert "/no/such/model.pt: model file not found" in capsys.readouterr().err
    (folder / "blobwatch.toml").write_text('reports = "team-reports"\n')
    assert main(["monitor", "inbox", "--no-progress"]) == 0
    assert (folder / "team-reports" / "blobwatch.db").is_file()
    assert main(["catalog", "list", "--blobs"]) == 0  # finds the database the monitor made there
    assert main(["catalog", "list", "--reports", "elsewhere"]) == 2  # the command line wins
    assert f"database sqlite:///{folder / 'elsewhere' / 'blobwatch.db'}" in capsys.readouterr().err
