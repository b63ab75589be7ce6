"""The monitor database: schema, migrations, UTC times and the atomic image claim."""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, select
from sqlalchemy.exc import IntegrityError

from blobwatch.monitor.db import (
    SCHEMA_VERSION,
    Base,
    Candidate,
    Image,
    Run,
    _alembic_config,
    claim_image,
    create_db_engine,
    default_db_url,
    engine_of,
    open_database,
    redact_url,
    release_image,
    schema_version,
)


def _url(tmp_path: Path, name: str = "bw.db") -> str:
    return f"sqlite:///{tmp_path / 'sub' / name}"


def test_open_database_creates_every_table_at_the_current_version(tmp_path: Path) -> None:
    Session = open_database(_url(tmp_path))
    engine = engine_of(Session)
    tables = set(inspect(engine).get_table_names())
    assert {
        "images",
        "runs",
        "subframe_predictions",
        "candidates",
        "blobs",
        "notifications",
        "alembic_version",
    } <= tables
    assert schema_version(engine) == SCHEMA_VERSION
    # the shipped migrations produce exactly the models' schema
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_old_schema_is_upgraded_and_keeps_its_rows(tmp_path: Path) -> None:
    url = _url(tmp_path)
    engine = create_db_engine(url)
    with engine.connect() as conn, conn.begin():
        command.upgrade(_alembic_config(conn), "0001")
    assert schema_version(engine) == "0001"
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO images (path, sha256, status, registered_at) "
            "VALUES ('/data/a.fits', 'abc', 'registered', '2026-01-01 00:00:00')"
        )
    Session = open_database(url)
    assert schema_version(engine_of(Session)) == SCHEMA_VERSION
    with Session() as s:
        image = s.scalars(select(Image)).one()
        assert image.path == "/data/a.fits" and image.rows is None and image.offset_frame_id is None
    # opening again is a no-op
    open_database(url)
    assert schema_version(engine_of(Session)) == SCHEMA_VERSION


def test_upgrade_records_which_existing_candidates_were_alerted(tmp_path: Path) -> None:
    """Schema 0003: candidates found as known or linked were silent, also after a review."""
    url = _url(tmp_path)
    engine = create_db_engine(url)
    with engine.connect() as conn, conn.begin():
        command.upgrade(_alembic_config(conn), "0002")
        conn.exec_driver_sql(
            "INSERT INTO images (id, path, sha256, status, registered_at) "
            "VALUES (1, '/a.fits', 'a', 'processed', '2026-01-01 00:00:00')"
        )
        conn.exec_driver_sql(
            "INSERT INTO runs (id, image_id, model_metadata, blobwatch_version, parameters, "
            "timings, started_at) VALUES (1, 1, '{}', 't', '{}', '{}', '2026-01-01 00:00:00')"
        )
        for cid, status, linked_to in (
            (1, "new", None),
            (2, "rejected", None),
            (3, "rejected", 1),
            (4, "known", None),
            (5, "linked", 1),
            (6, "confirmed", None),
        ):
            conn.exec_driver_sql(
                "INSERT INTO candidates (id, run_id, image_id, x, y, probability, status, linked_to, created_at) "
                "VALUES (?, 1, 1, 0, 0, 0.9, ?, ?, '2026-01-01 00:00:00')",
                (cid, status, linked_to),
            )
    with open_database(url)() as s:
        alerted = dict(s.execute(select(Candidate.id, Candidate.alerted)).all())
    assert alerted == {1: True, 2: True, 3: False, 4: False, 5: False, 6: True}


def test_alerted_defaults_to_the_status_a_candidate_is_recorded_with(tmp_path: Path) -> None:
    with open_database(_url(tmp_path)).begin() as s:
        s.add(Image(id=1, path="/a.fits", sha256="a", status="processed"))
        s.add(Run(id=1, image_id=1, blobwatch_version="t"))
        s.add_all(
            [
                Candidate(id=i, run_id=1, image_id=1, x=0.0, y=0.0, probability=0.9, status=status)
                for i, status in ((1, "new"), (2, "linked"), (3, "known"))
            ]
        )
        s.flush()
        s.get(Candidate, 1).status = s.get(Candidate, 2).status = "rejected"
        s.flush()
        assert dict(s.execute(select(Candidate.id, Candidate.alerted)).all()) == {1: True, 2: False, 3: False}


def test_times_are_read_back_as_utc(tmp_path: Path) -> None:
    Session = open_database(_url(tmp_path))
    local = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.timezone(dt.timedelta(hours=-5)))
    with Session.begin() as s:
        s.add(Image(path="a.fits", sha256="1" * 64, status="registered", obs_date=local))
    with Session() as s:
        image = s.scalars(select(Image)).one()
        assert image.obs_date == local and image.obs_date.utcoffset() == dt.timedelta(0)
        assert image.registered_at.tzinfo is not None


def test_file_content_is_registered_once(tmp_path: Path) -> None:
    Session = open_database(_url(tmp_path))
    with Session.begin() as s:
        s.add(Image(path="a.fits", sha256="2" * 64, status="registered"))
    with pytest.raises(IntegrityError, match="UNIQUE"), Session.begin() as s:
        s.add(Image(path="copy-of-a.fits", sha256="2" * 64, status="registered"))


def test_claim_is_atomic_across_threads(tmp_path: Path) -> None:
    Session = open_database(_url(tmp_path))
    with Session.begin() as s:
        s.add(Image(path="a.fits", sha256="3" * 64, status="registered"))
    wins: list[str] = []
    barrier = threading.Barrier(8)

    def worker(name: str) -> None:
        with Session() as s:
            barrier.wait()
            if claim_image(s, 1, name):
                wins.append(name)

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1
    with Session() as s:
        image = s.get(Image, 1)
        assert image.status == "processing" and image.claimed_by == wins[0]


def test_stale_claim_can_be_taken_over_and_released(tmp_path: Path) -> None:
    Session = open_database(_url(tmp_path))
    with Session.begin() as s:
        s.add(Image(path="a.fits", sha256="4" * 64, status="registered"))
    with Session() as s:
        assert claim_image(s, 1, "first")
        assert not claim_image(s, 1, "second")  # fresh claim: refused
        assert claim_image(s, 1, "second", stale_after=dt.timedelta(0))  # stale: taken over
        release_image(s, 1, "first")  # not the holder: nothing happens
        assert s.get(Image, 1, populate_existing=True).claimed_by == "second"
        release_image(s, 1, "second")
        image = s.get(Image, 1, populate_existing=True)
        assert image.status == "registered" and image.claimed_by is None


def test_default_url_and_redaction(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BLOBWATCH_DB", raising=False)
    assert default_db_url(tmp_path) == f"sqlite:///{tmp_path.resolve() / 'blobwatch.db'}"
    monkeypatch.setenv("BLOBWATCH_DB", "postgresql://u:secret@host/db")
    assert default_db_url(tmp_path) == "postgresql://u:secret@host/db"
    assert "secret" not in redact_url("postgresql://u:secret@host/db")
