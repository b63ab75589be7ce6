"""The monitor, the catalog, the web app and `tune` against a real PostgreSQL server (issue 13,
item 4): the same results as on SQLite. Skipped, with the reason, where no server can start."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from blobwatch.cli import main
from blobwatch.monitor.db import Candidate, Image, open_database
from blobwatch.monitor.runner import MonitorSettings, run_monitor
from monitor_support import simulate_inbox
from pg_support import new_database, postgres_server

SETTINGS = MonitorSettings(min_references=3)


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    yield from postgres_server()


@pytest.fixture(scope="module")
def inbox(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("pg-inbox")
    _, truth = simulate_inbox(root / "sim", n_days=5, size=256, new_blob_day=4, n_existing=3)
    images = root / "inbox"
    images.mkdir()
    for path in sorted((root / "sim").glob("*.fits")):
        shutil.copy(path, images / path.name)
    return images, truth


def _candidates(url: str) -> list[tuple[str, float, float, str]]:
    Session = open_database(url, create=False)
    with Session() as s:
        rows = s.execute(
            select(Image.path, Candidate.x, Candidate.y, Candidate.status).join(
                Image, Candidate.image_id == Image.id
            )
        ).all()
    return sorted((Path(path).name, round(x, 3), round(y, 3), status) for path, x, y, status in rows)


def test_the_monitor_records_on_postgresql_what_it_records_on_sqlite(
    server: str, inbox: tuple[Path, dict], tmp_path: Path
) -> None:
    images, truth = inbox
    pg = new_database(server)
    lite = f"sqlite:///{tmp_path / 'bw.db'}"
    for url, folder in ((pg, "pg"), (lite, "lite")):
        summary = run_monitor(
            images, db=url, reports=tmp_path / folder, settings=SETTINGS, echo=lambda _: None
        )
        assert summary.exit_code == 0 and len(summary.processed) == 2
    found = _candidates(pg)
    assert found == _candidates(lite)
    new = [(x, y) for name, x, y, status in found if status == "new" and "day004" in name]
    assert min(np.hypot(x - truth["x"], y - truth["y"]) for x, y in new) < 3.0
    again = run_monitor(images, db=pg, reports=tmp_path / "pg", settings=SETTINGS, echo=lambda _: None)
    assert again.outcomes == [] and _candidates(pg) == found  # nothing twice


def test_catalog_review_and_export_on_postgresql(
    server: str, inbox: tuple[Path, dict], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from astropy.table import Table

    images, _ = inbox
    pg = new_database(server)
    run_monitor(images, db=pg, reports=tmp_path / "r", settings=SETTINGS, echo=lambda _: None)
    common = ["--db", pg, "--reports", str(tmp_path / "r")]
    assert main(["catalog", "list", *common]) == 0
    first = int(capsys.readouterr().out.splitlines()[1].split()[0])
    assert main(["catalog", "confirm", str(first), "--reviewer", "Ada", *common]) == 0
    assert f"candidate {first} confirmed as blob 1" in capsys.readouterr().out
    assert main(["catalog", "confirm", str(first), *common]) == 2  # a second confirm is refused
    assert main(["catalog", "export", str(tmp_path / "blobs.ecsv"), *common]) == 0
    table = Table.read(tmp_path / "blobs.ecsv", format="ascii.ecsv")
    assert len(table) == 1 and table["source"][0] == "confirmed"


def test_the_review_app_serves_a_postgresql_database(
    server: str, inbox: tuple[Path, dict], tmp_path: Path
) -> None:
    from fastapi.testclient import TestClient

    from blobwatch.web import create_app

    images, _ = inbox
    pg = new_database(server)
    run_monitor(images, db=pg, reports=tmp_path / "r", settings=SETTINGS, echo=lambda _: None)
    client = TestClient(create_app(pg, tmp_path / "r"), base_url="http://127.0.0.1")
    for path in ("/", "/queue", "/history", "/blobs", "/api/candidates", "/images/5"):
        assert client.get(path).status_code == 200, path
    assert len(client.get("/api/candidates").json()) >= 1


def test_a_tune_study_lives_in_postgresql(server: str) -> None:
    optuna = pytest.importorskip("optuna", reason="the research extra is not installed")
    pg = new_database(server)
    study = optuna.create_study(study_name="pg", storage=pg, direction="maximize")
    study.optimize(lambda trial: trial.suggest_float("x", 0.0, 1.0), n_trials=3)
    again = optuna.load_study(study_name="pg", storage=pg)  # a second worker sees the same study
    assert len(again.trials) == 3 and again.best_value == study.best_value
