"""Render the numbers of benchmarks/run_all.py as RESULTS.md (with PNGs) and the README's results table.

Only the paper's reference values (dh_tune.paper) are not measured by the run; they are labelled "paper".
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import gpu_page  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import trust_page  # noqa: E402

from dh_tune.paper import TABLE1 as PAPER_TABLE1  # noqa: E402
from dh_tune.paper import TABLE2 as PAPER_TABLE2  # noqa: E402

README_BEGIN = "<!-- results:begin (written by benchmarks/run_all.py) -->"
README_END = "<!-- results:end -->"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|",
            *("| " + " | ".join(r) + " |" for r in rows), ""]


def _pct(v: float | None) -> str:
    return "n/a" if v is None or v != v else f"{100 * v:.1f}%"


def headline(results: dict) -> str:
    """Machine, date, mode and duration of the run in one line."""
    meta = results["meta"]
    m = meta["machine"]
    gpu = f", GPU {m['gpu']}" if m.get("gpu") else ""
    seconds = sum(results.get("section_seconds", {}).values()) or meta["seconds"]  # a resumed run counts every part
    return (f"Measured on {m['cpu']} ({m['cores']} cores{gpu}), torch {m['torch']}, {meta['date']}; "
            f"`{'--quick' if meta['mode'] == 'quick' else 'full'}` run of the {meta['pipeline']} pipeline, "
            f"{seconds / 60:.0f} min of measurement in all.")


def table2_section(doc: dict) -> list[str]:
    rows = []
    for scale, r in doc["rows"].items():
        paper = PAPER_TABLE2[scale]
        cells = [f"DH-YOLOv5{scale}"]
        for k in ("one", "two"):
            ours, ref = r[k], paper[k]
            cells += [f"-{ours['params_saved'] / 1e6:.2f}M ({ours['params_saved_pct']:.1f}%)",
                      f"-{ref[0] / 1e6:.2f}M ({ref[1]:.1f}%)",
                      f"-{ours['gmacs_saved']:.2f}G ({ours['gmacs_saved_pct']:.1f}%)",
                      f"-{ref[2]:.2f}G ({ref[3]:.1f}%)"]
        cells.append(f"{r['gates']['params_pct']:.1f}% / {r['gates']['gmacs_pct']:.1f}%")
        rows.append(cells)
    return ["## 1. Model cost (paper Table 2)", "",
            f"Parameters and GMACs saved when only one or two heads run, nc={doc['nc']}, {doc['imgsz']} px.", "",
            *_table(["model", "one head: params", "paper", "one head: GMACs", "paper", "two heads: params", "paper",
                     "two heads: GMACs", "paper", "gates (params / GMACs)"], rows)]


def table1_section(doc: dict) -> list[str]:
    rows = []
    for name, d in doc.items():
        for split, s in d["splits"].items():
            small, medium, large = s["heads"]
            rows.append([name, split, f"{d['imgsz']}", str(s["images"]), str(large), str(medium), str(small),
                         str(s["empty"])])
    for split, s in PAPER_TABLE1.items():
        rows.append(["TT100K (paper)", split, "-", str(s["all"]), str(s["large"]), str(s["medium"]),
                     str(s["small"]), "-"])
    return ["## 2. Dataset (paper Table 1)", "",
            "Images with objects for each head (phi of Eq. 7 at the given input size, eps 4).", "",
            *_table(["dataset", "split", "px", "all", "large (head 3)", "medium (head 2)", "small (head 1)",
                     "no object"], rows)]


def accuracy_section(acc: dict, search: dict, static: dict, figures: Path) -> list[str]:
    d_ap50 = acc["dhnet"]["ap50"] - acc["static"]["ap50"]
    d_ap = acc["dhnet"]["ap50_95"] - acc["static"]["ap50_95"]
    rows = [["DH-Net, all heads", f"{acc['dhnet']['ap50']:.3f}", f"{acc['dhnet']['ap50_95']:.3f}",
             f"{acc['imgsz']} px, {acc['epochs']} epochs, gates on the detector's features"],
            ["YOLOv5 trained the same way (gate weight 0), all heads", f"{acc['static']['ap50']:.3f}",
             f"{acc['static']['ap50_95']:.3f}", f"{acc['imgsz']} px, {static['epochs']} epochs, a separate training"]]
    for p in acc["profiles"]:
        state = f"{p['latency_ms']:.1f} ms expected" if p["feasible"] else "budget not met: fastest profile"
        rows.append([f"profile for {p['budget_ms']:g} ms", f"{p['ap50']:.3f}", f"{p['ap50_95']:.3f}",
                     f"{p['imgsz']} px, thresholds ({p['t1']:.2f}, {p['t2']:.2f}), {state}"])
    g = acc["gates"]
    return ["## 3. Accuracy", "",
            f"Synthetic val set ({acc['images']} images); the base DH-Net trained for {acc['epochs']} epochs "
            f"({acc['train_seconds'] / 60:.1f} min including validation).", "",
            *_table(["model", "AP50", "AP50:95", "setting"], rows),
            f"DH-Net with all heads minus YOLOv5 without gate supervision: AP50 {d_ap50:+.3f}, AP50:95 {d_ap:+.3f} "
            "(goal: within 0.01 each).", "",
            f"Gate accuracy (Eq. 16) at threshold 0.5: gate 1 {_pct(g['accuracy'][0])}, gate 2 {_pct(g['accuracy'][1])};"
            f" recall (Eq. 17): {_pct(g['recall'][0])}, {_pct(g['recall'][1])} (paper, TT100K: above 92% accuracy; "
            "goal here: 90% each).", "",
            f"![Figure 5: gate accuracy and recall]({figures.name}/figure5_gates.png)", ""]


PARITY_LABELS = {"plain": "gate weight 0 (plain YOLOv5)", "paper": "lambda 0.2, end to end (the paper)",
                 "small-lambda": "lambda 0.0125, end to end", "detached": "lambda 0.2, gates on detached features"}


def gate_parity_section(doc: dict) -> list[str]:
    rows = [[PARITY_LABELS.get(n, n), f"{r['ap50']:.3f}", f"{r['ap50_95']:.3f}",
             f"{r.get('d_ap50', 0):+.3f} / {r.get('d_ap50_95', 0):+.3f}",
             f"{_pct(r['gate1_acc'])} / {_pct(r['gate2_acc'])}", f"{r['trunk_share']:.2f}"]
            for n, r in doc["rows"].items()]
    return ["## 3a. How the gates are trained (the default's measured justification)", "",
            f"The same pipeline trained {doc['epochs']} epochs from scratch four ways (`benchmarks/bench_gate_parity.py`). "
            "Trunk share: |gradient of lambda * L_gate| / |gradient of L_det| over the backbone, neck and heads, "
            "median over 4 training batches of the trained model.", "",
            *_table(["gate training", "AP50", "AP50:95", "vs gate weight 0", "gate accuracy", "trunk share"], rows)]


def tradeoff_section(search: dict, figures: Path) -> list[str]:
    lines = ["## 4. Speed/accuracy trade-off", "",
             f"{len(search['front'])} Pareto-optimal (AP, latency) points over {search['trials']} search trial(s) and "
             f"the base model, every input size and threshold pair, and the static networks (squares: one, two or "
             f"three heads, no gate); the search took {search['seconds'] / 60:.1f} min.", ""]
    models = search.get("models", [])
    if models:
        rows = []
        for m in models:
            hp = ", ".join(f"{k} {v:.3g}" for k, v in m["params"].items())
            name = m["trial_id"] + (" (the paper's point)" if m["paper_point"] else "")
            rows.append([name, m["role"], f"{m['ap50_all_heads']:.3f} / {m['ap50_95_all_heads']:.3f}",
                         " / ".join(_pct(a) for a in m["gate_accuracy"]), f"{m['hypervolume']:.3f}", hp])
        lines += ["Every trained model: AP with all heads and gate accuracy (validation at the training size), and "
                  "the hypervolume of its own front (AP50:95 x ms, same reference point for all).", "",
                  *_table(["model", "role", "AP50 / AP50:95, all heads", "gate accuracy", "hypervolume",
                           "hyperparameters"], rows)]
        trials = [m for m in models if m["role"] == "trial"]
        paper = next((m for m in trials if m["paper_point"]), None)
        if trials and paper is not None and paper["hypervolume"] > 0:
            best = max(trials, key=lambda m: m["hypervolume"])
            lines += [f"Best trial ({best['trial_id']}) hypervolume {best['hypervolume']:.3f} vs the paper's point "
                      f"{paper['hypervolume']:.3f} ({best['hypervolume'] / paper['hypervolume']:.3f}x).", ""]
    comp = [b for b in search["budgets"] if b.get("comparison")]
    if comp:
        rows = []
        for b in comp:
            c = b["comparison"]
            st, dy = c["best_static"], c["best_dynamic"]
            rows.append([f"{b['budget_ms']:g} ms", b["configuration"]["kind"],
                         f"{st['heads']} @ {st['imgsz']}: {st[c['metric']]:.3f}" if st else "none fits",
                         f"({dy['t1']:.2f}, {dy['t2']:.2f}) @ {dy['imgsz']}: {dy[c['metric']]:.3f}" if dy else "none fits",
                         f"{c['dynamic_gain']:+.4f}" if c["dynamic_gain"] is not None else "n/a"])
        lines += ["Each budget against the best static network within it (the exported profile is whichever is more "
                  "accurate):", "",
                  *_table(["budget", "exported", "best static", "best gated", "dynamic gain"], rows)]
    if search.get("front_png"):
        lines += [f"![Pareto front]({figures.name}/pareto_front.png)", ""]
    lines += [f"![Figure 7: AP and latency as a threshold moves]({figures.name}/figure7_thresholds.png)", ""]
    return lines


DYNAMIC_LABELS = {"static": "static YOLOv5 (no gates)", "all": "DH-Net, all heads (gates not computed)",
                  "all-gated": "DH-Net, all heads through both gates", "gates-0.5": "learned gates at 0.5",
                  "profile": "learned-gate profile", "oracle": "oracle gate (true labels)"}


def dynamic_section(doc: dict, figures: Path) -> list[str]:
    lines = ["## 5. Dynamic vs static", "",
             f"One trained model (fused Conv+BN, {next(iter(doc['sizes'].values()))['threads']} threads) run every way "
             f"over the same val images, each image by all of them in turn; the learned-gate profile is the best gated "
             f"profile of the {doc['budget_ms']:g} ms budget, thresholds {tuple(round(t, 3) for t in doc['thresholds'])}."
             " Network saving: forward time saved against static YOLOv5; MACs say: the saving its MACs predict.", ""]
    for size, d in doc["sizes"].items():
        rows = [[DYNAMIC_LABELS[n], f"{r['ms']:.2f}", f"{r['speedup']:.3f}x", f"{100 * r['network_saving']:+.1f}%",
                 f"{100 * r['mac_saving']:+.1f}%", f"{r['ap50']:.3f}", f"{r['ap50_95']:.3f}",
                 "/".join(f"{s:.2f}" for s in r["exit_shares"])] for n, r in d["rows"].items()]
        lines += [f"**{size} px** ({d['images']} images):", "",
                  *_table(["model", "ms / image", "speed-up vs static", "network saving", "MACs say", "AP50",
                           "AP50:95", "exits h1/h2/h3"], rows)]
    _bar_chart(doc, figures / "dynamic_vs_static.png")
    lines += [f"![dynamic vs static]({figures.name}/dynamic_vs_static.png)", ""]
    return lines


def runtimes_section(doc: dict, figures: Path) -> list[str]:
    """Each runtime's per-image network time against eager PyTorch and YOLOv5's own static graph."""
    sizes = list(doc["sizes"])
    names = list(doc["sizes"][sizes[0]]["ms"])
    rows = [[n, *(f"{doc['sizes'][s]['ms'][n]:.2f} ({doc['sizes'][s]['ms'][n] / doc['sizes'][s]['ms']['torch static']:.2f}x)"
                  for s in sizes)] for n in names]
    fastest = doc["fastest"]
    goal_rows = [[f"{s} px", f"{g['runtime_vs_eager_fused']:.2f}x ({g['runtime_vs_eager_unfused']:.2f}x unfused, "
                  f"{g['runtime_vs_yolov5']:.2f}x YOLOv5)",
                  f"{doc['sizes'][s]['fp32_floor_ms']:.2f} ms = {g['fp32_floor_vs_eager_fused']:.2f}x"
                  if g.get("fp32_floor_vs_eager_fused") else "n/a",
                  _overhead(g),
                  f"{100 * g['exit1_saving']:.1f}% vs {100 * g['exit1_saving_macs']:.1f}%"] for s, g in doc["goals"].items()]
    split_rows = [[f"{s} px", _overhead(g), _overhead(g, "all_heads_over_static_paired_cold"),
                   _overhead(g, "chain_over_static_paired"), _overhead(g, "gates_one_graph_over_static_paired"),
                   f"{100 * g['gate_macs_share']:.1f}%"]
                  for s, g in doc["goals"].items() if g.get("gates_one_graph_over_static_paired")]
    int8_rows = [[f"{s} px", g["int8"]["runtime"],
                  f"{g['int8']['vs_eager_fused']:.2f}x ({g['int8']['vs_eager_unfused']:.2f}x unfused, "
                  f"{g['int8']['vs_fp32']:.2f}x its fp32)", _overhead(g["int8"]),
                  f"{100 * g['int8']['exit1_saving']:.1f}%",
                  *(f"{a['fp32']:.4f} -> {a['int8']:.4f} ({a['int8'] - a['fp32']:+.4f})"
                    for a in (g["int8"]["ap50_95"]["static"], g["int8"]["ap50_95"]["allheads"]))]
                 for s, g in doc["goals"].items() if g.get("int8")]
    int8_images = next((g["int8"]["images"] for g in doc["goals"].values() if g.get("int8")), 0)
    eq = [f"{r} at {s} px: maps within {e['max_abs_diff']:.1e} of torch, gate scores within {e['max_score_diff']:.1e}, "
          f"{e['decisions_differ']} different exits" for s in sizes for r, e in doc["sizes"][s]["equivalence"].items()]
    _runtime_chart(doc, figures / "runtimes.png")
    return ["## 6. Deployment runtimes", "",
            f"Network time per image (batch 1, {doc['threads']} threads, fp32; {doc['rounds']} rounds with every variant "
            "once per round in random order, medians; ratio to dh-tune's fused eager static model, the torch runtime). "
            + ("Each variant's turn times it twice: right after another variant (*cold*: the other graphs' own weight "
               "copies have pushed its weights out of the caches), then right after itself (*warm*, as a deployment "
               "runs one profile frame after frame and as device tables time each graph); the table and the goals "
               "are warm. " if doc["sizes"][sizes[0]].get("ms_cold") else "")
            + (f"Each runtime runs in a process of its own with its default thread settings, the processes taking "
               f"turns in {doc['blocks']} blocks (in one process the runtimes starve each other: each one's idle "
               "threads spin after it returns). " if doc.get("blocks") else "")
            + 
            "*YOLOv5 static* is YOLOv5's own layer-list forward loaded from the same YOLOv5-named state dict and "
            "fused. Dynamic variants compute their gates: *exit 1* stops every image after head 1. Runtimes: "
            + ", ".join(f"{k} {v}" for k, v in doc["runtimes"].items()) + ".", "",
            *_table(["variant", *(f"{s} px" for s in sizes)], rows),
            f"Goals, for the fastest installed runtime ({fastest}). All heads over static: the median of the "
            "per-round ratios (the two timed in the same round, so the machine's drift cancels) with its 95% "
            "bootstrap interval over rounds:", "",
            *_table(["size", "static vs eager (goal <= 0.35x)", "fp32 floor: MACs at the GEMM rate, vs eager",
                     "all heads over static (<= 3%)", "exit-1 saving vs MACs (within 3 points)"], goal_rows),
            *(["Where the all-heads overhead goes, in the fastest runtime: all heads warm and cold (paired, 95%), "
               "the three stage graphs chained with no gate (paired, 95%: what cutting the network costs), the static "
               "graph computing both gates with no cut (paired, 95%: the gates' own cost) and the gates' share "
               "of the network's multiply-adds (paper Fig. 3 gates; section 1):", "",
               *_table(["size", "all heads, warm", "all heads, cold", "stages chained, no gate",
                        "static + both gates, one graph", "gates' MACs"], split_rows)] if split_rows else []),
            *([f"The fp32 floor: the static network's multiply-adds at the rate this machine multiplies fp32 matrices "
               f"({doc['gemm_gflops']:.0f} GFLOP/s, the fastest 2048 x 2048 product in torch, 10 before each turn). "
               "A runtime running "
               "direct convolutions in fp32 can approach it but not pass it; where the floor itself lies above 0.35x "
               "of eager, no fp32 runtime reaches the goal on this machine.", ""] if doc.get("gemm_gflops") else []),
            *(f"- {line}" for line in eq), "",
            *([f"int8 (`python -m dh_tune.export --precision int8`): the trunk quantized after training, calibrated on "
               "64 training images; gates and output convolutions fp32. Timed above as *int8*; AP50:95 of the fp32 "
               f"graphs and the int8 graphs on the first {int8_images} validation images, same runtime (the gated "
               "chain with the all-heads thresholds):", "",
               *_table(["size", "fastest", "int8 static vs eager", "all heads over int8 static",
                        "exit-1 saving", "AP50:95 static, fp32 -> int8", "AP50:95 gated, fp32 -> int8"], int8_rows)]
              if int8_rows else []),
            f"![runtimes]({figures.name}/runtimes.png)", ""]


def _overhead(g: dict, key: str = "all_heads_over_static_paired") -> str:
    """An overhead over static (default all heads): paired median with its interval where measured, else (all heads
    only) the ratio of medians."""
    p = g.get(key)
    if not p:
        return f"{100 * g['all_heads_over_static']:+.1f}%" if key == "all_heads_over_static_paired" else "n/a"
    return f"{100 * p['median']:+.1f}% [{100 * p['ci'][0]:+.1f}, {100 * p['ci'][1]:+.1f}]"


def _runtime_chart(doc: dict, path: Path) -> None:
    """Milliseconds of the static graph and the dynamic exits per runtime and size."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sizes = list(doc["sizes"])
    runtimes = list(doc["runtimes"])
    kinds = ["static", "all heads", "exit 2", "exit 1"]
    fig, axes = plt.subplots(1, len(sizes), figsize=(3.2 * len(sizes), 3.4), squeeze=False)
    for ax, s in zip(axes[0], sizes):
        ms = doc["sizes"][s]["ms"]
        for k, kind in enumerate(kinds):
            ax.bar([i + k * 0.2 for i in range(len(runtimes))], [ms[f"{r} {kind}"] for r in runtimes], width=0.2,
                   label=kind)
        ax.axhline(ms["YOLOv5 static (reference, fused)"], c="0.3", lw=1, ls="--", label="YOLOv5 static, eager")
        ax.set_xticks([i + 0.3 for i in range(len(runtimes))])
        ax.set_xticklabels(runtimes, fontsize=8)
        ax.set_title(f"{s} px", fontsize=9)
        ax.set_ylabel("ms / image (network)", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def cost_section(cost: dict, throughput: dict) -> list[str]:
    c = cost["cache"]
    rows = [[f"({r['t1']:.2f}, {r['t2']:.2f})", f"{r['cache_ms']:.2f}", f"{r['rerun_ms']:.0f}", f"{r['ratio']:.0f}x",
             f"{r['predicted_ms']:.2f}", f"{r['measured_ms']:.2f}", f"{r['error_pct']:+.1f}%"] for r in c["rows"]]
    syn = cost["synthetic_1000"]["rows"]
    worst = max(abs(r["error_pct"]) for r in c["rows"])
    tp = [[str(r["workers"]), f"{r['images_per_s']:.1f}", f"{r['epoch_time_s']:.1f}", f"{r['ratio']:.2f}x"]
          for r in throughput["rows"]]
    by_runtime = cost["cache"].get("latency_by_runtime", {})
    runtime_rows = [[r, *(f"{x['predicted_ms']:.2f} / {x['measured_ms']:.2f} ({x['error_pct']:+.1f}%"
                          + (f"; {x['error_without_read_pct']:+.1f}% without the read)" if "error_without_read_pct" in x
                             else ")") for x in v)]
                    for r, v in by_runtime.items()]
    profiles = [f"({x['t1']:.2f}, {x['t2']:.2f})" for x in next(iter(by_runtime.values()), [])]
    priced_read = any("error_without_read_pct" in x for v in by_runtime.values() for x in v)
    runtime_lines = ["Predicted / measured ms per image (" + ("reading the frame from its file, " if priced_read else "")
                     + "pre-processing, network, NMS) in each runtime, its own device table timed right before and "
                     "after each measurement" + (" (and the prediction's error without the read, as tables priced "
                                                 "frames before they timed it)" if priced_read else "") + ":", "",
                     *_table(["runtime", *profiles], runtime_rows)] if by_runtime else []
    return ["## 7. Search cost", "",
            f"One threshold profile scored from the exit cache vs running the model again for it ({c['images']} val "
            f"images at {c['imgsz']} px: forward, NMS, AP), and the latency the device table predicts vs the "
            f"measured mean of the dynamic model (largest error {worst:.1f}%). The machine's speed drifts, so each of "
            f"the {c.get('passes', 5)} passes times the device table right before and right after each measurement "
            "(the two predictions averaged); the error is the median over passes of each pass's error. Each runtime "
            "is checked in a process of its own with its default thread settings. Tables of a deployment runtime "
            "time every graph a profile can deploy and price a profile by the graphs it runs.", "",
            *_table(["profile", "cache ms", "re-run ms", "ratio", "predicted ms", "measured ms", "error"], rows),
            *runtime_lines,
            f"On a 1,000-image table (about {cost['synthetic_1000']['detections'] // 1000}k cached detections) one "
            f"profile takes {min(r['cache_ms'] for r in syn):.2f}-{max(r['cache_ms'] for r in syn):.2f} ms, "
            f"{min(r['ratio'] for r in syn):.0f}x or more faster than COCO AP on the same final boxes.", "",
            f"Optuna's threshold front reaches {_pct(cost['hv_ratio_min'])} of the exact grid's hypervolume "
            "(lowest over the trained models).", "",
            "Training throughput, one epoch per setting (Ray Train CPU workers, threads split evenly):", "",
            *_table(["workers", "images/s", "epoch s (with validation on rank 0)", "vs 1 worker"], tp)]


def _bar_chart(doc: dict, path: Path) -> None:
    """Speed-up over static YOLOv5 of each way of running, per input size."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sizes = list(doc["sizes"])
    names = list(next(iter(doc["sizes"].values()))["rows"])
    fig, ax = plt.subplots(figsize=(8.5, 3.8))
    width = 0.8 / len(sizes)
    speedups = [doc["sizes"][s]["rows"][n]["speedup"] for s in sizes for n in names]
    for k, size in enumerate(sizes):
        rows = doc["sizes"][size]["rows"]
        ys = [i + k * width for i in range(len(names))]
        ax.barh(ys, [rows[n]["speedup"] for n in names], height=width, label=f"{size} px")
    ax.set_xlim(min(speedups) - 0.05, max(speedups) + 0.03)  # ratios near 1: the axis starts where they do
    ax.set_yticks([i + width * (len(sizes) - 1) / 2 for i in range(len(names))])
    ax.set_yticklabels([DYNAMIC_LABELS[n] for n in names], fontsize=8)
    ax.axvline(1.0, c="0.3", lw=1, ls="--")
    ax.set_xlabel("speed-up over static YOLOv5 (same images, end to end)")
    ax.invert_yaxis()
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(results: dict, path: Path, figures: Path) -> Path:
    """RESULTS.md beside its figures folder (PNGs copied or drawn there)."""
    figures.mkdir(parents=True, exist_ok=True)
    search = results["search"]
    if search.get("front_png") and Path(search["front_png"]).is_file():
        shutil.copyfile(search["front_png"], figures / "pareto_front.png")
    lines = ["# dh-tune results", "", headline(results), "",
             "Written by `python benchmarks/run_all.py`; every number comes from that run except the columns and "
             "rows labelled *paper* and section 8, which was measured on a GPU machine and is kept in "
             "`benchmarks/gpu/`.", "",
             *table2_section(results["table2"]), *table1_section(results["table1"]),
             *accuracy_section(results["accuracy"], search, results["static"], figures),
             *gate_parity_section(results["gate_parity"]),
             *tradeoff_section(search, figures), *dynamic_section(results["dynamic"], figures),
             *(runtimes_section(results["runtimes"], figures) if "runtimes" in results else []),
             *cost_section(results["search_cost"], results["throughput"]), "",
             *gpu_page.section(results.get("gpu") or {}, number=8),
             *trust_page.section(results, number=9)]
    path.write_text("\n".join(lines))
    return path


def summary_rows(results: dict) -> list[list[str]]:
    """The README's short table: each goal next to what this run measured."""
    acc, dyn, cost = results["accuracy"], results["dynamic"], results["search_cost"]
    thr = results["throughput"]["rows"]
    prof = next((p for p in acc["profiles"] if p["budget_ms"] == dyn["budget_ms"]), acc["profiles"][0])
    worst = max(abs(r["error_pct"]) for r in cost["cache"]["rows"])
    syn = cost["synthetic_1000"]["rows"]
    budget = next((b for b in results["search"]["budgets"] if b["budget_ms"] == dyn["budget_ms"]), None)
    gain = (budget or {}).get("comparison") or {}
    sizes = list(dyn["sizes"])
    all_heads = ", ".join(f"{dyn['sizes'][s]['rows']['all']['speedup']:.3f}x @{s}" for s in sizes)
    oracle = ", ".join(f"{100 * dyn['sizes'][s]['rows']['oracle']['network_saving']:.1f}% vs "
                       f"{100 * dyn['sizes'][s]['rows']['oracle']['mac_saving']:.1f}% @{s}" for s in sizes)
    return [
        ["AP50 / AP50:95, all heads (quickstart base)", f"{acc['dhnet']['ap50']:.3f} / {acc['dhnet']['ap50_95']:.3f} "
         f"after {acc['epochs']} epochs ({acc['train_seconds'] / 60:.1f} min)", ">= 0.5 AP50 in <= 10 min"],
        ["same, YOLOv5 trained with gate weight 0", f"{acc['static']['ap50']:.3f} / {acc['static']['ap50_95']:.3f}",
         "DH-Net within 0.01"],
        ["gate accuracy at 0.5", f"{_pct(acc['gates']['accuracy'][0])} / {_pct(acc['gates']['accuracy'][1])}",
         ">= 90% each"],
        ["main job (train + 2 trials + search)", f"{results['search']['seconds'] / 60:.1f} min", "<= 15 min"],
        [f"profile for {prof['budget_ms']:g} ms", f"AP50 {prof['ap50']:.3f}, {prof['latency_ms']:.1f} ms expected, "
         f"{(budget or {}).get('configuration', {}).get('kind', '?')}", "AP50 >= 0.5"],
        [f"dynamic gain at {dyn['budget_ms']:g} ms (best gated - best static)",
         f"{gain['dynamic_gain']:+.4f} {gain['metric']}" if gain.get("dynamic_gain") is not None else "n/a", "-"],
        ["all heads vs static YOLOv5, same images", all_heads, "within 3% (>= 0.97x)"],
        ["oracle gate: network saving vs MACs' prediction", oracle, "within 2 points at 320 and 640"],
        ["profile from cache vs re-run", f"{min(r['ratio'] for r in cost['cache']['rows']):.0f}x or more",
         ">= 1000x"],
        ["one profile, 1,000 images", f"{max(r['cache_ms'] for r in syn):.2f} ms", "< 5 ms"],
        ["predicted vs measured latency", f"{worst:.1f}% worst", "< 10%"],
        *trust_page.summary_rows(results),
        *runtime_summary(results),
        ["Optuna vs exact grid hypervolume", _pct(cost["hv_ratio_min"]), ">= 99%"],
        ["training images/s, 1 vs 2 workers", " vs ".join(f"{r['images_per_s']:.0f}" for r in thr)
         + f" ({thr[-1]['ratio']:.2f}x)", "-"],
    ]


def runtime_summary(results: dict) -> list[list[str]]:
    """README rows of the runtime goals: speed against eager torch, gate overhead, exit-1 saving, prediction."""
    doc = results.get("runtimes")
    if not doc:
        return []
    g = doc["goals"]
    by_runtime = results["search_cost"]["cache"].get("latency_by_runtime", {})
    worst = ", ".join(f"{r} {max(abs(x['error_pct']) for x in v):.1f}%" for r, v in by_runtime.items())
    return [
        [f"{doc['fastest']} static vs eager torch (fused)", ", ".join(f"{v['runtime_vs_eager_fused']:.2f}x @{s}"
                                                                    for s, v in g.items()), "<= 0.35x"],
        *([["fp32 floor (static MACs at this machine's GEMM rate) vs eager torch",
            ", ".join(f"{v['fp32_floor_vs_eager_fused']:.2f}x @{s}" for s, v in g.items()), "-"]]
          if all(v.get("fp32_floor_vs_eager_fused") for v in g.values()) else []),
        *([[f"int8 ({next(iter(g.values()))['int8']['runtime']}) static vs eager torch; AP50:95 change",
            ", ".join(f"{v['int8']['vs_eager_fused']:.2f}x ({v['int8']['ap50_95_change']['static']:+.3f}) @{s}"
                      for s, v in g.items()), "<= 0.35x; AP recorded"]]
          if all(v.get("int8") for v in g.values()) else []),
        [f"{doc['fastest']}: all heads through the gates over its static graph",
         ", ".join(f"{_overhead(v)} @{s}" for s, v in g.items()), "<= 3%"],
        [f"{doc['fastest']}: exit-1 saving vs MACs' prediction",
         ", ".join(f"{100 * v['exit1_saving']:.1f}% vs {100 * v['exit1_saving_macs']:.1f}% @{s}" for s, v in g.items()),
         "within 3 points at 320 and 640"],
        *([["predicted vs measured latency per runtime", worst, "< 10% each"]] if worst else []),
        *gpu_page.summary_rows(results.get("gpu") or {}),
    ]


def update_readme(results: dict, readme: Path, results_path: Path) -> None:
    """Replace the block between the README's results markers (or append it) with the latest table."""
    try:
        rel = results_path.resolve().relative_to(readme.resolve().parent)
    except ValueError:
        rel = results_path
    block = "\n".join([README_BEGIN, headline(results), "",
                       *_table(["what", "measured", "goal"], summary_rows(results)),
                       f"Full tables and figures: [{rel}]({rel}).", README_END])
    text = readme.read_text() if readme.is_file() else ""
    pattern = re.compile(re.escape(README_BEGIN) + ".*?" + re.escape(README_END), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    readme.write_text(text)
