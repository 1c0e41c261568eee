"""The exit cache scores any profile exactly like COCO AP on that profile's final detections."""
from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

from dh_tune.evaluate import average_precision, match_image
from dh_tune.evaluate.exit_table import ExitDetections, ExitTable, ExitTableError

N_CLASSES = 4
PROFILES = [(0.0, 0.0), (1.01, 0.5), (0.3, 0.6), (0.5, 0.5), (0.7, 0.2), (0.25, 0.75)]


def make_dataset(seed: int, n_images: int = 60, dets: int = 12):
    """Ground truth, per-level detections with tied scores, and gate scores/labels.

    Class 3 has ground truth but is never detected; a quarter of the images have no objects.
    """
    rng = np.random.default_rng(seed)
    gts, per_level = [], [[], [], []]
    for _ in range(n_images):
        n = 0 if rng.random() < 0.25 else int(rng.integers(1, 6))
        xy = rng.uniform(0, 200, (n, 2))
        gb = np.concatenate([xy, xy + rng.uniform(10, 80, (n, 2))], axis=1)
        gc = rng.integers(0, N_CLASSES, n)
        gts.append((gb, gc))
        for k in range(3):
            found = rng.random(n) < 0.4 + 0.25 * k
            tb = gb[found] + rng.normal(0, 5.0 - 1.5 * k, (int(found.sum()), 4))
            n_fp = int(rng.integers(0, dets))
            fxy = rng.uniform(0, 200, (n_fp, 2))
            boxes = np.concatenate([tb, np.concatenate([fxy, fxy + rng.uniform(10, 80, (n_fp, 2))], 1)])
            boxes = np.concatenate([np.minimum(boxes[:, :2], boxes[:, 2:]),
                                    np.maximum(boxes[:, :2], boxes[:, 2:])], axis=1)
            scores = np.round(rng.random(len(boxes)) * 5) / 5  # heavy ties, across images and levels
            classes = np.concatenate([gc[found], rng.integers(0, N_CLASSES - 1, n_fp)])
            classes[classes == 3] = 2
            per_level[k].append((boxes, scores.astype(np.float32), classes))
    gate_scores = np.round(rng.random((n_images, 2)), 2).astype(np.float32)
    gate_labels = rng.random((n_images, 2)) < 0.6
    return gts, per_level, gate_scores, gate_labels


def build_table(gts, per_level, gate_scores, gate_labels, seed: int = 0) -> ExitTable:
    """Match each level once; images are interleaved in the flat arrays, each image's order kept."""
    rng = np.random.default_rng(seed)
    levels = []
    for dets in per_level:
        parts = [(np.full(len(s), i), s, c, match_image(gb, gc, b, s, c))
                 for i, ((gb, gc), (b, s, c)) in enumerate(zip(gts, dets))]
        image, score, cls, matches = (np.concatenate(x) for x in zip(*parts))
        order = np.argsort(rng.random(len(gts))[image], kind="stable")  # shuffle images, not rows
        levels.append(ExitDetections(image[order], score[order], cls[order], matches[order]))
    gt_counts = np.stack([np.bincount(gc, minlength=N_CLASSES) for _, gc in gts])
    return ExitTable(gate_scores, gate_labels, gt_counts, tuple(levels),
                     macs_per_exit=np.array([1.5e9, 2.25e9, 3.0e9]),
                     metadata={"checkpoint_sha256": "ab" * 32, "imgsz": 416, "nms": {"conf": 0.001, "iou": 0.6}})


@pytest.fixture(scope="module")
def case():
    gts, per_level, gs, gl = make_dataset(0)
    return gts, per_level, gs, gl, build_table(gts, per_level, gs, gl)


