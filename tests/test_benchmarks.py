"""The results page: oracle exits and AP for chosen exit levels, the dynamic-vs-static measurement on a
tiny trained model, and the whole `benchmarks/run_all.py` on a tiny pipeline (page, README block, resume)."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
PROFILES = [(0.0, 0.0), (0.5, 0.5), (0.3, 0.7), (1.0, 1.0)]


@pytest.mark.parametrize("t1, t2", PROFILES)
def test_ap_for_levels_equals_the_threshold_evaluation(exit_tables, t1, t2) -> None:
    table = exit_tables[128]
    m = table.evaluate(t1, t2)
    ap = table.ap_for_levels(table.exit_levels(t1, t2))
    assert ap["ap50"] == pytest.approx(m.ap50, abs=1e-12)
    assert ap["ap50_95"] == pytest.approx(m.ap50_95, abs=1e-12)


def test_label_levels_are_the_deepest_head_each_image_needs(exit_tables) -> None:
    table = exit_tables[96]
    levels = table.label_levels()
    need2, need3 = table.gate_labels[:, 0], table.gate_labels[:, 1]
    assert ((levels == 1) == ~need2).all()
    assert ((levels == 3) == (need2 & need3)).all()
    # Gate scores equal to the labels (a perfect gate) exit every image where the oracle does.
    perfect = type(table)(table.gate_labels.astype(np.float32), table.gate_labels, table.gt_counts, table.levels,
                          table.macs_per_exit)
    assert (perfect.exit_levels(0.5, 0.5) == levels).all()


def test_forcing_thresholds_reach_each_exit_level(trained_tiny, bench_script) -> None:
    from dh_tune.model.checkpoint import load_model

    model, _ = load_model(trained_tiny)
    x = torch.rand(3, 3, 96, 96)
    for level, thresholds in bench_script("bench_dynamic_vs_static").LEVEL_THRESHOLDS.items():
        out = model.forward_dynamic(x, thresholds)
        assert out.exit_level.tolist() == [level] * 3
        assert len(out.maps) == level


def test_dynamic_vs_static_measurement(trained_tiny, bench_script, tmp_path) -> None:
    bench_dynamic_vs_static = bench_script("bench_dynamic_vs_static")
    doc = bench_dynamic_vs_static.measure(trained_tiny, (0.5, 0.5), imgsz=96, images=8, passes=1, cache_dir=tmp_path)
    rows = doc["rows"]
    assert set(rows) == {"static", "all", "all-gated", "gates-0.5", "profile", "oracle"}
    # Static YOLOv5 and the DH-Net with every head give the same detections; only the gated run computes gates.
    assert rows["all"]["ap50_95"] == rows["static"]["ap50_95"]
    assert rows["all"]["gates_computed"] == [False, False] and rows["all-gated"]["gates_computed"] == [True, True]
    assert rows["static"]["speedup"] == 1.0 and rows["static"]["mac_saving"] == 0.0
    assert rows["all"]["mac_saving"] == 0.0 and rows["all-gated"]["mac_saving"] < 0  # gates add MACs
    assert rows["oracle"]["mac_saving"] >= 0
    assert all(r["ms"] > 0 and 0 < r["network_ms"] < r["ms"] for r in rows.values())
    from dh_tune.evaluate.exit_table import ExitTable

    table = ExitTable.load(next(tmp_path.glob("*.npz")))
    oracle = np.bincount(table.label_levels(), minlength=4)[1:] / table.num_images
    assert rows["oracle"]["exit_shares"] == pytest.approx(oracle.tolist())
    assert rows["profile"]["exit_shares"] == pytest.approx(
        (np.bincount(table.exit_levels(0.5, 0.5), minlength=4)[1:] / table.num_images).tolist())


@pytest.mark.slow
def test_run_all_writes_the_page_and_resumes(tiny_dataset, tiny_pipeline_doc, bench_script, tmp_path,
                                             monkeypatch) -> None:
    run_all = bench_script("run_all")

    monkeypatch.setenv("DH_TUNE_HOME", str(tmp_path / "home"))
    pipeline = tmp_path / "tiny.yaml"
    pipeline.write_text(yaml.safe_dump(tiny_pipeline_doc(tiny_dataset, epochs=2)))
    readme = tmp_path / "README.md"
    readme.write_text("# project\n\nintro\n\n## Results\n\n" + run_all.results_page.README_BEGIN + "\nstale block\n"
                      + run_all.results_page.README_END + "\n\n## After\n")
    results = tmp_path / "bench" / "RESULTS.md"
    args = ["--quick", "--pipeline", str(pipeline), "--out", str(tmp_path / "work"), "--results", str(results),
            "--readme", str(readme), "--budget-ms", "5", "--budget-ms", "1000", "--epochs", "2"]
    assert run_all.main(args) == 0

    page = results.read_text()
    for heading in ("Model cost (paper Table 2)", "Dataset (paper Table 1)", "Accuracy", "Speed/accuracy",
                    "Dynamic vs static", "Deployment runtimes", "Search cost", "What a profile promises",
                    "frames over the budget"):
        assert heading in page
    assert "-0.65M (34.7%)" in page  # the paper's Table 2 value, labelled beside ours
    assert "AP50:95 static, fp32 -> int8" in page  # int8 timed and its AP measured beside the fp32 graphs
    for png in ("figure5_gates.png", "figure7_thresholds.png", "pareto_front.png", "dynamic_vs_static.png",
                "runtimes.png"):
        assert (results.parent / "results" / png).stat().st_size > 1000
    text = readme.read_text()
    assert "stale block" not in text and text.startswith("# project") and text.rstrip().endswith("## After")
    assert "Optuna vs exact grid hypervolume" in text and "predicted vs measured latency per runtime" in text
    assert "optimism" in text and "frames over budget, budget on mean / on p90" in text

    stored = json.loads((tmp_path / "work" / "results.json").read_text())
    assert stored["search"]["trials"] == 2
    assert [b["budget_ms"] for b in stored["search"]["budgets"]] == [5.0, 1000.0]
    for b in stored["search"]["budgets"]:  # held-out AP against the AP the choice saw, with its interval
        t = b["trust"]
        assert t["optimism"] == pytest.approx(t["selection_ap"] - t["test_ap"]) and len(t["interval"]) == 2
    rules = [(r["budget_ms"], r["rule"]) for r in stored["budget_stat"]["rows"]]
    assert rules == [(5.0, "mean"), (5.0, "p90"), (1000.0, "mean"), (1000.0, "p90")]
    generous = [r for r in stored["budget_stat"]["rows"] if r["budget_ms"] == 1000.0]
    assert all(r["frames_over_budget"] == 0.0 and r["measured_p90_ms"] > 0 for r in generous)
    # A second run reuses every measured section: same numbers, nothing trained again.
    mtime = (tmp_path / "work" / "search" / "base" / "weights" / "last.pt").stat().st_mtime
    assert run_all.main(args) == 0
    again = json.loads((tmp_path / "work" / "results.json").read_text())
    assert again["dynamic"] == stored["dynamic"] and again["search"] == stored["search"]
    assert (tmp_path / "work" / "search" / "base" / "weights" / "last.pt").stat().st_mtime == mtime


def test_gpu_benchmark_runs_its_variants_and_exits_as_asked(trained_tiny, bench_script) -> None:
    """bench_gpu.py on the CPU (the same code the GPU runs): every variant timed, forced exits really taken."""
    bench_gpu = bench_script("bench_gpu")

    doc = bench_gpu.measure(None, sizes=(64,), precisions=("fp32", "fp16"), rounds=2, nc=3, device="cpu")
    ms = doc["sizes"]["64"]["ms"]
    assert set(ms) == {f"{p} {n}" for p in ("fp32", "fp16") for n in
                       ("YOLOv5 static (reference)", "static", "all heads", "exit 1", "exit 2")}
    assert all(v > 0 for v in ms.values())
    assert doc["sizes"]["64"]["exit_levels"]["fp16"] == {"all heads": 3, "exit 1": 1, "exit 2": 2}
    assert all(g["exits_as_asked"] for g in doc["summary"]["64"].values())
    run = bench_gpu.train_run_summary(trained_tiny.parent.parent)
    assert len(run["epochs"]) == 200 and run["gpu"] is False and 0 <= run["epochs"][-1]["ap50"] <= 1


def test_gpu_section_shows_the_stored_figures_with_the_card(bench_script) -> None:
    gpu_page = bench_script("gpu_page")

    gpu = gpu_page.load()
    text = "\n".join(gpu_page.section(gpu))
    card = gpu["bench"]["card"]
    assert text.startswith(f"## 8. GPU ({card})") and gpu["bench"]["driver"] in text
    assert "onnxruntime CUDA static" in text and "Ray Train on the GPU" in text
    rows = gpu_page.summary_rows(gpu)
    assert len(rows) == 3 and "images/s" in rows[-1][1]
    assert gpu_page.load(ROOT / "no-such-folder") == {} and gpu_page.section({}) == []


def test_chain_variants_compute_the_static_maps(bench_script) -> None:
    """bench_chain.py: every way of chaining (and the one-graph If early exit) gives the static graph's maps."""
    bench_chain = bench_script("bench_chain")

    doc = bench_chain.measure(imgsz=64, rounds=2)
    assert set(doc["ms"]) == {"static", "chain", "chain-ort", "chain-bind", "if-graph", "if-graph exit 1"}
    assert all(d <= 1e-5 for d in doc["max_map_diff"].values())
    with tempfile.TemporaryDirectory() as tmp:
        out = bench_chain.variants(64, Path(tmp))["if-graph exit 1"]()
    assert out["p3_map"].size > 0 and out["p4_map"].size == 0 and out["p5_map"].size == 0


