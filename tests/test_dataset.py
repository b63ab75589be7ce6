"""Tests of blobwatch.dataset: geometry, split, manifest, streaming and hard-case maps."""

from __future__ import annotations

import json

import numpy as np
import pytest

from blobwatch import dataset as D
from blobwatch.errors import InputError

SIZE = 64


def _stamps() -> dict[int, np.ndarray]:
    yy, xx = np.mgrid[:11, :11] - 5
    disc = np.where(np.hypot(yy, xx) < 4, 3.0, 0.0).astype(np.float32)
    return {1: disc, 2: disc * 0.8, 3: disc[1:-1, 1:-1]}


def _source(name: str = "s", width: int = 256, value: str = "noise", seed: int = 0) -> D.SourceImage:
    rng = np.random.default_rng(seed)
    if value == "column":
        data = np.tile(np.arange(width, dtype=np.float32) / width, (width, 1))
    else:
        data = rng.normal(0, 1, (width, width)).astype(np.float32)
    causes = np.zeros((width, width), np.uint8)
    causes[100:104, 40:44] = D.CAUSE_DIP
    causes[:3, :] = D.CAUSE_EDGE
    return D.SourceImage(name, data, causes)


def _make(path, n=40, region="train", **kw):
    args = dict(n_samples=n, region=region, seed=5, stamps=_stamps(), stamp_ids=[1, 2], size=SIZE)
    args.update(kw)
    return D.make_dataset(path, [_source("a"), _source("b", seed=1)], **args)


@pytest.mark.parametrize("k", [0, 1, 2, 3])
@pytest.mark.parametrize("fy,fx", [(False, False), (True, False), (False, True), (True, True)])
def test_augment_coords_follow_the_array(k, fy, fx):
    a = np.zeros((9, 9))
    a[2, 6] = 1
    b = augment_array = D.augment_array(a, k, fy, fx)
    r, c = np.unravel_index(np.argmax(b), b.shape)
    assert augment_array.shape == a.shape
    np.testing.assert_allclose(D.augment_coords([[2, 6]], 9, k, fy, fx), [[r, c]])


def test_add_patch_half_off_frame_reports_inside_fraction():
    frame = np.zeros((20, 20), np.float32)
    inside = D.add_patch(frame, np.ones((5, 6), np.float32), 0, 10)
    assert frame.sum() == pytest.approx(3 * 6)
    assert inside == pytest.approx(0.6)
    assert D.add_patch(frame, np.ones((3, 3), np.float32), -10, -10) == 0.0


def test_region_bounds_split_at_three_quarters():
    assert D.region_bounds(1024, 256, "train") == (0, 512)
    assert D.region_bounds(1024, 256, "validation") == (768, 768)
    assert D.region_bounds(1024, 256, "all") == (0, 768)
    with pytest.raises(ValueError, match="cannot hold"):
        D.region_bounds(512, 256, "validation")
    with pytest.raises(ValueError, match="region must be"):
        D.region_bounds(1024, 256, "left")


def test_split_keeps_training_and_validation_pixels_apart(tmp_path):
    """Pixel values encode the column: training samples only see columns < 75% of the width."""
    src = [_source("col", value="column")]
    common = dict(
        stamps=_stamps(),
        stamp_ids=[1],
        size=SIZE,
        positive_fraction=0.0,
        noise_sigma=0.0,
        n_samples=60,
        seed=1,
    )
    tr = D.SubframeDataset(D.make_dataset(tmp_path / "tr", src, region="train", **common))
    va = D.SubframeDataset(D.make_dataset(tmp_path / "va", src, region="validation", **common))
    split = 0.75
    assert float(np.max(tr.x)) < split - 1e-3
    assert float(np.min(va.x)) >= split - 1e-3
    assert (tr.meta["x0"].astype(int) + SIZE <= 192).all()
    assert (va.meta["x0"] >= 192).all()