@pytest.mark.parametrize("t1,t2", PROFILES)
def test_profile_ap_equals_average_precision_on_final_detections(case, t1, t2):
    gts, per_level, _, _, table = case
    levels = table.exit_levels(t1, t2)
    final = [per_level[lv - 1][i] for i, lv in enumerate(levels)]
    ref = average_precision(gts, final, num_classes=N_CLASSES)
    got = table.evaluate(t1, t2, per_class=True)
    assert got.ap50 == pytest.approx(ref["ap50"], abs=1e-9)
    assert got.ap50_95 == pytest.approx(ref["ap50_95"], abs=1e-9)
    assert got.per_class.keys() == ref["per_class"].keys()
    for c, row in ref["per_class"].items():
        assert got.per_class[c]["ap50"] == pytest.approx(row["ap50"], abs=1e-9)
        assert got.per_class[c]["ap50_95"] == pytest.approx(row["ap50_95"], abs=1e-9)
        assert got.per_class[c]["gt"] == row["gt"]
    assert got.per_class[3]["ap50"] == 0.0  # ground truth, never detected


def test_profiles_differ_and_deeper_exits_score_higher(case):
    table = case[-1]
    all_heads, head1_only = table.evaluate(0.0, 0.0), table.evaluate(1.01, 1.01)
    assert all_heads.ap50 > head1_only.ap50 + 0.05


@pytest.mark.parametrize("seed", [1, 2])
def test_other_datasets_match_too(seed):
    gts, per_level, gs, gl = make_dataset(seed, n_images=40, dets=20)
    table = build_table(gts, per_level, gs, gl, seed=seed)
    for t1, t2 in PROFILES:
        levels = table.exit_levels(t1, t2)
        ref = average_precision(gts, [per_level[lv - 1][i] for i, lv in enumerate(levels)], N_CLASSES)
        got = table.evaluate(t1, t2)
        assert (got.ap50, got.ap50_95) == pytest.approx((ref["ap50"], ref["ap50_95"]), abs=1e-9)


@pytest.mark.parametrize("t1,t2", PROFILES)
def test_shares_gate_quality_and_macs_by_hand(case, t1, t2):
    _, _, gs, gl, table = case
    got = table.evaluate(t1, t2)
    levels = []
    for s1, s2 in gs.astype(float):
        levels.append(1 if s1 < t1 else 2 if s2 < t2 else 3)
    assert table.exit_levels(t1, t2).tolist() == levels
    assert got.exit_shares.tolist() == pytest.approx([levels.count(k) / len(levels) for k in (1, 2, 3)])
    for g, t in enumerate((t1, t2)):
        scores = gs[:, g].astype(float).tolist()  # exact comparison of the stored float32 scores
        tp = sum(1 for s, y in zip(scores, gl[:, g]) if s >= t and y)
        tn = sum(1 for s, y in zip(scores, gl[:, g]) if s < t and not y)
        pos = int(gl[:, g].sum())
        assert got.gate_accuracy[g] == pytest.approx((tp + tn) / len(gs))
        assert got.gate_recall[g] == pytest.approx(tp / pos)
    assert got.mean_macs == pytest.approx(np.mean([[1.5e9, 2.25e9, 3.0e9][lv - 1] for lv in levels]))


def test_threshold_equal_to_score_runs_the_next_head():
    det = ExitDetections(np.zeros(0), np.zeros(0), np.zeros(0), np.zeros((0, 10)))
    table = ExitTable(np.array([[0.5, 0.25], [0.4999, 0.9], [0.9, 0.125]], np.float32),
                      np.array([[True, True], [False, False], [True, True]]),
                      np.zeros((3, 1), int), (det, det, det), np.array([1.0, 2.0, 3.0]))
    assert table.exit_levels(0.5, 0.25).tolist() == [3, 1, 2]
    m = table.evaluate(0.5, 0.25)
    assert np.isnan(m.ap50)  # no ground truth at all
    assert m.gate_accuracy == (1.0, pytest.approx(1 / 3))  # gate 2 predicts [on, on, off]
    assert m.gate_recall == (1.0, 0.5)
    assert m.mean_macs == 2.0
    assert json.loads(json.dumps(m.to_dict(), allow_nan=True))["exit_shares"] == pytest.approx([1 / 3] * 3)