def test_search_scaling_estimate_schedules_trials_as_tune_does(bench_script) -> None:
    """bench_search_scaling.py: trials start in order on the first free slot; early stopping removes the share
    of epochs it is told to; more GPUs hold more trials at once and never take longer."""
    scaling = bench_script("bench_search_scaling")
    assert scaling.makespan([3.0, 3.0, 1.0, 1.0], 2) == 4.0  # the short trials follow on the free slots
    assert scaling.makespan([5.0] * 4, 8) == 5.0
    epochs = scaling.trial_epochs(16, 300, 0.0625, 0.25)
    assert sorted(epochs)[:4] == [225] * 4 and epochs.count(300) == 12
    assert 1 - sum(epochs) / (16 * 300) == pytest.approx(0.0625)
    from dh_tune.pipeline import load_pipeline

    paper = load_pipeline(scaling.ROOT / "pipelines" / "tt100k-yolov5s.yaml")
    rows = scaling.estimate(paper, 60.0, 0.0625, 0.25)
    assert [r["concurrent"] for r in rows] == [1, 2, 4, 8, 16]
    assert all(a["hours"] >= b["hours"] for a, b in zip(rows, rows[1:]))
    assert all(r["hours_early_stop"] <= r["hours"] and r["gpu_hours_early_stop"] < r["gpu_hours"] for r in rows)


