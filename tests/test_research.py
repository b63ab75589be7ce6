"""The seed's future work: autoencoder anomaly detection, embeddings, and the comparison page."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from blobwatch import regression as R
from blobwatch.cli import main
from blobwatch.variation import VariationConfig

#: A tiny suite: 256x256 images (one subframe each), 5 references, 2 cases per sequence.
SMALL = VariationConfig(size=256, n_references=5, cases=2)
SMALL_ARGS = ["--size", "256", "--references", "5", "--cases-per-sequence", "2"]


def _background(rng: np.random.Generator, n: int, size: int = 64, gradient: float = 0.0) -> np.ndarray:
    """Prepared-like blob-free subframes: unit noise plus a random gradient."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    grad = rng.normal(0, gradient, (n, 1, 1)) * yy + rng.normal(0, gradient, (n, 1, 1)) * xx
    return (rng.normal(0, 1, (n, size, size)) + grad).astype(np.float32)


def _disc(size: int, y: float, x: float, radius: float, amplitude: float) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    return (amplitude * ((yy - y) ** 2 + (xx - x) ** 2 <= radius**2)).astype(np.float32)


@pytest.fixture(scope="module")
def tiny_autoencoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny autoencoder trained a few steps on 64x64 blob-free subframes."""
    from blobwatch.anomaly import AutoencoderConfig, train_autoencoder

    rng = np.random.default_rng(0)
    x = _background(rng, 48, gradient=0.5)
    out = tmp_path_factory.mktemp("ae")
    cfg = AutoencoderConfig(
        outdir=str(out),
        channels=(4, 8),
        latent=2,
        epochs=3,
        batch_size=8,
        lr=1e-2,
        val_fraction=0.34,
        threads=1,
    )
    metrics = train_autoencoder(cfg, x, np.repeat([930_000, 930_001, 930_002], 16), log=lambda _: None)
    assert metrics["train_subframes"] == 32 and metrics["val_subframes"] == 16
    assert len(metrics["history"]) == 3
    return out / "model.pt"


def test_autoencoder_scores_a_blob_above_the_same_subframe_without_it(tiny_autoencoder: Path) -> None:
    from blobwatch.anomaly import AutoencoderScorer

    scorer = AutoencoderScorer(tiny_autoencoder)
    assert scorer.size == 64 and scorer.registered and scorer.mode == "signed"
    rng = np.random.default_rng(1)
    clean = _background(rng, 4, gradient=0.5)
    blob = clean + _disc(64, 30, 34, 5, 2.0)
    s_clean, s_blob = scorer.subframe_scores(clean), scorer.subframe_scores(blob)
    assert np.all(s_blob > s_clean + 2.0)
    # the per-pixel error map peaks on the blob
    err = scorer.subframe_errors(blob)
    rows, cols = np.unravel_index(err.reshape(4, -1).argmax(axis=1), (64, 64))
    assert np.all(np.hypot(rows - 30, cols - 34) <= 5)


def test_autoencoder_model_file_is_refused_by_the_subframe_classifier(tiny_autoencoder: Path) -> None:
    from blobwatch.classifier import BlobClassifier
    from blobwatch.errors import InputError

    with pytest.raises(InputError, match="ConvAutoencoder model, not a subframe classifier"):
        BlobClassifier(tiny_autoencoder)


def test_error_map_is_in_robust_sigmas_and_signed() -> None:
    from blobwatch.models.autoencoder import error_maps

    rng = np.random.default_rng(2)
    x = rng.normal(0, 1, (2, 64, 64)).astype(np.float32)
    zero = np.zeros_like(x)
    e = error_maps(x, zero, sigma=2.0)
    assert e.shape == x.shape and e.dtype == np.float32
    assert abs(float(np.median(e))) < 0.05
    dark = error_maps(x - _disc(64, 32, 32, 5, 3.0), zero, sigma=2.0)
    bright = error_maps(x + _disc(64, 32, 32, 5, 3.0), zero, sigma=2.0)
    assert bright[:, 32, 32].min() > 5 and dark[:, 32, 32].max() < -5
    assert error_maps(x - _disc(64, 32, 32, 5, 3.0), zero, sigma=2.0, mode="squared")[:, 32, 32].min() > 5


def _feature_sets(rng: np.random.Generator) -> tuple:
    """Three small labelled subframe sets (64x64 raw features: blobs on half of them)."""
    from blobwatch.embed import FeatureSet, raw_features

    sets = []
    for n in (60, 40, 40):
        x = _background(rng, n)
        label = (np.arange(n) % 2).astype(np.int8)
        x[label == 1] += _disc(64, 32, 32, 10, 2.0)
        cause = np.where(
            label == 1, "blob", np.array(["dip", "edge", "none", "cosmic_ray"])[np.arange(n) % 4]
        )
        sets.append(FeatureSet({"raw": raw_features(x)}, label, cause, np.arange(n), np.zeros((n, 2), int)))
    return tuple(sets)


def test_embeddings_have_the_right_shapes_classify_and_draw(tmp_path: Path) -> None:
    from blobwatch.embed import best_storable, study
    from blobwatch.embed_report import plot_embedding, results_table

    train, calib, suite = _feature_sets(np.random.default_rng(3))
    assert train.features["raw"].shape == (60, 64)
    others = {"calibration": calib, "suite": suite}
    results, embeddings = study(train, others, methods=("pca", "tsne"), features=("raw",), log=lambda _: None)
    assert [(r["method"], r["classifier"]) for r in results] == [
        ("pca", "logistic"),
        ("pca", "knn"),
        ("tsne", "logistic"),
        ("tsne", "knn"),
    ]
    for emb in embeddings:
        assert emb.train.shape == (60, 2) and [o.shape for o in emb.others] == [(40, 2), (40, 2)]
    pca_logistic = results[0]
    assert pca_logistic["suite"]["roc_auc"] > 0.9  # a bright disc is the first principal direction
    assert best_storable(results)["method"] == "pca"
    path = tmp_path / "embed_pca.png"
    plot_embedding([embeddings[0]], others, path)
    assert path.stat().st_size > 10_000
    assert len(results_table(results, list(others))) == 2 + 4


@pytest.mark.parametrize("kind", ["logistic", "knn"])
def test_stored_embedding_classifier_gives_scikit_learns_probabilities(kind: str, tmp_path: Path) -> None:
    from blobwatch.embed import EmbeddingClassifier, embed, fit_classifier

    train, _, suite = _feature_sets(np.random.default_rng(4))
    emb = embed(train.features["raw"], [suite.features["raw"]], "pca", feature="raw")
    clf = fit_classifier(emb.train, train.label, kind)
    stored = EmbeddingClassifier.from_fitted(emb, clf, kind, {"threshold": 0.5})
    stored.save(tmp_path / "c.npz")
    loaded = EmbeddingClassifier.load(tmp_path / "c.npz")
    expected = clf.predict_proba(emb.others[0])[:, 1]
    np.testing.assert_allclose(loaded.predict_proba(suite.features["raw"]), expected, atol=1e-5)


def test_missing_research_extra_is_one_line_exit_2(monkeypatch, tmp_path: Path, capsys) -> None:
    from blobwatch.embed import embed
    from blobwatch.extras import MissingExtraError

    monkeypatch.setitem(sys.modules, "umap", None)  # what an environment without umap-learn gives
    with pytest.raises(MissingExtraError, match=r"umap-learn is not installed.*blobwatch\[research\]"):
        embed(np.zeros((5, 3)), [], "umap")
    code = main(
        ["embed", "--methods", "pca,umap", "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "out")]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "umap-learn" in err and "pip install 'blobwatch[research]'" in err
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()


@pytest.fixture(scope="module")
def small_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = tmp_path_factory.mktemp("cache")
    for split in ("suite", "calibration"):
        R.build_suite(R.SuiteSpec(split, 5, SMALL), cache, progress=False)
    return cache


def _embedding_file(path: Path) -> Path:
    """An embedding classifier of raw features fitted on synthetic 256x256 subframes."""
    from blobwatch.embed import EmbeddingClassifier, embed, fit_classifier, raw_features

    rng = np.random.default_rng(5)
    x = _background(rng, 40, size=256)
    label = (np.arange(40) % 2).astype(np.int8)
    x[label == 1] += _disc(256, 128, 128, 8, 2.0)
    emb = embed(raw_features(x), [], "pca", feature="raw")
    stored = EmbeddingClassifier.from_fitted(
        emb, fit_classifier(emb.train, label), "logistic", {"threshold": 0.5, "seconds": 1.5}
    )
    stored.save(path)
    return path


def test_autoencoder_and_embed_are_regression_detectors(
    small_cache: Path, tiny_autoencoder: Path, tmp_path: Path
) -> None:
    cases = R.build_suite(R.SuiteSpec("suite", 5, SMALL), small_cache, progress=False)
    ae = R.make_detector("autoencoder", ae_model=str(tiny_autoencoder))
    cands = ae(cases[0])
    assert ae.localizes and cands.score.size and np.all(np.diff(cands.score) <= 0)
    emb = R.make_detector("embed", embed_model=str(_embedding_file(tmp_path / "e.npz")))
    c = emb(cases[0])
    assert not emb.localizes and c.boxes is not None and c.boxes.shape == (1, 3) and 0 <= c.score[0] <= 1


def test_compare_writes_every_requested_row(
    small_cache: Path, tiny_autoencoder: Path, model_path: Path, tmp_path: Path, capsys
) -> None:
    docs = tmp_path / "docs" / "comparison.md"
    code = main(
        [
            "compare",
            "--cache",
            str(small_cache),
            "--sequences",
            "5",
            "--calibration-sequences",
            "5",
            *SMALL_ARGS,
            "--tuned-model",
            str(model_path),
            "--ae-model",
            str(tiny_autoencoder),
            "--embed-model",
            str(_embedding_file(tmp_path / "e.npz")),
            "--out",
            str(tmp_path / "out"),
            "--docs",
            str(docs),
            "--threads",
            "1",
        ]
    )
    assert code == 0, capsys.readouterr().err
    page = docs.read_text()
    for detector in ("paper", "tuned", "autoencoder", "embed", "fcn", "mf"):
        assert f"| `{detector}` |" in page
    for label in (
        "PaperCNN",
        "tuned network",
        "autoencoder",
        "best embedding classifier",
        "default detector",
        "matched filter",
    ):
        assert sum(line.startswith(f"| {label}") for line in page.splitlines()) == 2  # cost and misses
    assert "blobwatch compare" in page and "## What each misses" in page
    assert (docs.parent / "comparison_detection.png").is_file()
    assert (tmp_path / "out" / "cases.csv").read_text().count("\n") == 1 + 6 * 2 * 10


@pytest.mark.slow
def test_compare_without_a_tuned_model_says_so(
    small_cache: Path, tiny_autoencoder: Path, tmp_path: Path
) -> None:
    docs = tmp_path / "c.md"
    code = main(
        [
            "compare",
            "--cache",
            str(small_cache),
            "--sequences",
            "5",
            "--calibration-sequences",
            "5",
            *SMALL_ARGS,
            "--ae-model",
            str(tiny_autoencoder),
            "--embed-model",
            str(_embedding_file(tmp_path / "e.npz")),
            "--out",
            str(tmp_path / "out"),
            "--docs",
            str(docs),
        ]
    )
    assert code == 0
    page = docs.read_text()
    assert "## Not run" in page and "tuned network: no --tuned-model given" in page


def test_compare_adds_the_sky_trained_papercnn_row_only_when_given() -> None:
    from blobwatch.comparison import default_methods

    assert [m.label for m in default_methods()][:2] == [
        "PaperCNN (seed architecture, shipped model)",
        "tuned network",
    ]
    rows = default_methods(sky_model="runs/sky1/model.pt")
    assert rows[1].label == "PaperCNN, sky-like training" and rows[1].detector == "paper"
    assert rows[1].options == {"model": "runs/sky1/model.pt"} and len(rows) == len(default_methods()) + 1


def test_a_fine_tuned_models_training_time_includes_its_starting_model() -> None:
    from blobwatch.comparison import training_info

    assert training_info({"training": {"train_seconds": 519.0}, "command": "c"}) == (519.0, "c")
    tuned = {"training": {"train_seconds": 519.0}, "init_training_seconds": 1712.0}
    assert training_info(tuned) == (2231.0, None)
    assert training_info({"init_training_seconds": 1712.0}) == (None, None)  # nothing of its own: unknown
