"""Pareto front, hypervolume and budget choice on hand-made point sets."""
from __future__ import annotations

import numpy as np
import pytest

from dh_tune.search.pareto import hypervolume, pareto_front, select_for_budget


def brute_force_front(ap, lat):
    keep = []
    for i in range(len(ap)):
        dominated = any(ap[j] >= ap[i] and lat[j] <= lat[i] and (ap[j] > ap[i] or lat[j] < lat[i])
                        for j in range(len(ap)))
        duplicate_earlier = any(ap[j] == ap[i] and lat[j] == lat[i] for j in range(i))
        if not dominated and not duplicate_earlier:
            keep.append(i)
    return sorted(keep, key=lambda i: (lat[i], -ap[i]))


def brute_force_hypervolume(ap, lat, ref_lat, ref_ap):
    xs = sorted({x for x in lat if x < ref_lat} | {ref_lat})
    area = 0.0
    for x0, x1 in zip(xs[:-1], xs[1:]):
        height = max([a for a, x in zip(ap, lat) if x <= x0] + [ref_ap]) - ref_ap
        area += (x1 - x0) * max(height, 0.0)
    return area


def test_front_of_a_hand_made_set():
    ap = np.array([0.30, 0.50, 0.45, 0.60, 0.60, 0.20, 0.50])
    lat = np.array([5.0, 10.0, 12.0, 20.0, 25.0, 5.0, 10.0])
    # 2 is beaten by 1; 4 by 3 (same AP, slower); 5 by 0 (same latency, lower AP); 6 duplicates 1.
    assert pareto_front(ap, lat).tolist() == [0, 1, 3]


def test_duplicates_are_kept_once_as_the_lowest_index_whatever_the_order():
    ap = np.array([0.4, 0.4, 0.4])
    lat = np.array([3.0, 3.0, 3.0])
    assert pareto_front(ap, lat).tolist() == [0]
    ap = np.array([0.1, 0.5, 0.5, 0.5])
    lat = np.array([1.0, 2.0, 2.0, 2.0])
    assert pareto_front(ap[::-1], lat[::-1]).tolist() == [3, 0]


def test_single_and_empty_inputs():
    assert pareto_front(np.array([0.3]), np.array([7.0])).tolist() == [0]
    assert pareto_front(np.array([]), np.array([])).tolist() == []
    assert hypervolume(np.array([]), np.array([]), ref_latency=10.0) == 0.0


@pytest.mark.parametrize("seed", range(5))
def test_front_equals_brute_force_on_tie_heavy_grids(seed):
    rng = np.random.default_rng(seed)
    ap = rng.integers(0, 6, 60) / 10
    lat = rng.integers(1, 8, 60).astype(float)
    assert pareto_front(ap, lat).tolist() == brute_force_front(ap.tolist(), lat.tolist())


def test_hypervolume_hand_computed():
    ap = np.array([0.5, 0.8, 0.4])
    lat = np.array([1.0, 2.0, 3.0])  # the third point is dominated and adds nothing
    assert hypervolume(ap, lat, ref_latency=4.0) == pytest.approx(3 * 0.5 + 2 * 0.3)
    assert hypervolume(ap, lat, ref_latency=4.0, ref_ap=0.45) == pytest.approx(3 * 0.05 + 2 * 0.3)
    # Points at or beyond the reference latency, or at or below the reference AP, add nothing.
    assert hypervolume(np.array([0.9]), np.array([4.0]), ref_latency=4.0) == 0.0
    assert hypervolume(np.array([0.1]), np.array([1.0]), ref_latency=4.0, ref_ap=0.2) == 0.0


@pytest.mark.parametrize("seed", range(5))
def test_hypervolume_equals_strip_sum(seed):
    rng = np.random.default_rng(seed)
    ap = np.round(rng.random(40), 2)
    lat = np.round(rng.uniform(1, 30, 40), 1)
    for ref_lat, ref_ap in [(35.0, 0.0), (20.0, 0.3)]:
        assert hypervolume(ap, lat, ref_lat, ref_ap) == pytest.approx(
            brute_force_hypervolume(ap.tolist(), lat.tolist(), ref_lat, ref_ap))


def test_hypervolume_grows_with_a_better_front():
    ap, lat = np.array([0.3, 0.5]), np.array([5.0, 10.0])
    base = hypervolume(ap, lat, 20.0)
    assert hypervolume(np.append(ap, 0.45), np.append(lat, 6.0), 20.0) > base
    assert hypervolume(np.append(ap, 0.25), np.append(lat, 6.0), 20.0) == pytest.approx(base)


def test_budget_picks_highest_ap_then_lower_latency_then_lower_index():
    ap = np.array([0.40, 0.55, 0.55, 0.55, 0.70])
    lat = np.array([5.0, 9.0, 8.0, 8.0, 30.0])
    choice = select_for_budget(ap, lat, 10.0)
    assert (choice.index, choice.feasible, choice.all_feasible) == (2, True, False)
    assert choice.fastest_latency == 5.0 and "0.55" in choice.reason
    assert select_for_budget(ap, lat, 8.0).index == 2  # latency equal to the budget fits
    assert select_for_budget(ap, lat, 7.99).index == 0


def test_budget_nothing_fits_and_everything_fits():
    ap, lat = np.array([0.4, 0.6]), np.array([12.0, 18.0])
    none = select_for_budget(ap, lat, 10.0)
    assert (none.index, none.feasible, none.fastest_latency) == (None, False, 12.0)
    assert "no profile fits the 10 ms budget" in none.reason and "12" in none.reason
    everything = select_for_budget(ap, lat, 40.0)
    assert (everything.index, everything.all_feasible) == (1, True)
    assert "every profile fits" in everything.reason


def test_budget_single_point_empty_and_bad_input():
    assert select_for_budget(np.array([0.2]), np.array([3.0]), 5.0).index == 0
    empty = select_for_budget(np.array([]), np.array([]), 5.0)
    assert (empty.index, empty.feasible, empty.fastest_latency) == (None, False, None)
    with pytest.raises(ValueError, match="budget_ms"):
        select_for_budget(np.array([0.2]), np.array([3.0]), 0.0)
    with pytest.raises(ValueError, match="finite"):
        pareto_front(np.array([np.nan]), np.array([1.0]))
    with pytest.raises(ValueError, match="differ in length"):
        select_for_budget(np.array([0.2, 0.3]), np.array([3.0]), 5.0)