def test_save_load_round_trip_and_staleness(case, tmp_path):
    table = case[-1]
    path = tmp_path / "cache" / "exits.npz"
    table.save(path)
    loaded = ExitTable.load(path)
    assert loaded.metadata == table.metadata
    for a, b in zip(loaded.levels, table.levels):
        for name in ("image", "score", "cls", "matches"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert loaded.evaluate(0.3, 0.6).to_dict() == table.evaluate(0.3, 0.6).to_dict()
    assert ExitTable.load(path, expect={"imgsz": 416, "nms": {"iou": 0.6, "conf": 0.001}}) is not None
    assert ExitTable.load(path, expect={"imgsz": 320}) is None
    assert ExitTable.load(path, expect={"dataset_sha256": "00"}) is None
    assert list(tmp_path.joinpath("cache").iterdir()) == [path]  # no temporary file left behind


def test_malformed_cache_files_raise(case, tmp_path):
    table = case[-1]
    good = tmp_path / "good.npz"
    table.save(good)
    data = dict(np.load(good))

    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip at all")
    with pytest.raises(ExitTableError, match="garbage.npz"):
        ExitTable.load(garbage)

    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, **{**data, "metadata": np.array([{"evil": 1}], dtype=object)})
    with pytest.raises(ExitTableError, match="pickled.npz"):
        ExitTable.load(pickled)

    old = tmp_path / "old.npz"
    np.savez(old, **{**data, "format_version": np.array(0)})
    with pytest.raises(ExitTableError, match="format 0"):
        ExitTable.load(old)

    missing = tmp_path / "missing.npz"
    np.savez(missing, **{k: v for k, v in data.items() if k != "level2_matches"})
    with pytest.raises(ExitTableError, match="level2_matches"):
        ExitTable.load(missing)

    bad_class = tmp_path / "bad_class.npz"
    np.savez(bad_class, **{**data, "level1_cls": data["level1_cls"] + 10})
    with pytest.raises(ExitTableError, match="class id"):
        ExitTable.load(bad_class)

    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(ExitTableError):
        ExitTable.load(truncated)
    assert zipfile.is_zipfile(good)
    with pytest.raises(FileNotFoundError):
        ExitTable.load(tmp_path / "absent.npz")


def test_degenerate_thresholds_decide_alone_and_gates_are_charged_only_when_computed():
    det = ExitDetections(np.zeros(0), np.zeros(0), np.zeros(0), np.zeros((0, 10)))
    scores = np.array([[1.0, 1.0], [0.0, 0.0], [0.7, 0.2]], np.float32)  # float32 sigmoid reaches 0 and 1
    table = ExitTable(scores, np.ones((3, 2), bool), np.zeros((3, 1), int), (det, det, det),
                      np.array([10.0, 20.0, 30.0]), gate_macs=np.array([1.0, 2.0]))
    assert table.exit_levels(1.0, 0.5).tolist() == [1, 1, 1]   # t1 >= 1: everyone stops, even a score of 1
    assert table.exit_levels(0.0, 1.0).tolist() == [2, 2, 2]   # P3+P4, static
    assert table.exit_levels(0.0, 0.0).tolist() == [3, 3, 3]   # all heads, even a score of 0
    assert table.mean_macs(0.0, 0.0) == 30.0                    # static: no gate charged
    assert table.mean_macs(1.0, 1.0) == 10.0
    assert table.mean_macs(0.5, 0.0) == pytest.approx(np.mean([31.0, 11.0, 31.0]))  # gate 1 only
    assert table.mean_macs(0.0, 0.5) == pytest.approx(np.mean([32.0, 22.0, 22.0]))  # gate 2 only
    assert table.evaluate(1.0, 1.0).gate_accuracy == (0.0, 0.0)  # labels say continue; nothing does


def test_constructor_rejects_inconsistent_arrays():
    det = ExitDetections(np.array([0]), np.array([0.5]), np.array([0]), np.zeros((1, 10), bool))
    with pytest.raises(ValueError, match="image index"):
        ExitTable(np.zeros((1, 2)), np.zeros((1, 2), bool), np.ones((1, 1)),
                  (det, det, ExitDetections(np.array([5]), np.array([0.5]), np.array([0]), np.zeros((1, 10)))),
                  np.ones(3))
    with pytest.raises(ValueError, match="matches"):
        ExitDetections(np.array([0]), np.array([0.5]), np.array([0]), np.zeros((1, 5)))
    with pytest.raises(ValueError, match="3 exit levels"):
        ExitTable(np.zeros((1, 2)), np.zeros((1, 2), bool), np.ones((1, 1)), (det, det), np.ones(3))
