"""Tests of blobwatch.evaluate and blobwatch.baseline (matched filter)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from blobwatch import dataset as D
from blobwatch.baseline import matched_filter_maps, matched_filter_scores, threshold_at_fpr
from blobwatch.evaluate import (
    LEVELS,
    confusion_rates,
    evaluate_model,
    evaluate_scores,
    format_table,
    fp_breakdown,
    level_sensitivity,
    registration_breakdown,
)


def test_confusion_rates_match_the_seed_table_layout():
    labels = np.array([0] * 8 + [1] * 4)
    pred = np.array([0] * 7 + [1] + [1, 1, 1, 0])
    r = confusion_rates(labels, pred)
    assert (r["tn"], r["fp"], r["tp"], r["fn"]) == pytest.approx((7 / 8, 1 / 8, 3 / 4, 1 / 4))
    assert r["counts"] == {"tn": 7, "fp": 1, "tp": 3, "fn": 1}
    assert r["false_alarms_per_image"] == pytest.approx(16 / 8)


def test_threshold_at_fpr_gives_that_rate():
    neg = np.arange(100, dtype=float)
    for fpr in (0.0, 0.05, 0.12, 1.0):
        thr = threshold_at_fpr(neg, fpr)
        assert (neg >= thr).mean() <= fpr + 1e-12
        assert (neg >= thr).mean() == pytest.approx(fpr)
    # float32 scores and ties never push the rate above the target
    neg32 = np.array([7.5, 6.776018, 6.776018, 6.5, 1.0], np.float32)
    for fpr in (0.2, 0.4, 0.6):
        assert (neg32 >= threshold_at_fpr(neg32, fpr)).mean() <= fpr
    assert (neg32 >= threshold_at_fpr(neg32, 0.6)).mean() == pytest.approx(0.6)
    with pytest.raises(ValueError, match="at least one negative"):
        threshold_at_fpr(np.array([]), 0.1)
    with pytest.raises(ValueError, match="fpr must be within"):
        threshold_at_fpr(neg, 1.5)


def test_matched_filter_finds_a_faint_blob():
    rng = np.random.default_rng(1)
    noise = rng.normal(0, 1, (40, 64, 64)).astype(np.float32)
    blob = noise.copy()
    yy, xx = np.mgrid[:64, :64]
    blob += (1.5 * (np.hypot(yy - 30, xx - 20) < 6)).astype(np.float32)
    s_noise, s_blob = matched_filter_scores(noise), matched_filter_scores(blob)
    assert s_blob.min() > s_noise.max()
    m = matched_filter_maps(blob[0])
    assert np.unravel_index(np.argmax(m), m.shape) == pytest.approx((30, 20), abs=3)
    with pytest.raises(ValueError, match="subframes must be"):
        matched_filter_maps(np.zeros(5))


def test_fp_breakdown_counts_causes():
    meta = {"causes": np.array([D.CAUSE_DIP, D.CAUSE_DIP, 0, 0, D.CAUSE_EDGE, 0], np.uint8)}
    labels = np.array([0, 0, 0, 0, 0, 1])
    pred = np.array([1, 0, 0, 1, 0, 1])
    rows = {r["cause"]: r for r in fp_breakdown(meta, labels, pred)}
    assert rows["dip"]["n_with"] == 2 and rows["dip"]["fp_with"] == 1
    assert rows["dip"]["fp_rate_with"] == 0.5 and rows["dip"]["fp_rate_without"] == pytest.approx(1 / 3)
    assert rows["none flagged"]["fp_with"] == 1 and rows["dip"]["share_of_fps"] == 0.5


def test_evaluate_scores_compares_baseline_at_the_same_fpr():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 200)
    probs = np.clip(rng.normal(0.3 + 0.4 * labels, 0.15), 0, 1)
    base = rng.normal(3 + 1.5 * labels, 1)
    meta = {
        "peak": rng.uniform(1, 6, 400).astype(np.float32),
        "radius": rng.uniform(4, 11, 400),
        "edge_distance": rng.uniform(0, 128, 400),
        "n_blobs": np.ones(400, np.int8),
        "causes": np.zeros(400, np.uint8),
    }
    res = evaluate_scores(labels, probs, meta, 0.5, base)
    assert res["matched_filter"]["fp"] <= res["cnn"]["fp"] + 1e-12
    assert res["matched_filter"]["fp"] == pytest.approx(res["cnn"]["fp"], abs=1 / 200)
    assert 0.5 < res["cnn"]["roc_auc"] <= 1
    assert sum(r["n"] for r in res["cnn"]["misses"] if r["quantity"] == "peak_sigma") == 200


def test_evaluate_model_writes_report_and_figures(tmp_path):
    import torch

    from blobwatch.modelfile import save_model
    from blobwatch.models import build_model

    rng = np.random.default_rng(0)
    src = [
        D.SourceImage("s", rng.normal(0, 1, (256, 256)).astype(np.float32), np.zeros((256, 256), np.uint8))
    ]
    yy, xx = np.mgrid[:13, :13] - 6
    stamps = {1: np.where(np.hypot(yy, xx) < 5, 3.0, 0.0).astype(np.float32)}
    ds = D.make_dataset(
        tmp_path / "val",
        src,
        n_samples=30,
        region="validation",
        seed=3,
        stamps=stamps,
        stamp_ids=[1],
        size=64,
    )
    torch.manual_seed(0)
    save_model(
        tmp_path / "m.pt",
        build_model("PaperCNN", {"size": 64}),
        architecture="PaperCNN",
        arguments={"size": 64},
        metadata={"threshold": 0.5},
    )
    report = evaluate_model([ds], model=tmp_path / "m.pt", outdir=tmp_path / "ev", device="cpu")
    res = report["datasets"]["val"]
    assert res["n"] == 30 and "matched_filter" in res
    on_disk = json.loads((tmp_path / "ev" / "evaluation.json").read_text())
    assert on_disk["datasets"]["val"]["cnn"]["counts"] == res["cnn"]["counts"]
    for f in (
        "val_confusion.png",
        "val_roc_pr.png",
        "val_misses.csv",
        "val_false_positives.csv",
        "val_scores.npz",
    ):
        assert (tmp_path / "ev" / f).stat().st_size > 0
    assert "matched filter" in format_table(report)
    rows = on_disk["datasets"]["val"]["cnn"]["level_sensitivity"]
    assert [r["level_sigma"] for r in rows] == list(LEVELS)
    assert all(r["n_negative"] > 0 and r["n_positive"] > 0 for r in rows)


def test_level_sensitivity_raises_whole_subframes(tmp_path):
    """A detector that reads the subframe's mean level as blob flux flags everything raised by
    half a sigma and nothing lowered by it; the report must show exactly that."""
    import torch

    class MeanLevel(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            m = x.mean(dim=(1, 2, 3))
            return torch.stack([-50 * m, 50 * m], dim=1)

    rng = np.random.default_rng(1)
    src = [
        D.SourceImage("s", rng.normal(0, 1, (256, 256)).astype(np.float32), np.zeros((256, 256), np.uint8))
    ]
    stamps = {1: np.full((5, 5), 0.1, np.float32)}
    ds = D.SubframeDataset(
        D.make_dataset(
            tmp_path / "ds", src, n_samples=40, region="all", seed=2, stamps=stamps, stamp_ids=[1], size=64
        )
    )
    rows = level_sensitivity(MeanLevel(), ds, len(ds), 0.5, device="cpu", per_class=10)
    by = {r["level_sigma"]: r for r in rows}
    assert by[-0.5]["fp_rate"] == 0.0 and by[-0.5]["tp_rate"] == 0.0
    assert by[0.5]["fp_rate"] == 1.0 and by[0.5]["tp_rate"] == 1.0
    assert by[0.0]["n_negative"] == 10 and by[0.0]["n_positive"] == 10


def test_evaluate_cli_bad_model_exits_2(tmp_path, capsys):
    from blobwatch.cli import main

    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"nope")
    (tmp_path / "ds").mkdir()
    assert main(["evaluate", str(tmp_path / "ds"), "--model", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad.pt" in err and "not a readable model file" in err


def test_registration_breakdown_groups_by_source():
    manifest = {
        "sources": [
            {"provenance": {"registered": True}},
            {"provenance": {"registered": False}},
            {"provenance": {}},
        ]
    }
    meta = {"source": np.array([0, 0, 1, 1, 2, 0])}
    labels = np.array([0, 1, 0, 1, 0, 0])
    pred = np.array([0, 1, 1, 0, 1, 1])
    out = registration_breakdown(manifest, meta, labels, pred)
    assert out["registered"] == {"n_negative": 2, "n_positive": 1, "fp_rate": 0.5, "tpr": 1.0}
    assert out["unregistered"]["fp_rate"] == 1.0 and out["unregistered"]["tpr"] == 0.0
    assert out["unknown"]["n_positive"] == 0 and out["unknown"]["tpr"] is None


def test_figure_titles_from_data_set_names_are_not_parsed_as_math(tmp_path):
    from blobwatch.evaluate import plot_confusion, plot_curves

    rates = {"tn": 0.9, "fp": 0.1, "fn": 0.2, "tp": 0.8}
    plot_confusion(rates, tmp_path / "c.png", title=r"CNN on set_$\foo$")
    cnn = {
        "roc": {"fpr": [0, 1], "tpr": [0, 1]},
        "roc_auc": 0.5,
        "fp": 0.1,
        "tp": 0.8,
        "pr": {"recall": [0, 1], "precision": [1, 0.5]},
        "average_precision": 0.7,
    }
    plot_curves({"cnn": cnn}, tmp_path / "r.png", title=r"set_$\foo$")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.png", "r.png"]
