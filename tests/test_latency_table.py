"""Latency tables: schema round trip, clear errors for malformed files, exit costs and expectations."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from latency_docs import part, table_document

from dh_tune.export.graphs import plan
from dh_tune.gating import GRAPH_KEYS, deepest_head, graph_key, plan_graphs
from dh_tune.latency import PARTS, LatencyTable, LatencyTableError, expected_latency
from dh_tune.messages import LineFormatter

TIMES = {  # median, p90 in ms
    "preprocess": (1.0, 1.5), "stage1": (4.0, 5.0), "gate1": (0.25, 0.5), "stage2": (3.0, 3.5),
    "gate2": (0.25, 0.25), "stage3": (2.0, 2.75), "nms": (0.5, 1.0),
}


def document() -> dict:
    return table_document(
        {"name": "Test CPU x2", "kind": "cpu", "threads": 2, "torch": "2.13.0", "cpu_model": "Test CPU",
         "numa_nodes": 1},
        {"scale": "n", "nc": 3, "imgsz": 416, "batch": 1, "checkpoint_sha256": "0f" * 32},
        {p: part(m, q) for p, (m, q) in TIMES.items()},
        measurement={"warmup": 10, "interleaved": True})


def write(tmp_path, doc, name="table.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(doc) if not isinstance(doc, str) else doc)
    return str(path)


def test_round_trip_keeps_content_and_digest(tmp_path):
    table = LatencyTable.load(write(tmp_path, document()))
    out = tmp_path / "devices" / "copy.json"
    table.save(out)
    again = LatencyTable.load(out)
    assert again == table
    assert again.digest() == table.digest()
    assert again.to_dict() == document()
    assert again.device_name == "Test CPU x2"
    assert [p.name for p in out.parent.iterdir()] == ["copy.json"]


def test_digest_changes_with_any_measurement(tmp_path):
    doc = document()
    base = LatencyTable.from_dict(doc).digest()
    doc["parts"]["nms"]["median_ms"] = 0.51
    assert LatencyTable.from_dict(doc).digest() != base
    assert len(base) == 64


def test_exit_costs_add_the_parts_each_exit_runs():
    table = LatencyTable.from_dict(document())
    np.testing.assert_allclose(table.exit_cost_ms(), [1 + 4 + 0.25 + 0.5, 5.75 + 3 + 0.25, 9.0 + 2])
    np.testing.assert_allclose(table.exit_cost_ms("p90"), [8.0, 11.75, 14.5])
    with pytest.raises(ValueError, match="statistic"):
        table.exit_cost_ms("mean")
    np.testing.assert_allclose(table.exit_cost_ms("p99"), [8.0, 11.75, 14.5])  # p99 at the p90 here
    doc = document()
    del doc["parts"]["stage1"]["p99_ms"]
    with pytest.raises(LatencyTableError, match="parts/stage1.*'p99_ms' is a required property"):
        LatencyTable.from_dict(doc, "t.json")


def test_expected_latency_mean_and_p90():
    table = LatencyTable.from_dict(document())
    levels = np.array([1] * 6 + [2] * 3 + [3])
    both = (0.5, 0.5)
    mean_ms, p90_ms = expected_latency(levels, table, both)
    assert mean_ms == pytest.approx((6 * 5.75 + 3 * 9.0 + 11.0) / 10)
    # Each exit's cost runs from its summed medians (half the runs, no min recorded) linearly to its summed p90s
    # at 0.9: exit 1 5.75 -> 8.0, exit 2 9.0 -> 11.75, exit 3 11.0 -> 14.5 ms. Above 11 ms every head-1 image
    # (0.6) is done, head 2 is at 0.5 + 0.4 (x - 9) / 2.75 and head 3 at 0.5 + 0.4 (x - 11) / 3.5 of its runs:
    # 0.6 + 0.3 F2 + 0.1 F3 = 0.9 solves to x = 11.2311 ms (the old rule said 11.75: the p90 image's p90 cost).
    x = (0.1 + 0.12 * 9 / 2.75 + 0.04 * 11 / 3.5) / (0.12 / 2.75 + 0.04 / 3.5)
    assert p90_ms == pytest.approx(x) and x == pytest.approx(11.2311, abs=1e-4)
    # 8 of 10 images done by 8 ms; the other 2 leave after head 3, half of whose runs take its median, 11 ms.
    assert expected_latency(np.array([1] * 8 + [3] * 2), table, both)[1] == pytest.approx(11.0)
    assert expected_latency(np.array([3, 3]), table, both) == (11.0, 14.5)
    with pytest.raises(ValueError, match="1, 2 or 3"):
        expected_latency(np.array([0, 1]), table, both)
    with pytest.raises(ValueError, match="empty"):
        expected_latency(np.array([], dtype=int), table, both)


def test_gates_that_are_not_computed_are_not_charged():
    table = LatencyTable.from_dict(document())
    gate1, gate2 = table.parts["gate1"].median_ms, table.parts["gate2"].median_ms
    full = table.exit_cost_ms("median", (0.5, 0.5))
    np.testing.assert_allclose(table.exit_cost_ms("median", (0.0, 0.0)), full - [gate1, gate1 + gate2, gate1 + gate2])
    np.testing.assert_allclose(table.exit_cost_ms("median", (0.0, 0.5)), full - gate1)
    # All heads with thresholds 0: static YOLOv5's cost, no gate in it.
    static = sum(table.parts[p].median_ms for p in ("preprocess", "stage1", "stage2", "stage3", "nms"))
    assert expected_latency(np.array([3, 3]), table, (0.0, 0.0))[0] == pytest.approx(static)
    with pytest.raises(TypeError, match="two numbers"):
        table.exit_cost_ms("median", (True, True))  # the old gates-computed flags are refused, not read as 1.0


CORNERS = [(a, b) for a in (0.0, 0.5, 1.0) for b in (0.0, 0.5, 1.0)]


@pytest.mark.parametrize("t1, t2", CORNERS)
def test_graph_keys_name_exactly_the_graphs_a_deployment_runs(t1, t2):
    """Each key of a profile's plan stands for one graph whose inputs and outputs are what the export writes."""
    from dh_tune.export.graphs import deployment_specs

    specs = deployment_specs()
    assert set(specs) == set(GRAPH_KEYS) and len(GRAPH_KEYS) == 10
    keys = [graph_key(g, deepest_head(t1, t2)) for g in plan_graphs(t1, t2)]
    assert [specs[k] for k in keys] == plan(t1, t2)


