"""Tests for blobwatch.saliency and the ``saliency`` command."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from blobwatch.cli import main
from blobwatch.saliency import gradient_saliency, saliency_peak, save_saliency_figure
from handmade_model import handmade_network, write_handmade_model

SIZE = 256
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _frames() -> np.ndarray:
    rng = np.random.default_rng(5)
    frames = rng.normal(size=(3, SIZE, SIZE)).astype(np.float32)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    # frame 1: one blob at row 60, col 190; frame 2: blobs at (200, 40) and (128, 128)
    frames[1] += 3.0 * np.exp(-((yy - 60) ** 2 + (xx - 190) ** 2) / 32.0)
    frames[2] += 3.0 * np.exp(-((yy - 200) ** 2 + (xx - 40) ** 2) / 32.0)
    frames[2] += 3.0 * np.exp(-((yy - 128) ** 2 + (xx - 128) ** 2) / 32.0)
    return frames


def test_gradient_saliency_highlights_the_blobs() -> None:
    net = handmade_network()
    frames = _frames()
    sal = gradient_saliency(net, frames, batch_size=2)
    assert sal.shape == frames.shape and sal.dtype == np.float32
    assert (sal >= 0).all()
    row, col = saliency_peak(sal[1])
    assert abs(row - 60) <= 4 and abs(col - 190) <= 4
    # both blobs of frame 2 carry saliency; the noise far from them carries none
    assert sal[2, 190:211, 30:51].sum() > 0 and sal[2, 118:139, 118:139].sum() > 0
    assert sal[2, :50, 200:].sum() == 0
    # no gradient reaches the parameters
    assert all(p.grad is None for p in net.parameters())


def test_gradient_saliency_inside_inference_mode() -> None:
    net = handmade_network()
    with torch.inference_mode():
        sal = gradient_saliency(net, _frames()[1:2])
    assert sal[0].max() > 0


def test_gradient_saliency_matches_finite_difference() -> None:
    net = handmade_network()
    frame = _frames()[1:2].astype(np.float32)
    sal = gradient_saliency(net, frame)
    row, col = np.unravel_index(int(np.argmax(sal[0])), sal[0].shape)
    eps = 1e-2

    def logit(x: np.ndarray) -> float:
        with torch.no_grad():
            return float(net(torch.from_numpy(x)[:, None])[0, 1])

    up, down = frame.copy(), frame.copy()
    up[0, row, col] += eps
    down[0, row, col] -= eps
    numeric = abs(logit(up) - logit(down)) / (2 * eps)
    assert numeric == pytest.approx(float(sal[0, row, col]), rel=0.05)


@pytest.mark.parametrize(("bad", "match"), [(np.zeros((2, 4, 4)), "2-D map"), (np.zeros(5), "2-D map")])
def test_saliency_peak_rejects_bad_shape(bad: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        saliency_peak(bad)


def test_gradient_saliency_rejects_bad_shape() -> None:
    with pytest.raises(ValueError, match=r"shape \(N, H, W\)"):
        gradient_saliency(handmade_network(), np.zeros((SIZE, SIZE), np.float32))


def test_save_saliency_figure(tmp_path: Path) -> None:
    frames = _frames()
    out = tmp_path / "fig.png"
    save_saliency_figure(out, frames[1], np.abs(frames[1]), title=r"test $\foo$ name", origin=(256, 512))
    assert out.read_bytes()[:8] == PNG_MAGIC
    assert not list(tmp_path.glob(".*.tmp"))
    with pytest.raises(ValueError, match="same shape"):
        save_saliency_figure(tmp_path / "x.png", frames[1], frames[1][:10])


def test_saliency_cli(tmp_path: Path, capsys) -> None:
    model = write_handmade_model(tmp_path / "m.pt")
    frames = _frames()[:2]
    np.save(tmp_path / "sub.npy", frames)
    out = tmp_path / "maps"
    assert main(["saliency", str(tmp_path / "sub.npy"), "--out", str(out), "--model", str(model)]) == 0
    assert "wrote 2 figure(s)" in capsys.readouterr().out
    maps = np.load(out / "saliency.npy")
    assert maps.shape == frames.shape and maps.dtype == np.float32
    pngs = sorted(out.glob("saliency_*.png"))
    assert [p.name for p in pngs] == ["saliency_000.png", "saliency_001.png"]
    assert all(p.read_bytes()[:8] == PNG_MAGIC for p in pngs)


def test_saliency_cli_bad_model(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_text("nope")
    np.save(tmp_path / "sub.npy", _frames()[:1])
    assert (
        main(["saliency", str(tmp_path / "sub.npy"), "--out", str(tmp_path / "o"), "--model", str(bad)]) == 2
    )
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bad.pt" in err