def test_make_dataset_writes_streaming_dataset_with_manifest(tmp_path):
    path = _make(tmp_path / "ds", n=40)
    ds = D.SubframeDataset(path)
    assert len(ds) == 40
    assert isinstance(ds.x, np.memmap) and ds.x.dtype == np.float16 and ds.x.shape == (40, SIZE, SIZE)
    x, y = ds[3]
    assert tuple(x.shape) == (1, SIZE, SIZE) and y in (0, 1)
    xb, _yb = ds.batch(np.array([7, 2, 5]))
    assert tuple(xb.shape) == (3, 1, SIZE, SIZE)
    np.testing.assert_array_equal(xb[1, 0].numpy(), ds.x[2].astype(np.float32))
    m = D.read_manifest(path)
    assert m["generator_version"] == D.GENERATOR_VERSION and m["seed"] == 5
    assert [s["name"] for s in m["sources"]] == ["a", "b"]
    assert m["parameters"]["stamp_ids"] == [1, 2]
    lines = (path / "samples.jsonl").read_text().splitlines()
    assert len(lines) == 40
    rec = [json.loads(line) for line in lines]
    pos = [r for r in rec if r["label"] == 1]
    assert pos and all(1 <= len(r["blobs"]) <= 5 for r in pos)
    assert all(b.get("stamp_id", 1) in (1, 2) for r in pos for b in r["blobs"])
    assert all(not r["blobs"] for r in rec if r["label"] == 0)
    meta = ds.meta
    assert np.isfinite(meta["peak"][meta["label"] == 1]).all()
    assert np.isnan(meta["peak"][meta["label"] == 0]).all()
    assert len(D.manifest_sha256(path)) == 64


def test_make_dataset_is_deterministic(tmp_path):
    a, b = _make(tmp_path / "a", n=12), _make(tmp_path / "b", n=12)
    np.testing.assert_array_equal(np.load(a / "x.npy"), np.load(b / "x.npy"))
    c = _make(tmp_path / "c", n=12, seed=6)
    assert not np.array_equal(np.load(a / "x.npy"), np.load(c / "x.npy"))


def test_hard_cases_are_sampled_for_both_classes(tmp_path):
    ds = D.SubframeDataset(_make(tmp_path / "ds", n=80, hard_fraction=1.0))
    dip = (ds.meta["causes"] & D.CAUSE_DIP) > 0
    assert dip[ds.labels == 0].mean() > 0.8 and dip[ds.labels == 1].mean() > 0.8


def test_distractors_are_dark_and_drawn_for_both_classes_alike(tmp_path):
    """Distractors only darken pixels (the opposite polarity to a blob); labels, blobs and
    augmentation are unchanged, so the same seed with and without them differs only there."""
    plain = _make(tmp_path / "plain", n=60)
    dark = _make(tmp_path / "dark", n=60, distractors=D.DistractorConfig(fraction=0.5))
    x0, x1 = np.load(plain / "x.npy").astype(np.float32), np.load(dark / "x.npy").astype(np.float32)
    m0, m1 = D.read_meta(plain), D.read_meta(dark)
    np.testing.assert_array_equal(m0["label"], m1["label"])
    np.testing.assert_array_equal(m0["peak"], m1["peak"])
    assert (x1 <= x0).all()
    got = m1["n_distractors"] > 0
    assert (m0["n_distractors"] == 0).all()
    for label in (0, 1):  # about half of each class, independent of the label
        assert 0.2 < got[m1["label"] == label].mean() < 0.8
    np.testing.assert_array_equal((x1 < x0 - 0.5).any(axis=(1, 2)), got)
    lines = [json.loads(t) for t in (dark / "samples.jsonl").read_text().splitlines()]
    assert [len(t.get("distractors", [])) for t in lines] == m1["n_distractors"].tolist()
    assert json.loads((dark / "manifest.json").read_text())["parameters"]["distractors"]["fraction"] == 0.5


def test_nuisance_draws_do_not_depend_on_the_blobs(tmp_path):
    """Pedestals and dark patches come from their own random stream: other blobs (simulated
    only, stamps only) leave every sample's nuisance features unchanged."""
    dcfg = D.DistractorConfig(pedestal_sigma=0.3, gradient_sigma=0.3, fraction=0.5)
    runs = [
        _make(tmp_path / str(f), n=40, distractors=dcfg, blobs=D.BlobConfig(simulated_fraction=f))
        for f in (0.0, 1.0)
    ]
    lines = [[json.loads(t) for t in (r / "samples.jsonl").read_text().splitlines()] for r in runs]
    for a, b in zip(*lines, strict=True):
        assert a["blobs"] != b["blobs"] or not a["blobs"]
        assert a.get("level") == b.get("level") and a.get("distractors") == b.get("distractors")


def test_distractor_config_rejects_bad_values():
    for bad in ({"pedestal_sigma": -0.1}, {"gradient_sigma": float("inf")}, {"fraction": 2.0}, {"n_max": 0}):
        with pytest.raises(ValueError, match=rf"DistractorConfig\.{next(iter(bad))}="):
            D.DistractorConfig(**bad)


