"""Tests of the PaperCNN family (ConfigurableCNN) and of ``blobwatch tune`` (Optuna)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from blobwatch import dataset as D
from blobwatch.cli import main
from blobwatch.modelfile import load_model, save_model
from blobwatch.models import ConfigurableCNN, PaperCNN, build_model
from blobwatch.models.configurable_cnn import parameter_count

SIZE = 64
SRC = str(Path(__file__).resolve().parents[1] / "src")
#: Calibration split of the tests: 256x256 images (16 subframes of 64), 5 sequences x 2 cases.
SMALL = ["--size", "256", "--references", "3", "--cases-per-sequence", "2", "--calibration-sequences", "5"]


# --------------------------------------------------------------------------------------------
# the network family
# --------------------------------------------------------------------------------------------


def test_default_configurable_cnn_is_papercnn() -> None:
    family, paper = ConfigurableCNN(), PaperCNN()
    fs, ps = family.state_dict(), paper.state_dict()
    assert list(fs) == list(ps)
    assert [v.shape for v in fs.values()] == [v.shape for v in ps.values()]
    assert sum(p.numel() for p in family.parameters()) == 528098 == parameter_count()
    assert [type(m) for m in family.modules()][1:] == [type(m) for m in paper.modules()][1:]
    assert repr(family.features) == repr(paper.features) and repr(family.classifier) == repr(paper.classifier)
    # the same weights give the same logits
    family.load_state_dict(ps)
    family.eval(), paper.eval()
    x = torch.randn(2, 1, 256, 256)
    assert torch.equal(family(x), paper(x))


def test_knobs_change_the_network_and_the_weight_count_matches() -> None:
    args = {
        "size": SIZE,
        "filters": (4, 8, 16),
        "kernel": 3,
        "pool": 2,
        "pool_type": "avg",
        "hidden": 32,
        "dropout": (0.0, 0.5),
    }
    net = ConfigurableCNN(**args)
    assert sum(p.numel() for p in net.parameters()) == parameter_count(**args)
    assert sum(isinstance(m, torch.nn.Conv2d) for m in net.modules()) == 3
    assert any(isinstance(m, torch.nn.AvgPool2d) for m in net.modules())
    assert tuple(net(torch.zeros(3, 1, SIZE, SIZE)).shape) == (3, 2)
    for bad in (
        {"kernel": 4},
        {"pool_type": "min"},
        {"filters": ()},
        {"dropout": (0.1, 1.0)},
        {"filters": (4, 4, 4, 4), "pool": 4, "size": SIZE},
    ):
        with pytest.raises(ValueError, match=r"\S"):
            ConfigurableCNN(**bad)


def test_a_tuned_model_file_loads_everywhere_a_papercnn_file_does(tmp_path: Path) -> None:
    from blobwatch.classifier import BlobClassifier

    args = {
        "size": SIZE,
        "filters": [4, 8, 16],
        "kernel": 3,
        "pool": 2,
        "pool_type": "max",
        "hidden": 16,
        "dropout": [0.1, 0.2],
    }
    net = build_model("ConfigurableCNN", args)
    path = tmp_path / "tuned.pt"
    save_model(
        path,
        net,
        architecture="ConfigurableCNN",
        arguments=args,
        metadata={"threshold": 0.4, "preparation": {"size": SIZE, "clip_factor": 0.5}},
    )
    loaded = load_model(path)
    assert loaded.architecture == "ConfigurableCNN" and loaded.arguments["filters"] == [4, 8, 16]
    for k, v in net.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[k], v)
    clf = BlobClassifier(path, device="cpu")
    p = clf.predict_proba(np.zeros((2, SIZE, SIZE), np.float32))
    assert p.shape == (2,) and np.all((p >= 0) & (p <= 1))


# --------------------------------------------------------------------------------------------
# search space, metric, parameter file
# --------------------------------------------------------------------------------------------


def test_seed_params_map_to_papercnn_and_the_short_recipe() -> None:
    from blobwatch.tune import network_arguments, seed_params, training_settings

    p = seed_params(6)
    assert network_arguments(p, 256) == {
        "size": 256,
        "filters": [8, 16],
        "kernel": 5,
        "pool": 4,
        "pool_type": "max",
        "hidden": 128,
        "dropout": [0.15, 0.3],
    }
    assert (
        build_model("ConfigurableCNN", network_arguments(p, 256)).state_dict().keys()
        == PaperCNN().state_dict().keys()
    )
    assert training_settings(p) == {
        "epochs": 6,
        "adam_epochs": 4,
        "batch_size": 100,
        "adam_lr": 1e-3,
        "sgd_lr": 1e-3,
    }
    assert training_settings({**p, "epochs": 2, "adam_epochs": 5})["adam_epochs"] == 2


def test_objective_metrics() -> None:
    from blobwatch.errors import BlobwatchError
    from blobwatch.tune import objective_metrics

    labels = np.r_[np.ones(20, bool), np.zeros(200, bool)]
    perfect = objective_metrics(labels, labels.astype(float))
    assert perfect["pauc"] == pytest.approx(1.0) and perfect["auc"] == 1.0 and perfect["tpr_at_tnr"] == 1.0
    rng = np.random.default_rng(0)
    noisy = objective_metrics(labels, labels * 1.0 + rng.normal(0, 1.0, labels.size))
    assert 0.5 < noisy["pauc"] < 1.0 and noisy["auc"] > noisy["pauc"] - 0.5
    # the TPR at TNR >= 0.97: the 6 highest negatives are allowed above the threshold
    scores = np.r_[np.linspace(0.5, 0.9, 20), np.linspace(0.0, 0.6, 200)]
    expected = np.mean(scores[:20] >= np.sort(scores[20:])[-6])
    assert objective_metrics(labels, scores)["tpr_at_tnr"] == pytest.approx(expected, abs=0.051)
    with pytest.raises(BlobwatchError, match="both"):
        objective_metrics(np.ones(5, bool), np.ones(5))


def test_read_params_refuses_bad_files(tmp_path: Path) -> None:
    from blobwatch.errors import InputError
    from blobwatch.tune import PARAMS_FORMAT, read_params

    with pytest.raises(InputError, match="not found"):
        read_params(tmp_path / "none.json")
    (tmp_path / "a.json").write_text("{")
    with pytest.raises(InputError, match="JSON"):
        read_params(tmp_path / "a.json")
    (tmp_path / "b.json").write_text(
        json.dumps({"format": PARAMS_FORMAT, "architecture": "Nope", "arguments": {}, "training": {}})
    )
    with pytest.raises(InputError, match="architecture"):
        read_params(tmp_path / "b.json")


def test_missing_optuna_is_one_line_naming_the_extra(
    monkeypatch: pytest.MonkeyPatch, capsys, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "optuna", None)  # what an environment without optuna gives
    assert main(["tune", str(tmp_path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "blobwatch[research]" in err and "Traceback" not in err


def _tiny_train(root: Path) -> Path:
    rng = np.random.default_rng(0)
    srcs = [
        D.SourceImage(
            f"s{i}", rng.normal(0, 1, (256, 256)).astype(np.float32), np.zeros((256, 256), np.uint8)
        )
        for i in range(2)
    ]
    yy, xx = np.mgrid[:13, :13] - 6
    stamps = {1: np.where(np.hypot(yy, xx) < 5, 4.0, 0.0).astype(np.float32)}
    return Path(
        D.make_dataset(
            root / "train",
            srcs,
            n_samples=40,
            region="train",
            seed=1,
            stamps=stamps,
            stamp_ids=[1],
            size=SIZE,
            blobs=D.BlobConfig(simulated_fraction=0.0),
        )
    )


def test_bad_dataset_or_database_is_one_line(tmp_path: Path, capsys) -> None:
    pytest.importorskip("optuna")
    assert main(["tune", str(tmp_path / "missing"), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "missing" in err
    train = _tiny_train(tmp_path)
    assert (
        main(
            [
                "tune",
                str(train),
                "--out",
                str(tmp_path / "run"),
                "--storage",
                "postgresql+nosuchdriver://u:secret@localhost/db",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "cannot open the study database" in err and "secret" not in err


# --------------------------------------------------------------------------------------------
# whole studies (real training on tiny data, several processes)
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny 64x64 training set and a regression cache holding a small calibration split."""
    pytest.importorskip("optuna")
    from blobwatch.regression import SuiteSpec, build_suite
    from blobwatch.variation import VariationConfig

    root = tmp_path_factory.mktemp("tune")
    train = _tiny_train(root)
    cache = root / "cache"
    build_suite(
        SuiteSpec("calibration", 5, VariationConfig(size=256, n_references=3, cases=2)), cache, progress=False
    )
    return Path(train), cache


