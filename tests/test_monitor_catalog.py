"""The blob catalog: ECSV import/export, DQ masks, blob measurement, confirm and reject."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from sqlalchemy import func, select

from blobwatch.errors import InputError
from blobwatch.monitor.catalog import (
    BLOB_DQ_FLAG,
    CatalogError,
    blob_mask,
    catalog_version,
    confirm_candidate,
    export_bpixtab,
    export_catalog,
    import_catalog,
    known_blob_at,
    reject_candidate,
)
from blobwatch.monitor.db import Blob, Candidate, Image, Run, open_database
from blobwatch.monitor.measure import BlobMeasurement, loss_map, measure_blob


@pytest.fixture
def Session(tmp_path: Path):  # a session factory
    return open_database(f"sqlite:///{tmp_path / 'bw.db'}")


def _truth(path: Path) -> Path:
    table = Table(
        {
            "id": [1, 2, 3, 4],
            "x": [100.0, 300.5, 700.25, 512.0],
            "y": [200.0, 400.5, 50.0, 512.0],
            "radius": [6.0, 8.0, 5.0, 7.0],
            "depth": [0.1, 0.2, 0.05, 0.12],
            "profile": ["disc", "ring", "disc", "disc"],
            "day": [-100, -3, 2, 40],
        }
    )
    table.write(path, format="ascii.ecsv")
    return path


def _count(session) -> int:
    return session.scalar(select(func.count()).select_from(Blob))


def test_simulator_truth_imports_only_existing_blobs_once(Session, tmp_path: Path) -> None:
    path = _truth(tmp_path / "truth_blobs.ecsv")
    with Session() as s:
        result = import_catalog(s, path)
        assert result.source == "simulator-truth" and len(result.added) == 2 and result.skipped == 0
        assert sorted(b.label for b in result.added) == ["truth-1", "truth-2"]
        again = import_catalog(s, path)
        assert again.added == [] and again.skipped == 2
        more = import_catalog(s, path, include_from_day=10)
        assert [b.label for b in more.added] == ["truth-3"]
        assert _count(s) == 3


def test_user_table_with_extra_and_missing_columns(Session, tmp_path: Path) -> None:
    path = tmp_path / "mine.ecsv"
    Table(
        {
            "X": [10.0, 20.0],
            "y": [30.0, 40.0],
            "radius": [5.0, 6.0],
            "first_seen_mjd": [59000.5, 59001.0],
            "name": ["a", "b"],
        }
    ).write(path, format="ascii.ecsv")
    with Session() as s:
        result = import_catalog(s, path)
        assert result.source == "import"
        blob = s.scalars(select(Blob).where(Blob.label == "a")).one()
        assert blob.depth is None and blob.first_seen_mjd == 59000.5
        assert blob.first_seen.strftime("%Y-%m-%d") == "2020-05-31"


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("not a table at all\n", "not a readable ECSV table"),
        (None, "missing column.*radius"),
        ("negative", "radius must be positive"),
        ("baddate", r"mjd 1e\+09 \(row 2\) is not a date between years 1 and 9999"),
    ],
)
def test_bad_catalog_files_are_input_errors(Session, tmp_path: Path, content: str | None, match: str) -> None:
    path = tmp_path / "bad.ecsv"
    if content is None:
        Table({"x": [1.0], "y": [2.0]}).write(path, format="ascii.ecsv")
    elif content == "negative":
        Table({"x": [1.0], "y": [2.0], "radius": [-1.0]}).write(path, format="ascii.ecsv")
    elif content == "baddate":
        Table({"x": [1.0, 50.0], "y": [2.0, 60.0], "radius": [3.0, 3.0], "mjd": [59000.0, 1e9]}).write(
            path, format="ascii.ecsv"
        )
    else:
        path.write_text(content)
    with Session() as s, pytest.raises(InputError, match=match):
        import_catalog(s, path)
    with Session() as s:
        assert s.scalar(select(func.count()).select_from(Blob)) == 0  # nothing half-imported
    with Session() as s, pytest.raises(InputError, match="file not found"):
        import_catalog(s, tmp_path / "missing.ecsv")


def test_blob_mask_and_export(Session, tmp_path: Path) -> None:
    mask = blob_mask(np.array([[10.0, 20.0, 3.0]]), (40, 40))
    assert mask.sum() == 29  # lattice points within radius 3 of a pixel centre
    assert mask[20, 10] and mask[20, 13] and not mask[20, 14] and not mask[10, 20]
    shifted = blob_mask(np.array([[10.0, 20.0, 3.0]]), (40, 40), offset=5.0)
    assert shifted[15, 5] and shifted.sum() == 29

    with Session() as s:
        s.add_all(
            [
                Blob(x=100.0, y=200.0, radius=4.0, depth=0.1, source="import"),
                Blob(x=3.0, y=1020.0, radius=6.0, depth=None, source="confirmed", candidate_id=7),
            ]
        )
        s.commit()
        files = export_catalog(s, tmp_path / "out" / "catalog.ecsv")
    assert [f.name for f in files] == ["catalog.ecsv", "catalog_mask1024.fits", "catalog_mask1014.fits"]
    table = Table.read(files[0], format="ascii.ecsv")
    assert list(table["x"]) == [100.0, 3.0] and list(table["candidate_id"]) == [-1, 7]
    assert np.isnan(table["depth"][1]) and table["source"][1] == "confirmed"
    with fits.open(files[1]) as hdul:
        dq = hdul["DQ"].data
        assert dq.shape == (1024, 1024) and hdul[0].header["BLOBFLAG"] == BLOB_DQ_FLAG
        assert set(np.unique(dq)) == {0, BLOB_DQ_FLAG}
        assert dq[200, 100] == BLOB_DQ_FLAG and dq[200, 105] == 0 and dq[1020, 3] == BLOB_DQ_FLAG
    with fits.open(files[2]) as hdul:
        dq14 = hdul["DQ"].data
        assert dq14.shape == (1014, 1014)
        assert dq14[195, 95] == BLOB_DQ_FLAG
        np.testing.assert_array_equal(dq14, dq[5:-5, 5:-5])
    assert not list((tmp_path / "out").glob(".*.tmp"))


def test_masks_and_bad_pixel_table_carry_the_reference_file_keywords(Session, tmp_path: Path) -> None:
    import datetime as dt

    with Session() as s:
        s.add_all(
            [
                Image(path="/d/a.fits", sha256="a" * 64, mjd=60000.0, obs_date=dt.datetime(2023, 2, 25, 5)),
                Image(path="/d/b.fits", sha256="b" * 64, mjd=60040.0, obs_date=dt.datetime(2023, 4, 6, 5)),
                Blob(x=100.0, y=200.0, radius=4.0, source="import"),
                Blob(x=2.0, y=1022.0, radius=3.0, source="confirmed", first_seen=dt.datetime(2023, 3, 9)),
            ]
        )
        s.commit()
        _ecsv, mask1024, mask1014 = export_catalog(s, tmp_path / "catalog.ecsv")
        table_path = export_bpixtab(s, tmp_path / "blobs_bpx.fits")
        version = catalog_version(list(s.scalars(select(Blob))))
    for path in (mask1024, mask1014, table_path):
        header = fits.getheader(path)
        assert (header["INSTRUME"], header["DETECTOR"], header["FILETYPE"]) == ("WFC3", "IR", "BAD PIXELS")
        assert header["USEAFTER"] == "Mar 09 2023 00:00:00"  # the newest blob's first sighting
        assert header["PEDIGREE"] == "INFLIGHT 25/02/2023 06/04/2023"
        assert header["DESCRIP"].startswith("WFC3/IR blob") and header["CATVERS"] == version
        assert f"blob catalog version {version}: 2 blobs" in str(header["COMMENT"])
    with fits.open(table_path) as hdul:
        rows = hdul["BPIXTAB"].data
    assert rows.columns.names == ["PIX1", "PIX2", "LENGTH", "AXIS", "VALUE", "BLOB"]
    assert set(rows["AXIS"]) == {1} and set(rows["VALUE"]) == {512}
    # the runs cover exactly the 1024x1024 mask's pixels (1-based PIX1, PIX2)
    covered = np.zeros((1024, 1024), dtype=bool)
    for pix1, pix2, length in zip(rows["PIX1"], rows["PIX2"], rows["LENGTH"], strict=True):
        covered[pix2 - 1, pix1 - 1 : pix1 - 1 + length] = True
    np.testing.assert_array_equal(covered, fits.getdata(mask1024, "DQ") == 512)
    assert list(rows["BLOB"][rows["PIX2"] == 201]) == [1]  # blob 1's centre row (0-based y 200)
    assert rows["PIX1"][rows["PIX2"] == 201][0] == 101 - 4 and rows["LENGTH"][rows["PIX2"] == 201][0] == 9
    assert catalog_version([]) == "0-" + hashlib.sha256(b"").hexdigest()[:12]


def test_an_empty_catalog_gives_an_empty_table_and_dummy_pedigree(Session, tmp_path: Path) -> None:
    with Session() as s:
        path = export_bpixtab(s, tmp_path / "empty_bpx.fits")
    with fits.open(path) as hdul:
        assert len(hdul["BPIXTAB"].data) == 0
        assert hdul[0].header["PEDIGREE"] == "DUMMY" and hdul[0].header["USEAFTER"] == "May 14 2009 00:00:00"


def test_known_blob_at_picks_the_nearest_containing_blob() -> None:
    blobs = [
        Blob(id=1, x=10.0, y=10.0, radius=5.0, source="import"),
        Blob(id=2, x=14.0, y=10.0, radius=5.0, source="import"),
    ]
    assert known_blob_at(blobs, 13.0, 10.0).id == 2
    assert known_blob_at(blobs, 30.0, 10.0) is None
    assert known_blob_at(blobs, 21.0, 10.0, margin=2.0).id == 2
    assert known_blob_at([], 1.0, 1.0) is None


def _synthetic_blob(x: float, y: float, radius: float, depth: float, noise: float = 0.003):
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[0:160, 0:160]
    r = np.hypot(xx - x, yy - y)
    loss = depth * np.clip(1 - (r / radius) ** 2, 0, None)
    stack = (1 + noise * rng.standard_normal((160, 160))).astype(np.float32)
    current = ((1 - loss) * (1 + noise * rng.standard_normal((160, 160)))).astype(np.float32)
    return current, stack


def test_measure_blob_recovers_centre_radius_and_depth() -> None:
    current, stack = _synthetic_blob(70.3, 81.6, 9.0, 0.12)
    m = measure_blob(loss_map(current, stack), 67.0, 84.0)
    assert m.x == pytest.approx(70.3, abs=0.2) and m.y == pytest.approx(81.6, abs=0.2)
    # radius where a parabolic profile falls to 20 % of its peak: sqrt(0.8) * R
    assert m.radius == pytest.approx(np.sqrt(0.8) * 9.0, abs=0.8)
    assert m.depth == pytest.approx(0.12, abs=0.015)
    assert m.significance > 10
    with pytest.raises(ValueError, match="outside"):
        measure_blob(loss_map(current, stack), 500.0, 10.0)
    with pytest.raises(ValueError, match="differ in shape"):
        loss_map(current, stack[:10])


def _candidate(
    Session, *, x: float = 50.0, status: str = "new", linked_to: int | None = None, day: int = 0
) -> int:
    """A candidate in a processed image of its own (observed ``day`` days after MJD 60000.25)."""
    with Session() as s:
        image = Image(
            path=f"/nowhere/{day}.fits", sha256=f"{day:064d}", status="processed", mjd=60000.25 + day
        )
        s.add(image)
        s.flush()
        run = Run(image_id=image.id, blobwatch_version="test", parameters={}, timings={})
        s.add(run)
        s.flush()
        c = Candidate(
            run_id=run.id, image_id=image.id, x=x, y=60.0, probability=0.9, status=status, linked_to=linked_to
        )
        s.add(c)
        s.commit()
        return c.id


def test_confirm_then_reject_round_trip(Session) -> None:
    cid = _candidate(Session)
    m = BlobMeasurement(x=50.4, y=59.8, radius=7.5, depth=0.11, background=0.0, noise=0.01)
    with Session() as s:
        blob = confirm_candidate(s, cid, reviewer="Ada", measurement=m)
        assert (blob.x, blob.y, blob.radius, blob.depth) == (50.4, 59.8, 7.5, 0.11)
        assert blob.source == "confirmed" and blob.candidate_id == cid and blob.first_seen_mjd == 60000.25
    with Session() as s:
        c = s.get(Candidate, cid)
        assert c.status == "confirmed" and c.reviewed_by == "Ada" and c.known_blob_id == blob.id
        with pytest.raises(CatalogError, match="already confirmed"):
            confirm_candidate(s, cid, reviewer="Ada", measurement=m)
        # changing one's mind withdraws the blob
        reject_candidate(s, cid, reason="dip of a known blob", reviewer="Bo")
    with Session() as s:
        c = s.get(Candidate, cid)
        assert c.status == "rejected" and c.reason == "dip of a known blob" and c.reviewed_by == "Bo"
        assert _count(s) == 0


def test_review_errors(Session) -> None:
    cid = _candidate(Session)
    with Session() as s:
        with pytest.raises(CatalogError, match="candidate 999 does not exist"):
            reject_candidate(s, 999, reason="x", reviewer="Bo")
        with pytest.raises(CatalogError, match="reason is required"):
            reject_candidate(s, cid, reason="  ", reviewer="Bo")
        with pytest.raises(CatalogError, match="reviewer"):
            confirm_candidate(s, cid, reviewer="")
        # no references recorded: cannot measure, nothing changes
        with pytest.raises(CatalogError, match="no reference images"):
            confirm_candidate(s, cid, reviewer="Ada")
        s.rollback()
        assert s.get(Candidate, cid).status == "new" and _count(s) == 0
        c = s.get(Candidate, cid)
        c.status, c.known_blob_id = "known", None
        s.commit()
        with pytest.raises(CatalogError, match="lies on known blob"):
            confirm_candidate(s, cid, reviewer="Ada")


def test_confirming_a_linked_candidate_never_duplicates_its_blob(Session) -> None:
    first = _candidate(Session)
    second = _candidate(Session, x=50.6, status="linked", linked_to=first, day=1)  # as the monitor links it
    m = BlobMeasurement(x=50.4, y=59.8, radius=7.5, depth=0.11, background=0.0, noise=0.01)
    with Session() as s:
        blob = confirm_candidate(s, first, reviewer="Ada", measurement=m)
        with pytest.raises(
            CatalogError,
            match=rf"candidate {second} is catalog blob {blob.id} again "
            rf"\(0.3 px .*linked to candidate {first}\).*--same-as {blob.id}",
        ):
            confirm_candidate(s, second, reviewer="Ada", measurement=m)
        s.rollback()
        assert _count(s) == 1 and s.get(Candidate, second).status == "linked"
        with pytest.raises(
            CatalogError, match=f"not at catalog blob {blob.id + 1} \\(it is at blob {blob.id}\\)"
        ):
            confirm_candidate(s, second, reviewer="Ada", same_as=blob.id + 1)
        s.rollback()
        assert confirm_candidate(s, second, reviewer="Bo", same_as=blob.id).id == blob.id
    with Session() as s:
        c = s.get(Candidate, second)
        assert (c.status, c.known_blob_id, c.reason, c.reviewed_by) == (
            "known",
            blob.id,
            f"same as blob {blob.id}",
            "Bo",
        )
        assert _count(s) == 1


def test_confirm_refuses_a_measured_centre_on_a_catalog_blob(Session) -> None:
    """Not linked, but measured 0.5 px from a catalog blob: the same blob, not a new one."""
    cid = _candidate(Session)  # at x=50, y=60
    with Session() as s:
        s.add_all(
            [
                Blob(id=1, x=62.0, y=60.0, radius=5.0, depth=0.1, source="import"),
                Blob(id=2, x=300.0, y=300.0, radius=5.0, depth=0.1, source="import"),
            ]
        )
        s.commit()
        m = BlobMeasurement(x=61.5, y=60.0, radius=5.0, depth=0.1, background=0.0, noise=0.01)
        with pytest.raises(CatalogError, match=f"candidate {cid} is catalog blob 1 again.*--same-as 1"):
            confirm_candidate(s, cid, reviewer="Ada", measurement=m)
        s.rollback()
        assert _count(s) == 2 and s.get(Candidate, cid).status == "new"
        with pytest.raises(CatalogError, match=f"candidate {cid} is not at catalog blob 2$"):
            confirm_candidate(s, cid, reviewer="Ada", same_as=2)  # far away: a typo, not this blob
        s.rollback()
        assert confirm_candidate(s, cid, reviewer="Ada", same_as=1).id == 1
        assert s.get(Candidate, cid).status == "known" and _count(s) == 2


def test_review_survives_a_concurrent_writer(Session) -> None:
    """A session that read before another process committed still confirms (rolled back, retried)."""
    cid = _candidate(Session)
    m = BlobMeasurement(x=50.0, y=60.0, radius=6.0, depth=0.1, background=0.0, noise=0.01)
    with Session() as reviewer_session, Session() as monitor_session:
        assert reviewer_session.get(Candidate, cid).status == "new"  # read: snapshot taken
        monitor_session.add(Image(path="/b.fits", sha256="c" * 64, status="registered"))
        monitor_session.commit()  # another writer commits after that read
        blob = confirm_candidate(reviewer_session, cid, reviewer="Ada", measurement=m)
    with Session() as s:
        assert s.get(Blob, blob.id).candidate_id == cid and s.get(Candidate, cid).status == "confirmed"


def test_rebuild_difference_uses_every_reference_the_run_used(Session, tmp_path: Path) -> None:
    """A run with more than the seed's 30 references is rebuilt with all of them, not the latest 30."""
    import warnings

    from blobwatch.monitor.catalog import rebuild_difference

    paths = []
    yy, xx = np.mgrid[0:256, 0:256]
    texture = 0.001 * ((yy + xx) % 3)  # 0 at [0, 0]: the same in every image, noise for the gates
    for day in range(41):  # days 0-19 brighter: the median of all 40 is 1.25, of the latest 30 1.0
        data = ((1.5 if day < 20 else 1.0) + texture).astype(np.float32)
        header = fits.Header()
        header["EXPSTART"] = 60000.0 + day
        paths.append(tmp_path / f"day{day:02d}.fits")
        fits.PrimaryHDU(data, header=header).writeto(paths[-1])
    with Session() as s:
        image = Image(path=str(paths[-1]), sha256="0" * 64, mjd=60040.0, status="processed")
        s.add(image)
        s.flush()
        run = Run(
            image_id=image.id,
            blobwatch_version="test",
            threshold=0.5,
            max_probability=0.1,
            parameters={
                "reference_paths": [str(p) for p in paths[:-1]],
                "register": False,
                "min_references": 5,
            },
        )
        s.add(run)
        s.flush()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tiny test images' filter/header notes
            current, result = rebuild_difference(image, run)
    assert result.n_references == 40
    assert float(result.stack[0, 0]) == 1.25 and float(current.data[0, 0]) == 1.0
    with Session() as s:  # a never-processed image: the image only
        current, result = rebuild_difference(Image(path=str(paths[0]), sha256="1" * 64), None)
    assert result is None and float(current.data[0, 0]) == 1.5
    # a registered run is rebuilt with the offsets it recorded (these flat images register to none)
    recorded = [[0.25 * (i % 3), -0.5] for i in range(40)]
    run.parameters = {**run.parameters, "register": True, "offsets": recorded}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, result = rebuild_difference(image, run)
    np.testing.assert_array_equal(result.offsets, recorded)