def test_pedestals_raise_or_lower_whole_subframes_of_both_classes(tmp_path):
    plain = _make(tmp_path / "plain", n=60)
    level = _make(tmp_path / "level", n=60, distractors=D.DistractorConfig(pedestal_sigma=0.3))
    x0, x1 = np.load(plain / "x.npy").astype(np.float32), np.load(level / "x.npy").astype(np.float32)
    meta = D.read_meta(level)
    shift = (x1 - x0).mean(axis=(1, 2))
    assert np.corrcoef(shift, meta["pedestal"])[0, 1] > 0.99
    for label in (0, 1):
        assert meta["pedestal"][meta["label"] == label].std() > 0.15
    assert (meta["n_distractors"] == 0).all()


def test_bad_inputs(tmp_path):
    with pytest.raises(InputError, match="blob stamp file not found"):
        D.load_stamps(tmp_path / "missing.fits")
    with pytest.raises(InputError, match=r"no manifest\.json"):
        D.SubframeDataset(tmp_path)
    _make(tmp_path / "ds", n=4)
    with pytest.raises(InputError, match="already exists"):
        _make(tmp_path / "ds", n=4)
    with pytest.raises(ValueError, match="not among the loaded stamps"):
        _make(tmp_path / "x", n=4, stamp_ids=[9])
    with pytest.raises(ValueError, match="must be finite"):
        D.SourceImage("bad", np.full((8, 8), np.nan), np.zeros((8, 8), np.uint8))


def test_real_stamps_load_and_taper():
    stamps = D.load_stamps()
    assert len(stamps) == 20 and all(s.dtype == np.float32 for s in stamps.values())
    t = D.taper_stamp(stamps[1])
    assert t[0, 0] == 0 and abs(t[8, 8] - stamps[1][8, 8]) < 1e-6


def test_cause_map_flags_each_hard_case():
    rng = np.random.default_rng(0)
    d = rng.normal(0, 0.01, (200, 200)).astype(np.float32)
    d[:5] = np.nan  # image border
    d[120, 120] = np.nan  # single dead pixel: not an edge
    d[50, 150] += 0.5  # compact bright: cosmic ray
    yy, xx = np.mgrid[:200, :200]
    d[np.hypot(yy - 150, xx - 50) < 6] += 0.3  # bright disc: snowball
    bad = np.zeros_like(d, bool)
    bad[80, 80] = True
    d[80, 80] -= 0.5  # visible bad pixel
    d[np.hypot(yy - 100, xx - 170) < 4] += 0.1  # residual at a known blob: dip
    d[np.hypot(yy - 100, xx - 178) < 4] -= 0.1
    f = D.cause_map(d, bad_pixels=bad, blobs=np.array([[100.0, 174.0, 8.0]]))
    assert f[2, 100] & D.CAUSE_EDGE and not f[120, 120] & D.CAUSE_EDGE
    assert f[50, 150] & D.CAUSE_COSMIC_RAY
    assert f[150, 50] & D.CAUSE_SNOWBALL
    assert f[80, 80] & D.CAUSE_BAD_PIXEL
    assert f[100, 174] & D.CAUSE_DIP
    assert not f[150, 150]


def test_build_datasets_keeps_distractors_and_held_out_stamps_where_they_belong(tmp_path):
    """The four standard sets from a tiny plan: distractors are a training augmentation only,
    and the held-out stamps appear in test_stamps and nowhere else."""
    plan = D.DatasetPlan(
        n_train=12, n_val=6, n_test=6, train_seeds=(1,), test_seeds=(2,), n_days=6, diff_days=(5,)
    )
    out = D.build_datasets(tmp_path, plan, progress=False)
    assert sorted(out) == ["test_images", "test_stamps", "train", "val"]
    train = D.read_meta(out["train"])
    assert (train["n_distractors"] > 0).any() and (train["pedestal"] != 0).all()
    for name in ("val", "test_images", "test_stamps"):
        meta = D.read_meta(out[name])
        assert (meta["n_distractors"] == 0).all() and (meta["pedestal"] == 0).all()
    held = set(plan.heldout_stamps)
    for name, path in out.items():
        ids = {
            b["stamp_id"]
            for t in (path / "samples.jsonl").read_text().splitlines()
            for b in json.loads(t)["blobs"]
            if b["kind"] == "stamp"
        }
        assert (ids <= held) if name == "test_stamps" else not (ids & held), name
    assert D.read_manifest(out["train"])["generator_version"] == D.GENERATOR_VERSION