def with_graphs(doc: dict) -> dict:
    """The document plus deployed-graph timings: each graph 1 ms less than its parts summed, 0.5 ms per carried tensor."""
    from dh_tune.export.graphs import deployment_specs

    out = copy.deepcopy(doc)
    out["graphs"] = {}
    for key, spec in deployment_specs().items():
        parts = [f"stage{s}" for s in spec.stages] + ([f"gate{spec.gate}"] if spec.gate else [])
        carried = len([o for o in spec.outputs if not o.endswith(("_map", "_score"))])
        m = sum(TIMES[p][0] for p in parts) - 1.0 + 0.5 * carried
        out["graphs"][key] = part(m, m + 1, 50)
    return out


@pytest.mark.parametrize("t1, t2", CORNERS)
def test_tables_with_deployed_graphs_price_a_profile_by_the_graphs_it_runs(tmp_path, t1, t2):
    doc = with_graphs(document())
    table = LatencyTable.load(write(tmp_path, doc))
    assert table.to_dict() == doc
    fixed = TIMES["preprocess"][0] + TIMES["nms"][0]
    graphs = plan_graphs(t1, t2)
    keys = [graph_key(g, deepest_head(t1, t2)) for g in graphs]
    for level, cost in zip((1, 2, 3), table.exit_cost_ms("median", (t1, t2))):
        ran = [k for k, g in zip(keys, graphs) if g[0][0] <= level]  # graphs starting at a head the image reaches
        assert cost == pytest.approx(fixed + sum(doc["graphs"][k]["median_ms"] for k in ran))
    # A P3-only network is its own graph (no tensor handed on), not stage 1 timed with its carried outputs.
    assert table.exit_cost_ms("median", (1.0, 1.0))[0] == pytest.approx(fixed + TIMES["stage1"][0] - 1.0)
    bad = copy.deepcopy(doc)
    bad["graphs"].pop("stage2-3")
    with pytest.raises(LatencyTableError, match="graphs: 'stage2-3' is a required property"):
        LatencyTable.from_dict(bad, "t.json")