def _tune_cmd(train: Path, cache: Path, out: Path, db: Path, trials: int, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "blobwatch.cli",
        "tune",
        str(train),
        "--out",
        str(out),
        "--storage",
        f"sqlite:///{db}",
        "--study",
        "s",
        "--trials",
        str(trials),
        "--cache",
        str(cache),
        "--max-epochs",
        "2",
        "--max-samples",
        "40",
        "--threads",
        "1",
        "--device",
        "cpu",
        "--no-progress",
        *SMALL,
        *extra,
    ]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _trials(db: Path) -> list[tuple[int, str]]:
    with sqlite3.connect(db) as con:
        return con.execute("SELECT number, state FROM trials ORDER BY number").fetchall()


@pytest.mark.slow
def test_one_worker_writes_the_report_and_train_params_trains_the_winner(tiny_data, tmp_path: Path) -> None:
    train, cache = tiny_data
    out = tmp_path / "run"
    assert main(_tune_cmd(train, cache, out, tmp_path / "t.db", 4)[3:]) == 0
    best = json.loads((out / "best.json").read_text())
    assert best["architecture"] == "ConfigurableCNN" and best["arguments"]["size"] == SIZE
    assert 0.0 <= best["value"] <= 1.0
    rows = (out / "trials.csv").read_text().splitlines()
    assert rows[0].startswith("number,state,value") and len(rows) >= 5
    md = (out / "trials.md").read_text()
    assert "seed PaperCNN" in md  # trial 0 is the seed's architecture
    assert (out / "trials" / "trial_0000" / "model.pt").is_file()
    # train the winner from best.json; a command-line option overrides its training settings
    assert (
        main(
            [
                "train",
                str(train),
                "--out",
                str(tmp_path / "winner"),
                "--params",
                str(out / "best.json"),
                "--epochs",
                "1",
                "--no-progress",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    model = load_model(tmp_path / "winner" / "model.pt")
    assert model.architecture == "ConfigurableCNN"
    assert model.arguments == {**best["arguments"]}
    assert model.metadata["training"]["epochs"] == 1
    assert model.metadata["training"]["batch_size"] == best["training"]["batch_size"]
    # a finished study: a second run trains nothing and rewrites the report
    assert main(_tune_cmd(train, cache, out, tmp_path / "t.db", 4)[3:]) == 0
    assert len(_trials(tmp_path / "t.db")) == len(rows) - 1


@pytest.mark.slow
def test_two_workers_share_one_sqlite_study_without_duplicates(tiny_data, tmp_path: Path) -> None:
    train, cache = tiny_data
    db, n = tmp_path / "shared.db", 6
    procs = [
        subprocess.Popen(
            _tune_cmd(train, cache, tmp_path / f"w{i}", db, n, "--seed", str(i)),
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    trials = _trials(db)
    numbers = [t[0] for t in trials]
    assert len(numbers) == len(set(numbers))
    finished = [t for t in trials if t[1] in ("COMPLETE", "PRUNED")]
    assert n <= len(finished) <= n + 1  # the other worker may finish the trial it was running
    assert all(t[1] in ("COMPLETE", "PRUNED") for t in trials)
    with sqlite3.connect(db) as con:  # no two trials trained into the same folder
        folders = [
            r[0] for r in con.execute("SELECT value_json FROM trial_user_attributes WHERE key = 'run_folder'")
        ]
    assert folders and len(folders) == len(set(folders))
    assert all((tmp_path / f"w{i}" / "best.json").is_file() for i in range(2))


@pytest.mark.slow
def test_a_killed_worker_leaves_the_study_usable(tiny_data, tmp_path: Path) -> None:
    train, cache = tiny_data
    db, n = tmp_path / "killed.db", 3
    proc = subprocess.Popen(
        _tune_cmd(train, cache, tmp_path / "a", db, n, "--heartbeat", "1"),
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if db.is_file():
            try:  # mid-trial: running, and its worker's heartbeat recorded
                with sqlite3.connect(db) as con:
                    running = con.execute(
                        "SELECT t.number FROM trials t JOIN trial_heartbeats h "
                        "ON h.trial_id = t.trial_id WHERE t.state = 'RUNNING'"
                    ).fetchall()
                if running:
                    break
            except sqlite3.OperationalError:  # tables not made yet
                pass
        time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("no trial started")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed = running[0][0]
    assert dict(_trials(db))[killed] == "RUNNING"
    time.sleep(2.5)  # past the grace period of two heartbeats
    done = subprocess.run(
        _tune_cmd(train, cache, tmp_path / "b", db, n, "--heartbeat", "1"),
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    trials = _trials(db)
    states = [s for _, s in trials]
    assert dict(trials)[killed] == "FAIL" and "RUNNING" not in states
    assert sum(s in ("COMPLETE", "PRUNED") for s in states) >= n
    with sqlite3.connect(db) as con:  # the killed trial was run again with its parameters
        retried = con.execute(
            "SELECT COUNT(*) FROM trial_system_attributes WHERE key = 'failed_trial'"
        ).fetchone()[0]
    assert retried == 1
