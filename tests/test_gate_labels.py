"""Gate labels (paper Eq. 3-7) against cases worked out by hand."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from dh_tune.data.gate_labels import cascade_labels, deepest_head, gate_targets, head_responsibility

# Two heads with one anchor each keep the hand computations short.
ANCHORS = [[[10.0, 10.0]], [[40.0, 80.0]]]


def test_responsibility_strict_at_eps():
    # Head 1 anchor 10x10, eps 4: responsible for 2.5 < w < 40 and 2.5 < h < 40.
    wh = [[39.9, 10.0], [40.0, 10.0], [10.0, 2.5], [10.0, 2.51], [2.5, 2.5]]
    resp = head_responsibility(wh, ANCHORS, 4.0)
    assert resp[:, 0].tolist() == [True, False, False, True, False]


def test_responsibility_needs_width_and_height_of_the_same_anchor():
    # w = 100 fits only anchor (40, 80) of head 2 (100/40 = 2.5 < 4) ; h = 5 fits only head 1
    # (10/5 = 2); no single anchor fits both, so no head is responsible.
    assert head_responsibility([[100.0, 5.0]], ANCHORS, 4.0).tolist() == [[False, False]]
    # With several anchors on one head, each is checked on its own (Eq. 5), then OR (Eq. 6).
    anchors = [[[10.0, 100.0], [100.0, 10.0]]]
    assert head_responsibility([[100.0, 100.0], [12.0, 90.0]], anchors, 4.0).tolist() == [[False], [True]]


def test_responsibility_eps_changes_the_boundary():
    wh = [[25.0, 25.0]]  # ratio 2.5 to the 10x10 anchor
    assert head_responsibility(wh, ANCHORS, 2.5)[0, 0].item() is False
    assert head_responsibility(wh, ANCHORS, 2.6)[0, 0].item() is True


def test_cascade_hand_example():
    # image 0: one small object (head 1) -> [1, 0]
    # image 1: one object only head 2 fits -> cascade makes head 1 needed too -> [1, 1]
    # image 2: no objects -> [0, 0]
    # image 3: object no head fits (too small) -> [0, 0]
    wh = torch.tensor([[12.0, 12.0], [120.0, 200.0], [1.0, 1.0]])
    resp = head_responsibility(wh, ANCHORS, 4.0)
    assert resp.tolist() == [[True, False], [False, True], [False, False]]
    phi = cascade_labels(resp, torch.tensor([0, 1, 3]), 4)
    assert phi.tolist() == [[True, False], [True, True], [False, False], [False, False]]


def test_cascade_three_heads_or_over_objects():
    resp = torch.tensor([[False, False, True], [True, False, False], [False, True, False]])
    phi = cascade_labels(resp, torch.tensor([0, 1, 1]), 3)
    assert phi.tolist() == [[True, True, True], [True, True, False], [False, False, False]]


def test_gate_targets_are_phi2_and_phi3_with_default_anchors():
    # Default anchors, eps 4: square objects need head 2 above 15.25 px (anchor 30x61: 61/4),
    # head 3 above 29 px (anchor 116x90: 116/4 = 29, strict).
    wh = np.array([[15.0, 15.0], [15.5, 15.5], [29.0, 29.0], [29.5, 29.5]])
    targets = gate_targets(wh, np.arange(4), 5)
    assert targets.dtype == torch.float32
    assert targets.tolist() == [[0, 0], [1, 0], [1, 0], [1, 1], [0, 0]]
    assert deepest_head(wh).tolist() == [1, 2, 2, 3]
    assert deepest_head([[1.0, 1.0], [2000.0, 2000.0]]).tolist() == [0, 0]  # no anchor within eps
    assert deepest_head(np.zeros((0, 2))).shape == (0,)


def test_numpy_and_tensor_inputs_agree_and_empty_batch():
    wh = np.random.default_rng(0).uniform(2, 300, (50, 2))
    index = np.random.default_rng(1).integers(0, 8, 50)
    a = gate_targets(wh, index, 8)
    b = gate_targets(torch.from_numpy(wh).float(), torch.from_numpy(index), 8)
    assert torch.equal(a, b)
    assert gate_targets(np.zeros((0, 2)), np.zeros(0, np.int64), 3).tolist() == [[0, 0]] * 3


def test_cascade_matches_loop_definition():
    rng = np.random.default_rng(3)
    resp = rng.random((40, 3)) < 0.2
    index = rng.integers(0, 10, 40)
    phi = cascade_labels(resp, index, 10).numpy()
    for image in range(10):
        expected = [False] * 4
        for head in (2, 1, 0):
            expected[head] = bool(resp[index == image, head].any()) or expected[head + 1]
        assert phi[image].tolist() == expected[:3]


def test_bad_shapes_and_indices_are_rejected():
    with pytest.raises(ValueError):
        head_responsibility([1.0, 2.0], ANCHORS, 4.0)
    with pytest.raises(ValueError):
        cascade_labels(torch.ones(2, 2, dtype=torch.bool), torch.tensor([0, 5]), 3)