def test_gates_only_benchmark_quick_mode(bench_script, tmp_path, monkeypatch) -> None:
    """bench_gates_only.py --quick: a plain detector trained first, both modes timed from it, the ratio and each
    gates-only epoch's accuracy in the JSON; the gates-only run left the detector as it was."""
    from dh_tune.model.checkpoint import load_checkpoint

    monkeypatch.setenv("DH_TUNE_HOME", str(tmp_path / "home"))
    bench = bench_script("bench_gates_only")
    out = tmp_path / "gates_only.json"
    assert bench.main(["--quick", "--work", str(tmp_path / "work"), "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["detector_trained_here"] and doc["mode"] == "quick"
    assert len(doc["whole"]["epochs"]) == 1 and len(doc["gates_only"]["epochs"]) == 2
    assert doc["ratio"]["mean"] == pytest.approx(doc["whole"]["mean_s"] / doc["gates_only"]["mean_s"])
    cumulative = [e["cumulative_s"] for e in doc["gates_only"]["epochs"]]
    assert 0 < cumulative[0] <= cumulative[1] and all(0 <= e["gate1_acc"] <= 1 for e in doc["gates_only"]["epochs"])
    start = load_checkpoint(doc["checkpoint"])["ema"]
    frozen = load_checkpoint(tmp_path / "work" / "gates" / "weights" / "last.pt")["ema"]
    assert all(torch.equal(v, start[k]) for k, v in frozen.items() if not k.startswith("gates."))
