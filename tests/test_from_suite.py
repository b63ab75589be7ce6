"""Tests of the sky-like PaperCNN training set (``make-dataset --from-suite``), the shared subframe
cutter and the seed-protocol operating points."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from blobwatch.cli import main
from blobwatch.dataset import SubframeDataset, augment_array
from blobwatch.evaluate import subframe_truth, suite_subframes
from blobwatch.seed_protocol import seed_protocol_report, threshold_for_tnr, threshold_for_tpr

#: A tiny training split: 256x256 images, 3 references, 4 cases (2 with 3 new blobs), 64 px subframes.
SMALL = [
    "--new-blobs",
    "3",
    "--cases-per-sequence",
    "4",
    "--image-size",
    "256",
    "--references",
    "3",
    "--subframe-size",
    "64",
]


def test_subframe_truth_labels_centres_and_drops_partial_blobs() -> None:
    offsets = np.array([[0, 0], [64, 0], [0, 64], [64, 64]])
    blobs = [
        {"x": 10.0, "y": 10.0, "radius": 5.0, "snr": 7.0},  # inside subframe 0 only
        {"x": 62.0, "y": 70.0, "radius": 6.0, "snr": 20.0},  # centre in subframe 2, reaches into 3
        {"x": 20.0, "y": 30.0, "radius": 4.0, "snr": 3.0},  # a second, fainter blob in subframe 0
    ]
    t = subframe_truth(offsets, blobs, 64)
    assert t["label"].tolist() == [True, False, True, False]
    assert t["partial"].tolist() == [False, False, False, True]
    assert t["n_blobs"].tolist() == [2, 0, 1, 0]
    assert t["snr"][0] == 7.0 and t["snr"][2] == 20.0 and np.isnan(t["snr"][[1, 3]]).all()
    empty = subframe_truth(offsets, [], 64)
    assert not empty["label"].any() and not empty["partial"].any()


def test_seed_protocol_thresholds_reach_their_targets() -> None:
    rng = np.random.default_rng(0)
    labels = np.r_[np.ones(200, bool), np.zeros(800, bool)]
    scores = np.where(labels, rng.normal(2, 1, labels.size), rng.normal(0, 1, labels.size))
    scores[:20] = scores[200:220]  # ties across the classes
    t = threshold_for_tpr(scores, labels, 0.94)
    assert (scores[labels] >= t).mean() >= 0.94
    assert (scores[labels] > t).mean() < 0.94  # the highest such threshold
    u = threshold_for_tnr(scores, labels, 0.97)
    assert (scores[~labels] < u).mean() >= 0.97
    assert (scores[~labels] < np.nextafter(u, -np.inf)).mean() < 0.97 or u == scores[~labels].min()
    seq = np.repeat(np.arange(10), 100)
    snr = np.where(labels, rng.uniform(3, 30, labels.size), np.nan)
    rep = seed_protocol_report(
        {"label": labels, "seq": seq},
        {"label": labels, "seq": seq, "snr": snr},
        {"a": (scores, scores), "b": (-scores, -scores)},
        reference="a",
    )
    a = rep["models"]["a"]
    assert a["tpr"]["calibration_tpr"]["rate"] >= 0.94 and a["tnr"]["calibration_tnr"]["rate"] >= 0.97
    assert a["tpr"]["tpr"]["rate"] == a["tpr"]["calibration_tpr"]["rate"]  # same subframes here
    assert sum(d["n"] for d in a["tnr"]["tpr_by_snr"]) == 200
    m = rep["models"]["b"]["tnr"]["mcnemar_vs_reference"]["positives"]
    assert m["b_only"] > m["a_only"] and m["p_value"] < 1e-6  # the inverted model finds far fewer


@pytest.mark.slow
def test_make_dataset_from_suite_writes_the_calibration_cut(tmp_path: Path) -> None:
    from blobwatch.regression import SuiteSpec, build_suite
    from blobwatch.variation import VariationConfig, training_stamps

    cache, out = tmp_path / "cache", tmp_path / "ds"
    args = ["make-dataset", str(out), "--from-suite", "--cache", str(cache), "--sequences", "3"]
    assert main([*args, "--val-sequences", "1", "--positive-copies", "3", "--no-progress", *SMALL]) == 0
    train, val = SubframeDataset(out / "train"), SubframeDataset(out / "val")
    assert train.manifest["size"] == 64 and train.x.dtype == np.float16
    assert "training seed split" in train.manifest["recipe"]
    assert train.manifest["parameters"]["positive_copies"] == 3
    # split by sequence
    t_seq, v_seq = set(train.meta["sequence"].tolist()), set(val.meta["sequence"].tolist())
    assert t_seq == {930000, 930001} and v_seq == {930002}
    # the validation set is the calibration cut of its sequence, as is
    variation = VariationConfig(size=256, n_references=3, cases=4, new_blobs=3, stamps=training_stamps())
    cases = build_suite(SuiteSpec("training", 3, variation), cache, progress=False)
    ref = suite_subframes([c for c in cases if c.seed == 930002], size=64, clip_factor=0.5)
    assert np.array_equal(val.x[:], ref.x) and np.array_equal(val.labels, ref.label.astype(int))
    assert val.labels.any() and not val.labels.all()
    # training subframes: each cut subframe once per orientation, positives 3 times, rotated right
    ref_t = suite_subframes([c for c in cases if c.seed != 930002], size=64, clip_factor=0.5)
    n_pos = int(ref_t.label.sum())
    assert len(train) == len(ref_t.label) + 2 * n_pos and int(train.labels.sum()) == 3 * n_pos
    m = train.meta
    for i in np.flatnonzero(train.labels)[:6]:
        j = np.flatnonzero(
            (ref_t.seq == m["sequence"][i])
            & (ref_t.case == m["case"][i])
            & (ref_t.offsets[:, 0] == m["x0"][i])
            & (ref_t.offsets[:, 1] == m["y0"][i])
            & (ref_t.protocol == ("plain", "registered")[m["difference"][i]])
        )
        assert j.size == 1
        want = augment_array(ref_t.x[j[0]], int(m["rot"][i]), bool(m["flip_y"][i]), bool(m["flip_x"][i]))
        assert np.array_equal(train.x[i], want)
    # positives' copies are in distinct orientations; every line names blobs inside the window
    lines = [json.loads(s) for s in (out / "train" / "samples.jsonl").read_text().splitlines()]
    keys = {
        (d["sequence"], d["case"], d["difference"], d["x0"], d["y0"], d["rot90"], d["flip_y"], d["flip_x"])
        for d in lines
    }
    assert len(keys) == len(lines)
    for d in lines:
        assert bool(d["blobs"]) == bool(d["label"])
        assert all(0 <= b["x"] < 64 and 0 <= b["y"] < 64 for b in d["blobs"])
    # a second run into the same folder is refused; a mismatched request never rebuilds the cache
    assert main([*args, "--no-progress", *SMALL]) == 2
    truth = cache / "training" / "seq930000" / "truth.json"
    before = truth.read_bytes()
    other = ["make-dataset", str(tmp_path / "ds2"), "--from-suite", "--cache", str(cache), "--sequences", "3"]
    assert main([*other, "--no-progress", *SMALL[2:], "--new-blobs", "4"]) == 2
    assert truth.read_bytes() == before and not (tmp_path / "ds2" / "train").exists()


@pytest.mark.slow
def test_evaluate_seed_protocol_scores_both_models_and_the_matched_filter(tmp_path: Path) -> None:
    small = ["--size", "256", "--references", "3", "--cases-per-sequence", "4"]
    out = tmp_path / "ev"
    code = main(
        [
            "evaluate",
            "--suite",
            "--seed-protocol",
            "--cache",
            str(tmp_path / "cache"),
            "--sequences",
            "3",
            "--calibration-sequences",
            "3",
            *small,
            "--out",
            str(out),
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    rep = json.loads((out / "evaluation_seed_protocol.json").read_text())
    assert rep["difference"].startswith("plain") and len(rep["models"]) == 3
    assert "matched filter" in rep["models"] and rep["reference"] == "shipped PaperCNN"
    for m in rep["models"].values():
        assert m["tpr"]["calibration_tpr"]["rate"] >= 0.94 and m["tnr"]["calibration_tnr"]["rate"] >= 0.97
