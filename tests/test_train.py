"""Tests of blobwatch.train and the model file: PaperCNN, smoke training, resume, bad files."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from blobwatch import dataset as D
from blobwatch.errors import InputError
from blobwatch.modelfile import load_model, save_model
from blobwatch.models import PaperCNN, build_model
from blobwatch.train import TrainConfig, choose_threshold, epoch_order, rates, train

SIZE = 64


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A few dozen 64x64 samples with strong blobs, plus a validation set."""
    root = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(0)
    srcs = [
        D.SourceImage(
            f"s{i}", rng.normal(0, 1, (256, 256)).astype(np.float32), np.zeros((256, 256), np.uint8)
        )
        for i in range(2)
    ]
    yy, xx = np.mgrid[:13, :13] - 6
    stamps = {1: np.where(np.hypot(yy, xx) < 5, 4.0, 0.0).astype(np.float32)}
    common = dict(stamps=stamps, stamp_ids=[1], size=SIZE, blobs=D.BlobConfig(simulated_fraction=0.0))
    tr = D.make_dataset(root / "train", srcs, n_samples=48, region="train", seed=1, **common)
    va = D.make_dataset(root / "val", srcs, n_samples=24, region="validation", seed=2, **common)
    return tr, va


def test_papercnn_shapes_and_parameter_count():
    model = PaperCNN()
    n = sum(p.numel() for p in model.parameters())
    # conv 1->8 5x5 (208) + conv 8->16 5x5 (3216) + FC 4096->128 (524416) + FC 128->2 (258)
    assert n == 528098
    assert tuple(model(torch.zeros(3, 1, 256, 256)).shape) == (3, 2)
    small = build_model("PaperCNN", {"size": 64})
    assert tuple(small(torch.zeros(2, 1, 64, 64)).shape) == (2, 2)
    with pytest.raises(ValueError, match="divisible"):
        PaperCNN(size=100)


def _cfg(tiny, out, **kw):
    tr, va = tiny
    base = dict(
        dataset=str(tr),
        val_dataset=str(va),
        outdir=str(out),
        epochs=2,
        adam_epochs=1,
        batch_size=12,
        seed=7,
        device="cpu",
        progress=False,
    )
    base.update(kw)
    return TrainConfig(**base)


def _loss_on(model, ds) -> float:
    x, y = ds.batch(np.arange(len(ds)))
    model.eval()
    with torch.no_grad():
        return float(torch.nn.functional.cross_entropy(model(x), y))


def test_two_epoch_smoke_run_lowers_the_loss(tiny, tmp_path):
    torch.manual_seed(7)
    ds = D.SubframeDataset(tiny[0])
    before = _loss_on(build_model("PaperCNN", {"size": SIZE}), ds)
    res = train(_cfg(tiny, tmp_path / "run", adam_lr=3e-3))
    after = _loss_on(res.model, ds)
    assert after < before
    assert (tmp_path / "run" / "checkpoint.pt").is_file()
    assert (tmp_path / "run" / "history.png").stat().st_size > 1000
    rows = list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))
    assert [r["optimizer"] for r in rows] == ["adam", "sgd"]
    assert {"train_loss", "val_tpr", "val_tnr", "lr", "seconds"} <= set(rows[0])
    mf = load_model(res.model_path)
    md = mf.metadata
    assert 0 < md["threshold"] <= 1 and md["threshold"] == pytest.approx(res.threshold)
    assert md["preparation"]["subframe"] == SIZE and md["preparation"]["clip_factor"] == 0.5
    assert md["dataset_manifest_sha256"] == D.manifest_sha256(tiny[0])
    assert {"blobwatch", "torch", "numpy"} <= set(md["versions"])
    assert {"command", "epochs", "seconds", "hardware"} <= set(md["training"])
    assert {"tpr", "tnr", "roc_auc"} <= set(md["validation"])


def test_resume_reproduces_an_uninterrupted_run(tiny, tmp_path):
    full = train(_cfg(tiny, tmp_path / "full", epochs=3, adam_epochs=2))
    train(_cfg(tiny, tmp_path / "part", epochs=2, adam_epochs=2))
    resumed = train(_cfg(tiny, tmp_path / "part", epochs=3, adam_epochs=2, resume=True))
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [h["train_loss"] for h in full.history] == [h["train_loss"] for h in resumed.history]


def test_resume_without_checkpoint_is_a_clear_error(tiny, tmp_path):
    with pytest.raises(InputError, match="no checkpoint to resume from"):
        train(_cfg(tiny, tmp_path / "none", resume=True))
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="unusable checkpoint"):
        train(_cfg(tiny, tmp_path / "junk", resume=True))


def test_data_order_is_fixed_by_seed_and_epoch():
    np.testing.assert_array_equal(epoch_order(50, 3, 1), epoch_order(50, 3, 1))
    assert not np.array_equal(epoch_order(50, 3, 1), epoch_order(50, 3, 2))
    assert sorted(epoch_order(50, 3, 0)) == list(range(50))


def test_threshold_and_rates():
    labels = np.array([0, 0, 0, 1, 1, 1])
    probs = np.array([0.1, 0.2, 0.6, 0.55, 0.8, 0.9])
    thr = choose_threshold(labels, probs)
    r = rates(labels, probs, thr)
    assert r["tpr"] + r["tnr"] - 1 == pytest.approx(2 / 3)
    assert rates(labels, probs, 0.5) == pytest.approx(
        {"tpr": 1.0, "tnr": 2 / 3, "fpr": 1 / 3, "fnr": 0.0, "accuracy": 5 / 6}
    )


@pytest.mark.parametrize(
    "content,match",
    [
        (b"garbage", "not a readable model file"),
        (None, "not a blobwatch model file"),
        ("mismatch", "do not match the architecture"),
    ],
)
def test_bad_model_file_gives_a_clear_error(tmp_path, content, match):
    path = tmp_path / "model.pt"
    if content is None:
        torch.save({"format": "something else"}, path)
    elif content == "mismatch":
        save_model(path, PaperCNN(size=64), architecture="PaperCNN", arguments={"size": 128}, metadata={})
    else:
        path.write_bytes(content)
    with pytest.raises(InputError, match=match):
        load_model(path)
    with pytest.raises(InputError, match="model file not found"):
        load_model(tmp_path / "missing.pt")


def test_shipped_model_loads_with_its_metadata():
    from blobwatch.modelfile import shipped_model_path

    if not shipped_model_path().is_file():
        pytest.skip("shipped model not built yet")
    mf = load_model()
    md = mf.metadata
    assert mf.architecture == "PaperCNN" and md["preparation"]["subframe"] == 256
    for key in (
        "threshold",
        "architecture",
        "arguments",
        "dataset_manifest_sha256",
        "validation",
        "versions",
        "training",
    ):
        assert key in md
    assert md["validation"]["tpr"] >= 0.94 and md["validation"]["tnr"] >= 0.88
