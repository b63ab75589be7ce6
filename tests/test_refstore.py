"""The on-disk reference store: same results as without it, and never a stale entry."""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from blobwatch.difference import OffsetFrame, PreparedCache, blob_difference
from blobwatch.errors import InputError
from blobwatch.fits_io import read_blob_image
from blobwatch.monitor.db import Candidate, Run, open_database
from blobwatch.monitor.runner import STORE_FOLDER, ImageFile, MonitorSettings, _ImageCache, run_monitor
from blobwatch.refstore import ReferenceStore
from handmade_model import write_handmade_model


@pytest.fixture(scope="module")
def sequence(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Six 256x256 days (the simulator's default offsets, which registration measures); a new
    blob on the last."""
    from blobwatch.simulate import SimulationConfig, simulate_sequence, write_simulation

    sim = simulate_sequence(SimulationConfig(n_days=6, size=256, seed=2, new_blob_days=(5,)))
    paths = write_simulation(sim, tmp_path_factory.mktemp("sequence"))
    return sorted(p for p in paths if p.name.endswith("_blob.fits"))


def _difference(files: list[Path], store: ReferenceStore | None, *, stored_offsets: bool = False):
    images = [read_blob_image(p) for p in files]
    if store is not None:  # the references come from the store when it holds them
        images[:-1] = [store.image(im.provenance["sha256"], im.path) or im for im in images[:-1]]
    offsets = None
    if stored_offsets:
        frame = OffsetFrame(images[0])
        to_frame = [frame.offset(im) or (np.nan, np.nan) for im in images]
        offsets = [(o[0] - to_frame[-1][0], o[1] - to_frame[-1][1]) for o in to_frame[:-1]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return blob_difference(
            images[-1],
            images[:-1],
            min_references=3,
            prepared=PreparedCache(8, store=store) if store is not None else None,
            offsets=offsets,
        )


@pytest.mark.parametrize("stored_offsets", [False, True])
def test_the_stored_references_give_the_same_difference(
    sequence: list[Path], tmp_path: Path, stored_offsets: bool
) -> None:
    plain = _difference(sequence, None, stored_offsets=stored_offsets)
    assert not plain.unregistered and np.abs(plain.offsets).max() > 0.01  # really registered
    store = ReferenceStore(tmp_path / "store")
    for path in sequence[:-1]:
        store.put_image(read_blob_image(path))
    first = _difference(sequence, store, stored_offsets=stored_offsets)  # prepares and stores
    assert store.arrays(read_blob_image(sequence[0]).provenance["sha256"], "x", ("y",)) is None
    again = ReferenceStore(tmp_path / "store")  # a later run: everything loaded from disk
    second = _difference(sequence, again, stored_offsets=stored_offsets)
    assert again.hits >= 2 * (len(sequence) - 1) and again.misses == 0  # images and preparations
    for result in (first, second):
        np.testing.assert_array_equal(result.data, plain.data)
        np.testing.assert_array_equal(result.stack, plain.stack)
        np.testing.assert_array_equal(result.offsets, plain.offsets)


def test_a_changed_or_replaced_reference_file_is_not_answered_from_the_store(
    sequence: list[Path], tmp_path: Path
) -> None:
    path = tmp_path / "ref.fits"
    shutil.copy(sequence[1], path)
    image = read_blob_image(path)
    sha = image.provenance["sha256"]
    store = ReferenceStore(tmp_path / "store")
    store.put_image(image)
    assert store.known_sha256(path) == sha
    stored = store.image(sha, path)
    assert stored is not None and not stored.data.flags.writeable
    np.testing.assert_array_equal(stored.data, image.data)
    assert stored.mjd == image.mjd and stored.provenance == image.provenance

    # replaced by another day's file of the same size: not known, not served
    before = os.stat(path)
    shutil.copy(sequence[2], path)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000))
    assert os.stat(path).st_size == before.st_size
    assert store.known_sha256(path) is None and store.image(sha, path) is None
    # the monitor's image cache reads the file again and notices the change
    cache = _ImageCache(4, store=store)
    with pytest.raises(InputError, match="file changed since it was registered"):
        cache.get(ImageFile(str(path), sha))
    # the new content gets its own entry once read
    new = read_blob_image(path)
    store.put_image(new)
    assert store.known_sha256(path) == new.provenance["sha256"] != sha
    assert store.image(new.provenance["sha256"], path) is not None


def test_the_store_is_bounded_least_recently_used_first(sequence: list[Path], tmp_path: Path) -> None:
    one = 256 * 256 * 4
    store = ReferenceStore(tmp_path / "store", max_bytes=int(2.5 * one))
    images = [read_blob_image(p) for p in sequence[:4]]
    for image in images:
        store.put_image(image)
    assert store.size() <= store.max_bytes
    shas = [im.provenance["sha256"] for im in images]
    assert store.image(shas[0]) is None and store.image(shas[-1]) is not None


def test_the_monitor_gives_the_same_results_with_the_store(sequence: list[Path], tmp_path: Path) -> None:
    from blobwatch.classifier import BlobClassifier

    classifier = BlobClassifier(write_handmade_model(tmp_path / "handmade.pt"), device="cpu")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for path in sequence:
        shutil.copy(path, inbox / path.name)

    def run(tag: str, store: bool) -> list[tuple]:
        Session = open_database(f"sqlite:///{tmp_path / f'{tag}.db'}")
        reports = tmp_path / f"reports-{tag}"
        for first in (10, 4):  # register only (the store is filled), then process from the store
            settings = MonitorSettings(min_references=first, reference_store=store)
            run_monitor(
                inbox,
                db=Session,
                reports=reports,
                classifier=classifier,
                settings=settings,
                echo=lambda _: None,
            )
        with Session() as s:
            runs = [
                (
                    r.image_id,
                    round(r.max_probability or 0.0, 6),
                    np.round(r.parameters["offsets"], 4).tolist(),
                )
                for r in s.scalars(select(Run).order_by(Run.id))
            ]
            cands = [
                (c.image_id, round(c.x, 3), round(c.y, 3), round(c.probability, 5), c.status)
                for c in s.scalars(select(Candidate).order_by(Candidate.id))
            ]
        return runs + cands

    without = run("plain", store=False)
    assert not (tmp_path / "reports-plain" / STORE_FOLDER).exists()
    with_store = run("store", store=True)
    assert len(list((tmp_path / "reports-store" / STORE_FOLDER).rglob("*.npy"))) >= 2 * len(sequence)
    assert len(without) >= 3 and any(c[-1] == "new" for c in without)
    assert with_store == without


def test_a_repeated_detect_uses_the_store_and_prints_the_same(
    sequence: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from blobwatch.cli import main
    from blobwatch.difference import registration_key

    model = write_handmade_model(tmp_path / "handmade.pt")
    command = ["detect", str(sequence[-1]), "--references", *map(str, sequence[:-1]), "--json"]
    command += ["--model", str(model)]
    printed = []
    for extra in (
        ["--no-cache"],
        ["--cache-dir", str(tmp_path / "store")],
        ["--cache-dir", str(tmp_path / "store")],
    ):
        assert main([*command, *extra]) == 0
        printed.append(json.loads(capsys.readouterr().out))
    assert printed[0] == printed[1] == printed[2]
    assert printed[0]["subframes"]
    store = ReferenceStore(tmp_path / "store")
    current = read_blob_image(sequence[-1])
    offsets = store.offsets(current.provenance["sha256"], "offsets-" + registration_key(current.data.shape))
    assert len(offsets) == len(sequence) - 1
    assert all(store.known_sha256(p) for p in sequence[:-1])
