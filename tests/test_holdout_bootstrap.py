"""Calibration/test split and bootstrap intervals: the split is deterministic, disjoint and stratified by gate
labels; image weights reproduce duplicated images exactly; the 95% interval covers a known true AP about 95%
of the time; choosing the best of equal candidates on the calibration images overstates its AP there."""
from __future__ import annotations

import numpy as np
import pytest

from dh_tune.evaluate.bootstrap import bootstrap_profile, percentile_interval, resample_weights
from dh_tune.evaluate.exit_table import ExitDetections, ExitTable
from dh_tune.evaluate.holdout import holdout_records, stratified_split

N_THR = 10


def draw_objects(rng: np.random.Generator, n_images: int, n_classes: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """1-3 objects an image: (image, class) of each."""
    obj_image = np.repeat(np.arange(n_images), rng.integers(1, 4, n_images))
    return obj_image, rng.integers(0, n_classes, len(obj_image))


def simulate(rng: np.random.Generator, n_images: int, n_classes: int = 2, recall: float = 0.7,
             objects: tuple[np.ndarray, np.ndarray] | None = None) -> ExitTable:
    """An exit table drawn from a known distribution: each object (drawn, or given) is found with probability
    `recall` by a detection whose score and IoU are random, plus low-scored false positives.

    All three exits hold the same detections, so the profile does not matter; what is random is the images.
    """
    obj_image, obj_cls = objects if objects is not None else draw_objects(rng, n_images, n_classes)
    found = rng.random(len(obj_image)) < recall
    iou = rng.uniform(0.45, 1.0, len(obj_image))
    tp_image, tp_cls = obj_image[found], obj_cls[found]
    tp_score = rng.beta(4, 2, len(tp_image))
    tp_match = iou[found][:, None] >= np.linspace(0.5, 0.95, N_THR)[None, :]
    n_fp = rng.poisson(1.0, n_images)
    fp_image = np.repeat(np.arange(n_images), n_fp)
    fp_cls = rng.integers(0, n_classes, len(fp_image))
    fp_score = rng.beta(2, 4, len(fp_image))
    image = np.concatenate([tp_image, fp_image])
    order = np.argsort(image, kind="stable")
    det = ExitDetections(image[order], np.concatenate([tp_score, fp_score])[order],
                         np.concatenate([tp_cls, fp_cls])[order],
                         np.concatenate([tp_match, np.zeros((len(fp_image), N_THR), bool)])[order])
    gt_counts = np.zeros((n_images, n_classes), np.int64)
    np.add.at(gt_counts, (obj_image, obj_cls), 1)
    labels = rng.random((n_images, 2)) < 0.5
    return ExitTable(rng.random((n_images, 2)), labels, gt_counts, (det, det, det), np.array([1.0, 2.0, 3.0]))


def test_split_is_deterministic_disjoint_and_stratified() -> None:
    strata = np.random.default_rng(3).integers(0, 5, 301)
    cal, test = stratified_split(strata, 0.5, seed=7)
    again = stratified_split(strata, 0.5, seed=7)
    assert np.array_equal(cal, again[0]) and np.array_equal(test, again[1])
    assert not np.array_equal(test, stratified_split(strata, 0.5, seed=8)[1])
    assert np.intersect1d(cal, test).size == 0 and np.array_equal(np.union1d(cal, test), np.arange(301))
    assert len(test) == 150
    for s in range(5):
        members = np.flatnonzero(strata == s)
        assert abs(np.isin(members, test).sum() - 0.5 * len(members)) <= 1
    cal30, test30 = stratified_split(strata, 0.3, seed=0)
    assert len(test30) == 90 and len(cal30) == 211
    with pytest.raises(ValueError):
        stratified_split(strata, 1.0, seed=0)


@pytest.fixture(scope="module")
def signs_40(tmp_path_factory) -> str:
    """40 synthetic validation images at 128 px."""
    from dh_tune.data.synth import generate

    root = tmp_path_factory.mktemp("signs-40") / "signs"
    generate(root, train=1, val=40, imgsz=128, seed=3, workers=1)
    return str(root / "data.yaml")


def test_split_of_the_synthetic_set_balances_the_gate_labels(signs_40) -> None:
    from dh_tune.data import load_dataset
    from dh_tune.data.stats import image_head_labels

    ds = load_dataset(signs_40)
    records, holdout = holdout_records(ds, val_split="val", test_split="test", val_limit=None, imgsz=128, eps=4.0,
                                       test_fraction=0.5, seed=0)
    assert records == list(ds.splits["val"]) and holdout.test_fraction == 0.5
    labels = image_head_labels(records, 128, 4.0).numpy()
    strata = labels @ (1 << np.arange(labels.shape[1]))
    assert len(np.unique(strata)) >= 2  # the set has images needing different heads
    for s in np.unique(strata):
        members = np.flatnonzero(strata == s)
        assert abs(np.isin(members, holdout.test).sum() - 0.5 * len(members)) <= 1
    doc = holdout.to_dict()
    assert doc["calibration_images"] + doc["test_images"] == len(records)
    assert doc["calibration_sha256"] != doc["test_sha256"]
    same = holdout_records(ds, val_split="val", test_split=None, val_limit=None, imgsz=128, eps=4.0,
                           test_fraction=0.5, seed=0)[1]
    assert same.to_dict() == doc
    # A dataset with its own test split is tested on it, whole.
    ds.splits["test"] = list(ds.splits["val"])[:5]
    records, own = holdout_records(ds, val_split="val", test_split="test", val_limit=None, imgsz=128, eps=4.0,
                                   test_fraction=0.5, seed=0)
    assert len(own.test) == 5 and own.test_fraction is None and len(records) == len(ds.splits["val"]) + 5
    # One image cannot be both chosen on and tested on: one line naming the dataset, an input error.
    from dh_tune.data import DataError

    ds.splits["val"] = list(ds.splits["val"])[:1]
    with pytest.raises(DataError, match=r"split 'val' has 1 image\(s\), too few"):
        holdout_records(ds, val_split="val", test_split=None, val_limit=None, imgsz=128, eps=4.0,
                        test_fraction=0.5, seed=0)


def test_image_weights_equal_duplicated_and_dropped_images() -> None:
    rng = np.random.default_rng(0)
    table = simulate(rng, 40)
    levels = table.exit_levels(0.0, 0.0)
    assert table.ap_for_levels(levels, np.ones(40, np.int64)) == table.ap_for_levels(levels)
    weights = rng.integers(0, 3, 40)
    # The same images written out: every image repeated `weights` times, copies side by side.
    copies = np.repeat(np.arange(40), weights)
    new_id = {}
    for k, i in enumerate(copies):
        new_id.setdefault(i, []).append(k)
    det = table.levels[0]
    rows = [(new_id_k, r) for r in range(len(det.image)) for new_id_k in new_id.get(det.image[r], [])]
    rows.sort()
    pick = np.array([r for _, r in rows], dtype=np.int64)
    dup = ExitDetections(np.array([k for k, _ in rows]), det.score[pick], det.cls[pick], det.matches[pick])
    explicit = ExitTable(table.gate_scores[copies], table.gate_labels[copies], table.gt_counts[copies],
                         (dup, dup, dup), table.macs_per_exit)
    assert table.ap_for_levels(levels, weights) == pytest.approx(explicit.ap_for_levels(explicit.exit_levels(0, 0)))
    kept = np.flatnonzero(weights > 0)
    sub = table.subset(kept)
    assert sub.num_images == len(kept)
    assert table.ap_for_levels(levels, (weights > 0).astype(np.int64)) == sub.ap_for_levels(sub.exit_levels(0, 0))


def test_resample_weights_draw_n_images_each() -> None:
    w = resample_weights(50, 200, seed=1)
    assert w.shape == (200, 50) and (w.sum(axis=1) == 50).all()
    assert np.array_equal(w, resample_weights(50, 200, seed=1))
    assert abs(w.mean() - 1.0) < 1e-12 and 0.5 < w.var() < 1.5  # multinomial: variance 1 - 1/n


def test_interval_covers_the_true_ap_about_95_percent_of_the_time() -> None:
    """True AP from a 200k-image draw; 80 samples of 300 images, each with its own 95% interval.

    With 80 draws a true 95% coverage gives 76 +- 2 hits; the bound of 90% (72 hits) sits two standard errors
    below. The plain percentile interval, which AP's upward small-sample bias pulls down, gets 71 here.
    The interval's width must also match the spread of AP across the samples (3.92 standard deviations).
    """
    rng = np.random.default_rng(2024)
    population = simulate(rng, 200_000)
    true_ap = population.evaluate(0.0, 0.0).ap50_95
    hits, widths, estimates = 0, [], []
    for rep in range(80):
        sample = simulate(rng, 300)
        ci = bootstrap_profile(sample, 0.0, 0.0, resamples=250, seed=rep).ap50_95
        hits += ci.low <= true_ap <= ci.high
        widths.append(ci.high - ci.low)
        estimates.append(sample.evaluate(0.0, 0.0).ap50_95)
    assert 0.90 <= hits / 80 <= 1.0
    spread = 3.92 * np.std(estimates, ddof=1)
    assert 0.7 * spread < np.mean(widths) < 1.4 * spread


def test_choosing_on_the_same_images_overstates_the_winner() -> None:
    """30 candidates of equal true AP scored on the same images: the one that wins on the calibration half
    scores higher there than on the test half, on average over repeated draws (selection bias)."""
    rng = np.random.default_rng(11)
    optimism = []
    for _ in range(20):
        objects = draw_objects(rng, 200)  # the same images for every candidate, only the detections differ
        candidates = [simulate(rng, 200, objects=objects) for _ in range(30)]
        cal, test = stratified_split(np.zeros(200, int), 0.5, seed=0)
        cal_ap = [c.subset(cal).evaluate(0, 0).ap50_95 for c in candidates]
        best = int(np.argmax(cal_ap))
        optimism.append(cal_ap[best] - candidates[best].subset(test).evaluate(0, 0).ap50_95)
    optimism = np.array(optimism)
    assert optimism.mean() > 2 * optimism.std(ddof=1) / np.sqrt(len(optimism)) > 0


def test_percentile_interval_ignores_undefined_resamples() -> None:
    ci = percentile_interval(np.array([np.nan, *np.linspace(0, 1, 101)]))
    assert ci.low == pytest.approx(0.025) and ci.high == pytest.approx(0.975)
    assert np.isnan(percentile_interval(np.array([np.nan])).low)


class _Book:
    """Stands in for ConfidenceBook: fixed AP50 intervals per point."""

    def __init__(self, intervals: dict[str, tuple[float, float]]) -> None:
        self.intervals_of = intervals

    def intervals(self, point, split: str):
        from dh_tune.evaluate.bootstrap import Interval, ProfileIntervals

        low, high = self.intervals_of[point.trial_id]
        nan = Interval(float("nan"), float("nan"))
        return ProfileIntervals(Interval(low, high), nan, (nan, nan, nan))


def test_safest_takes_the_fastest_profile_that_cannot_be_told_from_the_best() -> None:
    from dh_tune.search.confidence import indistinguishable, safest
    from dh_tune.search.records import FrontPoint

    def point(name: str, ap: float, ms: float) -> FrontPoint:
        return FrontPoint(64, 0.5, 0.5, ap, ap / 2, ms, ms * 1.1, (0.3, 0.3, 0.4), (0.9, 0.9), (0.9, 0.9), 0.05,
                          trial_id=name)

    best, close, fast_bad, slow_close = point("best", 0.60, 9.0), point("close", 0.58, 6.0), \
        point("fast_bad", 0.40, 2.0), point("slow_close", 0.59, 8.0)
    book = _Book({"best": (0.55, 0.65), "close": (0.53, 0.63), "fast_bad": (0.35, 0.45), "slow_close": (0.54, 0.64)})
    rivals = [best, close, fast_bad, slow_close]
    assert indistinguishable(best, rivals, book, "ap50") == [close, slow_close]  # type: ignore[arg-type]
    assert safest(best, rivals, book, "ap50") is close  # type: ignore[arg-type]
    assert safest(fast_bad, rivals, book, "ap50") is fast_bad  # type: ignore[arg-type]