def broken(change):
    doc = copy.deepcopy(document())
    change(doc)
    return doc


MALFORMED = {
    "missing part": (broken(lambda d: d["parts"].pop("gate2")), r"parts: 'gate2' is a required property"),
    "negative time": (broken(lambda d: d["parts"]["stage1"].update(median_ms=-1.0)), r"parts/stage1/median_ms"),
    "wrong type": (broken(lambda d: d["parts"]["nms"].update(p90_ms="fast")), r"parts/nms/p90_ms: 'fast' is not"),
    "wrong version": (broken(lambda d: d.update(schema_version=2)), r"schema_version 2 is not supported"),
    "no version": (broken(lambda d: d.pop("schema_version")), r"'schema_version' is a required property"),
    "nan time": (broken(lambda d: d["parts"]["stage2"].update(median_ms=float("nan"))), r"stage2: .*finite"),
    "unknown part": (broken(lambda d: d["parts"].update(stage4=d["parts"]["stage3"])), r"stage4"),
    "bool threads": (broken(lambda d: d["device"].update(threads=True)), r"device/threads"),
    "bad kind": (broken(lambda d: d["device"].update(kind="tpu")), r"device/kind"),
    "bad imgsz": (broken(lambda d: d["model"].update(imgsz=415)), r"model/imgsz"),
    "bad sha": (broken(lambda d: d["model"].update(checkpoint_sha256="xyz")), r"checkpoint_sha256"),
    "p90 below median": (broken(lambda d: d["parts"]["gate1"].update(p90_ms=0.1)), r"p90_ms is below median_ms"),
    "p99 below p90": (broken(lambda d: d["parts"]["stage1"].update(p99_ms=4.5)), r"p99_ms is below p90_ms"),
    "unstable not names": (broken(lambda d: d["measurement"].update(unstable_parts=[1])), r"measurement/unstable"),
    "bad date": (broken(lambda d: d.update(created_at="yesterday at noon")), r"created_at"),
    "not an object": ([1, 2, 3], r"top level: \[1, 2, 3\] is not of type 'object'"),
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_table_is_a_one_line_error_naming_file_and_problem(tmp_path, name):
    doc, pattern = MALFORMED[name]
    path = write(tmp_path, doc, name=f"{name.replace(' ', '_')}.json")
    with pytest.raises(LatencyTableError, match=pattern) as info:
        LatencyTable.load(path)
    message = str(info.value)
    assert message.startswith(path) and "\n" not in message


def test_not_json_and_unreadable(tmp_path):
    path = write(tmp_path, '{"schema_version": 1,', name="cut.json")
    with pytest.raises(LatencyTableError, match=r"cut.json: not JSON \(.* line 1"):
        LatencyTable.load(path)
    with pytest.raises(LatencyTableError, match="absent.json: no such latency table"):
        LatencyTable.load(tmp_path / "absent.json")
    with pytest.raises(LatencyTableError, match="is a folder"):
        LatencyTable.load(tmp_path)
    with pytest.raises(LatencyTableError, match="not a regular file"):
        LatencyTable.load("/dev/zero")  # never read: it would not end


def test_save_refuses_an_invalid_table(tmp_path):
    table = LatencyTable.from_dict(document())
    del table.parts["nms"]
    with pytest.raises(LatencyTableError, match="nms"):
        table.save(tmp_path / "t.json")
    assert not (tmp_path / "t.json").exists()
    with pytest.raises(LatencyTableError, match="lacks parts"):
        table.exit_cost_ms()


def test_scale_may_be_explicit_multiples_and_checkpoint_unknown():
    doc = broken(lambda d: d["model"].update(scale=[0.33, 0.25], checkpoint_sha256=None))
    table = LatencyTable.from_dict(doc)
    assert table.model["scale"] == [0.33, 0.25]
    assert set(table.parts) == set(PARTS)


def test_an_early_exit_is_charged_its_own_decode_and_nms(tmp_path):
    """Decode and NMS of an image that left after head 1 or 2 see only the maps of the heads that ran."""
    doc = with_graphs(document())
    doc["exit_nms"] = {"1": part(0.125, 0.25, 50),
                       "2": part(0.375, 0.5, 50)}
    for d in (doc, {k: v for k, v in doc.items() if k != "graphs"}):
        table = LatencyTable.load(write(tmp_path, d))
        assert table.to_dict() == d
        without = LatencyTable.from_dict({**d, "exit_nms": {"1": d["parts"]["nms"], "2": d["parts"]["nms"]}})
        for t in CORNERS:
            np.testing.assert_allclose(table.exit_cost_ms("median", t),
                                       without.exit_cost_ms("median", t) - (0.5 - np.array([0.125, 0.375, 0.5])))
    bad = copy.deepcopy(doc)
    bad["exit_nms"]["3"] = bad["exit_nms"]["1"]
    with pytest.raises(LatencyTableError, match="exit_nms"):
        LatencyTable.from_dict(bad, "t.json")


def test_reading_the_frame_from_its_file_is_charged_to_every_exit(tmp_path):
    """A deployment reads each frame before pre-processing it, whichever head it leaves after."""
    read = part(0.25, 0.375, 50)
    for doc in (document(), with_graphs(document())):
        reading = copy.deepcopy(doc)
        reading["parts"]["read"] = read
        table, without = LatencyTable.load(write(tmp_path, reading)), LatencyTable.from_dict(doc)
        assert table.to_dict() == reading
        for t in CORNERS:
            for stat in ("median", "p90"):
                np.testing.assert_allclose(table.exit_cost_ms(stat, t),
                                           without.exit_cost_ms(stat, t) + read[f"{stat}_ms"])
    reading["parts"]["read"] = part(-1.0, 0.5, 5)
    with pytest.raises(LatencyTableError, match="parts/read"):
        LatencyTable.from_dict(reading, "t.json")


def test_a_table_timed_on_a_frame_file_times_its_read(tmp_path):
    import cv2

    from dh_tune.latency.measure import latency_table
    from dh_tune.model import DHNet

    frame = np.random.default_rng(0).integers(0, 255, (120, 200, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "frame.png"), frame)
    model = DHNet((0.33, 0.25), nc=2)
    table = latency_table(model, 64, repeats=5, warmup=1, image=frame, image_file=tmp_path / "frame.png")
    assert table.parts["read"].median_ms > 0 and table.measurement["frame"]["file"] == "frame.png"
    on_pixels = latency_table(model, 64, repeats=5, warmup=1, image=frame)
    assert set(on_pixels.parts) == set(PARTS) and on_pixels.measurement["frame"]["file"] is None


def test_cached_tables_are_kept_apart_by_whether_and_what_they_read(tmp_path):
    """A table that priced reading a PNG is not reused for frames stored as JPEG, nor for pixels without a file."""
    import cv2

    from dh_tune.latency.table_sources import local_latency_tables
    from dh_tune.model import DHNet

    frame = np.random.default_rng(0).integers(0, 255, (120, 200, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "a.png"), frame)
    cv2.imwrite(str(tmp_path / "a.jpg"), frame)
    model, cache = DHNet((0.33, 0.25), nc=2), tmp_path / "devices"
    png = local_latency_tables(model, [64], cache, image=frame, image_file=tmp_path / "a.png", progress=False)[64]
    again = local_latency_tables(model, [64], cache, image=frame, image_file=tmp_path / "a.png", progress=False)[64]
    assert "read" in png.parts and again.digest() == png.digest() and len(list(cache.iterdir())) == 1
    jpg = local_latency_tables(model, [64], cache, image=frame, image_file=tmp_path / "a.jpg", progress=False)[64]
    pixels = local_latency_tables(model, [64], cache, image=frame, progress=False)[64]
    assert jpg.measurement["frame"]["file"] == "a.jpg" and "read" not in pixels.parts
    assert len(list(cache.iterdir())) == 3


class FakeClock:
    """Stands in for the time module in dh_tune.latency.timing: time passes only when a fake step says so."""

    def __init__(self) -> None:
        self.ns = 0

    def perf_counter_ns(self) -> int:
        return self.ns

    def perf_counter(self) -> float:
        return self.ns / 1e9


def fake_steps(clock: FakeClock, names: tuple[str, ...], warmup: int, repeats: int, noisy: dict[str, int]):
    """Steps of 1 ms each (one of 0.05 ms named "tiny"); a step in `noisy` takes 6 ms every 4th run during its
    first noisy[name] measurements (0: always), as if another process took the CPU."""
    calls = dict.fromkeys(names, 0)

    def step(name: str):
        def run() -> None:
            attempt, i = divmod(calls[name], warmup + repeats)
            calls[name] += 1
            base = 0.05 if name == "tiny" else 1.0
            disturbed = name in noisy and (noisy[name] == 0 or attempt < noisy[name]) and i % 4 == 0
            ms = 6.0 if disturbed else base * (1 + 0.01 * (i % 3))
            if name == "tiny" and i % 4 == 0:
                ms = 0.2  # four times its median, but 0.15 ms: scheduler jitter no budget notices
            clock.ns += int(ms * 1e6)
        return run

    return [step(n) for n in names]


def test_a_disturbed_step_is_timed_again_and_named_when_it_stays_so(monkeypatch) -> None:
    from dh_tune.latency import timing

    clock = FakeClock()
    monkeypatch.setattr(timing, "time", clock)
    names = ("steady", "settles", "noisy", "tiny")
    steps = fake_steps(clock, names, warmup=2, repeats=20, noisy={"settles": 1, "noisy": 0})
    times, unstable, attempts = timing.time_until_stable(
        lambda: timing.time_steps(steps, repeats=20, warmup=2, max_seconds=1e9, names=names), retries=2)
    assert unstable == ["noisy"] and attempts == 3
    assert max(times["settles"]) < 1.05  # the retry's quiet samples replaced the disturbed ones
    assert max(times["noisy"]) == pytest.approx(6.0) and len(times["steady"]) == 20
    assert not timing.is_unstable(times["tiny"]) and timing.is_unstable(times["noisy"])
    quiet = fake_steps(clock, names, warmup=2, repeats=20, noisy={})
    assert timing.time_until_stable(lambda: timing.time_steps(quiet, repeats=20, warmup=2, max_seconds=1e9,
                                                              names=names))[1:] == ([], 1)


def test_a_table_records_its_unstable_parts_through_a_save_and_load(monkeypatch, tmp_path, caplog) -> None:
    import torch

    from dh_tune.latency import measure, timing
    from dh_tune.model import DHNet

    clock = FakeClock()
    monkeypatch.setattr(timing, "time", clock)
    names = (*PARTS, *timing.EXIT_NMS_STEPS)
    steps = fake_steps(clock, names, warmup=2, repeats=20, noisy={"stage1": 1, "stage3": 0})

    def fake_measure_parts(model, imgsz, *, device, batch, repeats, warmup, max_seconds, image, image_file):
        return timing.time_steps(steps, repeats=repeats, warmup=warmup, max_seconds=max_seconds, names=names)

    monkeypatch.setattr(measure, "measure_parts", fake_measure_parts)
    with caplog.at_level("WARNING", logger="dh_tune.latency.measure"):
        table = measure.latency_table(DHNet((0.33, 0.25), nc=2), 96, repeats=20, warmup=2, max_seconds=1e9)
    device = measure.device_info(torch.device("cpu"), torch.get_num_threads())["name"]
    assert [LineFormatter().format(r) for r in caplog.records] == [
        f"warning: timings of stage3 on {device} stayed spread out after 3 attempts (a busy machine?); the table "
        "marks them unstable"]
    table.save(tmp_path / "t.json")
    again = LatencyTable.load(tmp_path / "t.json")
    assert again.unstable_parts == ["stage3"] and again.measurement["attempts"] == 3
    assert again.parts["stage1"].p90_ms < 1.05 and again.parts["stage3"].p99_ms == pytest.approx(6.0)
    assert LatencyTable.from_dict(document()).unstable_parts == []
