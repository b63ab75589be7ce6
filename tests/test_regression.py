"""The regression suite: sky-like cases, deterministic cache, scores, CLI errors."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from blobwatch import regression as R
from blobwatch.cli import main
from blobwatch.dataset import HELDOUT_STAMPS, TEST_SEEDS, TRAIN_SEEDS
from blobwatch.variation import (
    SPLIT_SEEDS,
    VariationConfig,
    simulate_varied_sequence,
    split_seeds,
    transform_points,
)

#: A small suite: 256x256 images, 5 references, 2 cases per sequence.
SMALL = VariationConfig(size=256, n_references=5, cases=2)
SMALL_ARGS = ["--size", "256", "--references", "5", "--cases-per-sequence", "2"]


@dataclass
class _HandSet:
    """A detector that answers 'blob everywhere' (a dense grid) or 'never'."""

    everywhere: bool
    name: str = "handset"
    description: str = "hand-set"
    native_threshold: float = 0.5
    localizes: bool = True

    def __call__(self, case: R.Case) -> R.Candidates:
        if not self.everywhere:
            return R.Candidates.empty()
        grid = np.arange(0, case.size, 4.0)
        yy, xx = np.meshgrid(grid, grid, indexing="ij")
        return R.Candidates(xx.ravel(), yy.ravel(), np.ones(xx.size))


R.register_detector("always", lambda **_: _HandSet(True, name="always"))
R.register_detector("never", lambda **_: _HandSet(False, name="never"))


@pytest.fixture(scope="module")
def small_suite(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[R.Case]]:
    cache = tmp_path_factory.mktemp("cache")
    return cache, R.build_suite(R.SuiteSpec("suite", 5, SMALL), cache, progress=False)


def test_split_seeds_never_overlap_each_other_or_training_data() -> None:
    ranges = {name: set(range(first, first + n)) for name, (first, n) in SPLIT_SEEDS.items()}
    names = sorted(ranges)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not ranges[a] & ranges[b], (a, b)
    used = set(TRAIN_SEEDS) | set(TEST_SEEDS) | {2021, 7}  # training datasets, demo and benchmark seeds
    assert not used & set().union(*ranges.values())
    assert split_seeds("suite", 3) == [910_000, 910_001, 910_002]
    with pytest.raises(ValueError, match="unknown split"):
        split_seeds("test", 1)


def test_suite_is_deterministic_same_files_same_hashes(small_suite, tmp_path: Path) -> None:
    cache, cases = small_suite
    again = R.build_suite(R.SuiteSpec("suite", 5, SMALL), tmp_path, progress=False)
    first = json.loads((cache / "suite" / "manifest.json").read_text())["files"]
    second = json.loads((tmp_path / "suite" / "manifest.json").read_text())["files"]
    assert first == second
    assert len(first) == 5 * (2 + 2)  # per sequence: 2 cases, references median, truth
    assert [c.name for c in cases] == [c.name for c in again]


#: What `SUITE_VERSION` produces for `SMALL`, five sequences: per case the sums of |registered
#: difference|, of the reference median and of |plain difference|, and the new blob's x, y and S/N
#: (-1 for a quiet image).
FINGERPRINT = [
    [1108.592529, 59514.210938, 1146.286743, 219.574369, 219.939272, 7.248611],
    [1572.264404, 60585.359375, 1575.114502, -1.0, -1.0, -1.0],
    [939.714966, 61243.429688, 939.714966, 207.703465, 163.089462, 5.464305],
    [878.482849, 61243.429688, 878.482849, -1.0, -1.0, -1.0],
    [892.348022, 60857.84375, 882.624207, 216.565382, 211.056676, 31.609284],
    [791.09729, 60856.242188, 770.896851, -1.0, -1.0, -1.0],
    [2420.312988, 60602.96875, 2420.312988, 10.755705, 239.344458, 16.155645],
    [2243.755127, 60602.96875, 2243.755127, -1.0, -1.0, -1.0],
    [357.647095, 60735.699219, 340.845215, 232.849371, 113.453995, 12.733312],
    [386.772034, 60735.890625, 373.314758, -1.0, -1.0, -1.0],
]


def test_the_suite_version_pins_what_the_generator_produces(small_suite) -> None:
    """The cache key hashes no code: a change to what the generator produces must bump
    `regression.SUITE_VERSION` (and this fingerprint), or every cache would keep stale cases."""
    _, cases = small_suite
    found = [
        [
            float(np.nansum(np.abs(c.difference))),
            float(np.nansum(c.reference)),
            float(np.nansum(np.abs(c.plain_difference))),
            *((c.blob["x"], c.blob["y"], c.blob["snr"]) if c.blob else (-1.0, -1.0, -1.0)),
        ]
        for c in cases
    ]
    assert R.SUITE_VERSION == "blobwatch-suite/2"
    np.testing.assert_allclose(
        found,
        FINGERPRINT,
        rtol=1e-4,
        err_msg=(
            "the suite generator's output changed: bump SUITE_VERSION in blobwatch/regression.py and update "
            "FINGERPRINT here"
        ),
    )


def test_cached_sequence_is_reused_and_rebuilt_when_stale(small_suite) -> None:
    cache, _ = small_suite
    truth = cache / "suite" / "seq910000" / "truth.json"
    stamp = truth.stat().st_mtime_ns
    R.build_suite(R.SuiteSpec("suite", 5, SMALL), cache, progress=False)
    assert truth.stat().st_mtime_ns == stamp
    data = json.loads(truth.read_text())
    data["key"] = "stale"
    truth.write_text(json.dumps(data))
    R.build_suite(R.SuiteSpec("suite", 5, SMALL), cache, progress=False)
    assert json.loads(truth.read_text())["key"] == R.SuiteSpec("suite", 5, SMALL).key(910_000)


def test_half_the_cases_have_one_new_blob_injected_into_the_raw_image(small_suite) -> None:
    _, cases = small_suite
    blobs = [c for c in cases if c.blob]
    assert len(blobs) == len(cases) // 2
    for case in blobs:
        b = case.blob
        assert 0 < b["depth"] <= 0.30 and b["snr"] > 0
        # the new blob is a dip of the raw current image, so of the difference too: the sum over
        # its disc is far below the noise of such a sum
        yy, xx = np.mgrid[: case.size, : case.size]
        disc = (np.hypot(yy - b["y"], xx - b["x"]) <= b["radius"]) & np.isfinite(case.difference)
        z = case.difference[disc].sum() / (case.truth["difference_sigma"] * math.sqrt(disc.sum()))
        if b["snr"] > 15:
            assert z < -3.0, (case.name, z)


def test_blob_depth_follows_the_target_snr_and_measured_snr_agrees(small_suite) -> None:
    depths = []
    for snr in (10.0, 40.0):
        cfg = VariationConfig(size=256, n_references=3, cases=1, snr_range=(snr, snr), max_depth=1.0)
        depths.append(simulate_varied_sequence(910_003, cfg).cases[0].blob["depth"])
    assert math.isclose(depths[1] / depths[0], 4.0, rel_tol=1e-9)
    _, cases = small_suite
    for case in cases:
        if case.blob and case.blob["depth"] < 0.3:  # not capped
            assert 0.5 < case.blob["snr"] / case.blob["target_snr"] < 2.0, case.name


def test_new_blobs_go_where_the_training_simulator_never_put_them() -> None:
    cfg = VariationConfig(size=512, n_references=2, cases=40)
    seq = simulate_varied_sequence(910_005, cfg)
    blobs = [c.blob for c in seq.cases if c.blob]
    placements = {b["placement"] for b in blobs}
    assert {"edge", "overlap", "anywhere"} <= placements
    for b in blobs:
        if b["placement"] == "edge":
            assert b["edge_distance"] <= 12.0
        if b["placement"] == "overlap":
            assert b["neighbour"] < 0.6
    assert any(b["profile"] == "stamp" for b in blobs)
    offsets = [c.transform["offset"] for c in seq.cases]
    assert max(offsets) > 2.0 and min(offsets) < 1.0


def test_transform_points_rotates_about_the_centre_and_offsets() -> None:
    t = {"dy": 1.0, "dx": -2.0, "rotation_deg": 90.0, "scale": 1.0}
    c = 255.5  # centre of a 512-px frame
    y, x = transform_points(np.array([c, c]), np.array([c + 100.0, c]), t, 512)
    assert np.allclose(y, [c + 100.0 + 1.0, c + 1.0]) and np.allclose(x, [c - 2.0, c - 2.0])
    t["scale"] = 1.01
    y, x = transform_points(np.array([c]), np.array([c + 100.0]), t, 512)
    assert np.allclose([y[0], x[0]], [c + 101.0 + 1.0, c - 2.0])
    same = transform_points(
        np.array([10.0]), np.array([20.0]), {"dy": 0, "dx": 0, "rotation_deg": 0, "scale": 1}, 512
    )
    assert np.allclose(same, ([10.0], [20.0]))


def test_always_detector_scores_one_and_one_never_scores_zero_and_zero(small_suite) -> None:
    _, cases = small_suite
    for name, expected in (("always", 1.0), ("never", 0.0)):
        det = R.make_detector(name)
        cands = R.run_detector(det, cases, progress=False)
        s = R.score(name, cases, cands, 0.5, "native").summary()
        assert s["detection_overall"]["rate"] == expected
        assert s["false_alarm_rate"] == expected
        for b in s["detection"]:
            assert b["n"] == 0 or b["rate"] == expected


def test_calibrated_threshold_meets_the_false_alarm_target() -> None:
    @dataclass
    class _Case:
        blob: dict | None

    cases = [_Case(None) for _ in range(50)]
    scores = np.linspace(0.0, 1.0, 50)
    cands = [R.Candidates(np.zeros(1), np.zeros(1), np.array([s])) for s in scores]
    t = R.calibrate(cases, cands, 0.1)
    assert np.mean(scores >= t) <= 0.1 and np.mean(scores >= t - 0.03) > 0.1


def test_mcnemar_and_bootstrap_by_sequence() -> None:
    a = np.array([True] * 10 + [False] * 5)
    b = np.array([False] * 10 + [False] * 5)
    test = R.mcnemar(a, b)
    assert test["a_only"] == 10 and test["b_only"] == 0
    assert math.isclose(test["p_value"], 2 * 0.5**10)
    assert R.mcnemar(a, a)["p_value"] == 1.0
    seqs = np.repeat(np.arange(6), 4)
    flags = np.tile([True, True, False, False], 6)
    d = R.rate_with_ci(seqs, flags, np.ones_like(flags))
    assert d["rate"] == 0.5 and d["ci_low"] == d["ci_high"] == 0.5  # every sequence has the same rate
    every = R.rate_with_ci(seqs, np.ones_like(flags), np.ones_like(flags))
    assert every["rate"] == 1.0 and every["ci_high"] == 1.0 and 0.85 < every["ci_low"] < 0.9  # 24 of 24
    mixed = np.repeat([True, False], 12)
    d = R.rate_with_ci(seqs, mixed, np.ones_like(mixed))
    assert d["ci_low"] < 0.5 < d["ci_high"]


def test_cli_json_has_the_documented_keys(small_suite, tmp_path: Path, capsys) -> None:
    cache, _ = small_suite
    code = main(
        [
            "regress",
            "--detector",
            "always",
            "--json",
            "--cache",
            str(cache),
            "--out",
            str(tmp_path / "out"),
            "--sequences",
            "5",
            "--calibration-sequences",
            "5",
            "--docs",
            str(tmp_path / "docs" / "r.md"),
            *SMALL_ARGS,
        ]
    )
    assert code == 0
    d = json.loads(capsys.readouterr().out)
    assert {
        "detector",
        "cases",
        "detection",
        "false_alarm_rate",
        "false_alarm_ci",
        "localization_median_px",
        "localization_p90_px",
    } <= set(d)
    assert d["detector"] == "always" and d["cases"] == 10
    assert [b["snr_min"] for b in d["detection"]] == [0.0, 5.0, 8.0, 15.0]
    assert {"snr_max", "n", "rate", "ci_low", "ci_high"} <= set(d["detection"][0])
    assert (tmp_path / "out" / "cases.csv").read_text().count("\n") == 1 + 2 * 10
    page = (tmp_path / "docs" / "r.md").read_text()
    assert "| `always` |" in page and (tmp_path / "docs" / "r_detection.png").is_file()


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--detector", "nosuch"], "unknown detector 'nosuch'"),
        (["--sequences", "1", "--calibration-sequences", "5"], "at least 10"),
        (["--cache", "{file}/sub"], "not writable"),
    ],
)
def test_cli_bad_input_one_line_exit_2_nothing_written(argv, match, tmp_path: Path, capsys) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    argv = [a.replace("{file}", str(blocker)) for a in argv]
    if "--cache" not in argv:
        argv += ["--cache", str(tmp_path / "cache")]
    out = tmp_path / "out"
    code = main(["regress", *argv, "--out", str(out), "--detector", "never", *SMALL_ARGS])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and match in err
    assert not out.exists()


@pytest.mark.slow
def test_quick_suite_runs_detect_and_the_matched_filter(tmp_path: Path, capsys) -> None:
    code = main(
        [
            "regress",
            "--quick",
            "--detector",
            "mf",
            "--detector",
            "detect",
            "--json",
            "--cache",
            str(tmp_path / "cache"),
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert code == 0
    scores = json.loads(capsys.readouterr().out)
    assert [s["detector"] for s in scores] == ["mf", "detect"]
    for s in scores:
        assert s["cases"] == 40
        assert 0.0 <= s["false_alarm_rate"] <= 1.0


def test_evaluate_suite_rates_with_intervals_and_mf_threshold_from_calibration(
    small_suite, model_path, tmp_path, capsys
) -> None:
    cache, _ = small_suite
    out = tmp_path / "ev"
    code = main(
        [
            "evaluate",
            "--suite",
            "--model",
            str(model_path),
            "--device",
            "cpu",
            "--cache",
            str(cache),
            "--out",
            str(out),
            "--sequences",
            "5",
            "--calibration-sequences",
            "5",
            *SMALL_ARGS,
        ]
    )
    assert code == 0
    report = json.loads((out / "evaluation_suite.json").read_text())
    assert set(report["protocols"]) == {"plain", "registered"}
    for res in report["protocols"].values():
        assert res["subframes"] == 10 and res["positives"] == 5  # one 256-px subframe per case
        for name in ("cnn", "mf"):
            tpr = res[name]["tpr"]
            assert tpr["n"] == 5 and tpr["ci_low"] <= tpr["rate"] <= tpr["ci_high"]
    assert "| plain | PaperCNN |" in capsys.readouterr().out


def test_evaluate_needs_datasets_or_suite(capsys) -> None:
    assert main(["evaluate"]) == 2
    assert "dataset directories, or --suite" in capsys.readouterr().err


@pytest.mark.parametrize(
    "model",
    [{"kind": "white"}, {"kind": "correlated", "sigma": 1.0}, {"kind": "1/f", "alpha": 1.0, "fraction": 0.5}],
)
def test_matched_filter_gain_predicts_the_filtered_noise(model) -> None:
    from scipy.signal import fftconvolve

    from blobwatch.simulate import blob_profile
    from blobwatch.variation import _frequency2, matched_filter_gain, noise_field, noise_power

    shape = (256, 256)
    f2 = _frequency2(shape)
    template = blob_profile(6.0, kind="disc")
    where = (slice(100, 100 + template.shape[0]), slice(90, 90 + template.shape[1]))
    gain = matched_filter_gain(template, where, shape, noise_power(model, f2))
    rng = np.random.default_rng(3)
    stds = [
        fftconvolve(noise_field(rng, shape, model, f2), template[::-1, ::-1], mode="same")[
            40:-40, 40:-40
        ].std()
        for _ in range(6)
    ]
    measured = float(np.mean(stds)) / math.sqrt(float(np.sum(template.astype(np.float64) ** 2)))
    assert math.isclose(measured, gain, rel_tol=0.15), (measured, gain)
    if model["kind"] != "white":
        assert gain > 1.3


def test_training_stamps_never_include_the_suites_held_out_ones() -> None:
    from blobwatch.variation import training_stamps

    assert len(training_stamps()) == 15 and not set(training_stamps()) & set(HELDOUT_STAMPS)
    assert VariationConfig().stamps == tuple(HELDOUT_STAMPS)
